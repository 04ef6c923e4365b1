"""The Lightning callbacks of ``rmt-reproduce``'s output: a progress bar per run, and quiet spawned processes.

:class:`StepBar` is one ``tqdm`` bar per training run, over all its steps (Lightning's own bar restarts every epoch).
Only the main process of rank zero draws bars: a worker process (:mod:`~.pool`) or another rank would draw over
them. :class:`QuietSpawned` lowers Lightning's chatter in the processes that ``ddp_spawn`` starts, as
:func:`~.console.console` does in the command's own.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from typing import Any

import lightning.pytorch as pl

__all__ = ["QuietSpawned", "StepBar"]

_SPAWNED_CONSOLE = ExitStack()  # a spawned process's console(): entered once, kept for the process's life
_SPAWNED_CONSOLE_ENTERED = False


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


class QuietSpawned(pl.Callback):
    """Quietens the process that unpickles it, for that process's life, as :func:`~.console.console` does.

    ``ddp_spawn`` starts fresh interpreters and sends them the ``Trainer`` with its callbacks; they inherit no logging
    set-up, and Lightning's banners ("Initializing distributed", "``Trainer.fit`` stopped") would print from each.
    Unpickling happens before the strategy sets up, so this callback quietens them before the first banner.
    """

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return _quiet_spawned, ()


def _quiet_spawned() -> QuietSpawned:
    """Unpickles a :class:`QuietSpawned`: enters :func:`~.console.console` once in this process, for its life."""
    global _SPAWNED_CONSOLE_ENTERED
    from .console import console

    if not _SPAWNED_CONSOLE_ENTERED:
        _SPAWNED_CONSOLE.enter_context(console(sys.stderr))
        _SPAWNED_CONSOLE_ENTERED = True
    return QuietSpawned()
