"""Training a reference model under the project's monitor and recording one experiment as an MLflow run.

Each experiment trains with a Lightning ``Trainer`` whose ``MLFlowLogger`` writes into the tracking store
(default: the embedded ``sqlite:///mlflow.db``), with :class:`rmt_callbacks.SpectrumMonitor` watching the
ensemble's weights; afterwards its fitted numbers, figures and arrays go into the same run and into ``--out``.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["Settings", "parent_run", "record", "train", "write_summary"]


@dataclass(frozen=True)
class Settings:
    """What every experiment shares: where results go, the seed, the tracking store, what to show."""

    out: Path
    seed: int = 0
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "rmt-reproduce"
    progress: bool = True
    monitor: bool = True
    accelerator: str = "auto"
    parent_run_id: str | None = None


def train(
    module: Any,
    steps: int,
    settings: Settings,
    *,
    run_name: str,
    tags: Mapping[str, str] | None = None,
    extra_callbacks: Sequence[Any] = (),
) -> Any:
    """Train ``module`` for ``steps`` optimizer steps under the monitor; return the run's ``MLFlowLogger``."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import MLFlowLogger

    from ..monitors import SpectrumMonitor

    logger = MLFlowLogger(
        experiment_name=settings.experiment,
        run_name=run_name,
        tracking_uri=settings.tracking_uri,
        tags={"rmt.reproduce": run_name, **_parent_tag(settings), **(tags or {})},
    )
    callbacks = [SpectrumMonitor(every_n_train_steps=max(1, steps // 10))] if settings.monitor else []
    callbacks += list(extra_callbacks)
    trainer = pl.Trainer(
        max_steps=steps,
        logger=logger,
        callbacks=callbacks,
        accelerator=settings.accelerator,
        devices=1,
        enable_progress_bar=settings.progress,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=max(1, steps // 50),
    )
    trainer.fit(module)
    return logger


def record(
    logger: Any,
    out: Path,
    *,
    metrics: Mapping[str, float],
    figures: Mapping[str, Any] | None = None,
    arrays: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Write finite ``metrics``, ``figures`` (PNG) and ``arrays`` (one ``.npz``) into ``out`` and the run."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    client, run_id = logger.experiment, logger.run_id
    finite = {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
    logger.log_metrics(finite, step=None)
    for name, fig in (figures or {}).items():
        fig.savefig(out / f"{name}.png", dpi=120)
        client.log_figure(run_id, fig, f"figures/{name}.png")
        plt.close(fig)
    if arrays:
        np.savez_compressed(out / "arrays.npz", **arrays)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "arrays.npz"
            np.savez_compressed(path, **arrays)
            client.log_artifact(run_id, str(path))
    logger.finalize("success")


def _parent_tag(settings: Settings) -> dict[str, str]:
    """MLflow nests a run under the run named by this tag (its UI groups children under the parent)."""
    return {"mlflow.parentRunId": settings.parent_run_id} if settings.parent_run_id else {}


def parent_run(settings: Settings, run_name: str) -> Any:
    """A ``MLFlowLogger`` on a new parent run; pass ``logger.run_id`` as ``Settings.parent_run_id`` to nest."""
    from lightning.pytorch.loggers import MLFlowLogger

    logger = MLFlowLogger(
        experiment_name=settings.experiment,
        run_name=run_name,
        tracking_uri=settings.tracking_uri,
        tags={"rmt.reproduce": run_name},
    )
    _ = logger.experiment  # creates the run now, so children can point at it
    return logger


def write_summary(out: Path, summary: Mapping[str, Any]) -> Path:
    """Write ``summary.json`` (every fitted number) into ``out`` and return its path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "summary.json"
    path.write_text(json.dumps(_plain(summary), indent=2, sort_keys=True) + "\n")
    log.info("wrote %s", path)
    return path


def _plain(value: Any) -> Any:
    """JSON-ready copy: tensors and arrays become lists, numpy scalars floats, NaN becomes null."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
