r"""Levels at or below the numerical-rank cut, and spectra finer than the weights' rounding: the shared rule of the
analyses (:mod:`rmt_callbacks.spectral.resolution`), and the Marchenko–Pastur fit of the levels that remain.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..fits import MIN_VALUES, MarchenkoPasturFit, fit_marchenko_pastur
from ..laws import MarchenkoPastur
from ..spectral import nonstructural_levels, numerical_rank, spacing_resolution

__all__ = ["fit_resolved_marchenko_pastur", "kept_levels", "rank_note", "unresolved"]


def rank_note(rank: torch.Tensor, full: int) -> str:
    """``"rank r of min(M, N)"`` (``"ranks a-b of …"`` for a batch) when a level was cut as numerically zero."""
    if bool((rank >= full).all()):
        return ""
    lo, hi = int(rank.min()), int(rank.max())
    return f"rank {lo} of {full}" if lo == hi else f"ranks {lo}-{hi} of {full}"


def unresolved(gram: torch.Tensor, rows: int, dtype: torch.dtype | None) -> str:
    """Why no matrix's spacings are resolved (:func:`~rmt_callbacks.spectral.spacing_resolution`), or ``""``."""
    resolution = spacing_resolution(gram, rows=rows, dtype=dtype)
    best = float(resolution.nan_to_num(math.inf).max())  # NaN: too few levels, left to the "too few" rule
    if best >= 1.0:
        return ""
    factor = "all levels equal" if best == 0.0 else f"{1.0 / best:.3g} times below it"
    return (
        "levels not resolved: the bulk's mean singular-value spacing is below the rounding resolution "
        f"eps * ||W||_F of the stored weights ({factor}); its spacings are rounding noise"
    )


def kept_levels(gram: torch.Tensor, rows: int, dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The non-structural levels above the numerical-rank cut, pooled (flat), and the rank of each matrix."""
    bulk = nonstructural_levels(gram, rows)
    rank = numerical_rank(gram, rows=rows, dtype=dtype)
    return torch.cat([b[b.shape[-1] - int(k) :] for b, k in zip(bulk, rank, strict=True)]), rank


def fit_resolved_marchenko_pastur(gram: torch.Tensor, rows: int, dtype: torch.dtype | None) -> MarchenkoPasturFit:
    """The Marchenko–Pastur fit of ``gram`` ``(B, N)``, ratio :math:`N/M`, pooled, without the levels at or below
    the numerical-rank cut (:func:`~rmt_callbacks.spectral.numerical_rank`): as before for full-rank matrices;
    otherwise fitted in the frame of the smaller Gram matrix (the same law, :mod:`rmt_callbacks.fits.
    marchenko_pastur`), and failed with the rank when fewer than ``MIN_VALUES`` levels are left."""
    cols = gram.shape[-1]
    q, full = cols / rows, min(rows, cols)
    kept, rank = kept_levels(gram, rows, dtype)
    note = rank_note(rank, full)
    if not note:
        return fit_marchenko_pastur(gram.flatten(), ratio=q, rows=rows)
    if kept.numel() < MIN_VALUES:
        return MarchenkoPasturFit.failed(
            kept.numel(),
            f"{note}: too few levels above the numerical-rank cut to fit: got {kept.numel()}, need at least "
            f"{MIN_VALUES}",
        )
    if q > 1.0:  # the levels of W W^T / N are these / q, with ratio 1/q and N rows: the same sigma2 and spikes
        fit = fit_marchenko_pastur(kept / q, ratio=1.0 / q, rows=cols)
        if fit.fitted:
            law = MarchenkoPastur(sigma2=fit.sigma2, ratio=q)
            fit = replace(fit, ratio=q, lambda_minus=law.lambda_minus, lambda_plus=law.lambda_plus)
    else:
        fit = fit_marchenko_pastur(kept, ratio=q, rows=rows)
    return fit if fit.converged else replace(fit, message=f"{note}: {fit.message}")
