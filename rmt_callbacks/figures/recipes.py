r"""From a :class:`~rmt_callbacks.analysis.MatrixResult` to the panels of its figures.

The drawing (``matrix_figure``, ``evolution_figure``) takes only arrays; here the fitted laws are evaluated on a
grid (``law_curve``), for the monitor's figures and :func:`rmt_callbacks.figures.esd_figure` alike. Spectra are
drawn on their *non-structural* levels: a wide :math:`W` (:math:`N > M`) has :math:`N - M` exact zeros in the
spectrum of :math:`X = W^\top W / M` that say nothing about training, so they are left out and the
Marchenko–Pastur density is drawn as its continuous part renormalised to one (divided by :math:`1/q`). Per
analysed step, left to right:

* the Gram spectrum with the fitted Marchenko–Pastur density, its bulk edge :math:`\lambda_+` and the spikes (the
  fit's ``num_spikes`` largest levels) marked, and :math:`n`, :math:`\sigma^2` and the KS distance written in;
* the same levels on log-spaced bins and log-log axes (how heavy tails are read), with the fitted power-law tail
  (its density times the tail's share of the levels) from :math:`x_{\min}`, and :math:`\alpha` written in;
* for a square matrix, the spectrum of the symmetric part with the fitted semicircle;
* the normalised spacings with Poisson :math:`e^{-s}`, the GOE surmise :math:`\tfrac{\pi s}{2} e^{-\pi s^2/4}`
  and, when fitted, the surmise of the fitted :math:`\beta`.

At the end of training, per matrix, the evolution of its spectrum (:func:`evolution_curves` gives its overlay).

References: arXiv:2412.20496; Martin & Mahoney, arXiv:1810.01075 (log-log ESD); Mehta, *Random Matrices*.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..analysis import MatrixResult, nonstructural
from ..fits import ParetoTail
from ..laws import PoissonSpacing, SpectralLaw, WignerSurmise
from .canvas import Curve, Marker, law_curve
from .matrix import Panel

__all__ = ["evolution_curves", "panels_of"]

_SPACING_MAX: float = 4.0
_EIGENVALUE = "eigenvalue λ of WᵀW / M"  # plain text: mathtext triples the drawing time


def _range(values: torch.Tensor) -> tuple[float, float]:
    finite = values[torch.isfinite(values)]
    if finite.numel() == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    pad = 0.05 * (hi - lo) or 0.5
    return lo - pad, hi + pad


def _mp_overlay(result: MatrixResult, levels: torch.Tensor, *, log: bool = False) -> list[Curve]:
    law = result.laws.get("marchenko_pastur")
    if law is None:
        return []
    lo, hi = _range(levels)
    hi = max(hi, law.support[1] * 1.02)  # the law down to its upper edge, past the data if need be
    if log:
        positive = levels[levels > 0]
        lo = float(positive.min()) * 0.9 if positive.numel() else lo
    scale = 1.0 / (1.0 - getattr(law, "atom", 0.0))  # the continuous part, as a density of the non-structural levels
    return [law_curve("Marchenko–Pastur fit", law, max(lo, 0.0), hi, scale=scale, log=log)]


def _gram_panels(result: MatrixResult) -> list[Panel]:
    levels = nonstructural(result)
    metrics = result.metrics
    note = f"n = {levels.numel()}"
    if "mp_sigma2" in metrics:
        note += f", σ² = {metrics['mp_sigma2']:.3g}, KS = {metrics.get('mp_ks', math.nan):.3f}"
    spikes = int(metrics.get("mp_num_spikes", 0) or 0)
    markers = [Marker("λ₊", metrics["mp_lambda_plus"])] if "mp_lambda_plus" in metrics else []
    top = torch.sort(levels).values[levels.numel() - spikes :].numpy() if spikes else None
    tail, x_min, tail_note = _power_law_overlay(result, levels)
    return [
        Panel("Gram spectrum WᵀW / M", levels.numpy(), _mp_overlay(result, levels), xlabel=_EIGENVALUE,
              markers=markers, spikes=top, note=note),
        Panel("ESD, log-log", levels.numpy(), [*_mp_overlay(result, levels, log=True), *tail], xlabel=_EIGENVALUE,
              markers=[*markers, *x_min], loglog=True, note=tail_note),
    ]  # fmt: skip


def _power_law_overlay(result: MatrixResult, levels: torch.Tensor) -> tuple[list[Curve], list[Marker], str]:
    """The fitted power-law tail as a density of all the levels (its pdf times the tail's share), a marker at
    :math:`x_{\\min}` and a note with :math:`\\alpha`, or nothing when there is no converged fit."""
    law, metrics = result.laws.get("power_law"), result.metrics
    if not isinstance(law, ParetoTail) or not levels.numel():
        return [], [], ""
    alpha, n_tail = metrics["pl_alpha"], int(metrics["pl_n_tail"])
    curve = law_curve(f"power law α = {alpha:.2f}", law, law.x_min, float(levels.max()),
                   scale=n_tail / levels.numel(), log=True)  # fmt: skip
    note = f"α = {alpha:.2f} ± {metrics['pl_alpha_std']:.2f}, D = {metrics['pl_ks']:.3f}, n_tail = {n_tail}"
    return [curve], [Marker("x_min", law.x_min, color="C1", linestyle=":")], note  # C1: the power law's colour


def _spacing_panel(values: torch.Tensor, fitted: SpectralLaw | None, metrics: dict[str, float]) -> Panel:
    curves = [law_curve("Poisson", PoissonSpacing(), 0.0, _SPACING_MAX)]
    curves.append(law_curve("GOE surmise β = 1", WignerSurmise(beta=1), 0.0, _SPACING_MAX))
    note = f"n = {values.numel()}"
    if fitted is not None:
        beta = getattr(fitted, "beta", math.nan)
        curves.append(law_curve(f"fitted surmise β = {beta:.2f}", fitted, 0.0, _SPACING_MAX))
        note += f", β = {beta:.2f}, KS = {metrics.get('surmise_ks', math.nan):.3f}"
    return Panel("level spacings", values.numpy(), curves, xlabel="spacing s", value_range=(0.0, _SPACING_MAX),
                 note=note)  # fmt: skip


def panels_of(result: MatrixResult) -> list[Panel]:
    """The panels of one analysed matrix's figure at one step (empty for a skipped or estimated one).

    Args:
        result: an analysis result with its spectra and fitted laws.

    Returns:
        Gram spectrum, its log-log view, the symmetric part (square matrices, when analysed), spacings.

    References: arXiv:2412.20496.

    Examples:
        >>> r = MatrixResult("w", (3, 3), "linear", {}, spectra={"gram": torch.tensor([0.5, 1.0, 2.0])})
        >>> [p.title for p in panels_of(r)]
        ['Gram spectrum WᵀW / M', 'ESD, log-log']
    """
    if result.skipped is not None or nonstructural(result).numel() == 0:
        return []
    spectra, laws = result.spectra, result.laws
    panels = _gram_panels(result)
    if "symmetric" in spectra:
        values = spectra["symmetric"].flatten()
        lo, hi = _range(values)
        law = laws.get("semicircle")
        curves = [law_curve("semicircle fit", law, lo, hi)] if law is not None else []
        panels.append(Panel("symmetric part (W + Wᵀ)/2", values.numpy(), curves, xlabel=r"eigenvalue"))
    if "spacings" in spectra:
        panels.append(_spacing_panel(spectra["spacings"].flatten(), laws.get("spacings"), result.metrics))
    return panels


def evolution_curves(last: MatrixResult | None, samples: Sequence[np.ndarray]) -> list[Curve]:
    """The last analysis's fitted Marchenko–Pastur density over the range of every step's levels (or nothing)."""
    if last is None or "marchenko_pastur" not in last.laws or not samples:
        return []
    pooled = torch.from_numpy(np.concatenate([np.asarray(s, dtype=np.float64).ravel() for s in samples]))
    return [Curve(f"fit at the last step: {c.label}", c.x, c.y) for c in _mp_overlay(last, pooled)]
