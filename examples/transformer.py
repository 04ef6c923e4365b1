"""Lightning's demo Transformer (embeddings, attention, linear layers) on a synthetic sequence task, monitored.

The monitor takes three lines (marked ``# <- rmt``). Every ``nn.MultiheadAttention`` in-projection is analysed
as three matrices ``….in_proj_weight.q/.k/.v``; the embedding and every ``nn.Linear`` as one each.

    .venv/bin/python examples/transformer.py
    .venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db

Task: predict the next token of sequences :math:`t_{i+1} = (a\\, t_i + b) \\bmod V` with a random :math:`(a, b)`
per sequence.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.demos import Transformer
from lightning.pytorch.loggers import MLFlowLogger
from torch.utils.data import DataLoader, TensorDataset

from rmt_callbacks import SpectrumMonitor  # <- rmt


def affine_sequences(count: int, length: int, vocab: int, *, generator: torch.Generator) -> TensorDataset:
    """``(inputs, targets)`` of shape ``(count, length)`` each; targets are the inputs shifted by one."""
    a = torch.randint(1, vocab, (count, 1), generator=generator)
    b = torch.randint(0, vocab, (count, 1), generator=generator)
    t = torch.randint(0, vocab, (count, 1), generator=generator)
    seq = [t]
    for _ in range(length):
        seq.append((a * seq[-1] + b) % vocab)
    tokens = torch.cat(seq, dim=1)  # (count, length + 1)
    return TensorDataset(tokens[:, :-1], tokens[:, 1:])


class TinyTransformer(pl.LightningModule):
    def __init__(self, vocab: int = 32, dim: int = 32, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = Transformer(vocab_size=vocab, ninp=dim, nhead=2, nhid=2 * dim, nlayers=1, dropout=0.0)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, target = batch
        loss = torch.nn.functional.nll_loss(self.model(inputs, target), target.reshape(-1))
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def main(argv: Sequence[str] | None = None) -> str:
    """Train; return the MLflow run id."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--every-n-train-steps", type=int, default=50)
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--root-dir", default=".")
    args = parser.parse_args(argv)

    pl.seed_everything(0, verbose=False)
    data = affine_sequences(512, 16, 32, generator=torch.Generator().manual_seed(0))
    logger = MLFlowLogger(experiment_name="rmt-examples", run_name="transformer", tracking_uri=args.tracking_uri)
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
    trainer.fit(TinyTransformer(dim=args.dim), DataLoader(data, batch_size=32, shuffle=True))
    print(f"MLflow run {logger.run_id} in {args.tracking_uri}")
    return logger.run_id


if __name__ == "__main__":
    main()
