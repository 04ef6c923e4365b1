"""Sinks: where the callbacks' plain dicts, arrays and figures go. They know nothing of the math.

* :mod:`~rmt_callbacks.sinks.keys`: the one metric-key scheme (:func:`metric_key`) and MLflow-safe cleaning.
* :mod:`~rmt_callbacks.sinks.lightning`: scalars to every logger in ``trainer.loggers``.
* :mod:`~rmt_callbacks.sinks.mlflow`: MLflow's request limits and the artifact path and table conventions.
* :mod:`~rmt_callbacks.sinks.spool`: the background writer that spools a run's writes while its server is down.
* :mod:`~rmt_callbacks.sinks.mlflow_logger`: :class:`~rmt_callbacks.sinks.mlflow_logger.SpoolingMLFlowLogger`, an
  ``MLFlowLogger`` that writes through that writer (``rmt_callbacks.sinks.SpoolingMLFlowLogger``, imported on use).

Figures are drawn by :mod:`rmt_callbacks.figures` (the only package that imports matplotlib); the sinks take them
rendered. Importing this package loads neither Lightning nor MLflow; import the submodules for those (or ask for
``SpoolingMLFlowLogger``, which imports them then).
"""

from __future__ import annotations

from typing import Any

from .keys import MAX_KEY_LENGTH, artifact_path, metric_key, sanitize

__all__ = ["MAX_KEY_LENGTH", "SpoolingMLFlowLogger", "artifact_path", "metric_key", "sanitize"]


def __getattr__(name: str) -> Any:
    """``SpoolingMLFlowLogger`` on first use (it imports Lightning and MLflow)."""
    if name == "SpoolingMLFlowLogger":
        from .mlflow_logger import SpoolingMLFlowLogger

        return SpoolingMLFlowLogger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
