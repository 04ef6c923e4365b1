"""``--devices``, ``--num-nodes``, ``--strategy``: every rank runs the command, only global rank zero records.

Under ``ddp`` Lightning re-runs the command line in a child process per extra device; under ``srun`` every rank is
started by SLURM; under ``ddp_spawn`` only the main process runs the command. Whatever the launch, a command writes
one ``summary.json`` and the MLflow runs of one process. The end-to-end runs use gloo DDP on two CPU processes;
the reference models split each ensemble's stream blocks over the ranks (reference_models.ensemble), so two
processes train the same networks as one and the command's numbers agree.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from rmt_callbacks.reproduce.launch import global_rank

LINE = r"(?P<name>[\w.]+): (?:(?P<steps>\d+) steps in )?\d+ s -> (?P<out>\S+) \(MLflow run (?P<run>[0-9a-f]{32})\)"
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")
#: What Lightning prints on every rank unless told not to (tests/reproduce/test_output.py has the one-process list).
NOISE = ("Initializing distributed", "distributed_backend", "All distributed processes", "`Trainer.fit` stopped",
         "GPU available", "LeafSpec", "Traceback")  # fmt: skip


@pytest.mark.parametrize(
    ("env", "devices", "rank"),
    [
        ({}, 1, 0),
        ({"RANK": "5", "LOCAL_RANK": "1", "SLURM_PROCID": "0"}, 2, 5),  # torchrun's global rank wins
        ({"LOCAL_RANK": "1"}, 2, 1),  # Lightning's ddp launcher started this process
        ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, 4, 4),  # first process of the second node
        ({"NODE_RANK": "1"}, "auto", 1),  # a node started by hand: not zero, whatever its devices
        ({"GROUP_RANK": "2", "LOCAL_RANK": "3"}, 8, 19),
        ({"SLURM_PROCID": "7"}, 8, 7),  # srun started every rank
        ({"SLURM_PROCID": "0", "LOCAL_RANK": "1"}, 2, 1),  # a SLURM job whose ranks Lightning starts
    ],
)
def test_the_global_rank_comes_from_the_environment_as_lightning_reads_it(
    env: dict[str, str], devices: int | str, rank: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert global_rank(devices) == rank


def test_a_rank_other_than_zero_trains_and_records_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What rank one of ``srun`` does with a run: its rank in the environment, and Lightning's, read from it at import.

    A one-process ``Trainer`` here calls itself global zero (a real second rank does not, and the monitor, which
    logs on ``trainer.is_global_zero``, stays off); the two-process runs below check the whole command.
    """
    from lightning.pytorch.utilities import rank_zero_only

    from rmt_callbacks.reproduce.rbm import run_rbm
    from rmt_callbacks.reproduce.runs import Settings, parent_run

    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_PROCID", "1")
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = Settings(out=tmp_path / "out", tracking_uri=uri, progress=False, monitor=False, rank=global_rank())
    assert settings.rank == 1
    parent = parent_run(settings, "fig3")
    assert parent.logger is None and parent.run_id == ""
    result = run_rbm(0.1, 16, 20, 8, settings)  # trains, analyses, and records nothing
    assert result.x.shape == (8, 10)
    assert not (tmp_path / "out").exists()
    if (tmp_path / "mlflow.db").exists():
        assert MlflowClient(tracking_uri=uri).get_experiment_by_name("rmt-reproduce") is None


def test_a_process_that_ddp_spawn_starts_is_quietened_when_it_unpickles_the_callbacks(tmp_path: Path) -> None:
    script = (
        "import logging, pickle, warnings\n"
        "from rmt_callbacks.reproduce.bars import QuietSpawned\n"
        "from rmt_callbacks.reproduce.console import QUIET_LOGGERS\n"
        "banners = ('lightning.pytorch.utilities.rank_zero', 'lightning.fabric.utilities.distributed')\n"
        "before = [logging.getLogger(n).getEffectiveLevel() for n in banners]\n"
        "callback = pickle.loads(pickle.dumps(QuietSpawned()))\n"
        "after = [logging.getLogger(n).getEffectiveLevel() for n in QUIET_LOGGERS]\n"
        "pickle.loads(pickle.dumps(QuietSpawned()))\n"  # a second one enters nothing more
        "print(type(callback).__name__, max(before) < logging.WARNING, set(after) == {logging.WARNING})\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["QuietSpawned", "True", "True"]


def _cli(tmp_path: Path, name: str, *argv: str) -> tuple[subprocess.CompletedProcess[str], str]:
    uri = f"sqlite:///{tmp_path / f'{name}.db'}"
    command = [sys.executable, "-m", "rmt_callbacks.cli", *argv, "--accelerator", "cpu", "--no-progress"]
    command += ["--out", name, "--tracking-uri", uri]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return done, uri


def _runs(uri: str) -> dict[str, Any]:
    client = MlflowClient(tracking_uri=uri)
    assert [e.name for e in client.search_experiments()] == ["rmt-reproduce", "Default"] or [
        e.name for e in client.search_experiments()
    ] == ["Default", "rmt-reproduce"]
    experiment = client.get_experiment_by_name("rmt-reproduce")
    return {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}


def _assert_same_numbers(found: Any, expected: Any, where: str = "summary") -> None:
    """Equal structure, equal strings, numbers equal to 1e-9 (the weights agree bit for bit with two ranks; the
    analysis is the same code on the same numbers)."""
    if isinstance(expected, dict):
        assert isinstance(found, dict) and set(found) == set(expected), where
        for key in expected:
            _assert_same_numbers(found[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(found, list) and len(found) == len(expected), where
        for k, (f, e) in enumerate(zip(found, expected, strict=True)):
            _assert_same_numbers(f, e, f"{where}[{k}]")
    elif isinstance(expected, float):
        assert found == pytest.approx(expected, rel=1e-9, abs=1e-12), where
    else:
        assert found == expected, where


def _summaries(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("summary.json"))


@pytest.mark.slow  # ≈ 1–2 min: a one-process run and a two-process gloo DDP run, each a fresh interpreter
@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_two_process_rbm_writes_one_summary_and_one_run_like_one_process(tmp_path: Path, strategy: str) -> None:
    argv = ("rbm", "--networks", "32", "--steps", "50")  # two stream blocks of 16 networks: one per rank
    _, one_uri = _cli(tmp_path, "one", *argv)
    done, two_uri = _cli(tmp_path, "two", *argv, "--devices", "2", "--strategy", strategy)
    # rank one printed nothing: one line for the run, one for the command; no rank printed Lightning's banners
    (line, last) = done.stdout.splitlines()
    assert not [n for n in NOISE if n in done.stderr], done.stderr
    assert re.fullmatch(LINE, line)["name"] == "rbm_lr0.1_bs16" and last.startswith("rmt-reproduce rbm: wrote two/")
    assert (
        _summaries(tmp_path / "two") == _summaries(tmp_path / "one") == ["rbm_lr0.1_bs16/summary.json", "summary.json"]
    )
    one, two = (json.loads((tmp_path / n / "summary.json").read_text()) for n in ("one", "two"))
    assert one.pop("seconds") > 0 and two.pop("seconds") > 0
    _assert_same_numbers(two, one)  # two ranks train the same networks as one (reference_models.ensemble)
    ((name, run),) = _runs(two_uri).items()
    (reference,) = _runs(one_uri).values()
    assert name == "rbm_lr0.1_bs16" and run.info.status == "FINISHED"
    assert set(run.data.params) == set(reference.data.params) and run.data.params["max_steps"] == "50"
    assert {k for k in run.data.metrics if k.startswith("summary/")} == {
        k for k in reference.data.metrics if k.startswith("summary/")
    }


@pytest.mark.slow  # ≈ 1–2 min: the two hidden-layer runs under a parent, in one process and on two gloo DDP ranks
def test_two_process_nested_command_makes_one_parent_and_its_children_once(tmp_path: Path) -> None:
    argv = ("hidden", "--networks", "30", "--epochs", "15", "--steps", "150")  # stream blocks of 16 and 14
    _cli(tmp_path, "one", *argv)
    done, uri = _cli(tmp_path, "two", *argv, "--devices", "2", "--strategy", "ddp")
    names = [re.fullmatch(LINE, line)["name"] for line in done.stdout.splitlines()[:-1]]
    assert not [n for n in NOISE if n in done.stderr], done.stderr
    assert names == ["hidden_mat_1_dynamics", "hidden_mat_1_density", "hidden"]
    runs = _runs(uri)
    assert sorted(runs) == sorted(names)  # no second parent, no child twice
    parent = runs.pop("hidden")
    assert {r.data.tags["mlflow.parentRunId"] for r in runs.values()} == {parent.info.run_id}
    assert {r.info.status for r in (parent, *runs.values())} == {"FINISHED"}
    assert _summaries(tmp_path / "two") == [
        "runs/hidden_mat_1_density/summary.json",
        "runs/hidden_mat_1_dynamics/summary.json",
        "summary.json",
    ]
    one, two = (json.loads((tmp_path / n / "summary.json").read_text()) for n in ("one", "two"))
    assert {"rates", "rate_ratio", "ks_one_species", "ks_two_species"} <= set(two)
    assert one.pop("seconds") > 0 and two.pop("seconds") > 0
    _assert_same_numbers(two, one)
