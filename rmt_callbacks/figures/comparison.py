r"""One matrix in several runs, side by side: what ``rmt_callbacks.compare`` draws (and MLflow's UI cannot overlay).

Four panels: (a) the spectra as densities on common bins, each run with its own fitted Marchenko–Pastur law
(dashed, its colour); (b) the unfolded bulk spacings on common bins with the GOE Wigner surmise and each run's
fitted :math:`\beta`-surmise; (c) the Dyson fluctuation width against the noise temperature :math:`T = \alpha/|B|`
of each run with the linear-scaling-rule prediction

.. math::

    w(T) = c\sqrt{T},\qquad c = \frac{\sum_r w_r \sqrt{T_r}}{\sum_r T_r}\ \text{(least squares through the origin)},

and (d) the normalised widths :math:`w/\sqrt{T}`, which the rule says are equal (their mean drawn). Runs without
a temperature (no DysonMonitor, or an adaptive optimizer) are left out of (c)–(d) and named in the panel.

References: arXiv:2412.20496 (E4: widths scale as :math:`\sqrt{\alpha/|B|}`), docs/science.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..laws import BetaSurmise, MarchenkoPastur, WignerSurmise
from .canvas import finite, histogram_edges, law_curve, legend_outside, new_figure
from .evolution import in_log10, log_floor

__all__ = ["RunCurves", "comparison_figure", "scaling_constant"]

SPACING_RANGE = (0.0, 4.0)


@dataclass(frozen=True)
class RunCurves:
    """What one run contributes to a matrix's comparison.

    Attributes:
        label: the run's legend entry (its name and the noise temperature).
        levels: the non-structural Gram levels at the compared step, pooled, shape ``(n,)``.
        law: its fitted Marchenko–Pastur law, or ``None`` (no converged fit).
        spacings: unfolded bulk spacings, shape ``(k,)`` (may be empty).
        beta: its fitted surmise :math:`\beta`, or ``None``.
        temperature, width: :math:`T` and the Dyson width (NaN when not recorded).
    """

    label: str
    levels: np.ndarray
    law: MarchenkoPastur | None = None
    spacings: np.ndarray | None = None
    beta: float | None = None
    temperature: float = math.nan
    width: float = math.nan


def scaling_constant(temperatures: np.ndarray, widths: np.ndarray) -> float:
    r"""The least-squares :math:`c` of :math:`w = c\sqrt{T}` through the origin (module docstring); NaN without data.

    Examples:
        >>> round(scaling_constant(np.array([1e-3, 4e-3]), 2.0 * np.sqrt([1e-3, 4e-3])), 12)
        2.0
    """
    t, w = np.asarray(temperatures, dtype=np.float64), np.asarray(widths, dtype=np.float64)
    keep = np.isfinite(t) & np.isfinite(w) & (t > 0)
    if not keep.any():
        return math.nan
    return float(np.sum(w[keep] * np.sqrt(t[keep])) / np.sum(t[keep]))


def comparison_figure(matrix: str, runs: Sequence[RunCurves], *, step: str) -> Figure:
    """The four panels of ``matrix`` over ``runs`` (module docstring); ``step`` says which step, for the title."""
    fig = new_figure(11.0, 7.0, constrained=True)
    (spectra, spacings), (widths, normalised) = fig.subplots(2, 2)
    colors = [f"C{i % 10}" for i in range(len(runs))]
    _spectra(spectra, runs, colors)
    _spacings(spacings, runs, colors)
    _dyson(widths, normalised, runs, colors)
    fig.suptitle(f"{matrix}: {len(runs)} runs, {step}", fontsize=10)
    return fig


def _spectra(ax: Axes, runs: Sequence[RunCurves], colors: Sequence[str]) -> None:
    """Densities on common bins; in log10 λ when outliers sit far above the bulk (:func:`~.evolution.log_floor`),
    the y-axis set by the histograms (a law diverging at the hard edge would flatten them)."""
    flats = [finite(r.levels) for r in runs]
    pooled = np.concatenate(flats)
    floor, xlabel = log_floor(pooled), "eigenvalue λ of WᵀW/M"
    if floor is not None:
        flats = [np.log10(np.maximum(f, floor)) for f in flats]
        pooled, xlabel = np.concatenate(flats), f"log10 λ (λ of WᵀW/M from {floor:.3g})"
    edges = histogram_edges(pooled)
    top = 0.0
    for run, values, color in zip(runs, flats, colors, strict=True):
        if values.size:
            heights, _, _ = ax.hist(
                values, bins=edges.tolist(), density=True, histtype="step", color=color, label=run.label
            )
            top = max(top, float(np.max(heights)))
        if run.law is not None:  # the continuous part, scaled to the levels drawn (the atom at 0 is not drawn)
            lo, hi = (10 ** float(edges[0]), 10 ** float(edges[-1])) if floor is not None else (edges[0], edges[-1])
            curve = law_curve("MP fit", run.law, float(lo), float(hi), scale=1.0 / max(1.0 - run.law.atom, 1e-12))
            curve = in_log10(curve, floor) if floor is not None else curve
            ax.plot(curve.x, curve.y, color=color, linestyle="--", linewidth=1.0, label="  its MP fit")
    ax.set(xlabel=xlabel, ylabel="density", title="(a) spectra, common bins")
    ax.set_ylim(0.0, 1.3 * top if top > 0 else None)
    legend_outside(ax)


def _spacings(ax: Axes, runs: Sequence[RunCurves], colors: Sequence[str]) -> None:
    pooled = np.concatenate([finite(r.spacings) for r in runs if r.spacings is not None] or [np.empty(0)])
    pooled = pooled[(pooled >= SPACING_RANGE[0]) & (pooled <= SPACING_RANGE[1])]
    edges = histogram_edges(pooled, SPACING_RANGE) if pooled.size else np.linspace(*SPACING_RANGE, 17)
    for run, color in zip(runs, colors, strict=True):
        values = finite(run.spacings if run.spacings is not None else np.empty(0))
        if values.size:
            ax.hist(
                values,
                bins=edges.tolist(),
                density=True,
                histtype="step",
                color=color,
                label=f"{run.label} ({values.size})",
            )
        if run.beta is not None and math.isfinite(run.beta) and run.beta > 0:
            curve = law_curve("fit", BetaSurmise(beta=run.beta), *SPACING_RANGE)
            ax.plot(curve.x, curve.y, color=color, linestyle="--", linewidth=1.0, label=f"  β = {run.beta:.2f}")
    goe = law_curve("GOE surmise", WignerSurmise(), *SPACING_RANGE)
    ax.plot(goe.x, goe.y, color="k", linewidth=1.5, label="GOE surmise (β = 1)")
    ax.set(xlabel="unfolded spacing s", ylabel="density", title="(b) bulk spacings", xlim=SPACING_RANGE)
    few = [r.label for r in runs if r.spacings is None or not finite(r.spacings).size]
    if few:
        note = f"too few bulk levels to unfold in: {', '.join(few)}"
        ax.text(0.98, 0.98, note, transform=ax.transAxes, fontsize=7, color="0.3", ha="right", va="top", wrap=True)
    legend_outside(ax)


def _dyson(widths: Axes, normalised: Axes, runs: Sequence[RunCurves], colors: Sequence[str]) -> None:
    t = np.array([r.temperature for r in runs], dtype=np.float64)
    w = np.array([r.width for r in runs], dtype=np.float64)
    have = np.isfinite(t) & np.isfinite(w) & (t > 0)
    missing = [r.label for r, ok in zip(runs, have, strict=True) if not ok]
    for i in (int(k) for k in np.flatnonzero(have)):
        widths.plot([t[i]], [w[i]], "o", color=colors[i], label=runs[i].label)
        normalised.plot([t[i]], [w[i] / math.sqrt(t[i])], "o", color=colors[i], label=runs[i].label)
    c = scaling_constant(t, w)
    if math.isfinite(c):
        grid = np.linspace(0.0, float(t[have].max()) * 1.15, 200)
        widths.plot(grid, c * np.sqrt(grid), "k--", linewidth=1.0, label=f"c√T, c = {c:.3g}")
        normalised.axhline(c, color="k", linestyle="--", linewidth=1.0, label=f"c = {c:.3g} (equal at any T)")
    note = "no Dyson width in: " + ", ".join(missing) if missing else ""
    for ax, ylabel, title in (
        (widths, "width (level spacings)", "(c) Dyson width vs T = α/|B|"),
        (normalised, "width / √T", "(d) normalised width"),
    ):
        ax.set(xlabel="noise temperature T = α/|B|", ylabel=ylabel, title=title)
        ax.margins(x=0.08, y=0.12)  # no point on the frame
        ax.set_xlim(left=0.0)
        ax.set_ylim(bottom=0.0)
        if note:
            ax.text(0.02, 0.02, note, transform=ax.transAxes, fontsize=7, color="0.3", va="bottom", wrap=True)
        if ax.get_legend_handles_labels()[0]:
            legend_outside(ax)
