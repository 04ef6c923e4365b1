"""The equilibration check of ``rmt-reproduce``: the mid-run snapshot it compares the end of a run with, and the
list of the modes it flagged.

Each run keeps its spectrum after half its steps (:func:`mid_run_snapshot`); each mode of the final spectrum then
gets a verdict (:func:`rmt_callbacks.dynamics.check_relaxation`), written to ``summary.json`` as
``"equilibration": {mode: {"relaxed": ..., "drift_z": ..., "ks": ..., "ks_p": ..., "stragglers": ...}}`` with the
setting's ``"flagged"`` modes, and to MLflow as ``<mode>_relaxed`` (1 or 0) and the numbers behind it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["SNAPSHOT_KEY", "MidRunSnapshot", "flagged_modes", "mid_run_snapshot"]


#: The ``trainer.callback_metrics`` key under which a snapshot travels back from a ``ddp_spawn`` rank.
SNAPSHOT_KEY = "rmt_reproduce/mid_run_snapshot"


def mid_run_snapshot(step: int, read: str) -> Any:
    """A Lightning callback keeping ``getattr(module, read)()`` (detached, on the CPU) after ``step`` optimizer steps.

    The values are in the callback's ``values`` attribute (``None`` until taken); ``step = 0`` takes them when
    training starts. The reproduction passes half the run's steps: the equilibration check
    (:func:`rmt_callbacks.dynamics.check_relaxation`) compares them with the end. ``read`` names a method of the
    module (``"eigenvalues"``, ``"singular_values"``), not a function, so that the callback can be pickled: under
    ``ddp_spawn`` the ranks are new processes, and the snapshot comes back to the command's process through
    ``trainer.callback_metrics`` (:data:`SNAPSHOT_KEY`, which Lightning returns from rank zero), read by
    :meth:`MidRunSnapshot.recover` after the fit.

    Raises:
        ValueError: ``step`` negative.
    """
    if step < 0:
        raise ValueError(f"mid_run_snapshot: step must be >= 0, got {step!r}")
    return MidRunSnapshot(step, read)


def _callback_base() -> Any:
    import lightning.pytorch as pl

    return pl.Callback


class MidRunSnapshot(_callback_base()):  # type: ignore[misc]
    """See :func:`mid_run_snapshot`."""

    def __init__(self, step: int, read: str) -> None:
        self.step, self.read = step, read
        self.values: torch.Tensor | None = None

    def _take(self, trainer: Any, module: Any) -> None:
        self.values = getattr(module, self.read)().detach().to("cpu").clone()
        trainer.callback_metrics[SNAPSHOT_KEY] = self.values

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self.step == 0:
            self._take(trainer, pl_module)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        if trainer.global_step == self.step and self.values is None:
            self._take(trainer, pl_module)

    def recover(self, trainer: Any) -> None:
        """After ``trainer.fit``: the snapshot a spawned rank zero took, if this process did not take it itself."""
        if self.values is None and SNAPSHOT_KEY in trainer.callback_metrics:
            self.values = trainer.callback_metrics[SNAPSHOT_KEY].detach().to("cpu").clone()


def flagged_modes(summary: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every flagged mode in a (nested) summary, as ``"<path>/<mode>"``: the keys down to a setting's summary.

    A setting's summary is a mapping with ``"equilibration"`` (mode → verdict); lists (the teacher–student
    settings) are walked by index.

    Example:
        >>> verdicts = {"pair1": {"relaxed": True}, "single2": {"relaxed": False}}
        >>> flagged_modes({"fig3": {"settings": {"lr0.1_bs16": {"equilibration": verdicts}}}})
        ['fig3/settings/lr0.1_bs16/single2']
    """
    found: list[str] = []
    if isinstance(summary.get("equilibration"), Mapping):
        found += [f"{prefix}{mode}" for mode, v in summary["equilibration"].items() if not v.get("relaxed", True)]
    for key, value in summary.items():
        parts = [(f"{key}", value)] if isinstance(value, Mapping) else []
        if isinstance(value, list):
            parts = [(f"{key}/{i}", v) for i, v in enumerate(value) if isinstance(v, Mapping)]
        for path, part in parts:
            found += flagged_modes(part, f"{prefix}{path}/")
    return found
