"""SpoolingMLFlowLogger: a Trainer with a tracking URI that never answered trains, reports its spool, and the spool
replayed into a server started later on that URI is the complete run; with the server up it is Lightning's logger.

The unreachable server is a loopback port nothing listens on (connections are refused at once); the server that
comes later is a real ``mlflow server`` started on that port. Lightning's own ``MLFlowLogger`` in the same setting
sits in MLflow's retry loop, whose backoff alone sleeps 4 + 8 + 16 + 32 + 64 + 120 = 244 s, and then raises.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from mlflow import MlflowClient
from torch.utils.data import DataLoader, TensorDataset

from rmt_callbacks import SpectrumMonitor
from rmt_callbacks.sinks import SpoolingMLFlowLogger
from rmt_callbacks.sinks.spool import replay

from scaffold import Toy, quiet_trainer, random_loader

MAX_STEPS = 6
ANALYSED = list(range(0, MAX_STEPS + 1, 2))  # every_n_train_steps=2: steps 0 (train start), 2, 4, 6
RETRY_SLEEP_S = 244.0  # the backoff sleeps of one request in MLflow's retry loop (see rmt_callbacks.sinks.spool)


def _logs(fail_at: int | None = None) -> Toy:
    """Two Linear layers on random regression data; ``self.log`` every step; two hyperparameters."""
    return Toy(8, 12, 4, seed=0, log="train_loss", hparams={"lr": 0.05, "hidden": 12}, fail_at=fail_at)


class StartServer(pl.Callback):
    """Starts the server after one training step (training waits while it boots; the writer does not)."""

    def __init__(self, server: Any, at_step: int) -> None:
        self.server, self.at_step = server, at_step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == self.at_step:
            self.server.start()


def _fit(logger: SpoolingMLFlowLogger, root: Path, *extra: pl.Callback) -> tuple[pl.Trainer, list[str], float]:
    """Fit :func:`_logs` with a SpectrumMonitor; returns the trainer, the warning messages and the wall time."""
    data = random_loader(64, 8, 4, batch_size=8, seed=1)
    trainer = quiet_trainer(
        max_steps=MAX_STEPS, default_root_dir=root, logger=logger, log_every_n_steps=1, enable_checkpointing=True,
        callbacks=[SpectrumMonitor(every_n_train_steps=2, background=False), *extra],
    )  # fmt: skip  # in the hook: exactly the due steps, whatever the machine's load (the spool is under test)
    began = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(_logs(), data)
    return trainer, [str(w.message) for w in caught], time.monotonic() - began


def _fit_unreachable(tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    """Fit against ``url`` (nothing listens); checks what the process left behind; returns the spool and warnings."""
    monkeypatch.chdir(tmp_path)  # the default spool, ./mlflow-spool/new-<experiment>/<host>-<pid>-..., goes here
    logger = SpoolingMLFlowLogger(experiment_name="unreached", tracking_uri=url, run_name="r0", log_model=True)
    trainer, messages, wall_s = _fit(logger, tmp_path)
    print(f"fit with {url} unreachable: {wall_s:.1f} s wall, load {os.getloadavg()}")

    assert trainer.state.finished and trainer.global_step == MAX_STEPS
    assert wall_s < RETRY_SLEEP_S  # one request in MLflow's retry loop would sleep this long (not a speed check)
    spool = logger.spool_dir
    assert (
        spool is not None
        and spool.parent == tmp_path / "mlflow-spool" / "new-unreached"
        and (spool / "manifest.json").exists()
    )
    assert logger.run_id is None and logger.experiment_id is None  # no run: nothing waited
    assert (logger.name, logger.version) == ("unreached", spool.name)
    assert logger.spool_dir == spool  # asking for the run after finalize opened no second writer
    checkpoints = tmp_path / "unreached" / spool.name / "checkpoints"  # ModelCheckpoint: root/name/version
    assert (checkpoints / f"epoch=0-step={MAX_STEPS}.ckpt").exists()
    assert any(m.endswith(f"checkpoints are not uploaded now (they stay in {checkpoints}; the next upload while it "
               "answers takes them)") for m in messages)  # fmt: skip
    first = [m for m in messages if str(spool) in m]
    assert first and first[0].startswith(f"SpoolingMLFlowLogger: tracking server {url} unreachable; training goes on")
    ops = [json.loads(line) for line in (spool / "ops.jsonl").read_text().splitlines()]
    assert ops[0]["kind"] == "tags" and ops[0]["tags"]["mlflow.runName"] == "r0"  # for the run to be created
    assert ops[1] == {"kind": "params", "params": {"lr": "0.05", "hidden": "12"}}  # log_hyperparams before training
    assert sorted(op["step"] for op in ops if "train_loss" in op.get("metrics", {})) == list(range(MAX_STEPS))
    assert sorted(op["step"] for op in ops if "rmt/fc1.weight/lambda_max" in op.get("metrics", {})) == ANALYSED
    assert ops[-1] == {"kind": "terminate", "status": "FINISHED"}  # finalize: after everything else
    return spool, messages


def test_unreachable_from_the_start_trains_and_spools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # free a moment ago: connections are refused
    spool, messages = _fit_unreachable(tmp_path, url, monkeypatch)
    assert len([m for m in messages if "training goes on" in m]) == 1  # warned once
    assert any("operations not delivered" in m and str(spool) in m for m in messages)  # and where it is at the end


def test_unreachable_and_fit_raises_the_spooled_run_ends_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    logger = SpoolingMLFlowLogger(experiment_name="fails", tracking_uri=url)
    trainer = quiet_trainer(
        max_steps=MAX_STEPS, logger=logger, log_every_n_steps=1,
        callbacks=[SpectrumMonitor(every_n_train_steps=2, overhead_budget=None)],
    )  # fmt: skip
    data = DataLoader(TensorDataset(torch.zeros(64, 8), torch.zeros(64, 4)), batch_size=8)
    with warnings.catch_warnings(), pytest.raises(RuntimeError, match="step 3"):
        warnings.simplefilter("ignore")
        trainer.fit(_logs(fail_at=3), data)
    ops = [json.loads(line) for line in (logger.spool_dir / "ops.jsonl").read_text().splitlines()]
    assert ops[-1] == {"kind": "terminate", "status": "FAILED"}
    assert sorted(op["step"] for op in ops if "train_loss" in op.get("metrics", {})) == [0, 1, 2]
    spools = [p.name for p in (tmp_path / "mlflow-spool" / "new-fails").iterdir()]
    assert spools == [logger.spool_dir.name]  # one spool, one run


@pytest.fixture
def server(tmp_path: Path, mlflow_server: Any) -> Iterator[Any]:
    srv = mlflow_server(tmp_path / "server")
    srv.root.mkdir()
    yield srv
    srv.kill()


def _check_run(client: MlflowClient, run_id: str, name: str) -> None:
    """The run holds self.log's metric at every step, the hyperparameters, the monitor's metrics and spectra."""
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == name
    assert run.data.params == {"lr": "0.05", "hidden": "12"}
    assert sorted(m.step for m in client.get_metric_history(run_id, "train_loss")) == list(range(MAX_STEPS))
    for name in ("fc1.weight", "fc2.weight"):
        assert sorted(m.step for m in client.get_metric_history(run_id, f"rmt/{name}/lambda_max")) == ANALYSED
    spectra = {f.path for f in client.list_artifacts(run_id, "rmt/monitor/spectra")}
    assert spectra >= {f"rmt/monitor/spectra/step_{s:08d}.npz" for s in ANALYSED}


@pytest.mark.slow
def test_spool_replayed_into_a_server_started_later(
    server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool, _ = _fit_unreachable(tmp_path, server.url, monkeypatch)
    server.start()
    report = replay(spool)
    assert report.remaining == 0 and report.rejected == 0 and report.run_id is not None
    client = MlflowClient(server.url)
    _check_run(client, report.run_id, "r0")
    experiment = client.get_experiment_by_name("unreached")
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [report.run_id]


@pytest.mark.slow
def test_server_that_comes_back_mid_training_gets_one_run(
    server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer creates the run on first contact; the logger takes it, so everything is in that one run.

    Training ends moments after the server is back, usually before the writer's next probe (every 2 s): finalize
    waits for that probe and the replay instead of leaving the run to a later replay."""
    monkeypatch.chdir(tmp_path)
    logger = SpoolingMLFlowLogger(
        experiment_name="late", tracking_uri=server.url, run_name="r2", log_model=True, retry_interval_s=2.0
    )
    trainer, messages, _ = _fit(logger, tmp_path, StartServer(server, at_step=2))
    assert trainer.state.finished and logger.run_id is not None
    assert any(" caught up: " in m for m in messages), messages
    client = MlflowClient(server.url)
    _check_run(client, logger.run_id, "r2")
    assert [r.info.run_id for r in client.search_runs([logger.experiment_id])] == [logger.run_id]
    assert f"epoch=0-step={MAX_STEPS}" in {f.path for f in client.list_artifacts(logger.run_id)}  # uploaded at the end
    assert not (logger.spool_dir / "ops.jsonl").exists()  # delivered


@pytest.mark.slow
def test_with_the_server_up_it_is_lightnings_logger(server: Any, tmp_path: Path) -> None:
    server.start()
    logger = SpoolingMLFlowLogger(experiment_name="up", tracking_uri=server.url, run_name="r1", log_model=True)
    trainer, messages, _ = _fit(logger, tmp_path)
    assert trainer.state.finished
    assert not [m for m in messages if "unreachable" in m or "spool" in m], messages
    client = MlflowClient(server.url)
    _check_run(client, logger.run_id, "r1")  # the logger's metrics and parameters and the monitor's: one run
    assert f"epoch=0-step={MAX_STEPS}" in {f.path for f in client.list_artifacts(logger.run_id)}  # log_model
    assert logger.version == logger.run_id and logger.name == logger.experiment_id
    assert (tmp_path / logger.name / logger.run_id / "checkpoints" / f"epoch=0-step={MAX_STEPS}.ckpt").exists()
    assert [r.info.run_id for r in client.search_runs([logger.experiment_id])] == [logger.run_id]
    assert logger.spool_dir is not None and not logger.spool_dir.exists()  # nothing had to be spooled


def test_replayed_parameters_the_run_already_holds_are_left_out(tmp_path: Path) -> None:
    """MLflow parameters cannot change: a replay sends only the keys the run lacks (the first value stays)."""
    from rmt_callbacks.sinks.spool import MlflowWriter

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("params")).info.run_id
    client.log_param(run_id, "lr", "0.1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{s.getsockname()[1]}"  # the writer probes this one: down, so it spools
    writer = MlflowWriter(client, run_id, tracking_uri=refused, spool_dir=tmp_path / "s", warn=lambda m: None)
    with pytest.raises(ValueError, match="status must be 'FINISHED', 'FAILED' or 'KILLED', got 'DONE'"):
        writer.terminate("DONE")
    writer.log_params({"lr": 0.2, "hidden": 12})
    writer.terminate("FAILED")
    assert not writer.close(timeout_s=10)
    report = replay(writer.spool_dir, tracking_uri=uri)
    assert (report.replayed, report.skipped, report.rejected, report.remaining) == (2, 1, 0, 0)
    run = client.get_run(run_id)
    assert run.data.params == {"lr": "0.1", "hidden": "12"} and run.info.status == "FAILED"
