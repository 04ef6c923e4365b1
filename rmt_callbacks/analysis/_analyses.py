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

from ..fits import FitResult, fit_marchenko_pastur, fit_semicircle, fit_surmise
from ..laws import SpectralLaw
from ..spectral import MatrixView, nonstructural_levels, spectrum_summary, unfolded_spacings
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
    (:func:`~rmt_callbacks.analysis._tails.rank_statistics`); a statistic NaN for every matrix is left out."""
    stats = spectrum_summary(levels.gram, rows=levels.rows)  # each (B,)
    means = {k: float(torch.nanmean(v.double())) for k, v in stats.items()}
    means.update(rank_statistics(levels))
    return Outcome({k: v for k, v in means.items() if not math.isnan(v)})


def marchenko_pastur(levels: Levels) -> Outcome:
    """The Marchenko–Pastur fit of the pooled Gram levels, ratio :math:`N/M`."""
    m, n = levels.rows, levels.cols
    return _fitted(fit_marchenko_pastur(levels.gram.flatten(), ratio=n / m, rows=m), PREFIX["marchenko_pastur"])


def semicircle(levels: Levels) -> Outcome | None:
    """The semicircle fit of the pooled symmetric-part levels of a square view (``None`` otherwise)."""
    if levels.rows != levels.cols:
        return None
    if not isinstance(levels.symmetric, torch.Tensor):  # its eigendecomposition failed, or was not made
        raise RuntimeError(levels.symmetric or "the symmetric part was not decomposed")
    return _fitted(fit_semicircle(levels.symmetric.flatten()), PREFIX["semicircle"])


def pooled_spacings(gram: torch.Tensor, rows: int) -> torch.Tensor:
    """Pooled normalised spacings of the non-structural levels of ``gram`` ``(B, N)`` (module docstring of
    :mod:`rmt_callbacks.analysis`)."""
    bulk = nonstructural_levels(gram, rows)
    n = bulk.shape[-1]
    if n >= MIN_UNFOLD_LEVELS:  # unfold sqrt(lambda): finite density at a hard edge (q = 1), same unfolded levels
        return unfolded_spacings(bulk.sqrt(), degree=min(5, max(1, n // 10)), trim=0.1).flatten()
    raw = torch.diff(bulk, dim=-1)  # (B, n - 1)
    if bulk.shape[0] < 2 or n < 2:
        raise ValueError(f"{n} levels in {bulk.shape[0]} matrix: too few for spacing statistics")
    mean = raw.mean(dim=0, keepdim=True)
    if bool((mean <= 0).any()):
        raise ValueError("a level spacing is zero across the whole ensemble; spacings cannot be normalised")
    return (raw / mean).flatten()


def spacings(levels: Levels) -> Outcome:
    """The Wigner-surmise fit of the pooled normalised spacings (kept as ``spectra["spacings"]``)."""
    values = pooled_spacings(levels.gram, levels.rows)
    return _fitted(fit_surmise(values), PREFIX["spacings"], {"spacings": values})


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
            outcome = _failed(name, f"{type(exc).__name__}: {exc}")
        if outcome is None:
            continue
        metrics.update(outcome.metrics)
        spectra.update({k: v.cpu() for k, v in outcome.spectra.items()})
        if outcome.law is not None:
            laws[name] = outcome.law
        if outcome.failure is not None:
            failures[name] = outcome.failure
    return MatrixResult(view.name, tuple(view.matrix.shape), view.source, metrics, None, failures, spectra, laws)
