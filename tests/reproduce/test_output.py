"""What a person running ``rmt-reproduce`` sees: in a log, one line per experiment; on a terminal, one bar per run.

Each test runs the real console script in a fresh process (its stdout and stderr are pipes, or a pseudo-terminal),
so Lightning's and MLflow's loggers are set up as a user's are.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from rmt_callbacks.cli import build_parser
from rmt_callbacks.reproduce.launch import settings_from_args

#: What Lightning and MLflow print unless told not to; none of it may reach the output.
NOISE = (
    "GPU available",
    "TPU available",
    "LOCAL_RANK",
    "`Trainer.fit` stopped",
    "litlogger",
    "Tip:",
    "Creating initial MLflow database",
    "not found. Creating it",
    "LeafSpec",
    "Epoch ",
    "it/s",
)
HIDDEN = ("hidden", "--z", "mat_1", "--networks", "30", "--epochs", "15", "--steps", "150")
LINE = r"(?P<name>[\w.]+): (?:(?P<steps>\d+) steps in )?\d+ s -> (?P<out>\S+) \(MLflow run (?P<run>[0-9a-f]{32})\)"


def _command(uri: str, experiment: str, *argv: str) -> list[str]:
    options = ["--out", "out", "--tracking-uri", uri, "--experiment", experiment]
    return [sys.executable, "-m", "rmt_callbacks.cli", *argv, *options]


def test_a_log_gets_one_line_per_run_and_the_parent_run_holds_figures_and_summary(
    tmp_path: Path, store: tuple[str, Path]
) -> None:
    # at the default --jobs (2 on a two-core CI machine) too: `hidden` is one call (its dynamics run, then its
    # density run), so the lines keep this order; the lines of runs in several workers: tests/reproduce/test_concurrency
    argv = _command(store[0], "log", *HIDDEN)
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 4, done.stdout
    found = [re.fullmatch(LINE, line) for line in lines[:3]]
    assert all(found), lines
    assert [(m["name"], m["steps"], m["out"]) for m in found] == [
        ("hidden_mat_1_dynamics", "150", "out/runs/hidden_mat_1_dynamics"),
        ("hidden_mat_1_density", "150", "out/runs/hidden_mat_1_density"),
        ("hidden", None, "out"),
    ]
    assert lines[3].startswith("rmt-reproduce hidden: wrote out/summary.json in ")
    for text in (done.stdout, done.stderr):
        assert "\r" not in text and "█" not in text
        assert not [n for n in NOISE if n in text], text

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert {"rates", "rate_ratio", "predicted_rate_ratio", "ks_one_species", "ks_two_species"} <= set(summary)
    assert summary["predicted_rate_ratio"] == pytest.approx(4.0)
    client = MlflowClient(tracking_uri=store[0])
    runs = {m["name"]: client.get_run(m["run"]) for m in found}
    parent = runs.pop("hidden")
    assert "mlflow.parentRunId" not in parent.data.tags
    assert {r.data.tags["mlflow.parentRunId"] for r in runs.values()} == {parent.info.run_id}
    # the parent: the figures written to --out and the whole summary.json
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert figures == {"figures/fig4_hidden_dynamics.png", "figures/fig5_hidden_density.png"}
    assert all((tmp_path / "out" / Path(f).name).is_file() for f in figures)
    assert _artifact(client, parent.info.run_id, tmp_path / "parent") == summary
    # each run: its part of summary.json, its measured numbers under summary/, what is fixed as params
    for name, run in runs.items():
        part = _artifact(client, run.info.run_id, tmp_path / name)
        assert part.items() <= summary.items()
        measured = {k: v for k, v in part.items() if isinstance(v, float) and not k.startswith("predicted")}
        assert measured, name
        for key, value in measured.items():
            assert run.data.metrics[f"summary/{key}"] == pytest.approx(value), key
    dynamics = runs["hidden_mat_1_dynamics"]
    assert float(dynamics.data.params["predicted_rate_ratio"]) == pytest.approx(4.0)
    assert dynamics.data.metrics["summary/rate_fast"] == pytest.approx(summary["rates"][0])
    assert "summary/predicted_rate_ratio" not in dynamics.data.metrics


def _artifact(client: MlflowClient, run_id: str, dst: Path) -> dict:
    dst.mkdir()
    return json.loads(Path(client.download_artifacts(run_id, "summary.json", str(dst))).read_text())


@pytest.mark.slow  # ≈ 17 s, most of it a fresh process importing Lightning and MLflow; test_step_bar_* is fast
def test_a_terminal_gets_one_bar_per_run_and_no_banners(tmp_path: Path, store: tuple[str, Path]) -> None:
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    argv = _command(store[0], "terminal", "rbm", "--steps", "150", "--networks", "8")
    with subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=follower) as proc:
        os.close(follower)
        terminal = _read_until_closed(leader)
        stdout = proc.stdout.read().decode()
    assert proc.returncode == 0, terminal
    assert "rbm_lr0.1_bs16:" in terminal and "/150 [" in terminal  # tqdm's bar, labelled with the run
    assert not [n for n in NOISE if n in terminal], terminal
    (line, last) = stdout.splitlines()
    assert re.fullmatch(LINE, line)["steps"] == "150"
    assert last.startswith("rmt-reproduce rbm: wrote out/summary.json")


def _read_until_closed(fd: int) -> str:
    chunks = []
    while True:
        ready, _, _ = select.select([fd], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize(("argv", "bar"), [(["rbm"], True), (["rbm", "--no-progress"], False)])
def test_a_bar_only_on_a_terminal_and_never_with_no_progress(
    argv: list[str], bar: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = build_parser().parse_args(argv)
    assert settings_from_args(args).progress is False  # pytest's stderr is not a terminal
    leader, follower = os.openpty()
    with open(follower, "w") as terminal:
        monkeypatch.setattr(sys, "stderr", terminal)
        assert settings_from_args(args).progress is bar
    os.close(leader)


def test_step_bar_is_one_bar_over_all_steps_across_epochs(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from lightning.pytorch.demos.boring_classes import BoringModel

    from rmt_callbacks.reproduce.bars import StepBar

    from scaffold import quiet_trainer

    terminal = io.StringIO()
    monkeypatch.setattr(sys, "stderr", terminal)
    counts: list[tuple[int, int]] = []  # the bar's position and total after each batch (tqdm redraws at most 10/s)
    update = StepBar.on_train_batch_end

    def spy(self, trainer, *args):
        update(self, trainer, *args)
        counts.append((self._bar.n, self._bar.total))

    monkeypatch.setattr(StepBar, "on_train_batch_end", spy)
    trainer = quiet_trainer(max_steps=6, limit_train_batches=2, callbacks=[StepBar("boring")])  # three epochs
    trainer.fit(BoringModel())
    assert trainer.current_epoch == 3
    text = terminal.getvalue()
    shown = [(int(n), int(total)) for n, total in re.findall(r"boring: +\d+%\|[^|]*\| (\d+)/(\d+) \[", text)]
    assert shown[0] == (0, 6), text  # one bar over all 6 steps, not one per 2-step epoch
    assert counts == [(n, 6) for n in range(1, 7)]  # it advances across the three epochs
    assert {total for _, total in shown} == {6} and [n for n, _ in shown] == sorted(n for n, _ in shown)
    *_, last, after = text.split("\r")
    assert last.strip() == "" and after == "", text  # the bar is cleared when the run ends
