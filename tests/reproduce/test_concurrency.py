"""``--jobs``: the same numbers, files and MLflow runs whether the training runs go one after another or at once.

Real training, real worker processes, a real sqlite MLflow store per run, read back with ``MlflowClient``. What
may differ between two runs of the same command is only the time: ``seconds`` in ``summary.json`` and the monitor's
own bookkeeping metrics (``rmt/monitor/*``: analysis seconds, overhead, pacing); everything else must be equal.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from rmt_callbacks.cli import build_parser
from rmt_callbacks.reproduce.commands import _rbm_grid
from rmt_callbacks.reproduce.launch import settings_from_args

#: The monitor's timing and pacing metrics: they measure the machine, not the run.
TIMING = "rmt/monitor/"
LINE = r"(?P<name>[\w.]+): (?:(?P<steps>\d+) steps in )?\d+ s -> (?P<out>\S+) \(MLflow run (?P<run>[0-9a-f]{32})\)"


def _runs(uri: str) -> dict[str, dict[str, Any]]:
    """Every run of the experiment by name: params, tags (not MLflow's own), metrics, artifacts."""
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("rmt-reproduce")
    runs: dict[str, dict[str, Any]] = {}
    for run in client.search_runs([experiment.experiment_id]):
        assert run.info.run_name not in runs, f"two runs named {run.info.run_name}"
        metrics = run.data.metrics
        runs[run.info.run_name] = {
            "status": run.info.status,
            "params": run.data.params,
            "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
            "nested": "mlflow.parentRunId" in run.data.tags,
            "metric_keys": sorted(metrics),
            "metrics": {k: v for k, v in metrics.items() if not k.startswith(TIMING)},
            "artifacts": sorted(a.path for a in client.list_artifacts(run.info.run_id)),
        }
    return runs


def test_two_workers_train_the_same_rbm_settings_as_one_process(tmp_path: Path) -> None:
    grid = ((0.1, 16), (0.05, 8))
    results, stores = {}, {}
    for jobs in (1, 2):
        uri = f"sqlite:///{tmp_path / f'mlflow{jobs}.db'}"
        argv = ["fig3", "--networks", "8", "--steps", "20", "--jobs", str(jobs), "--no-progress"]
        args = build_parser().parse_args([*argv, "--out", str(tmp_path / f"out{jobs}"), "--tracking-uri", uri])
        settings = replace(settings_from_args(args), monitor=False)  # its final analysis is half of a 20-step run
        assert settings.jobs == jobs
        results[jobs] = [r.summary() for r in _rbm_grid(args, grid, settings)]
        stores[jobs] = _runs(uri)
    assert [(s["lr"], s["batch_size"]) for s in results[2]] == list(grid)  # the order of the grid, not of finishing
    assert results[2] == results[1]
    assert stores[2] == stores[1]
    assert set(stores[1]) == {"rbm_lr0.1_bs16", "rbm_lr0.05_bs8"}


def _command(tmp_path: Path, jobs: int) -> tuple[list[str], str]:
    uri = f"sqlite:///{tmp_path / f'mlflow{jobs}.db'}"
    argv = [sys.executable, "-m", "rmt_callbacks.cli", "fig3", "--networks", "8", "--steps", "40"]
    return [*argv, "--jobs", str(jobs), "--out", f"out{jobs}", "--tracking-uri", uri], uri


@pytest.mark.slow  # ≈ 1–2 min: the ten RBM settings twice; the fast twin above trains two
def test_fig3_with_two_jobs_writes_the_same_summary_and_runs_as_one_job(tmp_path: Path) -> None:
    outputs, stores, summaries = {}, {}, {}
    for jobs in (1, 2):
        argv, uri = _command(tmp_path, jobs)
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr
        outputs[jobs], stores[jobs] = done, _runs(uri)
        summaries[jobs] = json.loads((tmp_path / f"out{jobs}" / "summary.json").read_text())
        assert summaries[jobs].pop("seconds") > 0
    assert summaries[2] == summaries[1]
    assert stores[2] == stores[1]
    assert len(stores[1]) == 11 and [n for n, r in stores[1].items() if not r["nested"]] == ["fig3"]
    assert {r["status"] for r in stores[2].values()} == {"FINISHED"}
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == sorted(
        p.name for p in (tmp_path / "out1").iterdir()
    )
    # one line per finished run, as they finish, then the parent's and the command's; no bar, no banner
    for jobs, done in outputs.items():
        lines = done.stdout.splitlines()
        found = [re.fullmatch(LINE, line) for line in lines[:-1]]
        assert all(found), lines
        names = [m["name"] for m in found]
        assert sorted(names[:-1]) == sorted(n for n in stores[jobs] if n != "fig3") and names[-1] == "fig3"
        assert lines[-1].startswith(f"rmt-reproduce fig3: wrote out{jobs}/summary.json in ")
        assert "\r" not in done.stderr and "█" not in done.stderr and "it/s" not in done.stderr
        assert "Traceback" not in done.stderr


def test_jobs_default_to_the_cpus_per_thread_and_several_devices_run_one_after_another(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from rmt_callbacks.reproduce.pool import available_cpus

    parser = build_parser()
    assert settings_from_args(parser.parse_args(["all"])).jobs == available_cpus()
    assert settings_from_args(parser.parse_args(["all", "--threads", "64"])).jobs == 1
    assert settings_from_args(parser.parse_args(["all", "--jobs", "3"])).jobs == 3
    with caplog.at_level("WARNING", logger="rmt_callbacks.reproduce"):
        settings = settings_from_args(parser.parse_args(["all", "--devices", "2", "--strategy", "ddp"]))
        assert settings.jobs == 1 and not caplog.records  # the default: nothing was asked that is not done
        settings = settings_from_args(parser.parse_args(["all", "--num-nodes", "2", "--jobs", "4"]))
    assert (settings.jobs, settings.num_nodes, settings.devices) == (1, 2, 1)
    (warning,) = caplog.records  # said once, with the numbers and the way out
    assert "--jobs 4" in warning.getMessage() and "--devices 1 --num-nodes 1" in warning.getMessage()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["rbm", "--devices", "0"], "argument --devices: expected a positive integer or 'auto', got '0'"),
        (["rbm", "--devices", "two"], "argument --devices: expected a positive integer or 'auto', got 'two'"),
        (["rbm", "--jobs", "0"], "argument --jobs"),
        (["rbm", "--num-nodes", "0"], "argument --num-nodes"),
        (["rbm", "--strategy", "dpp"], "argument --strategy: 'dpp' is not a Lightning strategy"),
    ],
)
def test_bad_sharding_flags_are_refused_naming_the_argument(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from rmt_callbacks.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_devices_and_strategy_reach_the_settings() -> None:
    args = build_parser().parse_args(["rbm", "--devices", "auto", "--num-nodes", "3", "--strategy", "ddp_spawn"])
    settings = settings_from_args(args)
    assert (settings.devices, settings.num_nodes, settings.strategy, settings.jobs) == ("auto", 3, "ddp_spawn", 1)
    assert settings_from_args(build_parser().parse_args(["rbm", "--devices", "4"])).devices == 4


@pytest.mark.slow  # ≈ 30–60 s: a fresh process, two workers that start training, then Ctrl-C
def test_ctrl_c_stops_the_workers_and_marks_the_runs(tmp_path: Path) -> None:
    import signal
    import time

    argv, uri = _command(tmp_path, 2)
    argv[argv.index("--steps") + 1] = "100000"  # longer than the test
    with subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        deadline, running = time.monotonic() + 300, []
        while len(running) < 2 and time.monotonic() < deadline:  # both workers are training
            time.sleep(1)
            if (tmp_path / "mlflow2.db").exists():
                runs = _runs(uri) if _has_experiment(uri) else {}
                running = [n for n, r in runs.items() if r["nested"] and r["status"] == "RUNNING"]
        workers = _children(proc.pid)
        assert len(running) == 2 and len(workers) >= 2, (running, workers)
        proc.send_signal(signal.SIGINT)  # what a terminal's Ctrl-C sends the command (the workers ignore theirs)
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "rmt-reproduce: interrupted" in stderr, stderr
    assert "Traceback" not in stderr
    runs = _runs(uri)
    assert runs["fig3"]["status"] == "FAILED"
    assert {runs[n]["status"] for n in running} == {"KILLED"}
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists() and _state(pid) != "Z"]


def _has_experiment(uri: str) -> bool:
    try:
        return MlflowClient(tracking_uri=uri).get_experiment_by_name("rmt-reproduce") is not None
    except Exception:  # the store is being created by the command
        return False


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started (Linux: /proc/<pid>/task/*/children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except FileNotFoundError:
        return "gone"
