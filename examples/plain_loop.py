"""A plain PyTorch loop (no Lightning): an MLP on scikit-learn's digits, SGD with a cosine schedule, watched by
``rmt_callbacks.watch`` and logged into the active MLflow run.

The watcher takes three lines (marked ``# <- rmt``): the import, ``watch(...)``, and ``watcher.step()`` after each
optimizer step. It reads α from the optimizer at each update (the scheduler's value) and |B| from the DataLoader.

    .venv/bin/python examples/plain_loop.py                      # ~15 s on a 2-core CPU
    .venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db   # then open http://127.0.0.1:5000

Data: the 1797 8×8 digits that ship with scikit-learn (``pip install "rmt-callbacks[examples]"``).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from itertools import islice

import mlflow
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import rmt_callbacks  # <- rmt


def digits() -> TensorDataset:
    """The digits' 64 pixels scaled to [0, 1], and their labels 0–9."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return TensorDataset(torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y))


def forever(loader: DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


def main(argv: Sequence[str] | None = None) -> str:
    """Train; return the MLflow run id."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=600)
    parser.add_argument("--every-n-steps", type=int, default=100)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    loader = DataLoader(digits(), batch_size=args.batch_size, shuffle=True, drop_last=True)
    model = nn.Sequential(
        nn.Linear(64, args.width), nn.ReLU(), nn.Linear(args.width, args.width), nn.ReLU(), nn.Linear(args.width, 10)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.max_steps)

    mlflow.set_tracking_uri(args.tracking_uri)
    mlflow.set_experiment("rmt-examples")
    with mlflow.start_run(run_name="plain-loop") as run:
        with rmt_callbacks.watch(  # <- rmt: logs into the active run; closed (final analysis) by the `with`
            model,
            optimizer,
            every_n_steps=args.every_n_steps,
            dataloader=loader,  # |B| is its batch_size (or pass batch_size=)
            max_steps=args.max_steps,
            dyson={"overhead_budget": None},  # a toy's step costs what a snapshot does: snapshot every step anyway
        ) as watcher:
            for step, (x, y) in enumerate(islice(forever(loader), args.max_steps), start=1):
                loss = nn.functional.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                watcher.step()  # <- rmt
                if step % 10 == 0:
                    mlflow.log_metric("train/loss", loss.item(), step=step)
    print(f"MLflow run {run.info.run_id} in {args.tracking_uri}")
    return run.info.run_id


if __name__ == "__main__":
    main()
