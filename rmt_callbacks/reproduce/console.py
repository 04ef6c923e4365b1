"""What ``rmt-reproduce`` prints: a progress bar per experiment on a terminal, one line per experiment always.

Each finished experiment logs one line (name, optimizer steps, wall seconds, output folder and MLflow run) at
INFO on the ``rmt_callbacks.reproduce`` logger; :func:`console` shows those lines on stdout for the duration of
the command and lowers Lightning's and MLflow's chatty info loggers (accelerator banner, litlogger tip,
"``Trainer.fit`` stopped", database set-up) to WARNING, so warnings still show, and ignores one deprecation
warning of Lightning's own code that would otherwise repeat at every run. :class:`StepBar` is the bar:
one per training run, over all its steps (Lightning's own bar restarts every epoch).
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import lightning.pytorch as pl

__all__ = ["QUIET_LOGGERS", "QUIET_WARNINGS", "StepBar", "console"]

#: Info loggers that flood a run's output; :func:`console` raises them to WARNING and restores them afterwards.
QUIET_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",  # "GPU available: …", the litlogger tip, "`Trainer.fit` stopped: …"
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.accelerators.cuda",  # "LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: …"
    "mlflow.store.db.utils",  # "Creating initial MLflow database tables…"
)
#: Warnings about the libraries, not the run, that would repeat at every ``Trainer.fit``: (category, message regex).
QUIET_WARNINGS = (
    # torch >= 2.13 deprecates the LeafSpec that Lightning 2.6's _pytree.py still builds
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
)


@contextmanager
def console(stream: TextIO | None = None) -> Iterator[None]:
    """Within the block, show each experiment's line on ``stream`` (default: stdout) and quieten :data:`QUIET_LOGGERS`.

    Example:
        >>> import io
        >>> out, rank_zero = io.StringIO(), logging.getLogger("lightning.pytorch.utilities.rank_zero")
        >>> with console(out):
        ...     logging.getLogger("rmt_callbacks.reproduce.runs").info("rbm_lr0.1_bs16: 300 steps in 2 s")
        ...     rank_zero.isEnabledFor(logging.INFO), rank_zero.isEnabledFor(logging.WARNING)
        (False, True)
        >>> out.getvalue()
        'rbm_lr0.1_bs16: 300 steps in 2 s\\n'
        >>> rank_zero.isEnabledFor(logging.INFO)
        True
    """
    quiet = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [q.level for q in quiet]
    ours = logging.getLogger(__package__)
    saved = ours.level, ours.propagate
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for q in quiet:
        q.setLevel(logging.WARNING)
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False
    try:
        with warnings.catch_warnings():
            for category, message in QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=category)
            yield
    finally:
        ours.removeHandler(handler)
        ours.setLevel(saved[0])
        ours.propagate = saved[1]
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)


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
