"""The two CPU eigensolver backends against numpy, the race between them, and when scipy's is offered."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from rmt_callbacks.spectral import _solvers
from rmt_callbacks.spectral._solvers import TRIALS, eigvalsh_stack

needs_scipy_blas = pytest.mark.skipif(_solvers._scipy_blas() is None, reason="scipy's bundled OpenBLAS not found")


@pytest.fixture
def fresh_race(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty race, so that earlier tests' timings do not settle this test's size classes."""
    monkeypatch.setattr(_solvers, "_trials", {})
    monkeypatch.setattr(_solvers, "_chosen", {})


def _lower_only(x: torch.Tensor) -> torch.Tensor:
    """``x`` with NaN above the diagonal: what the Gram products leave there."""
    out = x.clone()
    rows, cols = torch.triu_indices(x.shape[-1], x.shape[-1], 1)
    out[..., rows, cols] = float("nan")
    return out


@pytest.mark.parametrize("solver", ["torch", "scipy", "auto"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_backends_against_numpy_reading_the_lower_triangle(solver: str, dtype: torch.dtype, fresh_race) -> None:
    assert _solvers._scipy_blas() is None or _solvers._scipy_offered()  # equal thread counts (conftest)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(5, 120, 80, generator=g, dtype=torch.float64)
    x = (w.mT @ w).to(dtype)  # Wishart, float64 or float32
    expected = np.linalg.eigvalsh(x.double().numpy())
    for _ in range(2 * TRIALS + 1):  # through the race's trials and past them
        levels, failed = eigvalsh_stack(_lower_only(x), solver)
        assert failed == {} and levels.dtype == dtype
        # backward error ~ n eps ||X||: float64 120 * 1.1e-16, float32 120 * 6e-8 of lambda_max
        tol = 120 * torch.finfo(dtype).eps * expected.max()
        np.testing.assert_allclose(levels.double().numpy(), expected, rtol=0, atol=tol)


@needs_scipy_blas
def test_auto_tries_both_then_keeps_the_faster(fresh_race) -> None:
    x = torch.eye(64, dtype=torch.float64).expand(3, 64, 64).contiguous()
    for _ in range(2 * TRIALS):
        eigvalsh_stack(x.clone(), "auto")
    ((key, times),) = _solvers._trials.items()
    assert [len(times["torch"]), len(times["scipy"])] == [TRIALS, TRIALS]  # alternated
    assert _solvers._chosen[key] == min(times, key=lambda b: min(times[b]))
    eigvalsh_stack(x.clone(), "auto")
    assert [len(t) for t in _solvers._trials[key].values()] == [TRIALS, TRIALS]  # settled: no more trials


@needs_scipy_blas
def test_auto_is_torch_alone_under_deterministic_algorithms(fresh_race) -> None:
    x = torch.eye(8, dtype=torch.float64).expand(2, 8, 8)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        runs = [eigvalsh_stack(x.clone(), "auto")[0] for _ in range(2 * TRIALS)]
    finally:
        torch.use_deterministic_algorithms(before)
    assert _solvers._trials == {} and all(torch.equal(r, runs[0]) for r in runs)  # no race was run


def test_the_race_settles_on_the_smaller_minimum(fresh_race) -> None:
    key = ("size", torch.float64, 1)
    for torch_s, scipy_s in zip([0.5, 0.1, 0.5], [0.2, 0.2, 0.2], strict=True):
        assert _solvers._next_backend(key) == "torch"
        _solvers._record(key, "torch", torch_s)
        assert _solvers._next_backend(key) == "scipy"
        _solvers._record(key, "scipy", scipy_s)
    assert _solvers._chosen[key] == "torch"  # 0.1 < 0.2: one slow trial does not decide
    assert _solvers._next_backend(key) == "torch"


@needs_scipy_blas
def test_scipy_is_offered_only_at_torchs_thread_count_and_never_changes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import scipy.linalg

    blas, real_eigh = _solvers._scipy_blas(), scipy.linalg.eigh
    calls: list[int] = []

    def eigh_counted(*args, **kwargs):  # the real solver, its calls counted
        calls.append(blas.get_num_threads())
        return real_eigh(*args, **kwargs)

    monkeypatch.setattr(scipy.linalg, "eigh", eigh_counted)
    x = torch.diag(torch.arange(4.0, dtype=torch.float64)).expand(2, 4, 4)
    for blas_threads, torch_threads, expected in [(1, 1, [1, 1]), (1, 2, []), (2, 1, []), (2, 2, [2, 2])]:
        calls.clear()
        with threadpool_limits(limits=blas_threads, user_api="blas"):
            torch.set_num_threads(torch_threads)
            levels, failed = eigvalsh_stack(x.clone(), "scipy")
            assert blas.get_num_threads() == blas_threads  # never changed
        torch.set_num_threads(1)
        assert calls == expected, (blas_threads, torch_threads)
        assert failed == {} and levels.tolist() == [[0.0, 1.0, 2.0, 3.0]] * 2


@pytest.mark.parametrize("solver", ["torch", "scipy"])
def test_a_failing_matrix_is_named_and_the_others_kept(solver: str) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 6, 6, generator=g, dtype=torch.float64)
    x = x + x.mT
    bad = x.clone()
    bad[1, 3, 1] = float("nan")
    levels, failed = eigvalsh_stack(bad, solver)
    assert list(failed) == [1] and "converge" in failed[1]
    np.testing.assert_allclose(levels[[0, 2]].numpy(), np.linalg.eigvalsh(x[[0, 2]].numpy()), atol=1e-12)
    assert levels[1].tolist() == [0.0] * 6


def test_an_unknown_solver_is_refused() -> None:
    with pytest.raises(ValueError, match=r"solver must be one of \('auto', 'torch', 'scipy'\), got 'mkl'"):
        eigvalsh_stack(torch.eye(2, dtype=torch.float64)[None], "mkl")  # type: ignore[arg-type]
