"""Fixtures of the integration tests: MLflow's process-wide tracking URI pointed at the module's sqlite store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A sqlite store per module, made from inside its folder: experiments that Hugging Face or ``watch`` create
    without an artifact location get ``<folder>/mlruns`` (MLflow resolves ``./mlruns`` once per store, when the
    store is first opened), never the checkout's."""
    root = tmp_path_factory.mktemp("mlflow")
    uri, here = f"sqlite:///{root}/mlflow.db", os.getcwd()
    os.chdir(root)
    try:
        MlflowClient(tracking_uri=uri).search_experiments()  # creates the schema and opens the store here
    finally:
        os.chdir(here)
    return uri, root / "mlruns"


@pytest.fixture
def tracking(store: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``mlflow.get_tracking_uri()`` (and ``MLFLOW_TRACKING_URI``, which Hugging Face's MLflowCallback reads) is the
    module's store for the test; no run is left active, and the URI is put back after."""
    uri, _ = store
    previous = mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("Default")  # not the active experiment an earlier test set in another store
    yield uri
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(previous)
