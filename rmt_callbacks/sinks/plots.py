r"""Figures of one matrix: its spectral histogram with the fitted law, its spacing histogram with reference curves.

The only module of rmt-callbacks that imports matplotlib. Figures are built with the object API on an Agg
canvas (no ``pyplot``, no global figure registry, no GUI backend), so nothing outlives the caller's reference;
:func:`close_figure` drops the artists once the figure is saved. The inputs are plain numpy arrays and
pre-evaluated curves: plots know nothing of the laws or the fits. Histograms are normalised as densities,

.. math::

    \hat\rho(b) = \frac{\#\{x_i \in b\}}{n\, |b|},

so that a fitted density can be drawn on top.

References: matplotlib object-oriented API ("embedding in a web application server").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["MAX_BINS", "Y_HEADROOM", "Curve", "Panel", "close_figure", "matrix_figure"]

MAX_BINS: int = 200
Y_HEADROOM: float = 3.0
PANEL_SIZE: tuple[float, float] = (4.5, 3.6)  # inches


@dataclass(frozen=True)
class Curve:
    """A labelled curve ``y(x)`` to draw over a histogram (e.g. a fitted density on a grid).

    Attributes:
        label: the legend entry.
        x: shape ``(K,)``.
        y: shape ``(K,)``.
    """

    label: str
    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if np.shape(self.x) != np.shape(self.y) or np.ndim(self.x) != 1:
            raise ValueError(
                f"Curve {self.label!r}: x and y must be 1-D of one length, got {np.shape(self.x)} "
                f"and {np.shape(self.y)}"
            )


def _edges(values: np.ndarray, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """numpy's ``"auto"`` bin edges (max of Sturges and Freedman–Diaconis), at most :data:`MAX_BINS` bins."""
    edges = np.histogram_bin_edges(values, bins="auto", range=value_range)
    if len(edges) - 1 > MAX_BINS:
        edges = np.histogram_bin_edges(values, bins=MAX_BINS, range=value_range)
    return edges


@dataclass(frozen=True)
class Panel:
    """One histogram panel: values drawn as a density, with curves on top.

    Attributes:
        title: the axis title.
        values: the samples, any shape (flattened; non-finite values are dropped).
        curves: curves to overlay.
        xlabel: the x-axis label.
        value_range: the histogram range, or ``None`` for the data range.
    """

    title: str
    values: np.ndarray
    curves: Sequence[Curve] = ()
    xlabel: str = ""
    value_range: tuple[float, float] | None = None


def _draw(ax: Axes, panel: Panel) -> None:
    values = np.asarray(panel.values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    top = 0.0
    if values.size:
        edges = _edges(values, panel.value_range)
        heights, _, _ = ax.hist(values, bins=edges, density=True, color="0.75", label=f"data (n={values.size})")
        top = float(np.max(heights))
    for curve in panel.curves:
        ax.plot(curve.x, np.where(np.isfinite(curve.y), curve.y, np.nan), lw=1.5, label=curve.label)
    if top > 0:  # an integrable singularity of a density (MP at q = 1) must not flatten the histogram
        ax.set_ylim(0.0, min(ax.get_ylim()[1], Y_HEADROOM * top))
    ax.set_title(panel.title, fontsize="medium")
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel("density")
    ax.legend(fontsize="small")


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
    fig = Figure(figsize=(width, PANEL_SIZE[1]))  # fixed margins: a layout engine would double the drawing time
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.7 / width, right=1 - 0.2 / width, bottom=0.16, top=0.82 if title else 0.9, wspace=0.3)
    for ax, panel in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        _draw(ax, panel)
    if title:
        fig.suptitle(title)
    return fig


def close_figure(figure: Figure) -> None:
    """Release a figure's artists (there is no pyplot registry to leave it in).

    Examples:
        >>> fig = Figure(); _ = fig.subplots(); close_figure(fig); len(fig.axes)
        0
    """
    figure.clear()
