r"""From a model to the matrix views an analysis reads, and why a matrix cannot be analysed.

Selection: :mod:`rmt_callbacks.monitors._selection`; views: :func:`rmt_callbacks.spectral.matrices_of`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from ..monitors._selection import ParamFilter, available_names, select_names, validate_filter, validate_patterns
from ..spectral import DENSE_LIMIT, MatrixView, matrices_of, validate_matrix

__all__ = ["invalid_reason", "resolve_views", "skip_reason"]


def resolve_views(
    model: nn.Module,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    param_filter: ParamFilter | None = None,
    conv: Literal["slices", "flatten"] = "slices",
) -> list[MatrixView]:
    """The matrix views of the selected parameters (see :mod:`rmt_callbacks.monitors._selection`).

    Raises:
        TypeError, ValueError: bad ``include`` / ``exclude`` / ``param_filter`` / ``conv``.
        ValueError: the selection matches no matrix; the message lists the parameters available.
    """
    inc = validate_patterns("include", include, allow_none=True)
    exc = validate_patterns("exclude", exclude, allow_none=False)
    names = select_names(model, include=inc, exclude=exc, param_filter=validate_filter(param_filter))
    views = [v for n in names for v in matrices_of(_owner(model, n), n, model.get_parameter(n), conv=conv)]
    if not views:
        raise ValueError(
            f"the parameter selection include={include!r}, exclude={list(exclude)!r}, param_filter={param_filter!r} "
            f"matches no matrix of {type(model).__name__}; parameters with ndim >= 2: {available_names(model)}"
        )
    return views


def _owner(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name.rpartition(".")[0])


def invalid_reason(matrix: object) -> str | None:
    """Why ``matrix`` ``(..., M, N)`` cannot be analysed at all, or ``None`` (cheap for any size)."""
    try:
        validate_matrix(matrix, name="weight")
    except (TypeError, ValueError) as exc:
        return str(exc)
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
