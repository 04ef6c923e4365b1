r"""Which LAPACK decomposes a stack on the CPU: torch's or scipy's, whichever this machine runs faster.

On a CPU, ``torch.linalg.eigvalsh`` calls the LAPACK torch was built with (MKL in the x86 wheels) and
``scipy.linalg.eigh`` the OpenBLAS that scipy's wheel bundles. Both run the same algorithm for eigenvalues only
(Householder tridiagonalisation, then the root-free QR of ``sterf``) and agree to rounding (≈ 1e-14 relative);
their speeds depend on the CPU. On the project's AMD EPYC test machine scipy's takes 0.6–0.9 × torch's time
below n = 2048 and the same at 2048 (``benchmarks/RESULTS.md``), and it works in place where torch copies the
stack. Neither is assumed faster: under ``"auto"`` the first :data:`TRIALS` stacks of each size class (per dtype
and thread count) alternate between the two, timed, and the class then keeps the one with the smaller
per-matrix time. Every stack is decomposed exactly once, so the trials cost nothing but the slower one's time.
Which one decomposed a stack then depends on timings, so results can differ in the last bits from run to run;
under ``torch.use_deterministic_algorithms(True)`` (Lightning's ``Trainer(deterministic=True)``) ``"auto"`` always
uses torch.

scipy's backend is offered only where it needs no setting changed: when ``threadpoolctl`` finds the OpenBLAS
inside scipy's own wheel and its (process-wide) thread count equals torch's for the calling thread. By default
both use one thread per core in a training process's main thread (``analyze``, ``DysonMonitor``,
``SpectrumMonitor(background=False)``) where each core runs one hardware thread; with SMT torch counts physical
cores and OpenBLAS logical ones, and torch's solver is used unless the counts are set equal
(``OMP_NUM_THREADS``). A monitor's background worker runs torch with one thread, so it uses torch's solver unless
scipy's BLAS has one thread too (``OPENBLAS_NUM_THREADS=1``). GPU tensors always go to torch.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from typing import Any, Literal

import torch

__all__ = ["SOLVERS", "TRIALS", "Solver", "eigvalsh_stack"]

Solver = Literal["auto", "torch", "scipy"]
SOLVERS: tuple[str, ...] = ("auto", "torch", "scipy")
TRIALS: int = 3
"""Timed stacks per backend and size class before ``"auto"`` settles on the faster one."""
_ERRORS = (ValueError, TypeError, RuntimeError, ArithmeticError)  # what a bad matrix makes a solver raise

_lock = threading.Lock()  # guards _trials and _chosen
_trials: dict[tuple[Any, ...], dict[str, list[float]]] = {}
_chosen: dict[tuple[Any, ...], str] = {}


def eigvalsh_stack(stack: torch.Tensor, solver: Solver = "auto") -> tuple[torch.Tensor, dict[int, str]]:
    """The ascending eigenvalues of a stack of symmetric matrices, read from their lower triangles.

    Args:
        stack: ``(b, n, n)``, float32 or float64, contiguous; its contents may be overwritten.
        solver: ``"torch"``, ``"scipy"`` (where offered, see above; torch elsewhere) or ``"auto"``.

    Returns:
        ``(b, n)`` eigenvalues in the stack's dtype, and for each matrix the solver failed on, its index and why
        (its row of eigenvalues is then zeros).

    Examples:
        >>> x = torch.tensor([[[2.0, 0.0], [1.0, 2.0]]], dtype=torch.float64)  # lower triangle of [[2, 1], [1, 2]]
        >>> levels, failed = eigvalsh_stack(x.clone(), "scipy")
        >>> levels, failed
        (tensor([[1., 3.]], dtype=torch.float64), {})
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if solver == "torch" or stack.device.type != "cpu" or not _scipy_offered():
        return _torch_levels(stack)
    if solver == "scipy":
        return _scipy_levels(stack)
    if torch.are_deterministic_algorithms_enabled():
        return _torch_levels(stack)
    key = (stack.shape[-1].bit_length(), stack.dtype, torch.get_num_threads())
    backend = _next_backend(key)
    start = time.perf_counter()
    result = _scipy_levels(stack) if backend == "scipy" else _torch_levels(stack)
    _record(key, backend, (time.perf_counter() - start) / max(1, stack.shape[0]))
    return result


def _next_backend(key: tuple[Any, ...]) -> str:
    """The settled backend of a size class, or the one with fewer trials so far (torch first)."""
    with _lock:
        if key in _chosen:
            return _chosen[key]
        done = _trials.get(key, {"torch": [], "scipy": []})
        return "scipy" if len(done["scipy"]) < len(done["torch"]) else "torch"


def _record(key: tuple[Any, ...], backend: str, seconds: float) -> None:
    with _lock:
        if key in _chosen:
            return
        done = _trials.setdefault(key, {"torch": [], "scipy": []})
        done[backend].append(seconds)
        if min(len(t) for t in done.values()) >= TRIALS:  # the minimum: what each backend can do, noise aside
            _chosen[key] = min(done, key=lambda b: min(done[b]))


def _torch_levels(stack: torch.Tensor) -> tuple[torch.Tensor, dict[int, str]]:
    """One batched ``eigvalsh``; if it raises, matrix by matrix to find the culprits."""
    try:
        return torch.linalg.eigvalsh(stack), {}
    except _ERRORS:
        pass
    levels = stack.new_zeros(stack.shape[:-1])
    failed: dict[int, str] = {}
    for j in range(stack.shape[0]):
        try:
            levels[j] = torch.linalg.eigvalsh(stack[j])
        except _ERRORS as exc:
            failed[j] = f"{type(exc).__name__}: {exc}"
    return levels, failed


def _scipy_levels(stack: torch.Tensor) -> tuple[torch.Tensor, dict[int, str]]:
    """Matrix by matrix through scipy's ``syevd``, in place (no copy of the stack)."""
    import scipy.linalg

    levels = stack.new_zeros(stack.shape[:-1])
    failed: dict[int, str] = {}
    for j, a in enumerate(stack.numpy()):  # a.T: Fortran order, and its upper triangle is a's lower one
        try:
            eigs = scipy.linalg.eigh(
                a.T, lower=False, eigvals_only=True, overwrite_a=True, check_finite=False, driver="evd"
            )
        except (*_ERRORS, scipy.linalg.LinAlgError) as exc:
            failed[j] = f"{type(exc).__name__}: {exc}"
        else:
            levels[j] = torch.from_numpy(eigs)
    return levels, failed


def _scipy_offered() -> bool:
    """scipy's bundled OpenBLAS is found and runs as many threads as torch does in this thread."""
    blas = _scipy_blas()
    return blas is not None and blas.get_num_threads() == torch.get_num_threads()


@functools.cache
def _scipy_blas() -> Any | None:
    """threadpoolctl's handle on the OpenBLAS inside scipy's wheel, or ``None`` (then scipy is never used)."""
    try:
        import scipy.linalg  # loads scipy's BLAS, so that threadpoolctl can see it
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    root = os.path.dirname(os.path.abspath(scipy.__file__))
    homes = (root + ".libs", os.path.join(root, ".dylibs"), root)  # auditwheel/delvewheel, delocate, in-package
    for lib in ThreadpoolController().lib_controllers:
        if lib.internal_api == "openblas" and os.path.dirname(os.path.abspath(lib.filepath)) in homes:
            return lib
    return None
