"""The ``solver`` rule (:mod:`rmt_callbacks.eigensolver`): which backend decomposes a stack, fixed by its size and
the environment, never by a timing."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import torch
from threadpoolctl import threadpool_limits

from rmt_callbacks.eigensolver import SCIPY_FROM, SOLVERS, backend_for, scipy_blas, scipy_offered, validate_solver
from rmt_callbacks.spectral.stacks import stacked_levels

needs_scipy_blas = pytest.mark.skipif(scipy_blas() is None, reason="scipy's bundled OpenBLAS not found")


def _stack(n: int, device: str = "cpu") -> torch.Tensor:
    return torch.empty(1, n, n, dtype=torch.float64, device=device)


@pytest.fixture
def deterministic() -> Iterator[None]:
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


@pytest.mark.parametrize("bad", ["mkl", "Torch", "", None, 1, ("torch",)])
def test_an_unknown_solver_is_refused_naming_the_choices(bad: object) -> None:
    with pytest.raises(ValueError, match=re.escape(f"solver must be one of {SOLVERS}, got {bad!r}")):
        validate_solver(bad)
    with pytest.raises(ValueError, match="solver must be one of"):
        backend_for(bad, _stack(4))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="solver must be one of"):
        stacked_levels([torch.eye(3)[None]], "gram", bad)  # type: ignore[arg-type]


def test_the_choices_and_the_documented_crossover() -> None:
    assert SOLVERS == ("auto", "torch", "scipy") and [validate_solver(s) for s in SOLVERS] == list(SOLVERS)
    assert SCIPY_FROM == 256  # benchmarks/bench_solvers.py: scipy's 0.96 x torch's time there, 1.3 x at 128


@needs_scipy_blas
def test_auto_is_torch_below_the_crossover_and_scipy_from_it_where_offered() -> None:
    assert scipy_offered()  # one BLAS thread like torch's (conftest)
    for n in (2, 8, 32, 128, SCIPY_FROM - 1):
        assert backend_for("auto", _stack(n)) == "torch", n
    for n in (SCIPY_FROM, SCIPY_FROM + 1, 1024):
        assert backend_for("auto", _stack(n)) == "scipy", n
    assert backend_for("auto", _stack(SCIPY_FROM).float()) == "scipy"  # the dtype does not enter the rule


def test_torch_and_scipy_are_taken_as_asked_at_any_size() -> None:
    for n in (2, SCIPY_FROM, 1024):
        assert backend_for("torch", _stack(n)) == "torch"
        assert backend_for("scipy", _stack(n)) == ("scipy" if scipy_offered() else "torch")


@needs_scipy_blas
def test_auto_is_torch_alone_under_deterministic_algorithms(deterministic: None) -> None:
    assert backend_for("auto", _stack(1024)) == "torch"
    assert backend_for("scipy", _stack(1024)) == "scipy"  # asked for by name: kept


def test_a_stack_off_the_cpu_always_goes_to_torch() -> None:
    for solver in SOLVERS:
        assert backend_for(solver, _stack(1024, device="meta")) == "torch"  # a GPU stack alike


@needs_scipy_blas
def test_scipy_is_offered_only_at_torchs_thread_count_and_never_changes_it() -> None:
    blas = scipy_blas()
    for blas_threads, torch_threads, offered in [(1, 1, True), (1, 2, False), (2, 1, False), (2, 2, True)]:
        with threadpool_limits(limits=blas_threads, user_api="blas"):
            torch.set_num_threads(torch_threads)
            try:
                picked = {s: backend_for(s, _stack(SCIPY_FROM)) for s in ("auto", "scipy")}
                assert blas.get_num_threads() == blas_threads  # never changed
            finally:
                torch.set_num_threads(1)
        want = "scipy" if offered else "torch"
        assert picked == {"auto": want, "scipy": want}, (blas_threads, torch_threads)
