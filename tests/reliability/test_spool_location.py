"""Where a real fit spools when its working directory is read-only, and what it says about it.

A Trainer with ``SpoolingMLFlowLogger`` (tracking URI: a loopback port nothing listens on, default ``spool_dir``, so
``./mlflow-spool`` of the working directory) and a ``SpectrumMonitor`` fits in a subprocess whose working directory it
cannot write. Run as root, the subprocess runs as the unprivileged user 65534 (``setpriv``), since root writes
anywhere; run as anyone else, directory permissions apply to the test's own user. The spool must go to the per-user
cache, else to ``<TMPDIR>/rmt-callbacks-<uid>/mlflow-spool``, else nowhere: training still ends, and the operations
dropped are counted.

The directories are made with ``tempfile.mkdtemp`` under ``/tmp`` (pytest's ``tmp_path`` lies below a directory of
mode 700 that the unprivileged user cannot traverse) and removed at the end. Besides HOME, MPLCONFIGDIR and
XDG_CACHE_HOME, the subprocess gets TORCHINDUCTOR_CACHE_DIR: importing torch creates a cache directory, by default
under the temporary directory, which is read-only in one case. In that case the script also names TMPDIR as Python's
temporary directory outright: with TMPDIR unwritable, ``tempfile.gettempdir()`` would fall back to ``/tmp``, which is
writable on every machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

EXPERIMENT = "read-only-cwd"
MAX_STEPS = 6
ANALYSED = [0, 2, 4, 6]  # every_n_train_steps=2: the start of training, then every second step
NOBODY = 65534

SCRIPT = r'''
"""Fits a tiny model with SpoolingMLFlowLogger(tracking_uri=argv[1]) and prints the warnings, as JSON, at the end.

argv[2]: the tests directory, for the scaffold's toy module, loader and Trainer."""
import json, os, sys, tempfile, warnings

if os.environ.get("TMPDIR_ONLY"):  # Python falls back from an unwritable TMPDIR to /tmp, writable on any machine
    tempfile.tempdir = os.environ["TMPDIR"]

import torch

from rmt_callbacks import SpectrumMonitor
from rmt_callbacks.sinks import SpoolingMLFlowLogger
from rmt_callbacks.sinks._delivery import _Delivery

queued = []  # every operation queued for delivery (to check the count of those spooled or dropped); counted where
_put = _Delivery._put  # they enter the queue, not where a monitor's worker builds them (MlflowWriter.prepared)
_Delivery._put = lambda self, op: (queued.append(op["kind"]), _put(self, op))[1]

sys.path.insert(0, sys.argv[2])
from scaffold import Toy, quiet_trainer, random_loader

torch.set_num_threads(1)
data = random_loader(64, 8, 4, batch_size=8, seed=1)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    logger = SpoolingMLFlowLogger(experiment_name="read-only-cwd", tracking_uri=sys.argv[1])
    trainer = quiet_trainer(
        max_steps=6, logger=logger, log_every_n_steps=1,
        callbacks=[SpectrumMonitor(every_n_train_steps=2, overhead_budget=None, background=False)],
    )
    trainer.fit(Toy(8, 12, 4, seed=0, log="train_loss"), data)
result = {
    "warnings": [str(w.message) for w in caught], "spool_dir": str(logger.spool_dir), "uid": os.getuid(),
    "global_step": trainer.global_step, "queued": len(queued),
}
print("RESULT " + json.dumps(result))
'''


def closed_port_uri() -> str:
    """An http URI on loopback that refuses connections (the port was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def as_user() -> list[str]:
    """The command prefix that runs the fit as an unprivileged user: ``setpriv`` as root, nothing otherwise.

    The interpreter may lie below a directory that user cannot traverse (root's home, mode 700); the user then
    keeps CAP_DAC_READ_SEARCH, which lets it read and traverse any directory and write none: a read-only directory
    stays read-only to it.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: no unprivileged user to run the fit as")
    user = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    for extra in ([], ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]):
        check = [*user, *extra, sys.executable, "-c", "import rmt_callbacks"]
        if subprocess.run(check, cwd="/", capture_output=True, timeout=120).returncode == 0:
            return [*user, *extra]
    pytest.skip(f"user {NOBODY} cannot run {sys.executable} with this checkout")


@dataclass(frozen=True)
class Place:
    """The directories of one fit: the working directory, HOME, the cache, TMPDIR and the libraries' caches."""

    work: Path
    home: Path
    cache: Path
    tmp: Path
    mpl: Path
    inductor: Path
    script: Path


@pytest.fixture
def place(as_user: list[str]) -> Iterator[Place]:
    base = Path(tempfile.mkdtemp(prefix="rmt-spool-location-", dir="/tmp"))
    try:
        base.chmod(0o755)
        dirs = {name: base / name for name in ("work", "home", "cache", "tmp", "mpl", "inductor")}
        for path in dirs.values():
            path.mkdir()
        script = base / "fit.py"
        script.write_text(SCRIPT)
        script.chmod(0o644)
        for name in ("mpl", "inductor"):  # matplotlib's and torch's own caches: always writable
            _writable(dirs[name], as_user)
        for name in ("work", "home"):
            dirs[name].chmod(0o555)
        yield Place(**dirs, script=script)
    finally:
        for path in [base, *base.rglob("*")]:  # what the fit made read-only, or made as the unprivileged user
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(base)


def _writable(path: Path, as_user: list[str]) -> None:
    if as_user:
        os.chown(path, NOBODY, NOBODY)
    path.chmod(0o755)


def _fit(place: Place, as_user: list[str], uri: str, *, cache: bool, tmp: bool) -> dict[str, Any]:
    """Fit in ``place.work`` (read-only) with the cache and TMPDIR writable or not; the script's result."""
    for path, writable in ((place.cache, cache), (place.tmp, tmp)):
        if writable:
            _writable(path, as_user)
        else:
            path.chmod(0o555)
    env = os.environ | {
        "HOME": str(place.home),
        "MPLCONFIGDIR": str(place.mpl),
        "XDG_CACHE_HOME": str(place.cache),
        "TMPDIR": str(place.tmp),
        "TORCHINDUCTOR_CACHE_DIR": str(place.inductor),
        "OMP_NUM_THREADS": "1",
    }
    if not tmp:
        env["TMPDIR_ONLY"] = "1"
    command = [*as_user, sys.executable, str(place.script), uri, str(Path(__file__).resolve().parents[1])]
    out = subprocess.run(command, cwd=place.work, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    results = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(results) == 1, out.stdout[-3000:]
    result = json.loads(results[0].removeprefix("RESULT "))
    assert result["global_step"] == MAX_STEPS  # training finished
    assert result["uid"] == (NOBODY if as_user else os.getuid())
    assert not (place.work / "mlflow-spool").exists()
    return result


def _ours(result: dict[str, Any]) -> list[str]:
    """The warnings about the tracking server and the spool (not those of torch or Lightning)."""
    return [m for m in result["warnings"] if "spool" in m or "MLflow" in m]


def _paths(message: str) -> list[Path]:
    """The absolute paths in ``message`` (not the path of a URL)."""
    return [Path(p) for p in re.findall(r"(?:^|(?<=[\s(]))(/[^\s;()]+)", message)]


def _spooled_where_said(result: dict[str, Any], place: Place, root: Path, uri: str) -> Path:
    """The spool is below ``root``; the first warning says the working directory could not be written and names
    the spool; every other path a warning names exists; the spool holds every operation queued, in one line each."""
    spool = Path(result["spool_dir"])
    assert spool.parent == root / f"new-{EXPERIMENT}" and (spool / "manifest.json").is_file()
    refused = place.work / "mlflow-spool" / f"new-{EXPERIMENT}" / spool.name
    ours = _ours(result)
    denied = "(PermissionError: Permission denied)"
    assert ours[0] == f"cannot write the spool to {refused} {denied}; spooling to {spool} instead"
    for message in ours:
        for path in _paths(message):
            assert path.exists() != (path == refused), (path, message)
    lines = (spool / "ops.jsonl").read_text().splitlines()
    assert len(lines) == result["queued"] and json.loads(lines[-1]) == {"kind": "terminate", "status": "FINISHED"}
    undelivered = f"{len(lines)} operations not delivered; they are spooled in {spool} (replay: "
    assert ours[-1].startswith(f"MLflow tracking server {uri}: {undelivered}")
    return spool


def test_read_only_cwd_spools_to_the_user_cache(
    place: Place, as_user: list[str], store: tuple[str, Path], tmp_path: Path
) -> None:
    uri = closed_port_uri()
    result = _fit(place, as_user, uri, cache=True, tmp=True)
    spool = _spooled_where_said(result, place, place.cache / "rmt-callbacks" / "mlflow-spool", uri)
    ops = [json.loads(line) for line in (spool / "ops.jsonl").read_text().splitlines()]  # replay clears them
    assert not any(place.tmp.glob("rmt-callbacks-*"))

    command = [sys.executable, "-m", "rmt_callbacks.sinks.spool", "replay", str(spool), "--tracking-uri", store[0]]
    out = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)  # as the test's user
    assert out.returncode == 0 and "Traceback" not in out.stderr, out
    run_id = json.loads((spool / "manifest.json").read_text())["run_id"]
    summary = f"{spool}: run {run_id}: {result['queued']} replayed, 0 skipped, 0 refused, 0 left"
    assert out.stdout.splitlines() == [summary]
    client = MlflowClient(store[0])
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and client.get_experiment(run.info.experiment_id).name == EXPERIMENT
    assert sorted(m.step for m in client.get_metric_history(run_id, "train_loss")) == list(range(MAX_STEPS))
    for name in ("fc1.weight", "fc2.weight"):
        assert sorted(m.step for m in client.get_metric_history(run_id, f"rmt/{name}/lambda_max")) == ANALYSED
    files = {op["artifact_file"] for op in ops if "artifact_file" in op}  # arrays, tables, figures
    spectra = sorted(int(found.group(1)) for f in files if (found := re.search(r"spectra/step_(\d+)\.npz$", f)))
    assert spectra == ANALYSED
    assert _artifacts(client, run_id) == files


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    """Every artifact file of the run, below ``path``."""
    found = set()
    for info in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, info.path) if info.is_dir else {info.path}
    return found


def test_read_only_cwd_and_cache_spool_to_tmpdir(place: Place, as_user: list[str]) -> None:
    uri = closed_port_uri()
    result = _fit(place, as_user, uri, cache=False, tmp=True)
    _spooled_where_said(result, place, place.tmp / f"rmt-callbacks-{result['uid']}" / "mlflow-spool", uri)
    assert not (place.cache / "rmt-callbacks").exists()


def test_nowhere_to_spool_training_finishes_and_counts_the_dropped(place: Place, as_user: list[str]) -> None:
    uri = closed_port_uri()
    result = _fit(place, as_user, uri, cache=False, tmp=False)
    leaf = Path(f"new-{EXPERIMENT}") / Path(result["spool_dir"]).name
    tried = [
        place.work / "mlflow-spool" / leaf,
        place.cache / "rmt-callbacks" / "mlflow-spool" / leaf,
        place.tmp / f"rmt-callbacks-{result['uid']}" / "mlflow-spool" / leaf,
    ]
    ours = _ours(result)
    nowhere = [m for m in ours if m.startswith("no spool location can be written")]
    assert nowhere == [
        "no spool location can be written (tried "
        + "; ".join(f"{path} (PermissionError: Permission denied)" for path in tried)
        + "): operations that cannot be delivered are dropped (how many is said at the end); pass spool_dir= a "
        "writable directory"
    ]
    assert ours[0] == nowhere[0]
    assert ours[-1] == f"MLflow tracking server {uri}: {result['queued']} operations were dropped (no spool)"
    assert result["queued"] > len(ANALYSED) + MAX_STEPS  # the monitor's and the logger's operations, all dropped
    assert not [m for m in ours if re.search(r"spooling to|spooled (in|to)", m)]  # no spool claimed anywhere
    assert not any(path.exists() for message in ours for path in _paths(message))
    assert list(place.cache.iterdir()) == [] and list(place.tmp.iterdir()) == []
