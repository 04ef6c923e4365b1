r"""From a model to the matrix views an analysis reads, and why a matrix cannot be analysed.

Selection: :mod:`rmt_callbacks.spectral.selection` (the one rule); views: :func:`rmt_callbacks.spectral.matrices_of`.
"""

from __future__ import annotations

import torch

from ..spectral import DENSE_LIMIT, validate_matrix
from ..spectral.selection import select_views

__all__ = ["invalid_reason", "resolve_views", "skip_reason"]


resolve_views = select_views
"""The matrix views of the selected weights: :func:`rmt_callbacks.spectral.selection.select_views`, the one rule
(raises ``TypeError``/``ValueError`` for bad arguments and for a selection that matches no matrix)."""


def invalid_reason(matrix: object) -> str | None:
    """Why ``matrix`` ``(..., M, N)`` cannot be analysed at all, or ``None`` (cheap for any size)."""
    try:
        validate_matrix(matrix, name="weight")
    except (TypeError, ValueError) as exc:
        return str(exc)
    assert isinstance(matrix, torch.Tensor)  # validate_matrix raised a TypeError for anything else
    m, n = matrix.shape[-2:]
    if min(m, n) < 2:
        return f"degenerate shape {tuple(matrix.shape)}: a matrix needs at least 2 rows and 2 columns"
    return None


def skip_reason(matrix: torch.Tensor) -> str | None:
    """Why ``matrix`` cannot be diagonalised exactly, or ``None``: for callers that need exact levels (Dyson).

    The size is checked before the entries: :math:`\\min(M, N) \\ge` ``DENSE_LIMIT`` is refused unread.
    """
    if isinstance(matrix, torch.Tensor) and matrix.ndim >= 2 and min(matrix.shape[-2:]) >= DENSE_LIMIT:
        return (
            f"too large for the dense eigensolver: shape {tuple(matrix.shape)} has min(M, N) = "
            f"{min(matrix.shape[-2:])} >= DENSE_LIMIT = {DENSE_LIMIT}"
        )
    return invalid_reason(matrix)
