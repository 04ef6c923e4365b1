"""The reproduction's figures (``rmt-reproduce``): the papers' figures from plain arrays and fitted laws.

The RBM spectra and spacing figures follow arXiv:2407.16427's (docs/science.md#gaussian-rbm); the hidden-layer
figures are Figs. 4–5 of arXiv:2412.20496 (docs/science.md#hidden-layer). Histograms use the one binning rule
(``histogram_edges``), laws are drawn by ``law_curve``.

Every line and marker set has a legend entry, and every legend sits outside the axes (``legend_outside``), so
none covers data. What failed an equilibration check (``flagged``) is drawn red ("(not relaxed)" in its legend
entry and title); the default ``None`` draws nothing differently. The spacing figure is ``spacings``'.

Every function returns a ``Figure`` on its own Agg canvas; nothing is shown or saved (``save_figure`` writes and
releases it).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..laws import SpectralLaw
from .canvas import FLAG_COLOR, NOT_RELAXED, histogram_edges, law_curve, legend_outside, new_figure
from .spacings import spacing_figure

__all__ = ["dynamics_figure", "pair_density_figure", "rbm_spectra_figure", "spacing_figure", "two_species_figure"]

SPECTRA_MAX_BINS: int = 600
"""The pooled RBM spectra are many sharp peaks binned at one level's width: they get more bins than a panel."""


def rbm_spectra_figure(
    spectra: Mapping[str, np.ndarray],
    targets: Sequence[float],
    *,
    xlabel: str,
    flagged: Collection[str] | Mapping[str, Collection[int]] | None = None,
) -> Figure:
    """Pooled spectral histograms, one panel per setting, with dashed lines at the targets (arXiv:2407.16427;
    the targets κₙ of docs/science.md#gaussian-rbm).

    Each value is an ``(E, n)`` array of one setting's levels. As in the papers, the bin width is the
    Freedman–Diaconis width of the first level's distribution, applied over the pooled range (at most
    :data:`SPECTRA_MAX_BINS` bins).

    Args:
        spectra: one setting's levels ``(E, n)`` per panel title.
        targets: the levels' targets, column ``k`` of every array is mode ``k`` with target ``targets[k]``.
        xlabel: the levels' label.
        flagged: what failed an equilibration check: a collection of ``spectra`` labels (whole settings: the
            histogram red, "(not relaxed)" in title and legend), or a mapping from a label to the modes (column
            indices) that failed, an empty collection for none (their target lines red, "(not relaxed)").

    Raises:
        ValueError: a ``flagged`` label that ``spectra`` does not have, or a flagged mode without a target.
    """
    whole, modes = _spectra_flags(spectra, targets, flagged)
    fig = new_figure(7.5, 2.2 * len(spectra) + 0.4, constrained=True)
    axes = fig.subplots(len(spectra), 1, sharex=True, squeeze=False)
    for ax, (label, values) in zip(axes[:, 0], spectra.items(), strict=True):
        red = label in whole
        pooled = values.ravel()
        edges = histogram_edges(pooled, width_from=values[:, 0], max_bins=SPECTRA_MAX_BINS)
        hist = f"levels of {values.shape[0]} networks" + (NOT_RELAXED if red else "")
        ax.hist(pooled, bins=edges, density=True, color=FLAG_COLOR if red else "tab:blue", alpha=0.7, label=hist)
        bad = modes.get(label, set())
        good = [t for k, t in enumerate(targets) if k not in bad]
        failed = [targets[k] for k in sorted(bad)]
        shown = ", ".join(f"{t:.3g}" for t in failed)
        for ts, color, name in ((good, "k", "targets κₙ"), (failed, FLAG_COLOR, f"κ = {shown}{NOT_RELAXED}")):
            if ts:
                ax.vlines(ts, 0, 1, transform=ax.get_xaxis_transform(), colors=color, linestyles="--", lw=0.8,
                          label=name)  # fmt: skip
        ax.set_ylabel("density")
        ax.set_title(label + (NOT_RELAXED if red else ""), fontsize=9)
        legend_outside(ax)
    axes[-1, 0].set_xlabel(xlabel)
    return fig


def _spectra_flags(
    spectra: Mapping[str, np.ndarray],
    targets: Sequence[float],
    flagged: Collection[str] | Mapping[str, Collection[int]] | None,
) -> tuple[set[str], dict[str, set[int]]]:
    """``flagged`` as (the flagged settings, label -> its flagged modes), checked against ``spectra``, ``targets``."""
    if flagged is None:
        return set(), {}
    if isinstance(flagged, str):
        raise ValueError(f"rbm_spectra_figure: flagged must be a collection of labels, got the string {flagged!r}")
    modes = {k: {int(m) for m in v} for k, v in flagged.items()} if isinstance(flagged, Mapping) else {}
    whole = set() if isinstance(flagged, Mapping) else set(flagged)
    if unknown := sorted((whole | set(modes)) - set(spectra)):
        raise ValueError(f"rbm_spectra_figure: flagged has labels that spectra does not: {unknown}")
    for label, ks in modes.items():
        if outside := sorted(k for k in ks if not 0 <= k < len(targets)):
            raise ValueError(
                f"rbm_spectra_figure: flagged modes {outside} of {label!r} have no target (targets has {len(targets)})"
            )
    return whole, modes


def pair_density_figure(
    values: np.ndarray, fits: Mapping[str, SpectralLaw], *, title: str, xlabel: str, flagged: bool = False
) -> Figure:
    """Histogram of one pair's pooled levels with fitted densities overlaid (E12, and E30 where given); ``flagged``:
    the pair failed an equilibration check (histogram red, "(not relaxed)" in title and legend)."""
    fig = new_figure(6.5, 3.5, constrained=True)
    ax = fig.subplots()
    _ensemble(ax, values, fits, ("--", "-", ":"), flagged)
    ax.set(xlabel=xlabel, ylabel="density", title=title + (NOT_RELAXED if flagged else ""))
    legend_outside(ax, fontsize=8)
    return fig


def two_species_figure(
    panels: Mapping[str, tuple[np.ndarray, Mapping[str, SpectralLaw]]],
    *,
    xlabel: str,
    flagged: Collection[str] | None = None,
) -> Figure:
    """One panel per case: histogram and the one- and two-species fits (arXiv:2412.20496, Fig. 5); ``flagged``:
    titles of ``panels`` whose ensemble failed an equilibration check (drawn as in :func:`pair_density_figure`).

    Raises:
        ValueError: a ``flagged`` title that ``panels`` does not have.
    """
    if isinstance(flagged, str):
        raise ValueError(f"two_species_figure: flagged must be a collection of titles, got the string {flagged!r}")
    bad = set(flagged or ())
    if unknown := sorted(bad - set(panels)):
        raise ValueError(f"two_species_figure: flagged has titles that panels does not: {unknown}")
    fig = new_figure(6.5 * len(panels), 3.5, constrained=True)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, (values, fits)) in zip(axes, panels.items(), strict=True):
        _ensemble(ax, values, fits, ("--", "-"), title in bad)
        ax.set(xlabel=xlabel, ylabel="density", title=title + (NOT_RELAXED if title in bad else ""))
        legend_outside(ax, fontsize=8)
    return fig


def _ensemble(
    ax: Axes, values: np.ndarray, fits: Mapping[str, SpectralLaw], styles: Sequence[str], flagged: bool
) -> None:
    """A histogram of an ensemble's pooled ``values`` with the fitted densities over their range."""
    values = values.ravel()
    ax.hist(
        values,
        bins=histogram_edges(values),  # type: ignore[arg-type]  # stub says Sequence, arrays work
        density=True,
        color=FLAG_COLOR if flagged else "tab:gray",
        alpha=0.6,
        label="ensemble" + (NOT_RELAXED if flagged else ""),
    )
    lo, hi = float(values.min()), float(values.max())
    for (label, law), ls in zip(fits.items(), styles, strict=False):
        curve = law_curve(label, law, lo, hi)
        ax.plot(curve.x, curve.y, ls=ls, lw=1.5, label=label)


def dynamics_figure(
    panels: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    *,
    shown: int = 20,
) -> Figure:
    """Squared singular values against epoch: ``shown`` networks thin, the ensemble mean solid, its fitted
    relaxation dashed, each with its legend entry.

    Each panel is ``(epochs (T,), squared singular values (E, T, 2), fitted curves (T, 2))`` (arXiv:2412.20496, Fig. 4).
    """
    fig = new_figure(6.5 * len(panels), 3.5, constrained=True)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, (t, xi, fitted)) in zip(axes, panels.items(), strict=True):
        n = min(shown, xi.shape[0])
        for k, (color, dark) in enumerate((("tab:blue", "navy"), ("tab:orange", "saddlebrown"))):
            curves = [np.column_stack([t, xi[i, :, k]]) for i in range(n)]
            label = f"{n} of {xi.shape[0]} networks, mode {k + 1}"
            ax.add_collection(LineCollection(curves, colors=color, alpha=0.15, lw=0.6, label=label))
            ax.plot(t, xi[:, :, k].mean(0), color=color, lw=2.0, label=f"ensemble mean, mode {k + 1}")
            ax.plot(t, fitted[:, k], color=dark, ls="--", lw=1.0, label=f"relaxation fit, mode {k + 1}")
        ax.autoscale_view()
        ax.set(xlabel="epoch", ylabel=r"squared singular value $\xi$", title=title)
        for handle in legend_outside(ax).legend_handles:  # the faint networks, legible in the legend
            if isinstance(handle, Line2D) and to_rgba(handle.get_color())[3] < 0.5:
                handle.set_color(to_rgba(handle.get_color(), 0.6))
    return fig
