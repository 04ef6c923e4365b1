r"""The drawing primitives every figure of the package shares: its canvas, its bins, its curves, its release.

Figures are built with matplotlib's object API on an Agg canvas (:func:`new_figure`: no ``pyplot``, no global
figure registry, no GUI backend), so nothing outlives the caller's reference; :func:`close_figure` drops the
artists once the figure is saved (:func:`save_figure`) or rendered (:func:`render`). Histograms are normalised as
densities,

.. math::

    \hat\rho(b) = \frac{\#\{x_i \in b\}}{n\, |b|},

so that a fitted density can be drawn on top, on the bins of the one binning rule
(:func:`~rmt_callbacks.spectral.freedman_diaconis_edges`, capped by :func:`histogram_edges`), and a law is drawn
as its density on a grid (:func:`law_curve`).

References: matplotlib object-oriented API ("embedding in a web application server").
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.legend import Legend

from ..laws import SpectralLaw
from ..spectral import freedman_diaconis_edges

__all__ = [
    "FLAG_COLOR",
    "GRID_POINTS",
    "MAX_BINS",
    "NOT_RELAXED",
    "PANEL_SIZE",
    "Curve",
    "Marker",
    "Rendered",
    "close_figure",
    "finite",
    "histogram_edges",
    "law_curve",
    "legend_outside",
    "new_figure",
    "render",
    "save_figure",
]

MAX_BINS: int = 200
"""The most bins a histogram of a figure gets (a far outlier would ask the Freedman–Diaconis rule for millions)."""
GRID_POINTS: int = 400
PANEL_SIZE: tuple[float, float] = (4.5, 3.6)  # inches
FLAG_COLOR: str = "tab:red"
"""The colour of what failed an equilibration check (hollow markers, dashed histograms), in every figure."""
NOT_RELAXED: str = " (not relaxed)"
"""The suffix of a flagged series' legend entry and of a flagged panel's title."""


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


@dataclass(frozen=True)
class Marker:
    """A labelled vertical line at ``x`` (e.g. a fitted bulk edge), in ``color`` with matplotlib ``linestyle``."""

    label: str
    x: float
    color: str = "k"
    linestyle: str = "--"


def law_curve(label: str, law: SpectralLaw, lo: float, hi: float, *, scale: float = 1.0, log: bool = False) -> Curve:
    """``scale * law.pdf`` on :data:`GRID_POINTS` points over its support clipped to ``[lo, hi]`` (log-spaced when
    ``log``; the whole ``[lo, hi]`` when they do not meet).

    Examples:
        >>> from rmt_callbacks.laws import PoissonSpacing
        >>> c = law_curve("Poisson", PoissonSpacing(), -1.0, 4.0)
        >>> float(c.x[0]), float(c.x[-1]), float(c.y[0]), len(c.x)
        (0.0, 4.0, 1.0, 400)
    """
    s_lo, s_hi = law.support
    a, b = max(lo, s_lo), min(hi, s_hi)
    if not (math.isfinite(a) and math.isfinite(b)) or b <= a:
        a, b = lo, hi
    if log:
        a = max(a, b * 1e-6)
        x = torch.logspace(math.log10(a), math.log10(b), GRID_POINTS, dtype=torch.float64)
    else:
        x = torch.linspace(a, b, GRID_POINTS, dtype=torch.float64)
    return Curve(label, x.numpy(), scale * law.pdf(x).numpy())


def finite(values: np.ndarray, *, positive: bool = False) -> np.ndarray:
    """``values`` flattened to float64, without the non-finite (and, when ``positive``, the non-positive) ones."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    keep = np.isfinite(flat) & (flat > 0) if positive else np.isfinite(flat)
    return flat[keep]


def histogram_edges(
    values: np.ndarray,
    value_range: tuple[float, float] | None = None,
    *,
    width_from: np.ndarray | None = None,
    max_bins: int = MAX_BINS,
) -> np.ndarray:
    """The bin edges of a figure's histogram: the papers' Freedman–Diaconis rule
    (:func:`~rmt_callbacks.spectral.freedman_diaconis_edges`) at most ``max_bins`` bins.

    Args:
        values: the finite samples binned (non-empty).
        value_range: the histogram's range, or ``None`` for the range of ``values``.
        width_from: the samples the bin width is taken from, or ``None`` for ``values``.
        max_bins: the cap.

    Returns:
        Shape ``(K + 1,)``; one bin of width one around the value when the range is a single value (as numpy).

    Examples:
        >>> histogram_edges(np.arange(8.0)).tolist()
        [0.0, 3.5, 7.0]
        >>> histogram_edges(np.arange(8.0), (0.0, 70.0), max_bins=10).size  # h = 3.5: 20 bins, capped
        11
        >>> histogram_edges(np.ones(3)).tolist()
        [0.5, 1.5]
    """
    sample = torch.from_numpy(np.asarray(values, dtype=np.float64).ravel())
    span = sample if value_range is None else torch.tensor(value_range, dtype=torch.float64)
    lo, hi = float(span.min()), float(span.max())
    if hi <= lo:  # a drawn bin needs a width: numpy's [v - 1/2, v + 1/2] (the rule's own is the point mass [v, v])
        return np.array([lo - 0.5, lo + 0.5])
    width = None if value_range is None else sample  # None: the width from the range's own values
    if width_from is not None:
        width = torch.from_numpy(np.asarray(width_from, dtype=np.float64).ravel())
    return freedman_diaconis_edges(span, width_from=width, max_bins=max_bins).numpy()


def new_figure(width: float, height: float, *, constrained: bool = False) -> Figure:
    """An empty ``Figure`` of ``width`` × ``height`` inches on its own Agg canvas (never registered with pyplot).

    ``constrained`` lays it out with matplotlib's constrained layout, which makes room for legends outside the axes
    (:func:`legend_outside`); it costs a layout pass per draw, so the monitor's figures use fixed margins.
    """
    fig = Figure(figsize=(width, height), layout="constrained" if constrained else None)
    FigureCanvasAgg(fig)
    return fig


def legend_outside(ax: Axes, *, fontsize: float = 7.0) -> Legend:
    """``ax``'s legend to the right of the axes, top-aligned, so that it covers no data (a figure made with
    ``new_figure(..., constrained=True)`` widens its margin to fit it)."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=fontsize)


def close_figure(figure: Figure) -> None:
    """Release a figure's artists (there is no pyplot registry to leave it in).

    Examples:
        >>> fig = new_figure(2, 1); _ = fig.subplots(); close_figure(fig); len(fig.axes)
        0
    """
    figure.clear()


def save_figure(figure: Figure, path: str | Path, *, dpi: int = 120) -> None:
    """Write ``figure`` to ``path`` (the format from its suffix), then release it."""
    try:
        figure.savefig(path, dpi=dpi)
    finally:
        close_figure(figure)


@dataclass(frozen=True)
class Rendered:
    """A drawn figure: PNG bytes (MLflow artifacts) and its RGB pixels ``(H, W, 3)`` uint8 (TensorBoard images)."""

    png: bytes
    rgb: np.ndarray


def render(figure: Figure) -> Rendered:
    """Draw ``figure`` once and encode it as PNG; the figure is closed.

    Examples:
        >>> fig = Figure(figsize=(2, 1), dpi=50); _ = fig.subplots()
        >>> out = render(fig)
        >>> out.png[:4], out.rgb.shape
        (b'\\x89PNG', (50, 100, 3))
    """
    from PIL import Image

    try:
        canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
        canvas.draw()
        rgba = np.asarray(canvas.buffer_rgba())
        rgb = np.ascontiguousarray(rgba[..., :3])
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="png")
        return Rendered(buffer.getvalue(), rgb)
    finally:
        close_figure(figure)
