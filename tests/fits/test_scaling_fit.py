"""The line through the origin y = a·x (the scaling fit) against NumPy, SciPy and the spread over seeds."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy.optimize import curve_fit

from rmt_callbacks.fits import ThroughOriginFit, fit_through_origin


def _points(seed: int, n: int = 12) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.linspace(0.02, 0.2, n)
    err = 0.01 + 0.02 * rng.random(n)
    return x, 2.3 * x + err * rng.standard_normal(n), err


def test_unweighted_slope_is_lstsq_and_its_error_the_closed_form() -> None:
    x, y, _ = _points(1)
    fit = fit_through_origin(x, y)
    (slope,), (rss,), _, _ = np.linalg.lstsq(x[:, None], y, rcond=None)
    assert fit.converged and fit.n == x.size
    assert fit.slope == pytest.approx(slope, rel=1e-12)
    assert fit.slope == pytest.approx((x * y).sum() / (x * x).sum(), rel=1e-12)
    assert fit.chi2_dof == pytest.approx(rss / (x.size - 1), rel=1e-10)
    assert fit.slope_std == pytest.approx(math.sqrt(rss / (x.size - 1) / (x * x).sum()), rel=1e-10)


def test_weighted_slope_is_lstsq_on_rows_scaled_by_the_errors() -> None:
    x, y, err = _points(2)
    fit = fit_through_origin(x, y, err)
    (slope,), (chi2,), _, _ = np.linalg.lstsq((x / err)[:, None], y / err, rcond=None)
    assert fit.slope == pytest.approx(slope, rel=1e-12)
    assert fit.chi2_dof == pytest.approx(chi2 / (x.size - 1), rel=1e-10)


def test_slope_and_error_match_scipy_curve_fit() -> None:
    x, y, err = _points(3)
    popt, pcov = curve_fit(lambda t, a: a * t, x, y, sigma=err)  # absolute_sigma=False: scaled by χ²/ν
    fit = fit_through_origin(torch.tensor(x), torch.tensor(y), torch.tensor(err))
    assert fit.slope == pytest.approx(popt[0], rel=1e-10)
    assert fit.slope_std == pytest.approx(math.sqrt(pcov[0, 0]), rel=1e-8)


def test_scaling_every_error_by_one_factor_changes_neither_slope_nor_its_error() -> None:
    x, y, err = _points(4)
    one, ten = fit_through_origin(x, y, err), fit_through_origin(x, y, 10 * err)
    assert ten.slope == pytest.approx(one.slope, rel=1e-12)
    assert ten.slope_std == pytest.approx(one.slope_std, rel=1e-12)
    assert ten.chi2_dof == pytest.approx(one.chi2_dof / 100, rel=1e-12)


def test_standard_error_is_the_spread_over_seeds() -> None:
    seeds, x, err = 2000, np.linspace(0.02, 0.2, 12), np.linspace(0.01, 0.03, 12)
    rng = np.random.default_rng(5)
    fits = [fit_through_origin(x, 2.3 * x + err * rng.standard_normal(x.size), err) for _ in range(seeds)]
    slopes = np.array([f.slope for f in fits])
    rms_std = math.sqrt(np.mean([f.slope_std**2 for f in fits]))  # E[χ²/ν] = 1: unbiased for the variance
    true_std = 1 / math.sqrt((x**2 / err**2).sum())
    # The sample std of 2000 slopes is known to 1/√(2·1999) ≈ 1.6 %, the mean of χ²/ν (ν = 11) to √(2/11/2000)
    # ≈ 1 %, i.e. 0.5 % on its root: 8 % is five combined standard errors.
    assert slopes.mean() == pytest.approx(2.3, abs=5 * true_std / math.sqrt(seeds))
    assert slopes.std(ddof=1) == pytest.approx(true_std, rel=0.08)
    assert rms_std == pytest.approx(true_std, rel=0.03)
    assert rms_std == pytest.approx(slopes.std(ddof=1), rel=0.08)


def test_lists_arrays_and_tensors_give_one_result() -> None:
    x, y, err = _points(6)
    ref = fit_through_origin(x, y, err)
    assert fit_through_origin(list(x), list(y), list(err)) == ref
    assert fit_through_origin(torch.tensor(x), torch.tensor(y), torch.tensor(err)) == ref


def test_metrics_of_a_converged_fit() -> None:
    fit = fit_through_origin([1.0, 2.0], [2.0, 4.0])
    assert fit.to_metrics("rbm_") == {"rbm_slope": 2.0, "rbm_slope_std": 0.0, "rbm_chi2_dof": 0.0, "rbm_converged": 1.0}
    with pytest.raises(dataclasses.FrozenInstanceError):
        fit.slope = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        ([1.0], [2.0], "too few points to fit: got 1, need at least 2"),
        ([], [], "too few points to fit: got 0, need at least 2"),
        ([0.0, 0.0, 0.0], [1.0, 2.0, 3.0], "degenerate input: all 3 x equal 0"),
    ],
)
def test_too_few_or_degenerate_points_give_a_failed_fit(x: list, y: list, message: str) -> None:
    fit = fit_through_origin(x, y)
    assert isinstance(fit, ThroughOriginFit) and not fit.converged and fit.message == message
    assert math.isnan(fit.slope) and math.isnan(fit.slope_std) and math.isnan(fit.chi2_dof)
    assert fit.to_metrics("a/") == {"a/converged": 0.0}


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="err must be positive"):
        fit_through_origin([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="one length"):
        fit_through_origin([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="y must be finite, but 1 of its 3"):
        fit_through_origin([1.0, 2.0, 3.0], [1.0, math.nan, 3.0])
    with pytest.raises(TypeError, match="real numbers"):
        fit_through_origin(["a", "b"], [1.0, 2.0])
