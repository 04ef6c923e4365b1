r"""How a matrix's spectrum moved over training: a step × value density image and a few steps' histograms.

The monitor draws it at the end of training from the levels it kept (order statistics per step); every step is
binned on the same edges (the one rule on the pooled values), and positive levels spread over more than
:data:`WIDE_RANGE` (spikes far from a bulk) are drawn as densities of :math:`\log_{10} x`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from .canvas import PANEL_SIZE, Curve, finite, histogram_edges, new_figure

__all__ = ["WIDE_RANGE", "evolution_figure", "in_log10", "log_floor"]

WIDE_RANGE: float = 30.0
"""An evolution figure whose largest value exceeds this many times its 1 % quantile is drawn in log10."""


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
        >>> from rmt_callbacks.figures.canvas import close_figure
        >>> rng = np.random.default_rng(0)
        >>> fig = evolution_figure([0, 10, 20], [rng.normal(s, 1, 100) for s in range(3)], xlabel="x")
        >>> len(fig.axes)  # the image, its colour bar and the overlays
        3
        >>> close_figure(fig)
    """
    if not steps or len(steps) != len(samples):
        raise ValueError(f"evolution_figure: need one sample array per step, got {len(steps)} and {len(samples)}")
    flats = [finite(v) for v in samples]
    pooled = np.concatenate(flats) if any(f.size for f in flats) else np.zeros(1)
    floor = log_floor(pooled)
    if floor is not None:  # outliers far from the bulk: read it in log10
        flats = [np.log10(np.maximum(f, floor)) for f in flats]
        curves = [in_log10(c, floor) for c in curves]
        xlabel, pooled = f"log10 {xlabel}", np.concatenate(flats)
    edges = histogram_edges(pooled)
    image = np.stack([np.histogram(f, bins=edges, density=bool(f.size))[0] if f.size else 0 * edges[1:] for f in flats])
    fig = new_figure(2 * PANEL_SIZE[0] + 1.0, PANEL_SIZE[1] + 0.4)
    fig.subplots_adjust(left=0.08, right=0.97, bottom=0.16, top=0.84 if title else 0.9, wspace=0.35)
    left, right = fig.subplots(1, 2)
    positive = image[image > 0]
    low = float(positive.min()) if positive.size else 1e-3
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


def log_floor(pooled: np.ndarray) -> float | None:
    """The 1 % quantile of the positive values when the largest exceeds :data:`WIDE_RANGE` times it (draw in log10
    from there), else ``None`` (draw as is).

    Examples:
        >>> log_floor(np.linspace(1.0, 2.0, 100)) is None, log_floor(np.r_[np.ones(99), 500.0])
        (True, 1.0)
    """
    positive = pooled[pooled > 0]
    floor = float(np.quantile(positive, 0.01)) if positive.size else 0.0
    return floor if floor > 0 and float(pooled.max()) > WIDE_RANGE * floor else None


def in_log10(curve: Curve, floor: float) -> Curve:
    r"""A density in :math:`x` as a density in :math:`\log_{10} x`: :math:`p(x)\, x \ln 10`, from ``floor`` (> 0) on."""
    keep = curve.x >= floor  # the data's range: a law's tail below it would stretch the axis
    with np.errstate(invalid="ignore", over="ignore"):  # an infinite density at an edge stays infinite, not NaN
        y = np.where(np.isfinite(curve.y), curve.y * curve.x * np.log(10), np.inf)
    return Curve(curve.label, np.log10(curve.x[keep]), y[keep])
