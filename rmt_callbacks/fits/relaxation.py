r"""Relaxation fit: a squared singular value approaching its target exponentially (Fig. 4 of arXiv:2412.20496).

In the linear network with a fixed hidden layer (docs/science.md#hidden-layer) the rows of :math:`W - W_T` relax
at rates :math:`\gamma_i \propto z_i^2`, so each squared singular value behaves as (docs/science.md, E29)

.. math::

    \xi(t) = A \big(1 - B e^{-\gamma t}\big)^2,

with :math:`A \to 4` (the target's :math:`s_i = 2`) and :math:`\gamma` per unit of ``t`` (per epoch for the
reproduction). The fit is least squares (``scipy.optimize.curve_fit``, Levenberg–Marquardt) on the points with
:math:`t \ge t_{\min}` (default 2: the first epochs, where small initial weights leave the linearised form,
are left out), started from :math:`A_0 = \xi(t_{\rm last})`, :math:`B_0 = 1` and :math:`\gamma_0` the slope of
:math:`-\ln(1 - \sqrt{\xi/A_0})` over the first third of the points.

**Errors.** The standard errors are the square roots of the diagonal of ``curve_fit``'s covariance (unweighted,
scaled by the residual variance). The points of an ensemble-mean trajectory are correlated in time, so these
errors are lower bounds; the spread over seeds is the honest error.

References: arXiv:2412.20496 (Fig. 4); docs/science.md, E29.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from ._result import CurveFit, curve_points

__all__ = ["MIN_POINTS", "RelaxationFit", "fit_relaxation"]

#: The fewest points (at ``t >= t_min``) the fit accepts: one more than its three parameters.
MIN_POINTS = 4


@dataclass(frozen=True)
class RelaxationFit(CurveFit):
    r"""Relaxation fit (:func:`fit_relaxation`) of :math:`\xi(t) = A (1 - B e^{-\gamma t})^2`.

    ``amplitude`` is :math:`A`, ``b`` is :math:`B`, ``rate`` is :math:`\gamma` (per unit of ``t``); ``*_std`` are
    their standard errors (``NaN`` when the covariance could not be estimated); ``n`` counts the points fitted.

    Example:
        >>> fit = RelaxationFit(n=98, converged=True, message="ok", amplitude=4.0, b=0.5, rate=0.1,
        ...                     amplitude_std=0.0, b_std=0.0, rate_std=0.0)
        >>> fit.curve(np.array([0.0]))
        array([1.])
        >>> RelaxationFit.failed(3, "too few").to_metrics("mode1_")
        {'mode1_converged': 0.0}
    """

    amplitude: float
    b: float
    rate: float
    amplitude_std: float
    b_std: float
    rate_std: float

    def curve(self, t: np.ndarray) -> np.ndarray:
        r"""The fitted :math:`\xi(t)` at the times ``t``."""
        return self.amplitude * (1.0 - self.b * np.exp(-self.rate * t)) ** 2


def fit_relaxation(t: object, xi: object, *, t_min: float = 2.0) -> RelaxationFit:
    r"""Fit :math:`\xi(t) = A (1 - B e^{-\gamma t})^2` to a trajectory for :math:`t \ge t_{\min}` (E29).

    Args:
        t: times, one-dimensional (tensor, array or sequence).
        xi: the trajectory at those times (an ensemble mean of squared singular values), same length.
        t_min: the earliest time fitted.

    Returns:
        The fit; failed (``converged=False``, ``NaN`` parameters, the reason) when fewer than :data:`MIN_POINTS`
        points lie at :math:`t \ge t_{\min}`, when the last of them is not positive (no starting amplitude), or
        when the optimiser does not finish.

    Raises:
        TypeError: ``t`` or ``xi`` is not real-valued.
        ValueError: their lengths differ, or they have NaN or infinite entries.

    References: arXiv:2412.20496 (Fig. 4); docs/science.md, E29.

    Example:
        >>> t = np.arange(0, 50.0)
        >>> fit = fit_relaxation(t, 4.0 * (1 - 0.9 * np.exp(-0.1 * t)) ** 2)
        >>> fit.converged, round(fit.amplitude, 6), round(fit.b, 6), round(fit.rate, 6), fit.n
        (True, 4.0, 0.9, 0.1, 48)
    """
    t_all, xi_all = curve_points(t=t, xi=xi)
    keep = t_all >= t_min
    tt, yy = t_all[keep], xi_all[keep]
    n = int(tt.size)
    if n < MIN_POINTS:
        return RelaxationFit.failed(n, f"too few points at t >= {t_min:g} to fit: got {n}, need at least {MIN_POINTS}")
    a0 = float(yy[-1])
    if not a0 > 0:
        return RelaxationFit.failed(n, f"the last value {a0!r} is not positive: no starting amplitude")
    from scipy.optimize import OptimizeWarning, curve_fit

    first = max(3, n // 3)
    ratio = np.clip(1.0 - np.sqrt(np.clip(yy / a0, 0.0, None)), 1e-6, None)
    g0 = max(1e-3, float(-np.polyfit(tt[:first], np.log(ratio[:first]), 1)[0]))

    def model(t: np.ndarray, a: float, b: float, g: float) -> np.ndarray:
        return a * (1.0 - b * np.exp(-g * t)) ** 2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)  # an inestimable covariance is reported below
        try:
            popt, pcov = curve_fit(model, tt, yy, p0=[a0, 1.0, g0], maxfev=20_000)
        except RuntimeError as err:  # the optimiser did not finish (maxfev reached)
            return RelaxationFit.failed(n, f"optimiser did not finish: {err}")
    a, b, g = (float(p) for p in popt)
    if not all(math.isfinite(p) for p in (a, b, g)):
        return RelaxationFit.failed(n, f"optimiser gave non-finite parameters {(a, b, g)}")
    message = f"least squares on {n} points at t >= {t_min:g}"
    with np.errstate(invalid="ignore"):  # a negative variance: the covariance is broken
        stds = np.sqrt(np.diag(pcov))
    if not np.isfinite(stds).all():
        stds = np.full(3, math.nan)
        message += "; the covariance could not be estimated (standard errors NaN)"
    return RelaxationFit(
        n=n,
        converged=True,
        message=message,
        amplitude=a,
        b=b,
        rate=g,
        amplitude_std=float(stds[0]),
        b_std=float(stds[1]),
        rate_std=float(stds[2]),
    )
