r"""Straight line through the origin, :math:`y = a x`: the papers' fit of the linear scaling rule.

Step (6) of docs/science.md#analysis-recipe (arXiv:2407.16427, Fig. 3 and the teacher–student scans): the mean
spacing :math:`\langle S \rangle` and :math:`\sqrt\pi\,\sigma` of every pair against
:math:`\sqrt{\alpha x^*/|B|}` (RBM) or :math:`\sqrt{\alpha\varepsilon^2/|B|}` (teacher–student). Weighted least
squares with weights :math:`w_i = 1/e_i^2` gives

.. math::

    \hat a = \frac{\sum_i w_i x_i y_i}{\sum_i w_i x_i^2}, \qquad
    \frac{\chi^2}{\nu} = \frac{1}{n - 1} \sum_i w_i (y_i - \hat a x_i)^2, \qquad
    \sigma_a = \sqrt{\frac{\chi^2/\nu}{\sum_i w_i x_i^2}},

the error scaled by the reduced :math:`\chi^2` (what ``scipy.optimize.curve_fit`` gives with ``sigma=err`` and
its default ``absolute_sigma=False``): it rests on the scatter of the points about the line, not on the quoted
errors alone, which only set the relative weights. Without errors every weight is 1 and :math:`\chi^2/\nu` is the
residual variance.

References: arXiv:2407.16427 (the scaling fits of Fig. 3); docs/science.md#analysis-recipe, step (6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._result import CurveFit, curve_points

__all__ = ["ThroughOriginFit", "fit_through_origin"]


@dataclass(frozen=True)
class ThroughOriginFit(CurveFit):
    r"""Line through the origin (:func:`fit_through_origin`): ``slope`` :math:`\hat a`, its standard error
    ``slope_std`` :math:`\sigma_a` and the reduced :math:`\chi^2` ``chi2_dof`` (``n - 1`` degrees of freedom)."""

    slope: float
    slope_std: float
    chi2_dof: float


def fit_through_origin(x: object, y: object, err: object | None = None) -> ThroughOriginFit:
    r"""Weighted least-squares line through the origin, :math:`y = a x` (module docstring).

    Args:
        x: predictor, one value per point (tensor, array or sequence).
        y: measurements, same length.
        err: positive standard errors of ``y``, same length (``None``: all equal).

    Returns:
        The fit; failed (``converged=False``, ``NaN`` numbers, the reason) with fewer than two points or when
        every ``x`` is 0.

    Raises:
        TypeError: an input is not real-valued.
        ValueError: the lengths differ, an input has NaN or infinite entries, or an error is not positive.

    References: arXiv:2407.16427; docs/science.md#analysis-recipe, step (6).

    Example:
        >>> fit = fit_through_origin([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
        >>> fit.converged, fit.slope, fit.slope_std, fit.chi2_dof, fit.n
        (True, 2.0, 0.0, 0.0, 3)
        >>> fit = fit_through_origin([1.0, 2.0, 3.0], [1.0, 2.0, 4.0], err=[0.1, 0.1, 0.2])
        >>> round(fit.slope * 29, 9), round(fit.chi2_dof * 841, 6)  # a = 800/725 = 32/29; chi2/(n - 1) = 7250/841
        (32.0, 7250.0)
    """
    if err is None:
        x_, y_ = curve_points(x=x, y=y)
        e = np.ones_like(x_)
    else:
        x_, y_, e = curve_points(x=x, y=y, err=err)
        if not bool((e > 0).all()):
            raise ValueError(f"err must be positive everywhere, got {int((e <= 0).sum())} values <= 0")
    n = int(x_.size)
    if n < 2:
        return ThroughOriginFit.failed(n, f"too few points to fit: got {n}, need at least 2")
    w = 1.0 / e**2
    sxx = float((w * x_ * x_).sum())
    if sxx == 0.0:
        return ThroughOriginFit.failed(n, f"degenerate input: all {n} x equal 0")
    slope = float((w * x_ * y_).sum()) / sxx
    chi2_dof = float((w * (y_ - slope * x_) ** 2).sum()) / (n - 1)
    return ThroughOriginFit(
        n=n,
        converged=True,
        message=f"weighted least squares through the origin on {n} points",
        slope=slope,
        slope_std=math.sqrt(chi2_dof / sxx),
        chi2_dof=chi2_dof,
    )
