"""Sinks: where the callbacks' plain dicts, arrays and figures go. They know nothing of the math.

* :mod:`~rmt_callbacks.sinks.keys`: the one metric-key scheme (:func:`metric_key`) and MLflow-safe cleaning.
* :mod:`~rmt_callbacks.sinks.lightning`: scalars to every logger in ``trainer.loggers``.
* :mod:`~rmt_callbacks.sinks.mlflow`: arrays, tables and figures into an ``MLFlowLogger``'s own run.
* :mod:`~rmt_callbacks.sinks.plots`: matplotlib figures (the only module that imports matplotlib).

Importing this package loads none of Lightning, MLflow or matplotlib; import the submodules for those.
"""

from __future__ import annotations

from .keys import MAX_KEY_LENGTH, artifact_path, metric_key, sanitize

__all__ = ["MAX_KEY_LENGTH", "artifact_path", "metric_key", "sanitize"]
