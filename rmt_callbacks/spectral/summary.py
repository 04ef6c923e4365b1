r"""Scalar statistics of a Gram spectrum: extremes, norms, stable rank, mean spacing ratio.

Inputs are the normalised Gram eigenvalues of :func:`rmt_callbacks.spectral.esd` (``kind="gram"``), shape
``(..., N)``; every statistic is computed per matrix, giving shape ``(...)``. Conventions:
:mod:`rmt_callbacks.spectral`.
"""

from __future__ import annotations

import math

import torch

from .._checks import positive
from .resolution import numerical_rank, spacing_resolution
from .spacing import _check_levels, _ratios

__all__ = ["MIN_RATIOS", "nonstructural_levels", "spectral_norm", "spectrum_summary", "stable_rank"]

MIN_RATIOS = 16
r"""The fewest spacing ratios :math:`\langle r \rangle` is reported from. Why 16: one ratio has a standard deviation
of 0.28 for Poisson levels (density :math:`2/(1+r)^2`) and about 0.25 for GOE ones, so 16 give a standard error
of 0.07, half the gap between the Poisson (0.386) and GOE (0.531) values: the two are told apart at two standard
errors. Fewer, and :math:`\langle r\rangle` is NaN (left out of the metrics)."""


def _check_rows(rows: object) -> int:
    return positive("rows", rows, integer=True)  # M, the number of rows of W


def stable_rank(eigs: torch.Tensor) -> torch.Tensor:
    r"""Stable rank :math:`\|W\|_F^2 / \|W\|_2^2` from the Gram eigenvalues.

    .. math::

        r_s = \frac{\sum_i \lambda_i}{\max_i \lambda_i} \in [1, \min(M, N)],

    independent of the normalisation of the Gram matrix; NaN for a zero matrix (all :math:`\lambda_i = 0`).

    Args:
        eigs: Gram eigenvalues, shape ``(..., N)``, in any order.

    Returns:
        Shape ``(...)``.

    Raises:
        TypeError: ``eigs`` is not a real floating tensor.
        ValueError: ``eigs`` is empty or has non-finite entries.

    References: Rudelson, Vershynin, J. ACM 54 (2007), arXiv:math/0503442.

    Example:
        >>> stable_rank(torch.tensor([0.0, 1.0, 4.0])).item()
        1.25
    """
    return _stable_rank(_check_levels(eigs, min_levels=1))


def _stable_rank(eigs: torch.Tensor) -> torch.Tensor:
    return eigs.sum(dim=-1) / eigs.amax(dim=-1)


def spectral_norm(eigs: torch.Tensor, *, rows: int) -> torch.Tensor:
    r"""Spectral norm :math:`\|W\|_2` from the normalised Gram eigenvalues (:math:`X = W^\top W / M`).

    .. math::

        \|W\|_2 = \sqrt{M \lambda_{\max}}.

    For eigenvalues of the unnormalised :math:`W^\top W` pass ``rows=1``.

    Args:
        eigs: Gram eigenvalues, shape ``(..., N)``, in any order.
        rows: :math:`M`, the number of rows of ``W`` (``W.shape[-2]``).

    Returns:
        Shape ``(...)``.

    Raises:
        TypeError: ``eigs`` is not a real floating tensor.
        ValueError: ``eigs`` is empty or non-finite, or ``rows`` is not a positive int.

    References: arXiv:2412.20496.

    Example:
        >>> spectral_norm(torch.tensor([0.5, 4.5]), rows=2).item()
        3.0
    """
    return _spectral_norm(_check_levels(eigs, min_levels=1), _check_rows(rows))


def _spectral_norm(eigs: torch.Tensor, rows: int) -> torch.Tensor:
    return (rows * eigs.amax(dim=-1).clamp_min(0.0)).sqrt()


def nonstructural_levels(eigs: torch.Tensor, rows: int) -> torch.Tensor:
    r"""The ascending Gram levels ``(..., N)`` without the :math:`N - M` structural zeros of a wide :math:`W`:
    the last :math:`\min(M, N)` of them, ``(..., min(M, N))`` (a view).

    Example:
        >>> nonstructural_levels(torch.tensor([0.0, 0.0, 1.0, 3.0]), rows=2).tolist()
        [1.0, 3.0]
    """
    return eigs[..., max(eigs.shape[-1] - rows, 0) :]


def spectrum_summary(
    eigs: torch.Tensor, *, rows: int, min_ratios: int = MIN_RATIOS, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    r"""The standard per-matrix statistics of a normalised Gram spectrum, as a dict of tensors of shape ``(...)``.

    Keys: ``lambda_min``, ``lambda_max``, ``lambda_mean`` (:math:`= \|W\|_F^2 / (MN)`), ``spectral_norm``
    (:func:`spectral_norm`), ``stable_rank`` (:func:`stable_rank`) and ``mean_spacing_ratio``
    (:func:`~rmt_callbacks.spectral.mean_spacing_ratio`). The ratio is taken over the non-structural levels
    only: when :math:`N > M` the :math:`N - M` smallest eigenvalues (the structural zeros of
    :func:`~rmt_callbacks.spectral.esd`) are left out; it is NaN when they give fewer than ``min_ratios`` ratios
    (``min(M, N) - 2 < min_ratios``). Spikes above the Marchenko–Pastur bulk are kept: the ratio needs no fit,
    and :math:`k` outliers change at most :math:`k + 1` of the ratios. Levels at or below the numerical-rank cut
    (:func:`~rmt_callbacks.spectral.numerical_rank`) are left out like the structural zeros: the ratio is taken
    over the last ``rank`` levels, NaN when they give fewer than ``min_ratios`` ratios; it is NaN as well where
    the bulk's spacings are below the rounding resolution (:func:`~rmt_callbacks.spectral.spacing_resolution`
    below 1): they would be ratios of rounding noise.

    .. math::

        \langle r \rangle = \Big\langle \frac{\min(S_i, S_{i+1})}{\max(S_i, S_{i+1})} \Big\rangle_i,
        \qquad S_i = \lambda_{i+1} - \lambda_i,\ \ i \ge N - \text{rank}.

    Args:
        eigs: Gram eigenvalues from ``esd(W)``, shape ``(..., N)``, in any order.
        rows: :math:`M`, the number of rows of ``W``.
        min_ratios: the fewest ratios per matrix behind :math:`\langle r\rangle` (:data:`MIN_RATIOS`; pass less
            when averaging a stack of matrices, which pools their ratios).
        dtype: the weights' dtype, whose rounding sets the rank cut and the resolution
            (:func:`~rmt_callbacks.spectral.rounding_epsilon`); ``None``: ``eigs.dtype``.

    Returns:
        A dict of six tensors, each of shape ``(...)``.

    Raises:
        TypeError: ``eigs`` is not a real floating tensor.
        ValueError: ``eigs`` is empty or non-finite, or ``rows`` / ``min_ratios`` is not a positive int.

    References: arXiv:2412.20496; Atas et al., PRL 110, 084101 (2013), arXiv:1212.5611.

    Example:
        >>> s = spectrum_summary(torch.tensor([1.0, 2.0, 4.0, 8.0]), rows=4, min_ratios=2)
        >>> s["lambda_max"].item(), s["spectral_norm"].item(), s["mean_spacing_ratio"].item()
        (8.0, 5.656854152679443, 0.5)
        >>> spectrum_summary(torch.tensor([1.0, 2.0, 4.0, 8.0]), rows=4)["mean_spacing_ratio"].isnan().item()
        True
    """
    rows = _check_rows(rows)
    min_ratios = positive("min_ratios", min_ratios, integer=True)
    eigs = _check_levels(eigs, min_levels=1).sort(dim=-1).values
    bulk = nonstructural_levels(eigs, rows)
    nan = torch.full(eigs.shape[:-1], math.nan, dtype=eigs.dtype, device=eigs.device)
    if bulk.shape[-1] >= 2 + min_ratios:
        ratios = _ratios(bulk)  # ratio i reads levels i to i + 2: counted when level i is above the rank cut
        first = bulk.shape[-1] - numerical_rank(eigs, rows=rows, dtype=dtype)
        counted = torch.arange(ratios.shape[-1], device=eigs.device) >= first[..., None]
        ratio = torch.nanmean(torch.where(counted, ratios, torch.full_like(ratios, math.nan)), dim=-1)
        resolved = spacing_resolution(eigs, rows=rows, dtype=dtype) >= 1.0
        ratio = torch.where((counted.sum(dim=-1) >= min_ratios) & resolved, ratio, nan)
    else:
        ratio = nan
    return {
        "lambda_min": eigs[..., 0],
        "lambda_max": eigs[..., -1],
        "lambda_mean": eigs.mean(dim=-1),
        "spectral_norm": _spectral_norm(eigs, rows),
        "stable_rank": _stable_rank(eigs),
        "mean_spacing_ratio": ratio,
    }
