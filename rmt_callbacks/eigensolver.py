r"""Which LAPACK decomposes a stack of symmetric matrices, torch's or scipy's: the ``solver`` argument's fixed rule.

On a CPU, ``torch.linalg.eigvalsh`` calls the LAPACK torch was built with (MKL in the x86 wheels) and
``scipy.linalg.eigh`` the OpenBLAS that scipy's wheel bundles. Both run the same algorithm for eigenvalues only
(Householder tridiagonalisation, then the root-free QR of ``sterf``) and agree to rounding (≈ 1e-14 relative), not
to the last bit; what is computed from the levels agrees to its own precision, no better (a fit optimised to a
tolerance, e.g. the surmise's β to ≈ 1e-8; the semicircle on a float32 symmetric part to ≈ 1e-5). scipy's works in
place where torch copies the stack. Which is faster depends on the size: on the project's AMD EPYC test machine (one
thread, float64 and float32 alike) scipy's takes 100 × torch's time per matrix at :math:`n = 2`, 2.8 × at 32, 1.3 ×
at 128, 0.96 × at 256, 0.7–0.8 × at 512 and 0.6–0.7 × at 1024 (``benchmarks/bench_solvers.py``).

Every entry point that decomposes (:func:`rmt_callbacks.analyze`, :func:`rmt_callbacks.analysis.analyze_views`,
:class:`~rmt_callbacks.SpectrumMonitor`, :class:`~rmt_callbacks.DysonMonitor`) takes ``solver``:

* ``"torch"``: torch's, always;
* ``"scipy"``: scipy's where it is *offered* (:func:`scipy_offered`), torch's elsewhere;
* ``"auto"`` (default): scipy's where it is offered and :math:`n \ge` :data:`SCIPY_FROM`, torch's otherwise, and
  torch's always under ``torch.use_deterministic_algorithms(True)`` (Lightning's ``Trainer(deterministic=True)``).

The rule reads the stack's size and the environment, never a timing (whatever the dtype): the same environment (threads,
libraries, device) decomposes the same stack with the same backend, so an analysis repeated, in this process or
another, gives the same bits. GPU stacks always go to torch.

**Offered.** scipy's backend is used only where it needs no setting changed: when ``threadpoolctl`` finds the
OpenBLAS inside scipy's own wheel and its (process-wide) thread count equals torch's for the calling thread. By
default both use one thread per core in a training process's main thread (``analyze``, ``DysonMonitor``,
``SpectrumMonitor(background=False)``) where each core runs one hardware thread; with SMT torch counts physical
cores and OpenBLAS logical ones, and torch's solver is used unless the counts are set equal (``OMP_NUM_THREADS``).
A monitor's background worker runs torch with one thread, so it uses torch's solver unless scipy's BLAS has one
thread too (``OPENBLAS_NUM_THREADS=1``).

A base module: it imports torch, and scipy and ``threadpoolctl`` only when a CPU stack asks (importing the package
stays cheap).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Literal, cast

import torch

from ._checks import one_of

__all__ = [
    "SCIPY_FROM",
    "SOLVERS",
    "Backend",
    "Solver",
    "backend_for",
    "scipy_blas",
    "scipy_offered",
    "validate_solver",
]

Solver = Literal["auto", "torch", "scipy"]
Backend = Literal["torch", "scipy"]
SOLVERS: tuple[str, ...] = ("auto", "torch", "scipy")
SCIPY_FROM: int = 256
"""The crossover of ``"auto"``: stacks of :math:`n \\times n` matrices with :math:`n \\ge` this go to scipy's
backend where it is offered (0.96 × torch's time per matrix at 256, 0.6–0.8 × above; 1.3 × at 128 and worse
below: ``benchmarks/bench_solvers.py``)."""


def validate_solver(solver: object) -> Solver:
    """``solver`` itself if it is one of :data:`SOLVERS`.

    Raises:
        ValueError: anything else, naming the choices.

    Examples:
        >>> validate_solver("auto")
        'auto'
        >>> validate_solver("mkl")
        Traceback (most recent call last):
        ...
        ValueError: solver must be one of ('auto', 'torch', 'scipy'), got 'mkl'
    """
    return cast(Solver, one_of("solver", solver, SOLVERS))


def backend_for(solver: Solver, stack: torch.Tensor) -> Backend:
    """The backend that decomposes ``stack`` ``(..., n, n)`` under ``solver`` (module docstring: the rule).

    Raises:
        ValueError: ``solver`` is not one of :data:`SOLVERS`.

    Examples:
        >>> backend_for("torch", torch.zeros(1, 512, 512))
        'torch'
        >>> backend_for("auto", torch.zeros(1, 8, 8))  # below the crossover: torch's, offered or not
        'torch'
    """
    validate_solver(solver)
    if solver == "torch" or stack.device.type != "cpu":
        return "torch"
    if solver == "auto" and (stack.shape[-1] < SCIPY_FROM or torch.are_deterministic_algorithms_enabled()):
        return "torch"
    return "scipy" if scipy_offered() else "torch"


def scipy_offered() -> bool:
    """scipy's bundled OpenBLAS is found and runs as many threads as torch does in the calling thread."""
    blas = scipy_blas()
    return blas is not None and blas.get_num_threads() == torch.get_num_threads()


@functools.cache
def scipy_blas() -> Any | None:
    """threadpoolctl's handle on the OpenBLAS inside scipy's wheel, or ``None`` (then scipy's is never used)."""
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
