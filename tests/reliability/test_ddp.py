"""DDP on two CPU processes (gloo): the monitors neither hang nor log twice, and log what rank zero's weights give.

Marked slow: spawning two Lightning processes costs tens of seconds on a small machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import MLFlowLogger
from mlflow import MlflowClient

from rmt_callbacks import DysonMonitor, SpectrumMonitor, analyze

from scaffold import Toy, quiet_trainer, random_loader


def _fit(tmp: Path, devices: int) -> tuple[MlflowClient, str, Toy]:
    torch.manual_seed(0)
    data = random_loader(32, 6, batch_size=16, seed=0, target=lambda x: x[:, :5].cos())  # every rank: the same batches
    uri = f"sqlite:///{tmp}/mlflow.db"
    logger = MLFlowLogger(experiment_name="ddp", tracking_uri=uri, artifact_location=(tmp / "art").as_uri())
    run_id = logger.run_id  # create the run here: spawned ranks get the logger with its id, not a run of their own
    callbacks = [
        SpectrumMonitor(  # in the hook: the due steps exactly, whatever the load (the ranks are under test)
            every_n_train_steps=2, analyses=["summary"], figure_every_n_analyses=None, background=False
        ),
        DysonMonitor(every_n_train_steps=1, log_every_n_steps=2, window=4, overhead_budget=None),
    ]
    strategy = "ddp_spawn" if devices > 1 else "auto"
    trainer = quiet_trainer(
        max_steps=6, default_root_dir=tmp, logger=logger, callbacks=callbacks, devices=devices, strategy=strategy,
        use_distributed_sampler=False,  # both ranks see the same batches: DDP's averaged gradient = one process's
    )  # fmt: skip
    model = Toy(6, 5, lr=0.1)
    trainer.fit(model, data)
    return MlflowClient(uri), run_id, model


@pytest.mark.slow
def test_two_gloo_processes_log_once_and_match_one_process(tmp_path: Path) -> None:
    client, run_id, model = _fit(tmp_path / "ddp", devices=2)
    single_client, single_id, _ = _fit(tmp_path / "one", devices=1)
    for key in ("rmt/fc.weight/lambda_max", "rmt/fc.weight/stable_rank", "rmt/fc.weight/dyson_width"):
        ddp = [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
        one = [(m.step, m.value) for m in single_client.get_metric_history(single_id, key)]
        assert [s for s, _ in ddp] == [s for s, _ in one] and len(ddp) == len({s for s, _ in ddp}), key  # once
        assert [v for _, v in ddp] == pytest.approx([v for _, v in one], rel=1e-5), key
    # the linear scaling rule needs the global batch: 16 per process × 2 processes (1 process: 16)
    assert {m.value for m in client.get_metric_history(run_id, "rmt/dyson/batch_size")} == {32.0}
    assert {m.value for m in single_client.get_metric_history(single_id, "rmt/dyson/batch_size")} == {16.0}
    ddp_t = client.get_metric_history(run_id, "rmt/dyson/noise_temperature")
    assert [m.value for m in ddp_t] == pytest.approx([0.1 / 32] * len(ddp_t))
    final = analyze(model, analyses=["summary"])[0].metrics["lambda_max"]  # ddp_spawn copies rank 0's weights back
    assert client.get_metric_history(run_id, "rmt/fc.weight/lambda_max")[-1].value == pytest.approx(final, rel=1e-9)
