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
    """A sqlite MLflow tracking store per test module (its schema migration is the slow part) and an artifact root."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    MlflowClient(tracking_uri=uri).search_experiments()  # creates the schema
    return uri, root / "artifacts"
