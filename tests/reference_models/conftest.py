"""One intra-op thread for the reference-model tests.

These ensembles are many tiny batched matmuls; on a small shared machine a second OpenMP thread competing with
other processes slowed them more than tenfold, while one thread keeps each test's wall time predictable.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
