r"""The heavy-tailed analyses: the power-law tail (``"power_law"``), the randomized copy (``"randomize"``), and the
rank statistics of the summary.

Norms follow WeightWatcher's convention, the eigenvalues :math:`s_i^2 = M\lambda_i` of :math:`W^\top W` (not
divided by :math:`M`), so their values compare with its ``log_norm``, ``log_spectral_norm``, ``alpha_weighted``
and ``log_alpha_norm`` (Martin & Mahoney, arXiv:2002.06716, section 4; arXiv:1810.01075):

.. math::

    \texttt{log\_norm} = \log_{10} \sum_i s_i^2 = \log_{10}\|W\|_F^2,\quad
    \texttt{log\_spectral\_norm} = \log_{10} s_{\max}^2,\quad
    \texttt{pl\_alpha\_weighted} = \hat\alpha \log_{10} s_{\max}^2,\quad
    \texttt{log\_alpha\_norm} = \log_{10} \sum_i s_i^{2\hat\alpha}.

For a batch (convolution slices, an ensemble) the exponent is fitted to the pooled non-structural levels and
each norm is the batch mean of the per-matrix values.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..fits import MIN_VALUES, fit_marchenko_pastur, fit_power_law
from ..fits.marchenko_pastur import spike_threshold
from ..spectral import nonstructural_levels, rank_cut
from ..spectral.stacks import stacked_levels
from ._resolved import fit_resolved_marchenko_pastur, kept_levels, rank_note
from ._result import Levels, Outcome

__all__ = ["MIN_TAIL_LEVELS", "RANDOMIZE_SEED", "power_law", "randomize", "rank_statistics", "two_sample_ks"]

RANDOMIZE_SEED = 0
"""The seed of the element shuffle of ``"randomize"`` (one generator per view, so results do not depend on the
order of the views, and no global random numbers are drawn)."""
MIN_TAIL_LEVELS = 20
"""The fewest levels ``"power_law"`` fits: twice ``fit_power_law``'s ``min_tail`` (10), so a tail is at most half
the spectrum (WeightWatcher too treats fewer than 20 eigenvalues apart)."""


def rank_statistics(levels: Levels) -> dict[str, float]:
    r"""``rank``, ``rank_loss`` and ``spectral_entropy`` of each matrix, averaged over the batch.

    The rank is NumPy's ``matrix_rank`` rule on the singular values, :math:`s_i > s_{\max}\max(M, N)\,\epsilon`,
    i.e. :math:`\lambda_i > \lambda_{\max} (\max(M, N)\,\epsilon)^2`, with :math:`\epsilon` of the precision
    ``torch.linalg`` computes in: the weights' own for float32 and float64, float32's for float16 and bfloat16
    (in their own precision the rule would count nothing: :math:`\max(M, N)\,\epsilon \ge 1` from
    :math:`N = 128` in bfloat16). It is floored at the float64 Gram levels' resolution
    :math:`\lambda_{\max}\max(M, N)\,\epsilon_{64}`: :func:`~rmt_callbacks.spectral.rank_cut`, the one cut, below
    which the other analyses leave levels out as numerically zero. ``rank_loss`` :math:`= \min(M, N) -` rank.
    The entropy of
    :math:`p_i = \lambda_i / \sum_j \lambda_j` over the levels the rank counts, normalised by
    :math:`\ln(\text{rank})` as WeightWatcher's ``matrix_entropy``: in :math:`[0, 1]`, 1 when every level is
    equal, 0 for rank one.
    """
    bulk = nonstructural_levels(levels.gram, levels.rows).double().clamp_min(0.0)  # (B, k)
    counted = bulk > rank_cut(levels.gram, rows=levels.rows, dtype=levels.matrix.dtype)[:, None]
    rank = counted.sum(dim=-1).double()  # (B,)
    kept = torch.where(counted, bulk, torch.zeros((), dtype=bulk.dtype))
    p = kept / kept.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    plogp = torch.where(p > 0, p * p.log(), torch.zeros((), dtype=p.dtype))
    entropy = torch.where(rank > 1, -plogp.sum(dim=-1) / rank.clamp_min(2.0).log(), torch.zeros((), dtype=p.dtype))
    out = {"rank": float(rank.mean()), "rank_loss": float((bulk.shape[-1] - rank).mean())}
    live = rank > 0
    if bool(live.any()):
        out["spectral_entropy"] = float(entropy[live].mean())
    return out


def _norms(levels: Levels, alpha: float) -> dict[str, float]:
    raw = nonstructural_levels(levels.gram, levels.rows).double().clamp_min(0.0) * levels.rows  # s_i^2, (B, k)
    top = raw.amax(dim=-1)
    live = top > 0
    if not bool(live.any()):
        return {}
    raw, top = raw[live], top[live]
    out = {"log_norm": float(raw.sum(dim=-1).log10().mean()), "log_spectral_norm": float(top.log10().mean())}
    if math.isfinite(alpha):
        out["pl_alpha_weighted"] = alpha * out["log_spectral_norm"]
        # log10 sum s^(2 alpha), scaled by the largest term so that no power overflows
        scaled = (raw / top[:, None]).pow(alpha).sum(dim=-1)
        out["log_alpha_norm"] = float((scaled.log10() + alpha * top.log10()).mean())
    return out


def power_law(levels: Levels) -> Outcome:
    r"""The power-law fit of the pooled non-structural levels (:func:`~rmt_callbacks.fits.fit_power_law`,
    ``pl_…``), and the norms of the module docstring (the :math:`\alpha` ones only from a converged fit).

    A tail is a heavy tail only if it leaves the noise: when the levels' own Marchenko–Pastur fit finds no level
    above its spike threshold (:func:`~rmt_callbacks.fits.marchenko_pastur.spike_threshold`), the "tail" is the
    soft edge of a bounded bulk, which a power law of exponent 3–10 matches as well as the KS test can tell on a
    few dozen levels (Gaussian matrices did, 19 of 20 at 128 × 128), so the fit is reported as not converged.
    """
    bulk, rank = kept_levels(levels.gram, levels.rows, levels.matrix.dtype)  # numerically zero levels left out
    note = rank_note(rank, min(levels.rows, levels.cols))
    if bulk.numel() < MIN_VALUES and note:
        raise ValueError(f"{note}: too few levels above the numerical-rank cut ({bulk.numel()}, need {MIN_VALUES})")
    if bulk.numel() < MIN_TAIL_LEVELS:
        raise ValueError(
            f"too few levels for a tail: got {bulk.numel()}, need at least {MIN_TAIL_LEVELS} (with fewer, the "
            "'tail' of at least 10 levels is most of the spectrum)"
        )
    fit = fit_power_law(bulk)
    if fit.converged:
        noise = fit_resolved_marchenko_pastur(levels.gram, levels.rows, levels.matrix.dtype)
        if noise.fitted and noise.num_spikes == 0:
            m, n = levels.rows, levels.cols
            why = (
                f"not a heavy tail: no level leaves the Marchenko-Pastur bulk (largest {float(bulk.max()):.4g} <= "
                f"spike threshold {spike_threshold(noise.sigma2, n / m, m):.4g}); alpha = {fit.alpha:.4g} would "
                "describe the bulk's soft edge"
            )
            fit = replace(fit, converged=False, message=why)
    metrics = fit.to_metrics("pl_")
    metrics.update(_norms(levels, fit.alpha if fit.converged else math.nan))
    return Outcome(metrics, fit.law() if fit.converged else None, None if fit.converged else fit.message)


def two_sample_ks(a: torch.Tensor, b: torch.Tensor) -> float:
    r"""Two-sample Kolmogorov–Smirnov distance :math:`\sup_x |F_a(x) - F_b(x)|` of two flat samples.

    Example:
        >>> two_sample_ks(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0]))
        0.0
    """
    a, b = a.double().flatten().sort().values, b.double().flatten().sort().values
    points = torch.cat([a, b])
    fa = torch.searchsorted(a, points, right=True).double() / a.numel()
    fb = torch.searchsorted(b, points, right=True).double() / b.numel()
    return float((fa - fb).abs().max())


def randomize(levels: Levels) -> Outcome:
    r"""Levels of an element-shuffled copy of each matrix, against the matrix's own (``rand_…``).

    Shuffling the entries keeps their distribution and destroys their correlations, so the copy's spectrum is
    Marchenko–Pastur-like unless single large entries dominate it. ``rand_traps``: the copy's eigenvalues above
    its own Marchenko–Pastur bulk (the fit's ``num_spikes``), per matrix: *correlation traps*, large entries that
    survive the shuffle (Martin & Mahoney, arXiv:1810.01075; WeightWatcher's ``randomize``).
    ``rand_ks``: the two-sample KS distance between the matrix's and the copy's non-structural levels, pooled
    (0: the weights look like shuffled noise; near 1: training moved the spectrum away from it).
    ``rand_lambda_max``: the copy's largest level. Seeded (:data:`RANDOMIZE_SEED`); one more decomposition per
    matrix.
    """
    flat = levels.matrix.detach()
    gen = torch.Generator(device=flat.device).manual_seed(RANDOMIZE_SEED)
    order = torch.randperm(flat[0].numel(), generator=gen, device=flat.device)
    shuffled = flat.reshape(flat.shape[0], -1)[:, order].reshape(flat.shape)
    (rand,) = stacked_levels([shuffled], "gram", levels.solver)
    if isinstance(rand, str):
        raise RuntimeError(f"the shuffled copy: {rand}")
    m, n = levels.rows, levels.cols
    traps = [fit_marchenko_pastur(r, ratio=n / m, rows=m).num_spikes for r in rand]
    metrics = {
        "rand_ks": two_sample_ks(nonstructural_levels(levels.gram, m), nonstructural_levels(rand, m)),
        "rand_lambda_max": float(rand[:, -1].double().mean()),
    }
    if all(isinstance(t, int) for t in traps):
        metrics["rand_traps"] = sum(traps) / len(traps)
    return Outcome(metrics, spectra={"randomized": rand})
