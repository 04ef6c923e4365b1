"""One intra-op torch thread, one BLAS thread, and a working directory of its own, for every test.

Most tests run many tiny batched operations (2×2 to 200×200 matrices, Lightning steps); on a small machine a
second OpenMP thread competing with other processes slowed them by up to tenfold, while one thread keeps each
test's wall time predictable. scipy's BLAS gets one thread too, as torch does: the analysis offers scipy's
eigensolver only at equal thread counts (``rmt_callbacks.eigensolver``), so both solvers are exercised.

Hypothesis profiles: ``dev`` (the default) draws fresh examples each run, to keep finding new failures; ``ci``
(``HYPOTHESIS_PROFILE=ci``, set by ``.ci/run``) is derandomised, so a green commit stays green and a failure found
locally is added as an explicit regression test instead of surfacing at random in CI.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import settings
from hypothesis.database import DirectoryBasedExampleDatabase
from mlflow import MlflowClient
from threadpoolctl import threadpool_limits

# an absolute path: tests run in their own directories (below), the failures found are kept with the checkout
_EXAMPLES = Path(__file__).parents[1] / ".hypothesis" / "examples"
settings.register_profile("dev", database=DirectoryBasedExampleDatabase(_EXAMPLES))
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own directory: MLflow puts a sqlite store's artifacts under ``./mlruns`` of the
    working directory, and the spooling writer its spool under ``./mlflow-spool``; neither belongs in the checkout.
    The writer's fallback spool location (the per-user cache) is the test's too, never the machine user's."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / ".cache"))


@pytest.fixture(autouse=True, scope="session")
def _single_blas_thread() -> Iterator[None]:
    import scipy.linalg  # noqa: F401  (threadpoolctl limits the BLAS libraries loaded so far: load scipy's)

    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A sqlite MLflow tracking store per test module (its schema migration is the slow part) and an artifact root.

    The store is first opened from inside its folder: experiments made without an artifact location (by Hugging
    Face's MLflowCallback, ``mlflow.set_experiment``, ``rmt_callbacks.watch``) get ``<folder>/mlruns``, as MLflow
    resolves ``./mlruns`` once per store, never a checkout's."""
    root = tmp_path_factory.mktemp("mlflow")
    uri, here = f"sqlite:///{root}/mlflow.db", os.getcwd()
    os.chdir(root)
    try:
        MlflowClient(tracking_uri=uri).search_experiments()  # creates the schema
    finally:
        os.chdir(here)
    return uri, root / "artifacts"


@pytest.fixture
def tracking(store: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """MLflow's process-wide tracking URI (and ``MLFLOW_TRACKING_URI``, which Hugging Face's MLflowCallback reads) is
    the module's store for the test, with its ``Default`` experiment active; no run is left active, and the URI and
    the ``MLFLOW_EXPERIMENT_*`` variables (``mlflow.set_experiment`` sets one) are put back after."""
    import mlflow

    uri, _ = store
    previous = mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for name in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("Default")  # not the active experiment an earlier test set in another store
    yield uri
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(previous)
