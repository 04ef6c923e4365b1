"""Two Trainer runs with one ``spool_dir``: never mixed.

The case a tester saw: run A trains with its tracking server down and an explicit ``spool_dir``; run B, later, uses
the same ``spool_dir`` with its server up. Before spools were keyed by run and process, B's writer replayed A's spool
into B (renamed to A's name, A's parameters refused, metrics doubled with conflicting values). Now B's run holds only
B, A's spool stays where it was, named to the user, and ``replay`` of the whole directory sends it into a run of its
own.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import warnings
from pathlib import Path

from mlflow import MlflowClient

from rmt_callbacks import SpectrumMonitor
from rmt_callbacks.sinks import SpoolingMLFlowLogger

from scaffold import Toy, quiet_trainer, random_loader


def _fit(logger: SpoolingMLFlowLogger, root: Path, lr: float, seed: int) -> list[str]:
    data = random_loader(32, 8, 4, batch_size=8, seed=seed)
    trainer = quiet_trainer(
        max_steps=4, default_root_dir=root, logger=logger, log_every_n_steps=1,
        callbacks=[SpectrumMonitor(every_n_train_steps=2, overhead_budget=None, background=False)],
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(Toy(8, 12, 4, seed=seed, lr=lr, log="train_loss", hparams={"lr": lr, "seed": seed}), data)
    return [str(w.message) for w in caught]


def test_a_second_run_with_the_same_spool_dir_holds_only_itself(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens: run A spools everything
    uri, spool_dir = f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "shared-spool"
    a = SpoolingMLFlowLogger("shared", run_name="A", tracking_uri=down, spool_dir=spool_dir)
    _fit(a, tmp_path / "a", lr=0.1, seed=1)
    assert a.run_id is None and a.spool_dir.parent == spool_dir / "new-shared"

    b = SpoolingMLFlowLogger("shared", run_name="B", tracking_uri=uri, spool_dir=spool_dir)
    said = _fit(b, tmp_path / "b", lr=0.2, seed=2)
    client = MlflowClient(uri)
    run_b = client.get_run(b.run_id)
    assert run_b.info.run_name == "B" and run_b.data.params["lr"] == "0.2" and run_b.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(b.run_id, "train_loss")) == [0, 1, 2, 3]
    assert sorted(m.step for m in client.get_metric_history(b.run_id, "rmt/fc1.weight/lambda_max")) == [0, 2, 4]
    assert not [m for m in said if "spool" in m]  # B had nothing to spool, and A's spool is not B's business
    assert (a.spool_dir / "ops.jsonl").exists()  # A's spool untouched

    out = subprocess.run(
        [sys.executable, "-m", "rmt_callbacks.sinks.spool", "replay", str(spool_dir), "--tracking-uri", uri],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip  # the whole directory: each spool into its own run
    assert out.returncode == 0, out.stderr
    runs = {r.info.run_name: r for r in client.search_runs([run_b.info.experiment_id])}
    assert set(runs) == {"A", "B"}
    run_a = runs["A"]
    assert run_a.data.params["lr"] == "0.1" and run_a.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run_a.info.run_id, "train_loss")) == [0, 1, 2, 3]
    for key in ("train_loss", "rmt/fc1.weight/lambda_max"):  # B's values are B's alone: one per step
        steps = [m.step for m in client.get_metric_history(b.run_id, key)]
        assert len(steps) == len(set(steps)), key
    assert client.get_run(b.run_id).data.params == run_b.data.params
