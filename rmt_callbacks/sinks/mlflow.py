r"""Arrays, tables, figures and tags into one MLflow run, through an ``MlflowClient`` and an explicit run id.

Never the global fluent run: an :class:`MlflowRun` is built from an ``MLFlowLogger`` (``logger.experiment`` is
its ``MlflowClient``, ``logger.run_id`` its run), so every artifact lands next to the logger's metrics whatever
the tracking store (``sqlite:///mlflow.db``, an ``http://`` server, …). This module imports MLflow; the
callbacks import it only when an ``MLFlowLogger`` is attached. MLflow's request limits are respected by
chunking:

.. math::

    \text{tags per request} \le 100.

References: MLflow ``MlflowClient`` API (``log_artifact``, ``log_table``, ``log_figure``, ``log_batch``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException

from .keys import artifact_path, sanitize

if TYPE_CHECKING:
    from lightning.pytorch.loggers import MLFlowLogger
    from matplotlib.figure import Figure
    from mlflow import MlflowClient

__all__ = ["MLFLOW_MAX_TAGS_PER_BATCH", "SINK_ERRORS", "MlflowRun", "rows_to_columns"]

MLFLOW_MAX_TAGS_PER_BATCH: int = 100
SINK_ERRORS: tuple[type[BaseException], ...] = (MlflowException, OSError)
"""What a failing store raises (a server that went away, a full disk): callers catch these, nothing broader."""


def rows_to_columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Turn a list of row dicts into equal-length columns (first-seen key order, ``None`` where absent).

    Examples:
        >>> rows_to_columns([{"name": "a", "x": 1.0}, {"name": "b", "y": 2.0}])
        {'name': ['a', 'b'], 'x': [1.0, None], 'y': [None, 2.0]}
    """
    keys = list(dict.fromkeys(k for row in rows for k in row))
    return {k: [row.get(k) for row in rows] for k in keys}


class MlflowRun:
    """One MLflow run, written through ``client`` and ``run_id`` (never the fluent API).

    Args:
        client: an ``MlflowClient`` (``MLFlowLogger.experiment``).
        run_id: the run to write into (``MLFlowLogger.run_id``).

    Raises:
        ValueError: ``run_id`` is empty or not a str.

    References: Lightning ``loggers/mlflow.py`` (client + explicit run id).

    Example:
        >>> MlflowRun(client=None, run_id="")
        Traceback (most recent call last):
        ...
        ValueError: MlflowRun: run_id must be a non-empty str, got ''
    """

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        if not isinstance(run_id, str) or not run_id:
            raise ValueError(f"MlflowRun: run_id must be a non-empty str, got {run_id!r}")
        self.client = client
        self.run_id = run_id

    @classmethod
    def from_logger(cls, logger: MLFlowLogger) -> MlflowRun:
        """The run of a Lightning ``MLFlowLogger`` (creates it on first access, as the logger does)."""
        client = logger.experiment
        return cls(client, logger.run_id)

    def log_arrays(self, arrays: Mapping[str, np.ndarray], artifact_file: str) -> None:
        """Write ``arrays`` as one ``.npz`` (one entry per name; loadable with ``allow_pickle=False``).

        Args:
            arrays: name to numeric array, any shapes.
            artifact_file: run-relative path ending in ``.npz``, e.g. ``"spectra/step_00000100.npz"``.

        Raises:
            ValueError: ``artifact_file`` does not end in ``.npz``, or an array is of object dtype.
        """
        path = _checked_path(artifact_file, ".npz")
        for name, value in arrays.items():
            if np.asarray(value).dtype == object:
                raise ValueError(f"log_arrays: array {name!r} has object dtype; only numeric arrays are stored")
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / path.rsplit("/", 1)[-1]
            np.savez(local, **{name: np.asarray(value) for name, value in arrays.items()})
            self.client.log_artifact(self.run_id, str(local), artifact_path=_directory(path))

    def log_table(self, rows: Sequence[Mapping[str, Any]], artifact_file: str) -> None:
        """Write rows as an MLflow table (``client.log_table``; shown as a table in the UI's artifact view).

        Args:
            rows: one dict per row; values JSON-serialisable scalars.
            artifact_file: run-relative path ending in ``.json``, e.g. ``"fits/step_00000100.json"``.
        """
        path = _checked_path(artifact_file, ".json")
        self.client.log_table(self.run_id, data=rows_to_columns(rows), artifact_file=path)

    def log_figure(self, figure: Figure, artifact_file: str) -> None:
        """Save a matplotlib figure as an image artifact (e.g. ``"figures/fc1.weight/step_00000100.png"``)."""
        self.client.log_figure(self.run_id, figure, _checked_path(artifact_file, ".png"))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set run tags, at most :data:`MLFLOW_MAX_TAGS_PER_BATCH` per request; keys cleaned by ``sanitize``."""
        items = iter(tags.items())
        while chunk := list(islice(items, MLFLOW_MAX_TAGS_PER_BATCH)):
            self.client.log_batch(self.run_id, tags=[RunTag(sanitize(k), str(v)[:5000]) for k, v in chunk])


def _checked_path(artifact_file: str, suffix: str) -> str:
    if not isinstance(artifact_file, str) or not artifact_file.endswith(suffix):
        raise ValueError(f"artifact_file must be a str ending in {suffix!r}, got {artifact_file!r}")
    return artifact_path(artifact_file)


def _directory(path: str) -> str | None:
    head, _, _ = path.rpartition("/")
    return head or None
