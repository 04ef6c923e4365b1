r"""The two CPU eigensolver backends of a stack: torch's LAPACK and scipy's, each run when it is told.

``"torch"``: one batched ``torch.linalg.eigvalsh`` (MKL in torch's x86 wheels; any device; it copies the stack).
``"scipy"``: ``scipy.linalg.eigh`` matrix by matrix, the ``syevd`` of the OpenBLAS in scipy's wheel, in place (CPU
only). Both compute eigenvalues only by the same algorithm and agree to rounding (≈ 1e-14 relative), not to the
last bit. Which one decomposes a stack is not decided here: :func:`rmt_callbacks.eigensolver.backend_for` (the
``solver`` argument of the entry points) tells :func:`~rmt_callbacks.spectral.stacks.stacked_levels`.
"""

from __future__ import annotations

import torch

from .._checks import one_of
from ..eigensolver import Backend

__all__ = ["BACKENDS", "eigvalsh_stack"]

BACKENDS: tuple[str, ...] = ("torch", "scipy")
_ERRORS = (ValueError, TypeError, RuntimeError, ArithmeticError)  # what a bad matrix makes a solver raise


def eigvalsh_stack(stack: torch.Tensor, backend: Backend) -> tuple[torch.Tensor, dict[int, str]]:
    """The ascending eigenvalues of a stack of symmetric matrices, read from their lower triangles.

    Args:
        stack: ``(b, n, n)``, float32 or float64, contiguous; its contents may be overwritten.
        backend: ``"torch"`` or ``"scipy"`` (a CPU stack), run as told.

    Returns:
        ``(b, n)`` eigenvalues in the stack's dtype, and for each matrix the solver failed on, its index and why
        (its row of eigenvalues is then zeros).

    Raises:
        ValueError: an unknown ``backend``, or ``"scipy"`` for a stack not on the CPU.

    Examples:
        >>> x = torch.tensor([[[2.0, 0.0], [1.0, 2.0]]], dtype=torch.float64)  # lower triangle of [[2, 1], [1, 2]]
        >>> levels, failed = eigvalsh_stack(x.clone(), "scipy")
        >>> levels, failed
        (tensor([[1., 3.]], dtype=torch.float64), {})
    """
    if backend == "torch":
        return _torch_levels(stack)
    one_of("backend", backend, BACKENDS)
    if stack.device.type != "cpu":
        raise ValueError(f"scipy's backend decomposes CPU stacks only, got one on {stack.device}")
    return _scipy_levels(stack)


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
