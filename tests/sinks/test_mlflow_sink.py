"""Sinks against real stores: one sqlite MLflow store per module, CSV and TensorBoard files read back."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger
from mlflow import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rmt_callbacks.sinks.lightning import MLFLOW_MAX_METRICS_PER_BATCH, flush_loggers, log_to_loggers, mlflow_loggers


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
