"""The two CPU eigensolver backends against numpy, each run as told (which one is chosen: tests/test_eigensolver.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rmt_callbacks.eigensolver import scipy_blas
from rmt_callbacks.spectral._solvers import eigvalsh_stack

BACKENDS = ["torch", pytest.param("scipy", marks=pytest.mark.skipif(scipy_blas() is None, reason="no scipy BLAS"))]


def _lower_only(x: torch.Tensor) -> torch.Tensor:
    """``x`` with NaN above the diagonal: what the Gram products leave there."""
    out = x.clone()
    rows, cols = torch.triu_indices(x.shape[-1], x.shape[-1], 1)
    out[..., rows, cols] = float("nan")
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_backends_against_numpy_reading_the_lower_triangle(backend: str, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(5, 120, 80, generator=g, dtype=torch.float64)
    x = (w.mT @ w).to(dtype)  # Wishart, float64 or float32
    expected = np.linalg.eigvalsh(x.double().numpy())
    levels, failed = eigvalsh_stack(_lower_only(x), backend)  # type: ignore[arg-type]
    assert failed == {} and levels.dtype == dtype
    # backward error ~ n eps ||X||: float64 120 * 1.1e-16, float32 120 * 6e-8 of lambda_max
    tol = 120 * torch.finfo(dtype).eps * expected.max()
    np.testing.assert_allclose(levels.double().numpy(), expected, rtol=0, atol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_backend_gives_the_same_bits_every_time(backend: str) -> None:
    x = torch.randn(3, 40, 40, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x = x + x.mT
    runs = [eigvalsh_stack(x.clone(), backend)[0] for _ in range(3)]  # type: ignore[arg-type]
    assert all(torch.equal(r, runs[0]) for r in runs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_failing_matrix_is_named_and_the_others_kept(backend: str) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 6, 6, generator=g, dtype=torch.float64)
    x = x + x.mT
    bad = x.clone()
    bad[1, 3, 1] = float("nan")
    levels, failed = eigvalsh_stack(bad, backend)  # type: ignore[arg-type]
    assert list(failed) == [1] and "converge" in failed[1]
    np.testing.assert_allclose(levels[[0, 2]].numpy(), np.linalg.eigvalsh(x[[0, 2]].numpy()), atol=1e-12)
    assert levels[1].tolist() == [0.0] * 6


def test_an_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match=r"backend must be one of \('torch', 'scipy'\), got 'auto'"):
        eigvalsh_stack(torch.eye(2, dtype=torch.float64)[None], "auto")  # type: ignore[arg-type]


def test_scipy_is_refused_a_stack_off_the_cpu() -> None:
    with pytest.raises(ValueError, match=r"scipy's backend decomposes CPU stacks only, got one on meta"):
        eigvalsh_stack(torch.empty(1, 2, 2, dtype=torch.float64, device="meta"), "scipy")
