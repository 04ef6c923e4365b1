"""A real ``mlflow server`` on loopback that goes away and comes back: writes never wait for it, every metric step
and artifact reaches the run exactly once, and the user is told once when it went and once when it caught up.

The server is killed with SIGKILL (a crash, not a shutdown) and restarted on the same port with the same sqlite
backend and artifact directory. Each start of the server takes tens of seconds on a loaded machine, so these tests
are ``slow``; the same paths against a sqlite store and a refused port run by default in ``tests/sinks/test_spool.py``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import MLFlowLogger
from mlflow import MlflowClient

from rmt_callbacks.sinks.spool import MlflowWriter, replay

from scaffold import Toy, quiet_trainer, random_loader

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, mlflow_server: Any) -> Iterator[Any]:
    """One server for the module; each test leaves it running."""
    srv = mlflow_server(tmp_path_factory.mktemp("server"))
    srv.start()
    yield srv
    srv.kill()
    print(f"mlflow server start times (s): {[round(s, 1) for s in srv.start_s]}; load {os.getloadavg()}")


def _steps_once(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def _check_arrays(client: MlflowClient, run_id: str, steps: range, tmp_path: Path) -> None:
    names = {f.path for f in client.list_artifacts(run_id, "spectra")}
    assert names == {f"spectra/step_{s:08d}.npz" for s in steps}
    local = client.download_artifacts(run_id, f"spectra/step_{steps[-1]:08d}.npz", str(tmp_path))
    with np.load(local, allow_pickle=False) as arrays:
        np.testing.assert_array_equal(arrays["fc.weight"], np.full(3, float(steps[-1])))


def _write_step(writer: MlflowWriter, step: int) -> float:
    """One monitor's worth of writes at ``step``; returns how long the calls took."""
    began = time.perf_counter()
    writer.log_metrics({f"rmt/fc{i}.weight/lambda_max": step + i / 10 for i in range(20)}, step=step)
    writer.log_arrays({"fc.weight": np.full(3, float(step))}, f"spectra/step_{step:08d}.npz")
    if step % 10 == 0:
        writer.log_table([{"step": step, "name": "fc.weight"}], f"fits/step_{step:08d}.json")
    return time.perf_counter() - began


def test_server_killed_during_writes_and_restarted(server: Any, tmp_path: Path) -> None:
    client = MlflowClient(server.url)
    run_id = client.create_run(client.create_experiment("outage")).info.run_id
    messages: list[str] = []
    writer = MlflowWriter(
        client, run_id, tracking_uri=server.url, spool_dir=tmp_path / "spool", warn=messages.append,
        retry_interval_s=0.5,
    )  # fmt: skip
    calls = []
    for step in range(40):
        calls.append(_write_step(writer, step))
        if step == 15:
            server.kill()  # the writer may be inside a request: it then sits in MLflow's retry loop (watchdog)
        time.sleep(0.02)
    outage_calls = calls[16:]
    assert not writer.flush(timeout_s=60)  # down: returns once everything is on disk
    assert messages == [f"MLflow tracking server {server.url} unreachable; spooling to {writer.spool_dir}"]
    server.start()
    for step in range(40, 50):
        calls.append(_write_step(writer, step))
    assert writer.flush(timeout_s=300)
    assert writer.close(timeout_s=30)

    for key in ("rmt/fc0.weight/lambda_max", "rmt/fc19.weight/lambda_max"):
        assert _steps_once(client, run_id, key) == list(range(50)), key
    _check_arrays(client, run_id, range(50), tmp_path)
    for step in range(0, 50, 10):
        path = client.download_artifacts(run_id, f"fits/step_{step:08d}.json", str(tmp_path))
        assert json.loads(Path(path).read_text())["data"] == [[step, "fc.weight"]]  # not appended twice
    assert len(messages) == 2 and messages[1].startswith(f"MLflow tracking server {server.url} caught up: ")
    assert not (writer.spool_dir / "ops.jsonl").exists()
    print(f"write calls during the outage: max {max(outage_calls) * 1e3:.1f} ms; {messages[1]}")


def test_unreachable_from_the_start_then_replayed_into_a_started_server(server: Any, tmp_path: Path) -> None:
    server.kill()
    messages: dict[str, list[str]] = {"replayed": [], "live": []}
    writers = {
        name: MlflowWriter(
            MlflowClient(server.url),
            None,
            tracking_uri=server.url,
            spool_dir=tmp_path / name,
            experiment_name=f"late-{name}",
            warn=messages[name].append,
            retry_interval_s=0.5,
        )
        for name in messages
    }
    calls = [_write_step(w, step) for step in range(12) for w in writers.values()]
    assert not writers["replayed"].close(timeout_s=10)  # the process "ends" before the server is back
    assert not writers["live"].flush(timeout_s=10)
    for name, writer in writers.items():
        lines = (writer.spool_dir / "ops.jsonl").read_text().splitlines()
        assert len(lines) == 12 * 2 + 2 + (name == "replayed")  # metrics + arrays per step, 2 tables, "terminate"
        assert len(list((writer.spool_dir / "files").glob("*/*.npz"))) == 12
        assert messages[name][0] == f"MLflow tracking server {server.url} unreachable; spooling to {writer.spool_dir}"
    assert str(writers["replayed"].spool_dir) in messages["replayed"][1]

    server.start()
    report = replay(writers["replayed"].spool_dir)  # the URI in the manifest
    assert (report.replayed, report.remaining) == (27, 0)
    assert writers["live"].flush(timeout_s=300)  # the live writer found the server by itself and created its run
    assert writers["live"].close(timeout_s=30)
    assert messages["live"][1] == f"MLflow tracking server {server.url} caught up: 26 operations replayed"
    client = MlflowClient(server.url)
    for name, run_id in (("replayed", report.run_id), ("live", writers["live"].run_id)):
        run = client.get_run(run_id)
        assert client.get_experiment(run.info.experiment_id).name == f"late-{name}"
        assert run.info.status == "FINISHED"
        assert _steps_once(client, run_id, "rmt/fc3.weight/lambda_max") == list(range(12))
        _check_arrays(client, run_id, range(12), tmp_path / name)
    print(f"write calls with the server unreachable: max {max(calls) * 1e3:.1f} ms")


class WritesEveryStep(pl.Callback):
    """Logs through the logger's shared writer after every batch; kills the server at one step, restarts it later."""

    def __init__(self, server: Any, spool_dir: Path, *, kill_at: int, restart_at: int) -> None:
        self.server, self.spool_dir, self.kill_at, self.restart_at = server, spool_dir, kill_at, restart_at
        self.messages: list[str] = []
        self.calls: dict[int, float] = {}
        self.delivered: bool | None = None

    def _writer(self, trainer: pl.Trainer) -> MlflowWriter:
        return MlflowWriter.for_logger(
            trainer.logger, spool_dir=self.spool_dir, warn=self.messages.append, retry_interval_s=0.5
        )

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Toy, *args: Any) -> None:
        step = trainer.global_step
        began = time.perf_counter()
        writer = self._writer(trainer)
        weight = pl_module.fc.weight.detach().double().numpy()  # (1, 3)
        writer.log_metrics({"rmt/fc.weight/norm": float(np.linalg.norm(weight))}, step=step)
        writer.log_arrays({"fc.weight": weight}, f"weights/step_{step:08d}.npz")
        self.calls[step] = time.perf_counter() - began
        if step == self.kill_at:
            self.server.kill()
        if step == self.restart_at:
            self.server.start()  # blocks this test's training while the server boots, not the writer

    def on_train_end(self, trainer: pl.Trainer, pl_module: Toy) -> None:
        self.delivered = self._writer(trainer).close(timeout_s=120)


def test_lightning_training_through_an_outage(server: Any, tmp_path: Path) -> None:
    data = random_loader(240, 3, batch_size=8, seed=0, target=lambda x: x @ torch.tensor([[1.0], [-2.0], [0.5]]))
    logger = MLFlowLogger(experiment_name="lightning-outage", tracking_uri=server.url)
    writes = WritesEveryStep(server, tmp_path / "spool", kill_at=10, restart_at=25)
    trainer = quiet_trainer(max_steps=40, default_root_dir=tmp_path, logger=logger, callbacks=[writes])
    trainer.fit(Toy(3, 1), data)  # y = w·x + b; no self.log: the Trainer never calls the logger mid-fit

    assert trainer.state.finished and writes.delivered
    client = MlflowClient(server.url)
    assert _steps_once(client, logger.run_id, "rmt/fc.weight/norm") == list(range(1, 41))  # global_step after a batch
    assert {f.path for f in client.list_artifacts(logger.run_id, "weights")} == {
        f"weights/step_{s:08d}.npz" for s in range(1, 41)
    }
    spooling = f"MLflow tracking server {server.url} unreachable; spooling to {tmp_path / 'spool' / logger.run_id}/"
    assert writes.messages[0].startswith(spooling)  # the run's own spool, one directory per process
    assert len(writes.messages) == 2 and " caught up: " in writes.messages[1]
    assert client.get_run(logger.run_id).info.status == "FINISHED"  # Lightning's finalize, server back by then
    outage = [t for step, t in writes.calls.items() if 10 < step <= 25]
    print(f"callback writes during the outage: max {max(outage) * 1e3:.1f} ms; {writes.messages[1]}")


class Outage(pl.Callback):
    """Kills the server after one step and restarts it after a later one; times every monitor hook meanwhile."""

    def __init__(self, server: Any, *, kill_at: int, restart_at: int) -> None:
        self.server, self.kill_at, self.restart_at = server, kill_at, restart_at
        self.began: float = 0.0
        self.hook_s: dict[int, float] = {}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step == self.kill_at:
            self.server.kill()
        if step == self.restart_at:
            self.server.start()
        self.began = time.perf_counter()  # the monitors' hooks run after this callback's

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self.began:
            self.hook_s[trainer.global_step] = time.perf_counter() - self.began  # monitor hooks + data loading


def test_monitors_train_through_an_outage(server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SpectrumMonitor and DysonMonitor with an MLFlowLogger on a server that dies at step 6 and is back at 16:
    training never waits for it, every analysed step and every artifact is in the run exactly once, and the
    user hears twice: when it went and when it caught up."""
    import warnings

    from rmt_callbacks import DysonMonitor, SpectrumMonitor

    monkeypatch.chdir(tmp_path)  # the default spool, ./mlflow-spool/<run id>, goes here
    data = random_loader(256, 8, 4, batch_size=8, seed=1)
    logger = MLFlowLogger(experiment_name="monitors-outage", tracking_uri=server.url)
    outage = Outage(server, kill_at=6, restart_at=16)
    spectrum = SpectrumMonitor(  # in the hook: every due step exactly (a background worker drawing figures falls
        every_n_train_steps=2,
        overhead_budget=None,
        figure_every_n_analyses=5,
        background=False,  # behind, late)
    )
    dyson = DysonMonitor(every_n_train_steps=1, log_every_n_steps=5, window=4, overhead_budget=None)
    trainer = quiet_trainer(max_steps=24, default_root_dir=tmp_path, logger=logger, callbacks=[outage, spectrum, dyson])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(Toy(8, 12, 4, seed=0), data)  # two Linear layers; never calls self.log

    client = MlflowClient(server.url)
    run_id = logger.run_id
    for name in ("fc1.weight", "fc2.weight"):
        assert _steps_once(client, run_id, f"rmt/{name}/lambda_max") == list(range(0, 25, 2)), name
        assert _steps_once(client, run_id, f"rmt/{name}/dyson_width") == [5, 10, 15, 20, 24], name  # 24: the end
    assert _steps_once(client, run_id, "rmt/dyson/noise_temperature") == [5, 10, 15, 20, 24]
    assert {f.path for f in client.list_artifacts(run_id, "rmt/monitor/spectra")} >= {
        f"rmt/monitor/spectra/step_{s:08d}.npz" for s in range(0, 25, 2)
    }
    assert {f.path for f in client.list_artifacts(run_id, "rmt/monitor/fits")} == {
        f"rmt/monitor/fits/step_{s:08d}.json" for s in range(0, 25, 2)
    }
    assert {f.path for f in client.list_artifacts(run_id, "rmt/monitor/figures/fc1.weight")} == {
        f"rmt/monitor/figures/fc1.weight/step_{s:08d}.png"
        for s in (0, 10, 20, 24)  # every 5th analysis and the last
    } | {"rmt/monitor/figures/fc1.weight/evolution.png"}
    messages = [str(w.message) for w in caught if "MLflow tracking server" in str(w.message)]
    assert len([m for m in messages if "unreachable" in m]) == 1, messages
    assert len([m for m in messages if "caught up" in m]) == 1, messages
    during = [s for step, s in outage.hook_s.items() if 6 < step <= 15]
    print(f"monitor hooks during the outage: max {max(during) * 1e3:.1f} ms")
    assert max(during) < 10.0  # never MLflow's retry loop (about 4 minutes on a refused port)
