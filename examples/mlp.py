"""An ordinary MLP on synthetic data, watched by ``SpectrumMonitor`` and logged to MLflow.

The monitor takes three lines (marked ``# <- rmt``): an import, the callback, and ``callbacks=[monitor]``.

    .venv/bin/python examples/mlp.py                       # ~20 s on a laptop CPU
    .venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db   # then open http://127.0.0.1:5000

Data: inputs :math:`x \\sim N(0, I_d)`, labels from a fixed random linear teacher, ``argmax(T x)``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import MLFlowLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from rmt_callbacks import SpectrumMonitor  # <- rmt


class SyntheticData(pl.LightningDataModule):
    """Gaussian inputs ``(n, dim)`` labelled by a random linear teacher into ``classes`` classes."""

    def __init__(self, dim: int = 32, classes: int = 4, size: int = 2048, batch_size: int = 64, seed: int = 0):
        super().__init__()
        self.dim, self.classes, self.size, self.batch_size, self.seed = dim, classes, size, batch_size, seed

    def setup(self, stage: str) -> None:
        g = torch.Generator().manual_seed(self.seed)
        x = torch.randn(self.size, self.dim, generator=g)  # (n, dim)
        teacher = torch.randn(self.classes, self.dim, generator=g)  # (classes, dim)
        self.train_set = TensorDataset(x, (x @ teacher.T).argmax(dim=1))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)


class MLP(pl.LightningModule):
    """``dim -> width -> width -> classes`` with ReLU, trained with SGD."""

    def __init__(self, dim: int = 32, width: int = 128, classes: int = 4, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(dim, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, classes)
        )

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def main(argv: Sequence[str] | None = None) -> str:
    """Train; return the MLflow run id."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=400)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--every-n-train-steps", type=int, default=50)
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--root-dir", default=".")
    args = parser.parse_args(argv)

    pl.seed_everything(0, verbose=False)
    logger = MLFlowLogger(experiment_name="rmt-examples", run_name="mlp", tracking_uri=args.tracking_uri)
    monitor = SpectrumMonitor(every_n_train_steps=args.every_n_train_steps)  # <- rmt
    trainer = pl.Trainer(
        max_steps=args.max_steps,
        logger=logger,
        callbacks=[monitor],  # <- rmt
        default_root_dir=args.root_dir,
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=10,
    )
    trainer.fit(MLP(width=args.width), datamodule=SyntheticData())
    print(f"MLflow run {logger.run_id} in {args.tracking_uri}")
    return logger.run_id


if __name__ == "__main__":
    main()
