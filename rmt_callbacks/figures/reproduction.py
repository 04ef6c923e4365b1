"""The reproduction's figures (``rmt-reproduce``): the papers' figures from plain arrays and fitted laws.

The RBM spectra and spacing figures follow arXiv:2407.16427's (docs/science.md#gaussian-rbm); the hidden-layer
figures are Figs. 4–5 of arXiv:2412.20496 (docs/science.md#hidden-layer). Histograms use the one binning rule
(``histogram_edges``), laws are drawn by ``law_curve``.

Every function returns a ``Figure`` on its own Agg canvas; nothing is shown or saved (``save_figure`` writes and
releases it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..laws import BetaSurmise, PoissonSpacing, SpectralLaw, WignerSurmise
from .canvas import histogram_edges, law_curve, new_figure

__all__ = ["dynamics_figure", "pair_density_figure", "rbm_spectra_figure", "spacing_figure", "two_species_figure"]

_SPACING_MAX: float = 4.0
SPECTRA_MAX_BINS: int = 600
"""The pooled RBM spectra are many sharp peaks binned at one level's width: they get more bins than a panel."""


def rbm_spectra_figure(spectra: Mapping[str, np.ndarray], targets: Sequence[float], *, xlabel: str) -> Figure:
    """Pooled spectral histograms, one panel per setting, with dashed lines at the targets (arXiv:2407.16427).

    Each value is an ``(E, n)`` array of one setting's levels. As in the papers, the bin width is the
    Freedman–Diaconis width of the first level's distribution, applied over the pooled range (at most
    :data:`SPECTRA_MAX_BINS` bins).
    """
    fig = new_figure(6, 2.2 * len(spectra))
    axes = fig.subplots(len(spectra), 1, sharex=True, squeeze=False)
    for ax, (label, values) in zip(axes[:, 0], spectra.items(), strict=True):
        pooled = values.ravel()
        edges = histogram_edges(pooled, width_from=values[:, 0], max_bins=SPECTRA_MAX_BINS)
        ax.hist(pooled, bins=edges, density=True, color="tab:blue", alpha=0.7)
        for t in targets:
            ax.axvline(t, color="k", ls="--", lw=0.8)
        ax.set_ylabel("density")
        ax.set_title(label, fontsize=9)
    axes[-1, 0].set_xlabel(xlabel)
    fig.tight_layout()
    return fig


def pair_density_figure(values: np.ndarray, fits: Mapping[str, SpectralLaw], *, title: str, xlabel: str) -> Figure:
    """Histogram of one pair's pooled levels with fitted densities overlaid (E12, and E30 where given)."""
    fig = new_figure(5, 3.5)
    ax = fig.subplots()
    _ensemble(ax, values, fits, ("--", "-", ":"))
    ax.set(xlabel=xlabel, ylabel="density", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def two_species_figure(panels: Mapping[str, tuple[np.ndarray, Mapping[str, SpectralLaw]]], *, xlabel: str) -> Figure:
    """One panel per case: histogram and the one- and two-species fits (arXiv:2412.20496, Fig. 5)."""
    fig = new_figure(5 * len(panels), 3.5)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, (values, fits)) in zip(axes, panels.items(), strict=True):
        _ensemble(ax, values, fits, ("--", "-"))
        ax.set(xlabel=xlabel, ylabel="density", title=title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _ensemble(ax: Axes, values: np.ndarray, fits: Mapping[str, SpectralLaw], styles: Sequence[str]) -> None:
    """A histogram of an ensemble's pooled ``values`` with the fitted densities over their range."""
    values = values.ravel()
    ax.hist(
        values,
        bins=histogram_edges(values),  # type: ignore[arg-type]  # stub says Sequence, arrays work
        density=True,
        color="tab:gray",
        alpha=0.6,
        label="ensemble",
    )
    lo, hi = float(values.min()), float(values.max())
    for (label, law), ls in zip(fits.items(), styles, strict=False):
        curve = law_curve(label, law, lo, hi)
        ax.plot(curve.x, curve.y, ls=ls, lw=1.5, label=label)


def spacing_figure(
    normalised: Mapping[str, np.ndarray],
    scaling: tuple[np.ndarray, np.ndarray, np.ndarray, float, float],
    *,
    xlabel: str,
) -> Figure:
    """Left: normalised spacings of every setting against the surmise, on bins common to all (the one rule on
    the pooled spacings over ``[0, 4]``); right: ⟨S⟩ against the predictor.

    ``scaling`` is ``(x, mean_spacing, error, slope, slope_error)``.
    """
    fig = new_figure(10, 4)
    left, right = fig.subplots(1, 2)
    pooled = np.concatenate([np.ravel(s) for s in normalised.values()] or [np.zeros(0)])
    if pooled.size:
        edges = histogram_edges(pooled, (0.0, _SPACING_MAX))
        for label, s in normalised.items():
            left.hist(np.ravel(s), bins=edges, density=True, histtype="step", lw=0.8, label=label)
    for law, name, ls in (
        (WignerSurmise(beta=1), "β = 1 surmise", "-"),
        (BetaSurmise(beta=2.0), "β = 2", ":"),
        (PoissonSpacing(), "Poisson", "--"),
    ):
        curve = law_curve(name, law, 0.0, _SPACING_MAX)
        left.plot(curve.x, curve.y, "k", ls=ls, lw=1.5, label=name)
    left.set(xlabel=r"$s = S/\langle S\rangle$", ylabel="P(s)", xlim=(0, _SPACING_MAX))
    left.legend(fontsize=6, ncol=2)
    x, y, err, a, da = scaling
    right.errorbar(x, y, yerr=err, fmt="o", ms=3, label=r"$\langle S\rangle$")
    line = np.linspace(0.0, float(x.max()) * 1.05, 50)
    right.plot(line, a * line, "k--", label=f"fit: a = {a:.3f} ± {da:.3f}")
    right.set(xlabel=xlabel, ylabel=r"$\langle S\rangle$", xlim=(0, None), ylim=(0, None))
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


def dynamics_figure(
    panels: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    *,
    shown: int = 20,
) -> Figure:
    """Squared singular values against epoch: ``shown`` networks thin, the ensemble mean solid, fits dashed.

    Each panel is ``(epochs (T,), squared singular values (E, T, 2), fitted curves (T, 2))`` (arXiv:2412.20496, Fig. 4).
    """
    fig = new_figure(5 * len(panels), 3.5)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, (t, xi, fitted)) in zip(axes, panels.items(), strict=True):
        for k, color in enumerate(("tab:blue", "tab:orange")):
            ax.plot(t, xi[:shown, :, k].T, color=color, alpha=0.15, lw=0.6)
            ax.plot(t, xi[:, :, k].mean(0), color=color, lw=2.0, label=f"mean, mode {k + 1}")
            ax.plot(t, fitted[:, k], "k--", lw=1.0)
        ax.set(xlabel="epoch", ylabel=r"squared singular value $\xi$", title=title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
