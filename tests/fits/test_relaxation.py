"""The relaxation fit ξ(t) = A(1 − B e^{−γt})² (E29) against exact curves, SciPy and the spread over seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.optimize
import torch

from rmt_callbacks.fits import RelaxationFit, fit_relaxation
from rmt_callbacks.fits.relaxation import MIN_POINTS

T = np.arange(101.0)  # epochs 0..100, as the reproduction's trajectory


def _curve(a: float, b: float, g: float, t: np.ndarray = T) -> np.ndarray:
    return a * (1.0 - b * np.exp(-g * t)) ** 2


@pytest.mark.parametrize(("a", "b", "g"), [(4.0, 0.9, 0.1), (4.0, 0.99, 0.03), (2.5, 0.5, 0.4), (4.0, 1.2, 0.2)])
def test_an_exact_curve_gives_its_parameters(a: float, b: float, g: float) -> None:
    fit = fit_relaxation(T, _curve(a, b, g))
    assert fit.converged and fit.n == T.size - 2  # t >= 2
    assert (fit.amplitude, fit.b, fit.rate) == pytest.approx((a, b, g), rel=1e-6)
    np.testing.assert_allclose(fit.curve(T), _curve(a, b, g), rtol=1e-6, atol=1e-9)


def test_noisy_fit_is_the_least_squares_optimum_and_its_errors_the_gauss_newton_covariance() -> None:
    rng = np.random.default_rng(0)
    y = _curve(4.0, 0.9, 0.1) + 0.02 * rng.standard_normal(T.size)
    fit = fit_relaxation(T, y)
    tt, yy = T[2:], y[2:]

    def residuals(p: np.ndarray) -> np.ndarray:
        return _curve(*p, t=tt) - yy

    ref = scipy.optimize.least_squares(residuals, x0=[4.0, 0.9, 0.1], xtol=1e-14, ftol=1e-14, gtol=1e-14)
    assert (fit.amplitude, fit.b, fit.rate) == pytest.approx(tuple(ref.x), rel=1e-6)
    # Analytic Jacobian at the optimum; cov = s² (JᵀJ)⁻¹ with s² = RSS/(n − 3).
    a, b, g = ref.x
    e = np.exp(-g * tt)
    jac = np.stack([(1 - b * e) ** 2, -2 * a * (1 - b * e) * e, 2 * a * (1 - b * e) * b * tt * e], axis=1)
    s2 = (residuals(ref.x) ** 2).sum() / (tt.size - 3)
    std = np.sqrt(np.diag(s2 * np.linalg.inv(jac.T @ jac)))
    assert (fit.amplitude_std, fit.b_std, fit.rate_std) == pytest.approx(tuple(std), rel=1e-4)


def test_rate_error_is_the_spread_over_seeds() -> None:
    seeds, noise = 400, 0.02
    rng = np.random.default_rng(1)
    clean = _curve(4.0, 0.9, 0.1)
    fits = [fit_relaxation(T, clean + noise * rng.standard_normal(T.size)) for _ in range(seeds)]
    assert all(f.converged for f in fits)
    rates = np.array([f.rate for f in fits])
    rms_std = math.sqrt(np.mean([f.rate_std**2 for f in fits]))
    # The sample std of 400 rates is known to 1/√(2·399) ≈ 3.5 %; the linearised error is exact to O(noise²):
    # 18 % is five standard errors. The mean rate is unbiased to well within 5 standard errors of the mean.
    assert rates.std(ddof=1) == pytest.approx(rms_std, rel=0.18)
    assert rates.mean() == pytest.approx(0.1, abs=5 * rms_std / math.sqrt(seeds))


def test_points_before_t_min_are_not_fitted() -> None:
    y = _curve(4.0, 0.9, 0.1)
    spoiled = y.copy()
    spoiled[:5] = 100.0
    fit, ref = fit_relaxation(T, spoiled, t_min=5.0), fit_relaxation(T, y, t_min=5.0)
    assert fit.n == T.size - 5
    assert (fit.amplitude, fit.b, fit.rate) == pytest.approx((ref.amplitude, ref.b, ref.rate), rel=1e-10)


def test_tensors_and_arrays_give_one_result() -> None:
    y = _curve(4.0, 0.9, 0.1) + 0.01 * np.random.default_rng(2).standard_normal(T.size)
    assert fit_relaxation(torch.tensor(T), torch.tensor(y, dtype=torch.float64)) == fit_relaxation(T, y)


def test_metrics_hold_the_parameters_and_their_errors() -> None:
    fit = fit_relaxation(T, _curve(4.0, 0.9, 0.1))
    metrics = fit.to_metrics("mode1_")
    assert list(metrics) == [
        "mode1_amplitude",
        "mode1_b",
        "mode1_rate",
        "mode1_amplitude_std",
        "mode1_b_std",
        "mode1_rate_std",
        "mode1_converged",
    ]
    assert metrics["mode1_rate"] == fit.rate and metrics["mode1_converged"] == 1.0


def test_too_few_points_or_a_non_positive_end_give_a_failed_fit() -> None:
    fit = fit_relaxation(T[: MIN_POINTS + 1], _curve(4.0, 0.9, 0.1, T[: MIN_POINTS + 1]))
    assert isinstance(fit, RelaxationFit) and not fit.converged and fit.n == MIN_POINTS - 1
    assert fit.message == f"too few points at t >= 2 to fit: got {MIN_POINTS - 1}, need at least {MIN_POINTS}"
    assert math.isnan(fit.amplitude) and math.isnan(fit.rate_std)
    assert fit.to_metrics() == {"converged": 0.0}
    fit = fit_relaxation(T, -_curve(4.0, 0.9, 0.1))
    assert not fit.converged and "not positive" in fit.message


def test_an_optimiser_that_does_not_finish_gives_a_failed_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    def give_up(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Optimal parameters not found: Number of calls to function has reached maxfev = 20000.")

    monkeypatch.setattr(scipy.optimize, "curve_fit", give_up)
    fit = fit_relaxation(T, _curve(4.0, 0.9, 0.1))
    assert not fit.converged and fit.message.startswith("optimiser did not finish: Optimal parameters not found")


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="xi must be finite, but 1 of its"):
        fit_relaxation(T, np.where(T == 7, np.nan, _curve(4.0, 0.9, 0.1)))
    with pytest.raises(ValueError, match="one length"):
        fit_relaxation(T, _curve(4.0, 0.9, 0.1)[:-1])
