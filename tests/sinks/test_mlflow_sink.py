"""Sinks against real stores: one sqlite MLflow store per module, CSV and TensorBoard files read back."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger
from matplotlib.figure import Figure
from mlflow import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rmt_callbacks.sinks.lightning import MLFLOW_MAX_METRICS_PER_BATCH, flush_loggers, log_to_loggers, mlflow_loggers
from rmt_callbacks.sinks.mlflow import MlflowRun, rows_to_columns


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A sqlite tracking store (created once: its schema migration is the slow part) and an artifact root."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    MlflowClient(tracking_uri=uri).search_experiments()  # creates the schema
    return uri, root / "artifacts"


def _run(store: tuple[str, Path], name: str) -> MlflowRun:
    uri, artifacts = store
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment(name, artifact_location=(artifacts / name).as_uri())
    return MlflowRun(client, client.create_run(experiment).info.run_id)


def test_arrays_round_trip_without_pickle(store: tuple[str, Path], tmp_path: Path) -> None:
    run = _run(store, "arrays")
    arrays = {"fc1.weight": np.linspace(0.0, 1.0, 12).reshape(3, 4), "attn.in_proj_weight.q": np.arange(5.0)}
    run.log_arrays(arrays, "spectra/step_00000007.npz")
    local = run.client.download_artifacts(run.run_id, "spectra/step_00000007.npz", str(tmp_path))
    with np.load(local, allow_pickle=False) as data:
        assert sorted(data.files) == sorted(arrays)
        for name, value in arrays.items():
            np.testing.assert_array_equal(data[name], value)


def test_table_figure_and_tags(store: tuple[str, Path], tmp_path: Path) -> None:
    run = _run(store, "table")
    rows = [{"step": 3, "name": "a", "mp/ks": 0.1}, {"step": 3, "name": "b", "skipped": "NaN entries"}]
    run.log_table(rows, "fits/step_00000003.json")
    local = run.client.download_artifacts(run.run_id, "fits/step_00000003.json", str(tmp_path))
    table = json.loads(Path(local).read_text())
    assert table["columns"] == ["step", "name", "mp/ks", "skipped"]
    assert table["data"] == [[3, "a", 0.1, None], [3, "b", None, "NaN entries"]]
    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    run.log_figure(fig, "figures/a/step_00000003.png")
    assert [f.path for f in run.client.list_artifacts(run.run_id, "figures/a")] == ["figures/a/step_00000003.png"]
    tags = {f"rmt.skipped.layer{i}": f"reason {i}" for i in range(250)}  # > 100: three requests
    run.set_tags(tags)
    logged = run.client.get_run(run.run_id).data.tags
    assert all(logged[k] == v for k, v in tags.items())


def test_bad_artifact_arguments(store: tuple[str, Path]) -> None:
    run = _run(store, "bad")
    with pytest.raises(ValueError, match=r"artifact_file must be a str ending in '.npz', got 'spectra/x.npy'"):
        run.log_arrays({"a": np.zeros(2)}, "spectra/x.npy")
    with pytest.raises(ValueError, match="array 'a' has object dtype"):
        run.log_arrays({"a": np.array([None, 1])}, "spectra/x.npz")
    with pytest.raises(ValueError, match="run_id must be a non-empty str"):
        MlflowRun(run.client, "")
    assert rows_to_columns([]) == {}


def test_scalars_reach_every_logger_in_one_step(store: tuple[str, Path], tmp_path: Path) -> None:
    """2500 metrics (more than one MLflow request holds) at step 7 reach MLflow, CSV and TensorBoard alike."""
    uri, artifacts = store
    mlf = MLFlowLogger(experiment_name="fanout", tracking_uri=uri, artifact_location=(artifacts / "fanout").as_uri())
    csv_logger = CSVLogger(tmp_path, name="csv")
    tb = TensorBoardLogger(tmp_path, name="tb")
    metrics = {f"rmt/layer{i}/lambda_max": float(i) for i in range(2500)}
    assert len(metrics) > MLFLOW_MAX_METRICS_PER_BATCH
    loggers = [mlf, csv_logger, tb]
    assert mlflow_loggers(loggers) == [mlf]
    log_to_loggers(loggers, metrics, step=7)
    log_to_loggers(loggers, {"rmt/layer0/lambda_max": -1.0}, step=9)
    for logger in loggers:
        logger.save()
    assert flush_loggers(loggers)  # MLflow's share went through the run's background writer

    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(mlf.run_id).data.metrics == {**metrics, "rmt/layer0/lambda_max": -1.0}
    history = client.get_metric_history(mlf.run_id, "rmt/layer0/lambda_max")
    assert [(m.step, m.value) for m in history] == [(7, 0.0), (9, -1.0)]

    with open(Path(csv_logger.log_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert (rows[0]["step"], rows[0]["rmt/layer2499/lambda_max"]) == ("7", "2499.0")
    assert [(r["step"], r["rmt/layer0/lambda_max"]) for r in rows] == [("7", "0.0"), ("9", "-1.0")]

    events = EventAccumulator(tb.log_dir)
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("rmt/layer0/lambda_max")] == [(7, 0.0), (9, -1.0)]
    assert events.Scalars("rmt/layer2499/lambda_max")[0].value == 2499.0


def test_step_must_be_an_int() -> None:
    with pytest.raises(TypeError, match=r"step must be an int, got 7\.0"):
        log_to_loggers([], {"a/b": 1.0}, step=7.0)  # type: ignore[arg-type]
