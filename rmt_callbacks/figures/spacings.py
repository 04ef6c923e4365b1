r"""The spacing figure of ``rmt-reproduce`` (fig3, scaling_rbm, scaling_ts): the collapse of the normalised
spacings on the surmise, and the linear scaling rule :math:`\langle S\rangle = a x` with its fit and residuals.

The fit is the weighted line through the origin of docs/science.md#analysis-recipe, step (6) (arXiv:2407.16427,
Fig. 3): the figure draws it over the range of the points it was fitted to only, states that range, the number of
points, :math:`a \pm \sigma_a` and

.. math::

    \frac{\chi^2}{\nu} = \frac{1}{n - 1}\sum_i r_i^2, \qquad r_i = \frac{y_i - a x_i}{e_i},

and plots the residuals :math:`r_i` under it with the bands :math:`|r| \le 1` and :math:`|r| \le 2` (about 68 %
and 95 % of the points when the errors are right and the line fits). Points and spacing series that failed an
equilibration check (``flagged``, ``flagged_series``) are drawn hollow and red, "(not relaxed)" in the legend.
Every legend sits outside the axes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..fits import ThroughOriginFit
from ..laws import BetaSurmise, PoissonSpacing, WignerSurmise
from .canvas import FLAG_COLOR, NOT_RELAXED, histogram_edges, law_curve, legend_outside, new_figure

__all__ = ["ScalingPoints", "scaling_points", "spacing_figure"]

SPACING_MAX: float = 4.0
"""The spacing histograms' range, ``[0, SPACING_MAX]`` in units of the mean spacing."""

ScalingPoints = tuple[np.ndarray, np.ndarray, np.ndarray, float, float, float]
"""``(x, y, err, slope, slope_err, chi2_dof)``, as :func:`scaling_points` checks and completes them."""


def scaling_points(scaling: tuple[Any, ...]) -> ScalingPoints:
    """``spacing_figure``'s ``scaling`` checked, with the reduced χ² of the points about the line.

    Args:
        scaling: ``(x, y, err, slope, slope_err)``, or ``(x, y, err, fit)`` with a converged
            :class:`~rmt_callbacks.fits.ThroughOriginFit` of those ``n`` points (its ``chi2_dof`` is used).

    Returns:
        ``(x, y, err, slope, slope_err, chi2_dof)``; computed, ``chi2_dof`` is over the points with ``err > 0``
        (``n - 1`` degrees of freedom among them; NaN with fewer than two).

    Raises:
        ValueError: another shape of tuple, ``x``, ``y``, ``err`` not 1-D of one length or not finite, a failed
            fit or one of another number of points.

    Examples:
        >>> x, y, e, a, da, chi2 = scaling_points(([1.0, 2.0, 3.0], [1.0, 2.0, 4.0], [0.1, 0.1, 0.2], 32 / 29, 0.1))
        >>> round(chi2 * 841, 6)  # the closed form of fit_through_origin's example: 7250/841
        7250.0
    """
    if not isinstance(scaling, tuple) or len(scaling) not in (4, 5):
        raise ValueError(
            "spacing_figure: scaling must be (x, y, err, slope, slope_err) or (x, y, err, ThroughOriginFit), "
            f"got {type(scaling).__name__} of length {len(scaling) if isinstance(scaling, tuple) else '?'}"
        )
    x, y, err = (np.asarray(v, dtype=np.float64) for v in scaling[:3])
    if x.ndim != 1 or x.shape != y.shape or x.shape != err.shape or x.size == 0:
        raise ValueError(
            f"spacing_figure: scaling's x, y, err must be 1-D of one non-zero length, got shapes {x.shape}, "
            f"{y.shape}, {err.shape}"
        )
    if not (np.isfinite(x).all() and np.isfinite(y).all() and np.isfinite(err).all()):
        raise ValueError("spacing_figure: scaling's x, y, err must be finite (a NaN or infinite point was given)")
    if len(scaling) == 4:
        fit = scaling[3]
        if not isinstance(fit, ThroughOriginFit):
            raise ValueError(f"spacing_figure: scaling[3] must be a ThroughOriginFit, got {type(fit).__name__}")
        if not fit.converged or fit.n != x.size:
            why = fit.message if not fit.converged else f"it was fitted to {fit.n} points, {x.size} are drawn"
            raise ValueError(f"spacing_figure: scaling's fit cannot be drawn over these points: {why}")
        return x, y, err, fit.slope, fit.slope_std, fit.chi2_dof
    slope, slope_err = float(scaling[3]), float(scaling[4])
    ok = err > 0
    r = (y[ok] - slope * x[ok]) / err[ok]
    chi2_dof = float((r**2).sum() / (r.size - 1)) if r.size > 1 else float("nan")
    return x, y, err, slope, slope_err, chi2_dof


def spacing_figure(
    normalised: Mapping[str, np.ndarray],
    scaling: tuple[Any, ...],
    *,
    xlabel: str,
    flagged: np.ndarray | None = None,
    flagged_series: Collection[str] | None = None,
) -> Figure:
    r"""The normalised spacings against the surmises, and :math:`\langle S\rangle` against the predictor with the
    fit over its range and the residuals under it (arXiv:2407.16427, Fig. 3; module docstring).

    Left (omitted when ``normalised`` is empty): every setting's spacings :math:`s = S/\langle S\rangle` on bins
    common to all (the one rule on the pooled spacings over ``[0, 4]``), with the β = 1 and β = 2 surmises and
    Poisson. Right: the points with their errors and the fit, stated as "fit over x ∈ [a, b], N points: a ± σ,
    χ²/dof"; under it the residuals :math:`(y - a x)/e` with ±1 and ±2 bands (points with ``err = 0`` are left out,
    and the legend says how many).

    Args:
        normalised: one setting's normalised spacings per legend label.
        scaling: ``(x, y, err, slope, slope_err)`` or ``(x, y, err, ThroughOriginFit)``; ``x``, ``y``, ``err``
            one entry per point, the points the fit was made on (:func:`scaling_points`).
        xlabel: the predictor's label.
        flagged: ``None``, or a boolean array of one entry per point, ``True`` where the point failed an
            equilibration check: drawn hollow and red, "(not relaxed)" in the legend.
        flagged_series: labels of ``normalised`` whose spacings failed an equilibration check: drawn dashed and
            red, "(not relaxed)" after the label.

    Returns:
        A ``Figure`` on an Agg canvas.

    Raises:
        ValueError: a malformed ``scaling`` (:func:`scaling_points`), ``flagged`` not boolean of one entry per
            point, or a ``flagged_series`` label that ``normalised`` does not have.
    """
    x, y, err, a, da, chi2 = scaling_points(scaling)
    bad = _point_flags(flagged, x.size)
    series_flags = set(flagged_series or ())
    if unknown := sorted(series_flags - set(normalised)):
        raise ValueError(f"spacing_figure: flagged_series has labels that normalised does not: {unknown}")
    if normalised:
        fig = new_figure(14, 5.5, constrained=True)
        grid = fig.add_gridspec(2, 2, height_ratios=(3, 1))
        _spacings(fig.add_subplot(grid[:, 0]), normalised, series_flags)
        top = fig.add_subplot(grid[0, 1])
        bottom = fig.add_subplot(grid[1, 1], sharex=top)
    else:
        fig = new_figure(8, 5.5, constrained=True)
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    _scaling(top, (x, y, err, a, da, chi2), bad)
    _residuals(bottom, (x, y, err, a), bad, xlabel)
    return fig


def _point_flags(flagged: np.ndarray | None, n: int) -> np.ndarray:
    if flagged is None:
        return np.zeros(n, dtype=bool)
    mask = np.asarray(flagged)
    if mask.dtype != np.bool_ or mask.shape != (n,):
        raise ValueError(
            f"spacing_figure: flagged must be a boolean array of one entry per point ({n}), "
            f"got dtype {mask.dtype} and shape {mask.shape}"
        )
    return mask


def _spacings(ax: Axes, normalised: Mapping[str, np.ndarray], flagged: set[str]) -> None:
    """Step histograms of every series on common bins (viridis by order; flagged ones dashed red) and the laws."""
    pooled = np.concatenate([np.ravel(s) for s in normalised.values()])
    edges = histogram_edges(pooled, (0.0, SPACING_MAX)) if pooled.size else np.array([0.0, SPACING_MAX])
    colors = colormaps["viridis"](np.linspace(0.0, 0.9, len(normalised)))
    for (label, s), color in zip(normalised.items(), colors, strict=True):
        bad = label in flagged
        ax.hist(
            np.ravel(s),
            bins=edges,  # type: ignore[arg-type]  # stub says Sequence, arrays work
            density=True,
            histtype="step",
            lw=1.2 if bad else 0.8,
            ls="--" if bad else "-",
            color=FLAG_COLOR if bad else color,
            label=label + NOT_RELAXED if bad else label,
        )
    for law, name, ls in (
        (WignerSurmise(beta=1), "β = 1 surmise", "-"),
        (BetaSurmise(beta=2.0), "β = 2 surmise", ":"),
        (PoissonSpacing(), "Poisson", "--"),
    ):
        curve = law_curve(name, law, 0.0, SPACING_MAX)
        ax.plot(curve.x, curve.y, "k", ls=ls, lw=1.5, label=name)
    ax.set(xlabel=r"$s = S/\langle S\rangle$", ylabel="P(s)", xlim=(0, SPACING_MAX))
    legend_outside(ax)


def _scaling(ax: Axes, points: ScalingPoints, bad: np.ndarray) -> None:
    """The points (flagged ones hollow red), and the fit line over ``[min x, max x]`` with its statement."""
    x, y, err, a, da, chi2 = points
    for mask, flag in ((~bad, False), (bad, True)):
        if mask.any():
            color, face = (FLAG_COLOR, "none") if flag else ("tab:blue", "tab:blue")
            label = r"$\langle S\rangle$ ± error" + (NOT_RELAXED if flag else "")
            ax.errorbar(
                x[mask], y[mask], yerr=err[mask], fmt="o", ms=4 if flag else 3, color=color, mfc=face, label=label
            )
    lo, hi = float(x.min()), float(x.max())
    line = np.linspace(lo, hi, 50)
    ax.plot(
        line,
        a * line,
        "k-",
        lw=1.2,
        label=f"fit a·x over x ∈ [{lo:.3g}, {hi:.3g}], {x.size} points:\na = {a:.3f} ± {da:.3f}, χ²/dof = {chi2:.2f}",
    )
    ax.set(ylabel=r"$\langle S\rangle$", xlim=(0, None), ylim=(0, None))
    ax.tick_params(labelbottom=False)
    legend_outside(ax)


def _residuals(
    ax: Axes, points: tuple[np.ndarray, np.ndarray, np.ndarray, float], bad: np.ndarray, xlabel: str
) -> None:
    """``(y − a x)/err`` of the points with a positive error, on the ±1 and ±2 bands."""
    x, y, err, a = points
    ok = err > 0
    r = np.zeros_like(y)
    r[ok] = (y[ok] - a * x[ok]) / err[ok]
    ax.axhspan(-2.0, 2.0, color="0.92", lw=0, label="±2 band")
    ax.axhspan(-1.0, 1.0, color="0.8", lw=0, label="±1 band")
    ax.axhline(0.0, color="k", lw=0.8, label="the fit")
    note = f" ({int((~ok).sum())} with error 0 not drawn)" if not ok.all() else ""
    for mask, flag in ((ok & ~bad, False), (ok & bad, True)):
        if mask.any():
            color, face = (FLAG_COLOR, "none") if flag else ("tab:blue", "tab:blue")
            label, note = "(y − a·x)/error" + (NOT_RELAXED if flag else "") + note, ""
            ax.plot(x[mask], r[mask], "o", ms=4 if flag else 3, color=color, mfc=face, label=label)
    span = max(3.0, 1.1 * float(np.abs(r[ok]).max())) if ok.any() else 3.0
    ax.set(xlabel=xlabel, ylabel="residual", ylim=(-span, span))
    legend_outside(ax)
