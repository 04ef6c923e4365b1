r"""What a computed Gram spectrum resolves: the numerical rank and the rounding resolution of its spacings.

Levels are the ascending normalised Gram eigenvalues ``(..., N)`` of :func:`~rmt_callbacks.spectral.esd`
(:math:`\lambda_i = s_i^2 / M`), computed from the stored weights. Two rules say which of their statistics describe
the matrix rather than its rounding; every analysis applies them through these functions.

**Numerical rank** (:func:`numerical_rank`). A level at or below :func:`rank_cut` is numerically zero: NumPy's
``matrix_rank`` rule :math:`s_i > s_{\max}\max(M, N)\,\epsilon`. Like the :math:`N - M` structural zeros of a wide
:math:`W`, such levels are left out of the Marchenko–Pastur fit, the spacings and the surmise, :math:`\langle r
\rangle` and the power-law fit: in a rank-5 :math:`300 \times 200` product they are rounding noise of relative size
:math:`10^{-6}`, which otherwise made 66 "spikes" and a GOE-like :math:`\langle r\rangle`. A full-rank Gaussian
matrix is untouched: its smallest level, about :math:`\lambda_{\max}/(4N^2)` for a square one, is far above the cut.

**Spacing resolution** (:func:`spacing_resolution`). Rounding each stored entry perturbs :math:`W` by :math:`E` with
:math:`|E_{ij}| \le \epsilon |W_{ij}|`, so by Weyl's inequality every singular value moves by at most
:math:`\|E\|_2 \le \|E\|_F \le \epsilon\|W\|_F`. Singular-value spacings far below that are not resolved: the
levels of an orthogonal float32 :math:`256 \times 256` matrix are all 1 up to a spread of :math:`10^{-6}`, whose
spacings are rounding, not level repulsion. The bulk's mean spacing is measured on :math:`s = \sqrt{M\lambda}` over
the levels above the rank cut, between their first and last deciles (a few spikes or a hard edge do not widen it);
below the resolution the spacing statistics are not reported.

**Which** :math:`\epsilon`. That of ``torch.promote_types(dtype, torch.float32)``: the weights' own for float32
and float64, float32's for float16 and bfloat16. Half-precision weights are decomposed in float32 (the
conventions of :mod:`rmt_callbacks.spectral`), so float32's rounding is what the computed levels carry; their own
:math:`\epsilon` (:math:`2^{-7}` for bfloat16) in these worst-case bounds would call the rank of a :math:`128
\times 128` matrix 0 and the spacings of every Gaussian matrix past :math:`N \approx 40` unresolved, while a random
rounding error moves the bulk levels far less than :math:`\epsilon\|W\|_F`. The rank cut is floored at the float64
levels' own resolution :math:`\lambda_{\max}\max(M, N)\,\epsilon_{64}`.
"""

from __future__ import annotations

import math

import torch

__all__ = ["numerical_rank", "rank_cut", "rounding_epsilon", "spacing_resolution"]

_F64_EPS = torch.finfo(torch.float64).eps
_DECILE = 0.1


def rounding_epsilon(dtype: torch.dtype | None) -> float:
    r"""The :math:`\epsilon` of both rules: that of ``torch.promote_types(dtype, torch.float32)`` (module
    docstring); float64's for ``None`` or a non-floating dtype.

    Example:
        >>> rounding_epsilon(torch.bfloat16) == torch.finfo(torch.float32).eps
        True
    """
    if dtype is None or not dtype.is_floating_point or dtype.is_complex:
        return _F64_EPS
    return float(torch.finfo(torch.promote_types(dtype, torch.float32)).eps)


def _nonstructural(eigs: torch.Tensor, rows: int) -> torch.Tensor:
    return eigs[..., max(eigs.shape[-1] - rows, 0) :].double().clamp_min(0.0)


def rank_cut(eigs: torch.Tensor, *, rows: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    r"""The level at or below which a Gram level is numerically zero, per matrix, shape ``(...)`` (float64):
    :math:`\lambda_{\max}\max\big((\max(M, N)\,\epsilon)^2,\ \max(M, N)\,\epsilon_{64}\big)`, NumPy's
    ``matrix_rank`` rule :math:`s_i > s_{\max}\max(M, N)\,\epsilon` in levels, floored (module docstring).

    Args:
        eigs: Gram levels ``(..., N)`` (any order), structural zeros included.
        rows: :math:`M`.
        dtype: the weights' dtype, for :math:`\epsilon` (:func:`rounding_epsilon`); ``None``: ``eigs.dtype``.

    Example:
        >>> rank_cut(torch.tensor([0.0, 1.0, 4.0], dtype=torch.float64), rows=3).item() == 4 * 3 * 2.0**-52
        True
    """
    big = max(rows, eigs.shape[-1])
    eps = rounding_epsilon(eigs.dtype if dtype is None else dtype)
    top = _nonstructural(eigs, rows).amax(dim=-1)
    return top * max((big * eps) ** 2, big * _F64_EPS)


def numerical_rank(eigs: torch.Tensor, *, rows: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    r"""The number of non-structural levels above :func:`rank_cut`, per matrix, shape ``(...)`` (int64). For
    ascending ``eigs`` they are the last ``rank`` levels; the others are numerically zero.

    Example:
        >>> numerical_rank(torch.tensor([[0.0, 1e-30, 1.0, 2.0]], dtype=torch.float64), rows=4).tolist()
        [2]
    """
    bulk = _nonstructural(eigs, rows)
    return (bulk > rank_cut(eigs, rows=rows, dtype=dtype)[..., None]).sum(dim=-1)


def spacing_resolution(eigs: torch.Tensor, *, rows: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    r"""The bulk's mean singular-value spacing over the rounding resolution :math:`\epsilon\|W\|_F`, per matrix,
    shape ``(...)`` (float64); below 1 the spacings are not resolved (module docstring). NaN for fewer than two
    levels above the rank cut.

    The mean spacing is :math:`(s_{(h)} - s_{(l)})/(h - l)` over the ``rank`` levels above :func:`rank_cut`,
    :math:`s = \sqrt{M\lambda}`, with :math:`l, h` their first and last deciles (all of them when fewer than 10);
    :math:`\|W\|_F = \sqrt{M\sum_i\lambda_i}`.

    Args:
        eigs: ascending Gram levels ``(..., N)``, structural zeros included.
        rows: :math:`M`.
        dtype: the weights' dtype (:func:`rounding_epsilon`); ``None``: ``eigs.dtype``.

    Example:
        >>> spacing_resolution(torch.ones(50, dtype=torch.float64), rows=50).item()  # all equal: nothing resolved
        0.0
        >>> w = torch.randn(50, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> bool(spacing_resolution(torch.linalg.eigvalsh(w.T @ w / 50), rows=50) > 1e10)
        True
    """
    bulk = _nonstructural(eigs, rows)
    n = bulk.shape[-1]
    rank = numerical_rank(eigs, rows=rows, dtype=dtype)
    trim = torch.floor(rank.double() * _DECILE).long()
    lo = (n - rank + trim).clamp(0, max(n - 1, 0))
    hi = (n - 1 - trim).clamp_min(0)
    s = (bulk * rows).sqrt()
    if n == 0:
        return torch.full(eigs.shape[:-1], math.nan, dtype=torch.float64, device=eigs.device)
    width = s.gather(-1, hi[..., None])[..., 0] - s.gather(-1, lo[..., None])[..., 0]
    gaps = (hi - lo).double()
    eps = rounding_epsilon(eigs.dtype if dtype is None else dtype)
    frobenius = (bulk.sum(dim=-1) * rows).sqrt()
    ratio = (width / gaps.clamp_min(1.0)) / (eps * frobenius).clamp_min(torch.finfo(torch.float64).tiny)
    return torch.where(gaps >= 1, ratio, torch.full_like(ratio, math.nan))
