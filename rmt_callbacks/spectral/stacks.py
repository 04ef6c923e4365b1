r"""Spectra of many equal-shape matrices, decomposed in stacks of bounded size (the analysis' and Dyson's solver).

Conventions (orientation, Gram normalisation, ascending order): :mod:`rmt_callbacks.spectral`. The spectra of
equal-shape matrices are decomposed together, one stack of at most :data:`STACK_BYTES` bytes (and at least one
matrix) at a time, Gram matrices in one stack, symmetric parts in another; on a CPU by torch's or scipy's LAPACK,
as the ``solver`` argument's rule picks for the stack's size (:mod:`rmt_callbacks.eigensolver`), on a GPU by
``torch.linalg.eigvalsh``. Each stack is filled matrix by matrix from the weights, so a call holds one or two copies of
:math:`\max(\text{largest matrix}, \texttt{STACK\_BYTES})` in float64 (the stack; and the copy torch's
``eigvalsh`` makes of it, where scipy's works in place) and a panel (below). Gram matrices are decomposed in
float64 (squaring doubles the dynamic range; the hard-edge levels of a square matrix need it) and only their lower
triangle is formed (the solvers read no other), in blocks of :data:`GRAM_BLOCK` columns from float64 copies of
row panels of the weights: :math:`(1 + 1/k)/2` of the product's flops for :math:`k` blocks, and a panel instead
of a float64 copy of the matrix. Symmetric parts are decomposed in the weights' own precision, at least float32
(faster than float64 on a CPU; the backward error :math:`\epsilon\|S\|` is that of the weights themselves).

A matrix whose spectrum cannot be computed comes back as the reason (a ``str``), never as an exception: finite
entries whose squares overflow float64, a solver that raises or returns NaN. Any device.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .._moved import moved_names
from ..eigensolver import Solver, backend_for, validate_solver
from ._solvers import eigvalsh_stack

__all__ = ["GRAM_BLOCK", "PANEL_BYTES", "STACK_BYTES", "overflow_reason", "stacked_levels"]

STACK_BYTES: int = 8 << 20
"""Bytes of one stack (at least one matrix): bounds the analysis' memory to one or two stacks, at no measured
cost in speed (LAPACK loops over a CPU batch anyway; ``benchmarks/bench_analysis.py``)."""
GRAM_BLOCK: int = 256
"""Columns per block of a Gram product: only the blocks on and below the diagonal are multiplied."""
PANEL_BYTES: int = STACK_BYTES // 4
"""Bytes of the float64 copy of one row panel of the weights that a Gram product reads at a time."""
_MIN_PANEL_ROWS = 64  # narrower panels would make the products inefficient


def overflow_reason(matrix: torch.Tensor) -> str:
    """Why the spectrum of a finite ``matrix`` could not be computed: its entries' squares overflow float64."""
    return (
        "eigendecomposition failed: the spectrum overflows float64 "
        f"(largest |entry| {float(matrix.detach().abs().max()):.3g}; "
        f"its square exceeds {torch.finfo(torch.float64).max:.3g})"
    )


def _chunks(flats: list[torch.Tensor], per_stack: int) -> Iterator[list[tuple[int, int, int]]]:
    """Stacks of at most ``per_stack`` matrices, as ``(view, start, stop)`` slices of the flattened views."""
    stack: list[tuple[int, int, int]] = []
    room = per_stack
    for i, flat in enumerate(flats):
        start = 0
        while start < flat.shape[0]:
            stop = min(flat.shape[0], start + room)
            stack.append((i, start, stop))
            room -= stop - start
            start = stop
            if room == 0:
                yield stack
                stack, room = [], per_stack
    if stack:
        yield stack


def _fill(out: torch.Tensor, w: torch.Tensor, kind: str) -> bool:
    """Write the symmetric parts of ``w`` ``(b, M, N)``, or the lower triangles of its Gram matrices
    (unnormalised, smaller side; what the solvers read; the blocks above the diagonal blocks are left as they
    were). Whether they are finite; if not, ``out`` is zeroed (the rest of its stack stays decomposable)."""
    if kind == "symmetric":
        out.copy_(w).add_(w.mT).mul_(0.5)
        finite = bool(torch.isfinite(out).all())
    else:
        tall = w if w.shape[-1] <= w.shape[-2] else w.mT  # (b, K, n), K >= n: the Gram matrix is tall.mT @ tall
        n = tall.shape[-1]
        rows = max(_MIN_PANEL_ROWS, PANEL_BYTES // (8 * n * tall.shape[0]))
        for i, panel in enumerate(tall.split(rows, dim=-2)):  # X = sum over row panels P of P^T P
            p64 = panel.to(torch.float64)  # one float64 panel at a time
            for start in range(0, n, GRAM_BLOCK):  # rows start:stop of X, columns up to stop: the lower triangle
                stop = min(n, start + GRAM_BLOCK)  # beta = 0 on the first panel: what ``out`` held is ignored
                out[:, start:stop, :stop].baddbmm_(p64[..., start:stop].mT, p64[..., :stop], beta=float(i > 0))
        # finite entries whose squares overflow float64. A Gram matrix is finite if its diagonal is:
        # |X_ij| <= (X_ii + X_jj) / 2, and the triangle above the diagonal blocks is never written
        finite = bool(torch.isfinite(out.diagonal(dim1=-2, dim2=-1)).all())
    if not finite:
        out.zero_()
    return finite


def stacked_levels(flats: list[torch.Tensor], kind: str, solver: Solver = "auto") -> list[torch.Tensor | str]:
    """The spectra of equal-shape matrices, one decomposition per stack of :data:`STACK_BYTES`.

    Args:
        flats: views ``(B_i, M, N)`` of the same ``(M, N)`` on one device, any real floating dtype, finite.
        kind: ``"gram"`` (the eigenvalues of :math:`W^\top W / M`, ascending, with the :math:`N - M` structural
            zeros, float64) or ``"symmetric"`` (of :math:`(W + W^\top)/2`, square ``W``, computed in the weights'
            precision and returned as float64).
        solver: ``"auto"``, ``"torch"`` or ``"scipy"``: which LAPACK decomposes each stack
            (:func:`rmt_callbacks.eigensolver.backend_for`).

    Returns:
        Per view, its ``(B_i, N)`` spectra, or the reason they could not be computed.

    Raises:
        ValueError: an unknown ``solver``.

    Examples:
        >>> w = torch.tensor([[[3.0, 0.0], [0.0, 4.0]]])
        >>> stacked_levels([w], "gram")[0]
        tensor([[4.5000, 8.0000]], dtype=torch.float64)
    """
    validate_solver(solver)
    m, n = flats[0].shape[-2:]
    side = min(m, n) if kind == "gram" else n
    # Gram: float64 (squaring W doubles its dynamic range; a square matrix's hard-edge levels need it). Symmetric
    # part: the weights' own precision, float32 at least (backward error eps * ||S||, as good as the weights are)
    dtype = torch.float64 if kind == "gram" else torch.promote_types(flats[0].dtype, torch.float32)
    per_stack = max(1, STACK_BYTES // (side * side * dtype.itemsize))
    pieces: list[list[torch.Tensor]] = [[] for _ in flats]
    reasons: dict[int, str] = {}
    for stack in _chunks(flats, per_stack):
        buf = torch.empty(sum(b - a for _, a, b in stack), side, side, dtype=dtype, device=flats[0].device)
        offset = 0
        for i, a, b in stack:  # no view of buf outlives it: each stack is freed before the next is filled
            if not _fill(buf[offset : offset + b - a], flats[i][a:b], kind):
                reasons.setdefault(i, overflow_reason(flats[i]))
            offset += b - a
        eigs, failed = eigvalsh_stack(buf, backend_for(solver, buf))  # may overwrite buf
        offset = 0
        for i, a, b in stack:
            pieces[i].append(eigs[offset : offset + b - a])
            failure = next((failed[j] for j in range(offset, offset + b - a) if j in failed), None)
            if failure is not None:
                reasons.setdefault(i, f"eigendecomposition failed: {failure}")
            offset += b - a
        del buf, eigs
    out: list[torch.Tensor | str] = []
    for i in range(len(flats)):
        if i in reasons:
            out.append(reasons[i])
            continue
        levels = torch.cat(pieces[i])
        if not bool(torch.isfinite(levels).all()):  # a solver that returned NaN instead of raising
            out.append(f"eigendecomposition failed: non-finite eigenvalues of a finite {kind} matrix")
            continue
        if kind == "gram":
            levels = levels.clamp_min(0.0) / m
            if n > m:
                levels = torch.cat([levels.new_zeros(levels.shape[0], n - m), levels], dim=-1)
        out.append(levels.to(torch.float64))
    return out


__getattr__ = moved_names(
    __name__,
    {
        "EIGENSOLVER": "is gone: pass solver='torch' | 'scipy' | 'auto' to analyze(), SpectrumMonitor or "
        "DysonMonitor instead (rmt_callbacks.eigensolver)"
    },
)
