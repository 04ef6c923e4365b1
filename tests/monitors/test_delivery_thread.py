"""Every sink gets SpectrumMonitor's results from the training thread, the MLflow writer's queue included.

Real parts: a Lightning ``Trainer`` on CPU, two background monitors (different matrices and cadences) sharing an
``MLFlowLogger`` on a sqlite store, a ``CSVLogger`` and a ``TensorBoardLogger``. The thread of every operation put
into an :class:`~rmt_callbacks.sinks.spool.MlflowWriter`'s queue (``_Delivery._put``, the one way in) and of every
call into the other loggers (metrics, histograms, images) is recorded: all are the training thread, while the
analyses ran on the worker. The run, read back with ``MlflowClient``, holds every analysed step's metrics and files.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger
from mlflow import MlflowClient
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from rmt_callbacks import SpectrumMonitor
from rmt_callbacks.monitors._recorder import Recorder
from rmt_callbacks.sinks._delivery import _Delivery

STEPS = 12
KWARGS: dict[str, Any] = {"overhead_budget": None, "analyses": ["summary", "marchenko_pastur"]}


class Net(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(16, 24), nn.Tanh(), nn.Linear(24, 16))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.5)


class Calls:
    """``(thread id, what)`` of every recorded call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str, Any]] = []

    def wrap(self, what: str, call: Callable[..., Any], detail: Callable[..., Any] = lambda *a, **k: None) -> Any:
        def recorded(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((threading.get_ident(), what, detail(*args, **kwargs)))
            return call(*args, **kwargs)

        return recorded


def _files(client: MlflowClient, run_id: str, path: str) -> set[str]:
    out: set[str] = set()
    for f in client.list_artifacts(run_id, path):
        out |= _files(client, run_id, f.path) if f.is_dir else {f.path}
    return out


def test_every_sink_is_handed_results_on_the_training_thread(
    store: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = Calls()
    monkeypatch.setattr(_Delivery, "_put", calls.wrap("mlflow", _Delivery._put, lambda self, op: dict(op)))
    analysed: dict[str, list[int]] = {}  # by artifact folder: the steps analysed, on which thread
    workers: set[str] = set()
    analyse = Recorder.analyse

    def spy(self: Recorder, *args: Any, **kwargs: Any) -> Any:
        workers.add(threading.current_thread().name)
        analysed.setdefault(self.root, []).append(kwargs["step"])
        return analyse(self, *args, **kwargs)

    monkeypatch.setattr(Recorder, "analyse", spy)
    uri, root = store
    mlf = MLFlowLogger(experiment_name="threads", tracking_uri=uri, artifact_location=(root / "threads").as_uri())
    csv_logger, tb = CSVLogger(tmp_path, name="csv"), TensorBoardLogger(tmp_path, name="tb")
    for logger in (csv_logger, tb):
        monkeypatch.setattr(logger, "log_metrics", calls.wrap("metrics", logger.log_metrics, lambda m, step: step))
    for method in ("add_histogram", "add_image"):
        monkeypatch.setattr(tb.experiment, method, calls.wrap(method, getattr(tb.experiment, method)))
    monitors = [
        SpectrumMonitor(every_n_train_steps=4, include=["net.0.*"], figure_every_n_analyses=2, **KWARGS),
        SpectrumMonitor(every_n_train_steps=6, include=["net.2.*"], **KWARGS),
    ]
    g = torch.Generator().manual_seed(1)
    data = DataLoader(TensorDataset(torch.randn(96, 16, generator=g), torch.randn(96, 16, generator=g)), batch_size=8)
    trainer = pl.Trainer(
        max_steps=STEPS, logger=[mlf, csv_logger, tb], callbacks=monitors, accelerator="cpu", log_every_n_steps=1,
        default_root_dir=tmp_path, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(Net(), data)

    training = threading.get_ident()  # Lightning trains on CPU in the calling thread
    assert workers == {"rmt-SpectrumMonitor"}  # the analyses ran in the background ...
    assert {what for _, what, _ in calls.calls} == {"mlflow", "metrics", "add_histogram", "add_image"}
    elsewhere = [(what, detail) for thread, what, detail in calls.calls if thread != training]
    assert elsewhere == []  # ... and every sink got its share on the training thread
    assert sorted(analysed) == ["rmt/monitor", "rmt/monitor-2"]
    for steps in analysed.values():
        assert steps[0] == 0 and steps[-1] == STEPS and steps == sorted(set(steps))

    client = MlflowClient(uri)
    queued = [op for _, what, op in calls.calls if what == "mlflow"]
    for folder, steps in analysed.items():
        key = f"{folder}/analysis_interval"
        assert [m.step for m in client.get_metric_history(mlf.run_id, key)] == steps
        assert [op["step"] for op in queued if op["kind"] == "metrics" and key in op["metrics"]] == steps  # in order
        files = _files(client, mlf.run_id, folder)
        for step in steps:
            assert {f"{folder}/spectra/step_{step:08d}.npz", f"{folder}/fits/step_{step:08d}.json"} <= files
        assert f"{folder}/summary/matrices.json" in files
    matrix = {"rmt/monitor": "net.0.weight", "rmt/monitor-2": "net.2.weight"}
    for folder, name in matrix.items():
        history = client.get_metric_history(mlf.run_id, f"rmt/{name}/lambda_max")
        assert [m.step for m in history] == analysed[folder]
        figures = _files(client, mlf.run_id, f"{folder}/figures/{name}")
        assert f"{folder}/figures/{name}/evolution.png" in figures
        assert f"{folder}/figures/{name}/step_{analysed[folder][-1]:08d}.png" in figures
    logged = {detail for _, what, detail in calls.calls if what == "metrics"}
    assert set(analysed["rmt/monitor"]) | set(analysed["rmt/monitor-2"]) <= logged


def test_prepared_writes_reach_the_run_only_when_enqueued(store: tuple[str, Path]) -> None:
    """A write built under ``prepared()`` (on a worker) queues nothing; ``enqueue`` (elsewhere) sends it, under the
    caller's ``unless_logged`` guard: a step the run holds already is left out."""
    from rmt_callbacks.sinks.spool import MlflowWriter

    uri, root = store
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("prepared", (root / "prepared").as_uri())).info.run_id
    writer = MlflowWriter(client, run_id, tracking_uri=uri)
    built: list[list[dict[str, Any]]] = []

    def build(step: int) -> None:
        with writer.prepared() as ops:
            writer.log_table([{"step": step}], f"t/step_{step}.json")
            writer.log_metrics({"m": float(step)}, step=step)  # last: the guard's metric (as the monitor does)
        built.append(ops)

    for step in (1, 2):
        worker = threading.Thread(target=build, args=(step,))
        worker.start()
        worker.join()
    assert [[op["kind"] for op in ops] for ops in built] == [["table", "metrics"]] * 2
    assert writer.flush(10) and client.get_metric_history(run_id, "m") == []  # nothing was queued
    writer.enqueue(built[0])
    assert writer.flush(10)
    with writer.unless_logged("m", 1):
        writer.enqueue(built[0])  # held already: left out
    with writer.unless_logged("m", 2):
        writer.enqueue(built[1])
    assert writer.close(10)
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "m")] == [(1, 1.0), (2, 2.0)]
    assert {f.path for f in client.list_artifacts(run_id, "t")} == {"t/step_1.json", "t/step_2.json"}
