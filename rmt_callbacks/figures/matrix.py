r"""The figure of one matrix at one step: one histogram panel per view of it, the fitted laws drawn on top.

A :class:`Panel` holds plain arrays and pre-evaluated curves (the recipes that turn an analysis into panels are
:mod:`.recipes`); :func:`matrix_figure` draws them side by side. The bulk is binned by the one rule
(``histogram_edges``); outliers above a fitted bulk edge are marked one by one instead of squeezing the bulk into
one bar, and log-log panels (how heavy tails are read) get log-spaced bins, the same rule on :math:`\log_{10} x`.

References: arXiv:2412.20496 (spectral and spacing histograms against the semicircle and surmise); Martin &
Mahoney, arXiv:1810.01075 (log-log ESD).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, LogLocator, NullLocator

from .canvas import PANEL_SIZE, Curve, Marker, finite, histogram_edges, new_figure

__all__ = ["Y_HEADROOM", "Panel", "matrix_figure"]

Y_HEADROOM: float = 3.0
"""A curve may rise to this many times the tallest bar before the y axis is cut (an integrable singularity)."""


@dataclass(frozen=True)
class Panel:
    """One histogram panel: values drawn as a density, with curves on top.

    Attributes:
        title: the axis title.
        values: the samples, any shape (flattened; non-finite values are dropped).
        curves: curves to overlay.
        xlabel: the x-axis label.
        value_range: the histogram range, or ``None`` for the data range.
        markers: vertical lines to draw.
        spikes: the largest samples, marked individually (e.g. eigenvalues above a bulk edge); the histogram's
            bins then cover the rest, so a far outlier does not squeeze the bulk into one bar.
        note: a line under the title (e.g. the sample size and the fit's parameters).
        loglog: log-spaced bins on log-log axes (positive values only): how heavy tails are read.
    """

    title: str
    values: np.ndarray
    curves: Sequence[Curve] = ()
    xlabel: str = ""
    value_range: tuple[float, float] | None = None
    markers: Sequence[Marker] = ()
    spikes: np.ndarray | None = None
    note: str = ""
    loglog: bool = False


def _log_edges(values: np.ndarray) -> np.ndarray:
    """Log-spaced edges for positive ``values``: the one rule applied to :math:`\\log_{10} x`."""
    edges = 10.0 ** histogram_edges(np.log10(values))
    lo, hi = float(values.min()), float(values.max())
    if hi > lo:  # 10 ** log10(x) may round below x: the data's own ends keep every value inside
        edges[0], edges[-1] = lo, hi
    return edges


def _draw(ax: Axes, panel: Panel) -> None:
    values = finite(panel.values, positive=panel.loglog)
    spikes = finite(panel.spikes) if panel.spikes is not None else np.zeros(0)
    top = 0.0
    if values.size:
        binned = values
        if spikes.size and not panel.loglog and spikes.size < values.size:  # bins on the bulk; spikes are marked
            binned = np.sort(values)[: values.size - spikes.size]
        edges = _log_edges(values) if panel.loglog else histogram_edges(binned, panel.value_range)
        heights, _, _ = ax.hist(
            binned,
            bins=edges,  # type: ignore[arg-type]  # stub says Sequence; an array is what it takes
            density=True,
            color="0.75",
            label=f"data (n={values.size})",
        )
        top = float(np.max(heights))
    for curve in panel.curves:
        ax.plot(curve.x, np.where(np.isfinite(curve.y), curve.y, np.nan), lw=1.5, label=curve.label)
    for marker in panel.markers:
        if np.isfinite(marker.x):
            ax.axvline(marker.x, color=marker.color, ls=marker.linestyle, lw=1.0, label=marker.label)
    if spikes.size and not panel.loglog and values.size > spikes.size:  # the bulk fills the axis; spikes at its edge
        lo = ax.get_xlim()[0]
        right = max(float(edges[-1]), *(m.x for m in panel.markers if np.isfinite(m.x)))
        right += 0.08 * (right - lo)
        ax.set_xlim(lo, right)
        inside = spikes[spikes <= right]
        if inside.size:
            ax.plot(inside, np.zeros_like(inside), "rv", ms=7, clip_on=False, label=f"spikes ({inside.size})")
        if inside.size < spikes.size:
            beyond = f"spikes beyond ({spikes.size - inside.size}), up to {spikes.max():.3g}"
            ax.plot([right], [0.0], "r>", ms=9, clip_on=False, label=beyond)
    elif spikes.size:
        ax.plot(spikes, np.zeros_like(spikes), "rv", ms=7, clip_on=False, label=f"spikes ({spikes.size})")
    if panel.loglog:  # plain tick labels: the default scientific ones are mathtext, slow to lay out
        for axis, scale, limits in ((ax.xaxis, ax.set_xscale, ax.get_xlim), (ax.yaxis, ax.set_yscale, ax.get_ylim)):
            scale("log")
            axis.set_major_locator(LogLocator(subs=_log_subs(*limits()), numticks=5))
            axis.set_major_formatter(LogFormatter(labelOnlyBase=False))
            axis.set_minor_locator(NullLocator())
    elif top > 0:  # an integrable singularity of a density (MP at q = 1) must not flatten the histogram
        ax.set_ylim(0.0, min(ax.get_ylim()[1], Y_HEADROOM * top))
    ax.set_title(f"{panel.title}\n{panel.note}" if panel.note else panel.title, fontsize="medium")
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel("density")
    if ax.get_legend_handles_labels()[0]:  # an empty panel (no positive level on log axes) has nothing to name
        ax.legend(fontsize="small")


def _log_subs(lo: float, hi: float) -> tuple[float, ...]:
    """Tick multiples for a log axis over ``[lo, hi]``: every digit below a decade (some label always falls inside),
    1-2-5 up to three decades, the powers of ten alone beyond (at most 5 of them), so labels never collide."""
    decades = math.log10(hi / lo) if lo > 0 and hi > lo else 0.0
    if decades < 1.0:
        return tuple(float(d) for d in range(1, 10))
    return (1.0, 2.0, 5.0) if decades <= 3.0 else (1.0,)


def matrix_figure(panels: Sequence[Panel], *, title: str | None = None) -> Figure:
    """One figure per matrix, one histogram panel per view of it (spectrum, symmetric part, spacings).

    Args:
        panels: the panels, drawn left to right.
        title: the figure title (e.g. the matrix name and the step).

    Returns:
        A matplotlib ``Figure`` on an Agg canvas; pass it to :func:`close_figure` once saved.

    Raises:
        ValueError: no panel.

    References: arXiv:2412.20496 (spectral and spacing histograms against the semicircle and surmise).

    Examples:
        >>> from rmt_callbacks.figures.canvas import close_figure
        >>> x = np.linspace(0.0, 3.0, 50)
        >>> fig = matrix_figure([Panel("spectrum", np.random.default_rng(0).exponential(size=200)),
        ...                      Panel("spacings", np.ones(10), [Curve("Poisson", x, np.exp(-x))])])
        >>> len(fig.axes)
        2
        >>> close_figure(fig)
    """
    if not panels:
        raise ValueError("matrix_figure: panels must not be empty")
    width = PANEL_SIZE[0] * len(panels)
    fig = new_figure(width, PANEL_SIZE[1])  # fixed margins: a layout engine would double the drawing time
    top = (0.76 if title else 0.84) if any(p.note for p in panels) else (0.82 if title else 0.9)
    fig.subplots_adjust(left=0.85 / width, right=1 - 0.2 / width, bottom=0.16, top=top, wspace=0.3)
    for ax, panel in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        _draw(ax, panel)
    if title:
        fig.suptitle(title)
    return fig
