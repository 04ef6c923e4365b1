"""The progress bar of ``rmt-reproduce`` on a terminal: one ``tqdm`` bar per training run, over all its steps.

Lightning's own bar restarts every epoch. Only the main process of rank zero draws bars: a worker process
(:mod:`~.pool`) or another rank would draw over them.
"""

from __future__ import annotations

import sys
from typing import Any

import lightning.pytorch as pl

__all__ = ["StepBar"]


class StepBar(pl.Callback):
    """One ``tqdm`` bar on stderr over a run's ``trainer.max_steps`` optimizer steps; it is cleared when the run ends.

    Args:
        description: the bar's label, the experiment's name.
    """

    def __init__(self, description: str) -> None:
        self.description = description
        self._bar: Any = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from tqdm import tqdm

        self._bar = tqdm(
            total=trainer.max_steps,
            desc=self.description,
            unit="step",
            leave=False,
            dynamic_ncols=True,
            file=sys.stderr,
        )

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if self._bar is not None:
            self._bar.update(trainer.global_step - self._bar.n)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
