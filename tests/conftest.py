"""One intra-op torch thread for every test.

Most tests run many tiny batched operations (2×2 to 200×200 matrices, Lightning steps); on a small machine a
second OpenMP thread competing with other processes slowed them by up to tenfold, while one thread keeps each
test's wall time predictable.

Hypothesis profiles: ``dev`` (the default) draws fresh examples each run, to keep finding new failures; ``ci``
(``HYPOTHESIS_PROFILE=ci``, set by ``.ci/run``) is derandomised, so a green commit stays green and a failure found
locally is added as an explicit regression test instead of surfacing at random in CI.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch
from hypothesis import settings

settings.register_profile("dev")
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
