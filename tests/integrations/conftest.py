"""Fixtures of the integration tests: MLflow's process-wide tracking URI pointed at the module's sqlite store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest


@pytest.fixture
def tracking(store: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``mlflow.get_tracking_uri()`` (and ``MLFLOW_TRACKING_URI``, which Hugging Face's MLflowCallback reads) is the
    module's store for the test; no run is left active, and the URI is put back after."""
    uri, _ = store
    previous = mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(previous)
