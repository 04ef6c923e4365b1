"""DDP on two CPU processes (gloo): the monitors neither hang nor log twice, and log what rank zero's weights give.

Marked slow: spawning two Lightning processes costs tens of seconds on a small machine.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import MLFlowLogger
from mlflow import MlflowClient
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from rmt_callbacks import DysonMonitor, SpectrumMonitor, analyze


class Net(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 5)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.fc(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp: Path, devices: int) -> tuple[MlflowClient, str, Net]:
    torch.manual_seed(0)
    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(0))
    data = DataLoader(TensorDataset(x, x[:, :5].cos()), batch_size=16)  # every rank: the same batches
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
    trainer = pl.Trainer(
        max_steps=6, default_root_dir=tmp, logger=logger, callbacks=callbacks, accelerator="cpu", devices=devices,
        strategy=strategy, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        use_distributed_sampler=False,  # both ranks see the same batches: DDP's averaged gradient = one process's
    )  # fmt: skip
    model = Net()
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
