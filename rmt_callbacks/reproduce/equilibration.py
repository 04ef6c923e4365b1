"""The equilibration check of ``rmt-reproduce``: the mid-run snapshot it compares the end of a run with, and the
list of the modes it flagged.

Each run keeps its spectrum after half its steps (:func:`mid_run_snapshot`); each mode of the final spectrum then
gets a verdict (:func:`rmt_callbacks.dynamics.check_relaxation`), written to ``summary.json`` as
``"equilibration": {mode: {"relaxed": ..., "drift_z": ..., "ks": ..., "ks_p": ..., "stragglers": ...}}`` with the
setting's ``"flagged"`` modes, and to MLflow as ``<mode>_relaxed`` (1 or 0) and the numbers behind it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

__all__ = ["flagged_modes", "mid_run_snapshot"]


def mid_run_snapshot(step: int, read: Callable[[Any], torch.Tensor]) -> Any:
    """A Lightning callback that keeps ``read(module)`` (detached, on the CPU) after ``step`` optimizer steps.

    The values are in the callback's ``values`` attribute (``None`` until taken); ``step = 0`` takes them when
    training starts. The reproduction passes half the run's steps: the equilibration check
    (:func:`rmt_callbacks.dynamics.check_relaxation`) compares them with the end.

    Raises:
        ValueError: ``step`` negative.
    """
    import lightning.pytorch as pl

    if step < 0:
        raise ValueError(f"mid_run_snapshot: step must be >= 0, got {step!r}")

    class MidRunSnapshot(pl.Callback):
        values: torch.Tensor | None = None

        def _take(self, module: Any) -> None:
            self.values = read(module).detach().to("cpu").clone()

        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            if step == 0:
                self._take(pl_module)

        def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
            if trainer.global_step == step and self.values is None:
                self._take(pl_module)

    return MidRunSnapshot()


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
