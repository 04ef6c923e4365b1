"""What ``rmt-reproduce`` prints: one line per experiment (the progress bars are :mod:`~.bars`'s).

Each finished experiment logs one line (name, optimizer steps, wall seconds, output folder and MLflow run) at
INFO on the ``rmt_callbacks.reproduce`` logger; :func:`console` shows those lines on stdout for the duration of
the command and lowers Lightning's and MLflow's chatty info loggers (accelerator banner, litlogger tip,
"``Trainer.fit`` stopped", "Initializing distributed", database set-up) to WARNING, so warnings still show, and
ignores one deprecation warning of Lightning's own code that would otherwise repeat at every run. It imports
neither Lightning nor MLflow (it sets their loggers' levels by name), so a worker process
(:mod:`~.pool`) sets it up before it loads them.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

__all__ = ["QUIET_LOGGERS", "QUIET_WARNINGS", "console"]

#: Info loggers that flood a run's output; :func:`console` raises them to WARNING and restores them afterwards.
QUIET_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",  # "GPU available: …", the litlogger tip, "`Trainer.fit` stopped: …"
    "lightning.fabric.utilities.rank_zero",
    "lightning.fabric.utilities.distributed",  # "Initializing distributed: GLOBAL_RANK: …", on every rank
    "lightning.pytorch.accelerators.cuda",  # "LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: …"
    "mlflow.store.db.utils",  # "Creating initial MLflow database tables…"
)
#: Warnings about the libraries, not the run, that would repeat at every ``Trainer.fit``: (category, message regex).
QUIET_WARNINGS = (
    # torch >= 2.13 deprecates the LeafSpec that Lightning 2.6's _pytree.py still builds
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
)


@contextmanager
def console(stream: TextIO | None = None, *, handler: logging.Handler | None = None) -> Iterator[None]:
    """Within the block, show each experiment's line on ``stream`` (default: stdout) and quieten :data:`QUIET_LOGGERS`.

    ``handler`` replaces the stream: a worker process of :func:`~rmt_callbacks.reproduce.pool.run_calls` hands its
    lines to the main process, which prints them.

    Example:
        >>> import io
        >>> out, rank_zero = io.StringIO(), logging.getLogger("lightning.pytorch.utilities.rank_zero")
        >>> before = rank_zero.level
        >>> with console(out):
        ...     logging.getLogger("rmt_callbacks.reproduce.runs").info("rbm_lr0.1_bs16: 300 steps in 2 s")
        ...     rank_zero.isEnabledFor(logging.INFO), rank_zero.isEnabledFor(logging.WARNING)
        (False, True)
        >>> out.getvalue()
        'rbm_lr0.1_bs16: 300 steps in 2 s\\n'
        >>> rank_zero.level == before  # restored
        True
    """
    quiet = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [q.level for q in quiet]
    ours = logging.getLogger(__package__)
    saved = ours.level, ours.propagate
    if handler is None:
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
