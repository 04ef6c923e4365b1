r"""MLflow's request limits and the artifact conventions the run writer (:mod:`~rmt_callbacks.sinks.spool`) obeys.

Every artifact goes into a run through an ``MlflowClient`` and an explicit run id (never the global fluent run), so
it lands next to the logger's metrics whatever the tracking store (``sqlite:///mlflow.db``, an ``http://``
server, …). One request holds at most

.. math::

    1000 \text{ metrics}, \quad 100 \text{ parameters}, \quad 100 \text{ tags},

and values are cut to what the store keeps: 6000 characters for a parameter, 5000 for a tag. These limits live
here only; the writer and the Lightning adapter import them.

References: MLflow ``MlflowClient`` API (``log_artifact``, ``log_table``, ``log_batch``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .keys import artifact_path

__all__ = [
    "MLFLOW_MAX_METRICS_PER_BATCH",
    "MLFLOW_MAX_PARAMS_PER_BATCH",
    "MLFLOW_MAX_PARAM_VALUE_LENGTH",
    "MLFLOW_MAX_TAGS_PER_BATCH",
    "MLFLOW_MAX_TAG_VALUE_LENGTH",
    "checked_path",
    "rows_to_columns",
]

MLFLOW_MAX_METRICS_PER_BATCH: int = 1000
"""Metrics in one ``log_batch`` request (MLflow REST API, ``log-batch`` limits)."""
MLFLOW_MAX_PARAMS_PER_BATCH: int = 100
"""Parameters in one ``log_batch`` request."""
MLFLOW_MAX_TAGS_PER_BATCH: int = 100
"""Tags in one ``log_batch`` request."""
MLFLOW_MAX_PARAM_VALUE_LENGTH: int = 6000
"""Characters of a parameter value (``mlflow.utils.validation.MAX_PARAM_VAL_LENGTH``)."""
MLFLOW_MAX_TAG_VALUE_LENGTH: int = 5000
"""Characters of a tag value (``mlflow.utils.validation.MAX_TAG_VAL_LENGTH``)."""


def rows_to_columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Turn a list of row dicts into equal-length columns (first-seen key order, ``None`` where absent).

    Examples:
        >>> rows_to_columns([{"name": "a", "x": 1.0}, {"name": "b", "y": 2.0}])
        {'name': ['a', 'b'], 'x': [1.0, None], 'y': [None, 2.0]}
        >>> rows_to_columns([])
        {}
    """
    keys = list(dict.fromkeys(k for row in rows for k in row))
    return {k: [row.get(k) for row in rows] for k in keys}


def checked_path(artifact_file: str, suffix: str) -> str:
    """``artifact_file`` as a safe run-relative path (:func:`~rmt_callbacks.sinks.keys.artifact_path`) ending in
    ``suffix``.

    Raises:
        ValueError: it is not a str ending in ``suffix``, or it is not a safe relative path.

    Examples:
        >>> checked_path("spectra/step_00000007.npz", ".npz")
        'spectra/step_00000007.npz'
        >>> checked_path("spectra/x.npy", ".npz")
        Traceback (most recent call last):
        ...
        ValueError: artifact_file must be a str ending in '.npz', got 'spectra/x.npy'
    """
    if not isinstance(artifact_file, str) or not artifact_file.endswith(suffix):
        raise ValueError(f"artifact_file must be a str ending in {suffix!r}, got {artifact_file!r}")
    return artifact_path(artifact_file)
