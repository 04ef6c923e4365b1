"""A plain loop that never calls ``close()``: at interpreter exit its pending analyses and the final weights are
logged, with a warning that says so; what cannot be logged then is said to be lost, and the process still exits."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from mlflow import MlflowClient

SCRIPT = """
import mlflow, torch
import rmt_callbacks

mlflow.set_tracking_uri({uri!r})
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.Tanh(), torch.nn.Linear(48, 8))
opt = torch.optim.SGD(net.parameters(), lr=0.05)
run = mlflow.start_run()
print(run.info.run_id, flush=True)
dyson = {{"overhead_budget": None, "window": 5}}  # a snapshot every step however fast the loop
watcher = rmt_callbacks.watch(net, opt, every_n_steps=4, batch_size=16, dyson=dyson)  # background, never closed
{sabotage}
for _ in range(10):
    net(torch.randn(16, 64)).square().mean().backward()
    opt.step()
    opt.zero_grad()
    watcher.step()
"""


def _run(tmp_path: Path, sabotage: str = "") -> tuple[str, str, str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    script = textwrap.dedent(SCRIPT).format(uri=uri, sabotage=sabotage)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}  # a fresh process's MLflow state
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=240, cwd=tmp_path, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return uri, done.stdout.split()[0], done.stderr


def test_an_unclosed_watcher_logs_everything_at_exit(tmp_path: Path) -> None:
    uri, run_id, stderr = _run(tmp_path)
    assert "was never closed; at exit, analysing the final weights (step 10)" in stderr
    client = MlflowClient(uri)
    steps = [m.step for m in client.get_metric_history(run_id, "rmt/0.weight/lambda_max")]
    assert steps[0] == 0 and steps[-1] == 10  # the initial and the final weights, whatever ran late in between
    spectra = {f.path.rsplit("/", 1)[-1] for f in client.list_artifacts(run_id, "rmt/monitor/spectra")}
    assert {f"step_{s:08d}.npz" for s in steps} <= spectra
    figures = {f.path for f in client.list_artifacts(run_id, "rmt/monitor/figures/0.weight")}
    assert "rmt/monitor/figures/0.weight/evolution.png" in figures  # the closing figures too
    assert "rmt/dyson/batch_size" in client.get_run(run_id).data.metrics
    spooled = [p for p in (tmp_path / "mlflow-spool").rglob("*") if p.is_file()]
    assert spooled == []  # delivered, not left on disk (the run writers close after the watcher, not before)


def test_what_cannot_be_logged_at_exit_is_said_to_be_lost(tmp_path: Path) -> None:
    broken = "def broken(*a, **k):\n    raise OSError('disk full')\nwatcher.monitors[0].on_train_end = broken"
    _, _, stderr = _run(tmp_path, sabotage=broken)
    assert "are lost: OSError('disk full')" in stderr
