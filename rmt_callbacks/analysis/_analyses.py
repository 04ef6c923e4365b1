r"""The named analyses: each a function from one view's levels to an :class:`Outcome`, looked up in :data:`TABLE`.

An analysis reads :class:`Levels` (the view's Gram spectrum, its symmetric part's when asked for, its shape and
its weights) and returns what it found (metrics, the fitted law, extra arrays) or ``None`` where it does not apply
(the semicircle of a non-square matrix). It never mutates its input; a fit that cannot be made raises one of
:data:`FIT_ERRORS`, which :func:`analyse_levels` turns into ``{prefix}converged = 0`` and the reason. What each
computes: :mod:`rmt_callbacks.analysis`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from ..fits import FitResult, fit_semicircle, fit_surmise
from ..fits.marchenko_pastur import spike_threshold
from ..laws import SpectralLaw
from ..spectral import (
    MatrixView,
    nonstructural_levels,
    numerical_rank,
    spacing_resolution,
    spectrum_summary,
    unfolded_spacings,
)
from ..spectral.summary import MIN_RATIOS
from ._resolved import fit_resolved_marchenko_pastur, rank_note, unresolved
from ._result import MIN_UNFOLD_LEVELS, Levels, MatrixResult, Outcome
from ._tails import power_law, randomize, rank_statistics

__all__ = ["FIT_ERRORS", "PREFIX", "TABLE", "Levels", "Outcome", "analyse_levels"]

FIT_ERRORS = (ValueError, TypeError, RuntimeError, ArithmeticError)  # what a bad spectrum makes a fit raise
PREFIX = {"marchenko_pastur": "mp_", "semicircle": "semicircle_", "spacings": "surmise_", "power_law": "pl_"}
"""The metric prefix of each fit (``"summary"`` has none)."""


def _fitted(fit: FitResult, prefix: str, spectra: dict[str, torch.Tensor] | None = None) -> Outcome:
    law = fit.law() if fit.converged else None
    return Outcome(fit.to_metrics(prefix), law, None if fit.converged else fit.message, spectra or {})


def summary(levels: Levels) -> Outcome:
    """Batch means of :func:`~rmt_callbacks.spectral.spectrum_summary` and of the rank statistics
    (:func:`~rmt_callbacks.analysis._tails.rank_statistics`); a statistic NaN for every matrix is left out, and
    when :math:`\\langle r\\rangle` is left out by the numerical-rank cut or the rounding resolution
    (:mod:`rmt_callbacks.spectral.resolution`) the failure says which."""
    batch = levels.gram.shape[0]  # <r> of the batch pools its ratios: MIN_RATIOS of them in all
    dtype = levels.matrix.dtype
    stats = spectrum_summary(
        levels.gram, rows=levels.rows, min_ratios=max(1, math.ceil(MIN_RATIOS / batch)), dtype=dtype
    )
    means = {k: float(torch.nanmean(v.double())) for k, v in stats.items()}
    ratios = numerical_rank(levels.gram, rows=levels.rows, dtype=dtype).cpu().double().sub(2.0).clamp_min(0.0)
    if float(ratios[torch.isfinite(stats["mean_spacing_ratio"]).cpu()].sum()) < MIN_RATIOS:  # pooled: all of them
        means["mean_spacing_ratio"] = math.nan
    means["n_levels"] = float(batch * min(levels.rows, levels.cols))
    means.update(rank_statistics(levels))
    failure = None
    if math.isnan(means["mean_spacing_ratio"]):
        rank = numerical_rank(levels.gram, rows=levels.rows, dtype=dtype)
        note = rank_note(rank, min(levels.rows, levels.cols))
        if note:
            failure = f"mean_spacing_ratio: {note}: too few levels above the numerical-rank cut"
        else:
            why = unresolved(levels.gram, levels.rows, dtype)
            failure = f"mean_spacing_ratio: {why}" if why else None
    return Outcome({k: v for k, v in means.items() if not math.isnan(v)}, failure=failure)


def marchenko_pastur(levels: Levels) -> Outcome:
    """The Marchenko–Pastur fit of the pooled Gram levels, ratio :math:`N/M`, without the numerically zero ones
    (:func:`fit_resolved_marchenko_pastur`)."""
    m, n = levels.rows, levels.cols
    fit = fit_resolved_marchenko_pastur(levels.gram, m, levels.matrix.dtype)
    outcome = _fitted(fit, PREFIX["marchenko_pastur"])
    outcome.metrics["n_levels"] = float(levels.gram.shape[0] * min(m, n))
    return outcome


def semicircle(levels: Levels) -> Outcome | None:
    """The semicircle fit of the pooled symmetric-part levels of a square view (``None`` otherwise)."""
    if levels.rows != levels.cols:
        return None
    if not isinstance(levels.symmetric, torch.Tensor):  # its eigendecomposition failed, or was not made
        raise RuntimeError(levels.symmetric or "the symmetric part was not decomposed")
    outcome = _fitted(fit_semicircle(levels.symmetric.flatten()), PREFIX["semicircle"])
    outcome.metrics["n_levels"] = float(levels.symmetric.numel())
    return outcome


def pooled_spacings(gram: torch.Tensor, rows: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Pooled normalised spacings of the non-structural bulk levels of ``gram`` ``(B, N)`` (module docstring of
    :mod:`rmt_callbacks.analysis`).

    Levels at or below the numerical-rank cut are left out like the structural zeros, and matrices whose spacings
    are below the rounding resolution are left out whole (:mod:`rmt_callbacks.spectral.resolution`; ``dtype``:
    the weights', ``None``: ``gram``'s); none resolved raises. Spikes, the levels above
    :func:`~rmt_callbacks.fits.marchenko_pastur.spike_threshold` of the batch's Marchenko–Pastur fit (its
    ``num_spikes``), are left out too: inside the unfolding window they would bend the fitted counting function
    and collapse the bulk's unfolded spacings. Matrices that keep the same number of levels are unfolded
    together."""
    bulk = nonstructural_levels(gram, rows)
    cols, n = gram.shape[-1], bulk.shape[-1]
    rank = numerical_rank(gram, rows=rows, dtype=dtype)
    note = rank_note(rank, min(rows, cols))
    why = "" if note else unresolved(gram, rows, dtype)
    if why:
        raise ValueError(why)
    mp = fit_resolved_marchenko_pastur(gram, rows, dtype)
    edge = spike_threshold(mp.sigma2, cols / rows, rows) if mp.fitted else math.inf
    first = (n - rank).to(bulk.device)  # bulk is ascending: levels first[b] .. first[b] + kept[b] of matrix b
    kept = ((bulk <= edge).sum(dim=-1) - first).clamp_min(0)
    kept = torch.where(spacing_resolution(gram, rows=rows, dtype=dtype) >= 1.0, kept, torch.zeros_like(kept))
    groups: list[torch.Tensor | None] = []  # None: a group with no resolved spacings
    for k in torch.unique(kept).tolist():
        pick = (kept == k).nonzero().flatten()
        positions = first[pick, None] + torch.arange(k, device=bulk.device)
        groups.append(_group_spacings(bulk[pick].gather(-1, positions)))
    parts = [p for p in groups if p is not None]
    if not parts:
        why = unresolved(gram, rows, dtype) if note else ""
        if why:
            raise ValueError(why)
        spikes = f"{int(rank.sum()) - int(kept.sum())} of them spikes left out"
        if note:
            raise ValueError(
                f"{note}: too few levels above the numerical-rank cut for spacing statistics ({int(rank.sum())} "
                f"in {bulk.shape[0]} matrices, {spikes})"
            )
        raise ValueError(
            f"{n} non-structural levels per matrix in {bulk.shape[0]} matrices, {spikes}: too few for spacing "
            "statistics"
        )
    return torch.cat(parts)


def _group_spacings(bulk: torch.Tensor) -> torch.Tensor | None:
    """Spacings of ``(B, n)`` levels: unfolded matrix by matrix, or normalised over the ensemble when few."""
    n = bulk.shape[-1]
    if n >= MIN_UNFOLD_LEVELS:  # unfold sqrt(lambda): finite density at a hard edge (q = 1), same unfolded levels
        return unfolded_spacings(bulk.sqrt(), degree=min(5, max(1, n // 10)), trim=0.1).flatten()
    if bulk.shape[0] < 2 or n < 2:
        return None
    raw = torch.diff(bulk, dim=-1)  # (B, n - 1)
    mean = raw.mean(dim=0, keepdim=True)
    if bool((mean <= 0).any()):
        raise ValueError("a level spacing is zero across the whole ensemble; spacings cannot be normalised")
    return (raw / mean).flatten()


def spacings(levels: Levels) -> Outcome:
    """The Wigner-surmise fit of the pooled normalised spacings (kept as ``spectra["spacings"]``): of the levels
    above the numerical-rank cut, not reported when they are not resolved (:func:`pooled_spacings`)."""
    values = pooled_spacings(levels.gram, levels.rows, levels.matrix.dtype)
    outcome = _fitted(fit_surmise(values), PREFIX["spacings"], {"spacings": values})
    outcome.metrics["n_levels"] = float(levels.gram.shape[0] * min(levels.rows, levels.cols))
    return outcome


TABLE: dict[str, Callable[[Levels], Outcome | None]] = {
    "summary": summary,
    "marchenko_pastur": marchenko_pastur,
    "semicircle": semicircle,
    "spacings": spacings,
    "power_law": power_law,
    "randomize": randomize,
}
"""Every analysis by name, in the order of :data:`~rmt_callbacks.analysis.ANALYSES`."""


def _failed(name: str, reason: str) -> Outcome:
    return Outcome({f"{PREFIX[name]}converged": 0.0} if name in PREFIX else {}, failure=reason)


def analyse_levels(view: MatrixView, levels: Levels, analyses: Sequence[str]) -> MatrixResult:
    """Run ``analyses`` (names in :data:`TABLE`) on one view's levels and gather a :class:`MatrixResult`."""
    metrics: dict[str, float] = {"skipped": 0.0}
    failures: dict[str, str] = {}
    laws: dict[str, SpectralLaw] = {}
    batch = tuple(view.matrix.shape[:-2])
    spectra = {"gram": levels.gram.reshape(*batch, -1).cpu()}
    if isinstance(levels.symmetric, torch.Tensor):
        spectra["symmetric"] = levels.symmetric.reshape(*batch, -1).cpu()
    for name in analyses:
        try:
            outcome = TABLE[name](levels)
        except FIT_ERRORS as exc:
            outcome = _failed(name, str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}")
        if outcome is None:
            continue
        metrics.update(outcome.metrics)
        spectra.update({k: v.cpu() for k, v in outcome.spectra.items()})
        if outcome.law is not None:
            laws[name] = outcome.law
        if outcome.failure is not None:
            failures[name] = outcome.failure
    return MatrixResult(view.name, tuple(view.matrix.shape), view.source, metrics, None, failures, spectra, laws)
