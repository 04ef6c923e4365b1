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

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, LogLocator, NullLocator

__all__ = [
    "MAX_BINS",
    "Y_HEADROOM",
    "Curve",
    "Marker",
    "Panel",
    "Rendered",
    "close_figure",
    "evolution_figure",
    "matrix_figure",
    "render",
]

MAX_BINS: int = 200
WIDE_RANGE: float = 30.0
"""An evolution figure whose largest value exceeds this many times its 1 % quantile is drawn in log10."""
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
class Marker:
    """A labelled vertical line at ``x`` (e.g. a fitted bulk edge), in ``color`` with matplotlib ``linestyle``."""

    label: str
    x: float
    color: str = "k"
    linestyle: str = "--"


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


def _finite(values: np.ndarray, *, positive: bool = False) -> np.ndarray:
    flat = np.asarray(values, dtype=np.float64).ravel()
    keep = np.isfinite(flat) & (flat > 0) if positive else np.isfinite(flat)
    return flat[keep]


def _log_edges(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        lo, hi = lo / 1.5, hi * 1.5
    bins = int(np.clip(np.sqrt(values.size), 10, 60))
    return np.geomspace(lo, hi, bins + 1)


def _draw(ax: Axes, panel: Panel) -> None:
    values = _finite(panel.values, positive=panel.loglog)
    spikes = _finite(panel.spikes) if panel.spikes is not None else np.zeros(0)
    top = 0.0
    if values.size:
        binned = values
        if spikes.size and not panel.loglog and spikes.size < values.size:  # bins on the bulk; spikes are marked
            binned = np.sort(values)[: values.size - spikes.size]
        edges = _log_edges(values) if panel.loglog else _edges(binned, panel.value_range)
        heights, _, _ = ax.hist(binned, bins=edges, density=True, color="0.75", label=f"data (n={values.size})")
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
    top = (0.76 if title else 0.84) if any(p.note for p in panels) else (0.82 if title else 0.9)
    fig.subplots_adjust(left=0.85 / width, right=1 - 0.2 / width, bottom=0.16, top=top, wspace=0.3)
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


def evolution_figure(
    steps: Sequence[int],
    samples: Sequence[np.ndarray],
    *,
    curves: Sequence[Curve] = (),
    title: str | None = None,
    xlabel: str = "",
    overlays: int = 5,
) -> Figure:
    """How a distribution moved over training: a step × value density image, and histograms at a few steps.

    Left: one row per step, the density of that step's samples on bins common to all steps (log colour scale).
    Right: step histograms (outlines) at up to ``overlays`` steps, always the first, middle and last, with
    ``curves`` (e.g. the last step's fitted law) on top. Positive samples spread over more than
    :data:`WIDE_RANGE` (spikes far from a bulk) are drawn as densities of log10(x) (curves transformed
    alike), so the bulk and the outliers both show.

    Args:
        steps: the steps, ascending, ``(S,)``.
        samples: one array of samples per step (each flattened; non-finite values dropped).
        curves: curves to draw over the histograms.
        title: the figure title.
        xlabel: the value axis label.
        overlays: how many steps the right panel overlays (at least 3).

    Returns:
        A matplotlib ``Figure`` on an Agg canvas; pass it to :func:`close_figure` once saved.

    Raises:
        ValueError: no step, or ``steps`` and ``samples`` of different lengths.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> fig = evolution_figure([0, 10, 20], [rng.normal(s, 1, 100) for s in range(3)], xlabel="x")
        >>> len(fig.axes)  # the image, its colour bar and the overlays
        3
        >>> close_figure(fig)
    """
    if not steps or len(steps) != len(samples):
        raise ValueError(f"evolution_figure: need one sample array per step, got {len(steps)} and {len(samples)}")
    flats = [_finite(v) for v in samples]
    pooled = np.concatenate(flats) if any(f.size for f in flats) else np.zeros(1)
    positive = pooled[pooled > 0]
    floor = float(np.quantile(positive, 0.01)) if positive.size else 0.0
    if floor > 0 and float(pooled.max()) > WIDE_RANGE * floor:  # outliers far from the bulk: read it in log10
        flats = [np.log10(np.maximum(f, floor)) for f in flats]
        curves = [_in_log10(c, floor) for c in curves]
        xlabel, pooled = f"log10 {xlabel}", np.concatenate(flats)
    edges = _edges(pooled)
    image = np.stack([np.histogram(f, bins=edges, density=bool(f.size))[0] if f.size else 0 * edges[1:] for f in flats])
    fig = Figure(figsize=(2 * PANEL_SIZE[0] + 1.0, PANEL_SIZE[1] + 0.4))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.08, right=0.97, bottom=0.16, top=0.84 if title else 0.9, wspace=0.35)
    left, right = fig.subplots(1, 2)
    positive = image[image > 0]
    low = float(positive.min()) if positive.size else 1e-3
    from matplotlib.colors import LogNorm

    norm = LogNorm(low, max(low * 10, float(image.max())))
    mesh = left.pcolormesh(edges, _row_edges(steps), np.where(image > 0, image, np.nan), norm=norm)
    fig.colorbar(mesh, ax=left, label="density")
    left.set_ylabel("step")
    left.set_xlabel(xlabel)
    left.set_title("density over training", fontsize="medium")
    picks = sorted({round(i * (len(steps) - 1) / (max(overlays, 3) - 1)) for i in range(max(overlays, 3))})
    for i in picks:
        if flats[i].size:
            right.hist(flats[i], bins=edges, density=True, histtype="step", lw=1.2, label=f"step {steps[i]}")
    for curve in curves:
        right.plot(curve.x, np.where(np.isfinite(curve.y), curve.y, np.nan), "k--", lw=1.2, label=curve.label)
    tops = [float(image[i].max()) for i in picks if flats[i].size]  # the image's rows are these histograms
    if tops:
        right.set_ylim(0.0, 1.15 * max(tops))
    right.set_xlabel(xlabel)
    right.set_ylabel("density")
    right.set_title("first, middle and last steps", fontsize="medium")
    right.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def _row_edges(steps: Sequence[int]) -> np.ndarray:
    """Row boundaries halfway between steps, so each step's row sits at its step however uneven they are."""
    y = np.asarray(steps, dtype=np.float64)
    if y.size == 1:
        return np.array([y[0] - 0.5, y[0] + 0.5])
    mid = (y[:-1] + y[1:]) / 2
    return np.concatenate([[y[0] - (mid[0] - y[0])], mid, [y[-1] + (y[-1] - mid[-1])]])


def _in_log10(curve: Curve, floor: float) -> Curve:
    r"""A density in :math:`x` as a density in :math:`\log_{10} x`: :math:`p(x)\, x \ln 10`, from ``floor`` (> 0) on."""
    keep = curve.x >= floor  # the data's range: a law's tail below it would stretch the axis
    with np.errstate(invalid="ignore", over="ignore"):  # an infinite density at an edge stays infinite, not NaN
        y = np.where(np.isfinite(curve.y), curve.y * curve.x * np.log(10), np.inf)
    return Curve(curve.label, np.log10(curve.x[keep]), y[keep])


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
