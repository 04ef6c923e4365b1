"""One intra-op torch thread for every test.

Most tests run many tiny batched operations (2×2 to 200×200 matrices, Lightning steps); on a small machine a
second OpenMP thread competing with other processes slowed them by up to tenfold, while one thread keeps each
test's wall time predictable.
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
