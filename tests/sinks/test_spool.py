"""MlflowWriter against a real sqlite store; outages made real by a tracking URI whose port nothing listens on."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from lightning.pytorch.loggers import MLFlowLogger
from mlflow import MlflowClient

from rmt_callbacks.sinks.spool import MlflowWriter, probe, replay


def _new_run(store: tuple[str, Path], name: str) -> tuple[MlflowClient, str]:
    uri, artifacts = store
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment(name, artifact_location=(artifacts / name).as_uri())
    return client, client.create_run(experiment).info.run_id


def closed_port_uri() -> str:
    """An http URI on loopback that refuses connections (the port was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _png() -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1], [1, 0])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _write_everything(writer: MlflowWriter, steps: range, keys: int = 1200) -> None:
    """Per step: ``keys`` metrics (over 1000: two log_batch requests), arrays, a table; a figure and tags at the end.

    A replay reads the history of every key it meets once, so the replay tests use few keys.
    """
    for step in steps:
        writer.log_metrics({f"rmt/m{i}/lambda_max": step + i / 1000 for i in range(keys)}, step=step)
        writer.log_arrays({"fc.weight": np.arange(4.0) * step}, f"spectra/step_{step:08d}.npz")
        writer.log_table([{"step": step, "name": "fc.weight", "ks": np.float64(0.5)}], f"fits/step_{step:08d}.json")
    writer.log_image(_png(), "figures/fc.weight/last.png")
    writer.set_tags({f"rmt.skipped.layer{i}": f"reason {i}" for i in range(150)})  # two requests


def _check_run(client: MlflowClient, run_id: str, steps: range, tmp_path: Path, keys: int = 1200) -> None:
    """Every step once, every artifact there, every table one row, tags and the table registration present."""
    for key in ("rmt/m0/lambda_max", f"rmt/m{keys - 1}/lambda_max"):
        history = client.get_metric_history(run_id, key)
        assert sorted(m.step for m in history) == list(steps), key
    last = client.get_metric_history(run_id, f"rmt/m{keys - 1}/lambda_max")[-1]
    assert last.value == pytest.approx(steps[-1] + (keys - 1) / 1000)
    for step in steps:
        local = client.download_artifacts(run_id, f"spectra/step_{step:08d}.npz", str(tmp_path))
        with np.load(local, allow_pickle=False) as arrays:
            np.testing.assert_array_equal(arrays["fc.weight"], np.arange(4.0) * step)
        table = json.loads(
            Path(client.download_artifacts(run_id, f"fits/step_{step:08d}.json", str(tmp_path))).read_text()
        )
        assert table["data"] == [[step, "fc.weight", 0.5]]
    png = client.download_artifacts(run_id, "figures/fc.weight/last.png", str(tmp_path))
    assert Path(png).read_bytes()[:4] == b"\x89PNG"
    tags = client.get_run(run_id).data.tags
    assert tags["rmt.skipped.layer149"] == "reason 149"
    tables = json.loads(tags["mlflow.loggedArtifacts"])
    assert {"path": f"fits/step_{steps[-1]:08d}.json", "type": "table"} in tables


def test_writes_reach_the_store_in_order(store: tuple[str, Path], tmp_path: Path) -> None:
    client, run_id = _new_run(store, "in-order")
    messages: list[str] = []
    writer = MlflowWriter(client, run_id, tracking_uri=store[0], spool_dir=tmp_path / "spool", warn=messages.append)
    _write_everything(writer, range(3))
    for value in ("first", "second", "third"):  # one tag rewritten: the last write wins only if order is kept
        writer.set_tags({"rmt.state": value})
    assert writer.flush(timeout_s=120)
    assert writer.close(timeout_s=10)
    _check_run(client, run_id, range(3), tmp_path)
    assert client.get_run(run_id).data.tags["rmt.state"] == "third"
    assert messages == [] and not writer.spool_dir.exists()  # nothing failed: no spool, nothing said


def test_unreachable_store_spools_and_replay_delivers_once(store: tuple[str, Path], tmp_path: Path) -> None:
    client, run_id = _new_run(store, "spooled")
    messages: list[str] = []
    uri = closed_port_uri()
    writer = MlflowWriter(MlflowClient(uri), run_id, tracking_uri=uri, spool_dir=tmp_path / "s", warn=messages.append)
    _write_everything(writer, range(4), keys=3)
    assert not writer.flush(timeout_s=60)  # the store is down: False, once everything is on disk
    assert not writer.close(timeout_s=5)
    spool = writer.spool_dir
    assert json.loads((spool / "manifest.json").read_text())["run_id"] == run_id
    lines = (spool / "ops.jsonl").read_text().splitlines()
    assert len(lines) == 4 * 3 + 1 + 2  # per step a metric batch, arrays, a table; a figure; 2 tag batches
    assert [json.loads(line)["kind"] for line in lines[:4]] == ["metrics", "artifact", "table", "metrics"]
    assert len(list((spool / "files").glob("*/*"))) == 4 + 1  # npz payloads and the figure
    assert messages[0] == f"MLflow tracking server {uri} unreachable; spooling to {spool}"
    assert len(messages) == 2 and "15 operations not delivered" in messages[1] and str(spool) in messages[1]

    copy = shutil.copytree(spool, tmp_path / "copy")  # the same spool replayed twice must not duplicate
    report = replay(spool, tracking_uri=store[0])
    assert (report.run_id, report.replayed, report.skipped, report.remaining) == (run_id, 15, 0, 0)
    assert not (spool / "ops.jsonl").exists() and not (spool / "files").exists()
    again = replay(copy, tracking_uri=store[0])
    assert (again.replayed, again.skipped, again.remaining) == (15, 4 * 3, 0)  # every value held; tables sent whole
    _check_run(client, run_id, range(4), tmp_path, keys=3)


def test_a_new_writer_names_a_spool_left_behind_and_leaves_it(store: tuple[str, Path], tmp_path: Path) -> None:
    """A writer sends only its own spool: an earlier process's spool of the same run is named, not replayed."""
    client, run_id = _new_run(store, "left-behind")
    uri = closed_port_uri()
    dead = MlflowWriter(MlflowClient(uri), run_id, tracking_uri=uri, spool_dir=tmp_path / "s", warn=lambda m: None)
    _write_everything(dead, range(2), keys=3)
    dead.close(timeout_s=5)
    assert dead.spool_dir.parent == tmp_path / "s" / run_id  # keyed by run, then by process
    messages: list[str] = []
    writer = MlflowWriter(client, run_id, tracking_uri=store[0], spool_dir=tmp_path / "s", warn=messages.append)
    assert writer.spool_dir != dead.spool_dir
    _write_everything(writer, range(2, 3), keys=3)
    assert writer.close(timeout_s=120)
    assert len(messages) == 1 and "1 spool(s) left by an earlier writer" in messages[0]
    assert messages[0].endswith(f"replay {dead.spool_dir})")
    assert _steps(client, run_id, "rmt/m0/lambda_max") == [2]  # not sent behind the user's back
    assert replay(dead.spool_dir).remaining == 9  # its own server is still away: nothing sent, nothing waited for
    assert replay(dead.spool_dir, tracking_uri=store[0]).complete
    _check_run(client, run_id, range(3), tmp_path, keys=3)


def test_two_runs_sharing_a_spool_dir_never_mix(store: tuple[str, Path], tmp_path: Path) -> None:
    """The issue's case: run 1 spooled with its server down, run 2 with the same spool_dir and the server up."""
    uri = closed_port_uri()
    first = MlflowWriter(
        MlflowClient(uri), None, tracking_uri=uri, spool_dir=tmp_path / "s", experiment_name="shared", warn=print
    )
    first.set_tags({"mlflow.runName": "first"})
    first.log_metrics({"rmt/a/x": 1.0}, step=0)
    first.close(timeout_s=5)
    client, run_id = _new_run(store, "shared-second")
    second = MlflowWriter(client, run_id, tracking_uri=store[0], spool_dir=tmp_path / "s", warn=print)
    second.set_tags({"mlflow.runName": "second"})
    second.log_metrics({"rmt/a/x": 2.0}, step=0)
    assert second.close(timeout_s=60)
    run = client.get_run(run_id)
    assert run.data.tags["mlflow.runName"] == "second"
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "rmt/a/x")] == [(0, 2.0)]
    report = replay(first.spool_dir, tracking_uri=store[0])  # the first run's spool goes into a run of its own
    assert report.complete and report.run_id != run_id
    assert client.get_run(report.run_id).data.tags["mlflow.runName"] == "first"
    assert [m.value for m in client.get_metric_history(report.run_id, "rmt/a/x")] == [1.0]


def test_run_created_by_replay_when_the_server_was_never_reached(store: tuple[str, Path], tmp_path: Path) -> None:
    uri = closed_port_uri()
    messages: list[str] = []
    writer = MlflowWriter(
        MlflowClient(uri), None, tracking_uri=uri, spool_dir=tmp_path / "s", experiment_name="never-reached",
        warn=messages.append,
    )  # fmt: skip
    writer.log_metrics({"rmt/a/x": 1.0} | {f"rmt/b/{i}": float(i) for i in range(2500)}, step=0)  # 3 requests
    writer.log_metrics({"rmt/a/x": 2.0}, step=5)
    writer.close(timeout_s=5)
    manifest = json.loads((writer.spool_dir / "manifest.json").read_text())
    assert manifest == {
        "format": 2,
        "tracking_uri": uri,
        "experiment_name": "never-reached",
        "run_id": None,
        "host": socket.gethostname(),
        "pid": None,
    }  # fmt: skip (the pid of the writing process, until its writer closed)
    assert writer.spool_dir.parent == tmp_path / "s" / "new-never-reached"
    assert writer.run_id is None and len(messages) == 2

    command = [sys.executable, "-m", "rmt_callbacks.sinks.spool", "replay", str(writer.spool_dir)]
    out = subprocess.run(
        [*command, "--tracking-uri", store[0]], capture_output=True, text=True, timeout=120, check=True
    )
    run_id = json.loads((writer.spool_dir / "manifest.json").read_text())["run_id"]
    expected = f"{writer.spool_dir}: run {run_id}: 5 replayed, 0 skipped, 0 refused, 0 left"
    assert out.stdout.strip() == expected  # 3 + 1 batches and "terminate"
    client = MlflowClient(store[0])
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and client.get_experiment(run.info.experiment_id).name == "never-reached"
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "rmt/a/x")] == [(0, 1.0), (5, 2.0)]
    assert client.get_run(run_id).data.metrics["rmt/b/2499"] == 2499.0


def test_rejected_operations_are_dropped_once_with_a_warning(store: tuple[str, Path], tmp_path: Path) -> None:
    client, run_id = _new_run(store, "rejected")
    client.delete_run(run_id)  # the store refuses writes into a deleted run (HTTP 400): no outage, no retry
    messages: list[str] = []
    writer = MlflowWriter(client, run_id, tracking_uri=store[0], spool_dir=tmp_path / "s", warn=messages.append)
    for step in range(3):
        writer.log_metrics({"rmt/a/x": 1.0}, step=step)
    assert not writer.close(timeout_s=60)  # not delivered, though nothing is left queued or spooled
    assert len(messages) == 1 and messages[0].startswith("MLflow rejected metrics at step 0 (MlflowException")
    assert not writer.spool_dir.exists()


def test_writes_after_close_go_to_the_spool(store: tuple[str, Path], tmp_path: Path) -> None:
    client, run_id = _new_run(store, "after-close")
    messages: list[str] = []
    writer = MlflowWriter(client, run_id, tracking_uri=store[0], spool_dir=tmp_path / "s", warn=messages.append)
    assert writer.close(timeout_s=30)
    writer.log_metrics({"rmt/a/x": 1.0}, step=1)
    writer.log_metrics({"rmt/a/x": 2.0}, step=2)
    assert messages == [f"MlflowWriter for {store[0]} is closed; spooling to {writer.spool_dir}"]
    assert len((writer.spool_dir / "ops.jsonl").read_text().splitlines()) == 2
    assert replay(tmp_path / "s" / run_id / writer.spool_dir.name).remaining == 0
    assert _steps(client, run_id, "rmt/a/x") == [1, 2]


def test_an_unwritable_spool_dir_falls_back_to_the_user_cache(store: tuple[str, Path], tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")  # a spool directory below a file can never be created, even by root
    client, run_id = _new_run(store, "fallback")
    uri, messages = closed_port_uri(), []
    writer = MlflowWriter(
        MlflowClient(uri), run_id, tracking_uri=uri, spool_dir=tmp_path / "a-file" / "s", warn=messages.append
    )
    for step in range(3):
        writer.log_metrics({"rmt/a/x": float(step)}, step=step)
    assert not writer.close(timeout_s=5)
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "rmt-callbacks" / "mlflow-spool" / run_id
    assert writer.spool_dir.parent == cache and (writer.spool_dir / "ops.jsonl").exists()
    assert messages[0].startswith(f"cannot write the spool to {tmp_path / 'a-file' / 's'}/{run_id}/")
    assert messages[0].endswith(f"(NotADirectoryError: Not a directory); spooling to {writer.spool_dir} instead")
    assert messages[1] == f"MLflow tracking server {uri} unreachable; spooling to {writer.spool_dir}"
    assert f"3 operations not delivered; they are spooled in {writer.spool_dir}" in messages[2]
    assert len(messages) == 3  # every path named is one that exists
    assert replay(writer.spool_dir, tracking_uri=store[0]).complete
    assert _steps(client, run_id, "rmt/a/x") == [0, 1, 2]


def test_with_nowhere_to_spool_writes_are_dropped_and_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a-file" / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "a-file" / "tmp"))
    uri, messages = closed_port_uri(), []
    writer = MlflowWriter(
        MlflowClient(uri), "r", tracking_uri=uri, spool_dir=tmp_path / "a-file" / "s", warn=messages.append
    )
    for step in range(3):
        writer.log_metrics({"rmt/a/x": 1.0}, step=step)
        assert not writer.flush(timeout_s=30)
    assert not writer.close(timeout_s=5)
    assert messages[0].startswith("no spool location can be written (tried ") and messages[0].count("a-file") == 3
    assert (
        messages[1]
        == f"MLflow tracking server {uri} unreachable; nothing can be spooled; undelivered operations are dropped"
    )
    assert messages[2] == f"MLflow tracking server {uri}: 3 operations were dropped (no spool)"
    assert len(messages) == 3 and writer.lost == 3


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_for_logger_shares_one_writer_per_run(store: tuple[str, Path], tmp_path: Path) -> None:
    uri = store[0]
    logger = MLFlowLogger(experiment_name="for-logger", tracking_uri=uri, artifact_location=(tmp_path / "a").as_uri())
    writer = MlflowWriter.for_logger(logger, spool_dir=tmp_path / "s")
    assert MlflowWriter.for_logger(logger) is writer and writer.run_id == logger.run_id
    writer.log_metrics({"rmt/a/x": 3.0}, step=7)
    assert writer.close(timeout_s=60)
    assert MlflowWriter.for_logger(logger) is not writer  # a closed writer is replaced
    MlflowWriter.for_logger(logger).close()
    assert [m.step for m in logger.experiment.get_metric_history(logger.run_id, "rmt/a/x")] == [7]


def test_for_logger_with_an_unreachable_server_does_not_touch_it(tmp_path: Path) -> None:
    messages: list[str] = []
    logger = MLFlowLogger(experiment_name="unreached", tracking_uri=closed_port_uri())
    writer = MlflowWriter.for_logger(logger, spool_dir=tmp_path / "s", warn=messages.append)
    assert MlflowWriter.for_logger(logger) is writer and writer.run_id is None
    writer.log_metrics({"rmt/a/x": 1.0}, step=1)
    assert not writer.close(timeout_s=10)
    assert not logger._initialized  # the logger was never asked for its run (that would wait out MLflow's retries)
    manifest = json.loads((writer.spool_dir / "manifest.json").read_text())
    assert manifest["experiment_name"] == "unreached" and manifest["run_id"] is None
    assert len(messages) == 2 and str(writer.spool_dir) in messages[1]


def test_bad_arguments_raise_at_the_call(store: tuple[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="MlflowWriter: retry_interval_s must be a positive finite number, got 0"):
        MlflowWriter(None, "r", tracking_uri=store[0], retry_interval_s=0)
    writer = MlflowWriter(MlflowClient(store[0]), "r", tracking_uri=store[0], spool_dir=tmp_path / "s")
    with pytest.raises(ValueError, match=r"ending in '\.npz'"):
        writer.log_arrays({"a": np.zeros(2)}, "spectra/a.json")
    with pytest.raises(ValueError, match="object dtype"):
        writer.log_arrays({"a": np.array([None, 1])}, "spectra/a.npz")
    with pytest.raises(TypeError, match="step must be an int"):
        writer.log_metrics({"a": 1.0}, step=1.5)
    with pytest.raises(ValueError, match="bytes of a PNG"):
        writer.log_image(b"GIF89a", "figures/a.png")
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        writer.log_table([{"a": object()}], "fits/a.json")
    assert writer.close(timeout_s=5)  # nothing was queued


def test_probe_answers_quickly_for_a_refused_port() -> None:
    assert probe(closed_port_uri()) is False
    assert probe("sqlite:///anything.db") is True
