"""Truncated power-law fits: closed forms, recovery of known laws, pure power laws, and the ``powerlaw`` package.

Samples of p(x) ∝ x^(-alpha) e^(-lam x) on [x_min, inf), alpha >= 0, by rejection (as ``powerlaw`` draws
them): x = x_min + Exp(lam), kept with probability (x / x_min)^(-alpha). Pure power laws by inverse CDF.

``powerlaw.Fit(x, xmin=x_min)`` (powerlaw 2.0.0) fits (alpha, Lambda) by Nelder–Mead with ``tol=1e-4`` (both
``xatol`` and ``fatol``) inside its default ranges alpha in [0, 3], Lambda >= 0, from the power-law alpha and
1/mean(x); so its parameters are the maximiser only to about 1e-4 (observed: within 7e-5 of ours, which stop
at a Newton decrement of 1e-14 per value), and the comparisons allow 5e-4 on alpha and lambda (data with
x ~ 1-100, lambda ~ 0.01-0.05), 1e-3 on D (it moves with the parameters) and 1e-4 on R (flat at the maximum:
an error of 1e-4 in the parameters moves it by ~1e-5). Its power law is the closed form when alpha lands in
(1.5, 3], as it does here, so R and p are those of the same two maximum-likelihood fits.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from rmt_callbacks.fits import (
    MIN_VALUES,
    ParetoTail,
    TruncatedPowerLaw,
    TruncatedPowerLawFit,
    fit_power_law,
    fit_truncated_power_law,
)
from rmt_callbacks.fits.power_law import KS_CRITICAL


def _tpl(rng: np.random.Generator, alpha: float, lam: float, x_min: float, size: int) -> np.ndarray:
    out: list[np.ndarray] = []
    while sum(map(len, out)) < size:
        x = x_min + rng.exponential(1 / lam, 4 * size)
        out.append(x[rng.uniform(size=x.size) < (x / x_min) ** -alpha])
    return np.concatenate(out)[:size]


def _pareto(rng: np.random.Generator, alpha: float, x_min: float, size: int) -> np.ndarray:
    return x_min * (1.0 - rng.uniform(size=size)) ** (-1.0 / (alpha - 1.0))


def _fit(x: np.ndarray, **kwargs: object) -> TruncatedPowerLawFit:
    return fit_truncated_power_law(torch.from_numpy(x), **kwargs)


# --- the law ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alpha", "lam", "x_min"), [(0.5, 0.2, 1.0), (-2.0, 3.0, 0.5), (2.0, 0.01, 2.0), (3.5, 1e-4, 1.0)]
)
def test_law_is_normalised_and_its_cdf_integrates_its_pdf(alpha: float, lam: float, x_min: float) -> None:
    from scipy.integrate import quad

    law = TruncatedPowerLaw(alpha=alpha, lam=lam, x_min=x_min)

    def pdf(x: float) -> float:
        return float(law.pdf(x))

    total = quad(pdf, x_min, 10 * x_min)[0] + quad(pdf, 10 * x_min, math.inf, limit=200)[0]
    assert total == pytest.approx(1.0, abs=1e-8)
    points = x_min * np.array([1.0, 1.01, 1.5, 3.0, 10.0, 40.0])
    expected = [quad(pdf, x_min, b, limit=200)[0] for b in points]
    np.testing.assert_allclose(law.cdf(torch.from_numpy(points)).numpy(), expected, atol=1e-9)
    assert float(law.pdf(0.99 * x_min)) == 0.0 and float(law.cdf(0.99 * x_min)) == 0.0


@pytest.mark.parametrize(("alpha", "lam"), [(0.5, 0.2), (-1.5, 2.0), (2.0, 0.3), (2.0, 30.0)])
def test_normalisation_against_incomplete_gamma_closed_forms(alpha: float, lam: float) -> None:
    # C^-1 = lam^(alpha-1) Gamma(1-alpha, lam x_min) (arXiv:0706.1062, Table 1): for alpha < 1 SciPy's
    # regularised gammaincc, for alpha = 2 x_min^-1 E_2(lam x_min).
    from scipy.special import expn, gamma, gammaincc

    x_min = 1.5
    mu = lam * x_min
    if alpha < 1:
        inverse_c = lam ** (alpha - 1) * gamma(1 - alpha) * gammaincc(1 - alpha, mu)
    else:
        inverse_c = expn(2, mu) / x_min
    law = TruncatedPowerLaw(alpha=alpha, lam=lam, x_min=x_min)
    assert float(law.pdf(x_min)) == pytest.approx(x_min**-alpha * math.exp(-mu) / inverse_c, rel=1e-11)


def test_lam_zero_is_the_pareto_tail() -> None:
    law, pareto = TruncatedPowerLaw(alpha=2.5, lam=0.0, x_min=2.0), ParetoTail(alpha=2.5, x_min=2.0)
    x = torch.tensor([1.0, 2.0, 3.0, 50.0], dtype=torch.float64)
    np.testing.assert_allclose(law.pdf(x).numpy(), pareto.pdf(x).numpy(), rtol=1e-13, atol=0)
    np.testing.assert_allclose(law.cdf(x).numpy(), pareto.cdf(x).numpy(), rtol=1e-13, atol=1e-15)
    assert law.support == (2.0, math.inf) and law.cdf(torch.ones(2)).dtype == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 2.0, "lam": -0.1, "x_min": 1.0}, "lam must be >= 0"),
        ({"alpha": 1.0, "lam": 0.0, "x_min": 1.0}, "alpha - 1"),
        ({"alpha": 2.0, "lam": 0.1, "x_min": 0.0}, "x_min"),
        ({"alpha": math.nan, "lam": 0.1, "x_min": 1.0}, "alpha"),
    ],
)
def test_law_rejects_invalid_parameters(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TruncatedPowerLaw(**kwargs)


# --- recovery of known laws -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("alpha", "lam"), [(1.6, 0.05), (0.5, 0.5)])
def test_parameters_within_four_standard_errors(alpha: float, lam: float, seed: int) -> None:
    x = _tpl(np.random.default_rng(seed), alpha, lam, 1.0, 2000)
    fit = _fit(x, x_min=1.0)
    assert fit.converged and fit.n == fit.n_tail == 2000 and fit.x_min == 1.0
    assert abs(fit.alpha - alpha) < 4 * fit.alpha_std
    assert abs(fit.lam - lam) < 4 * fit.lam_std
    assert fit.ks < KS_CRITICAL / math.sqrt(fit.n_tail)
    assert fit.loglik_ratio > 10 and fit.p_value < 1e-5  # the cutoff is needed
    assert fit.p_value == pytest.approx(math.erfc(math.sqrt(fit.loglik_ratio)), rel=1e-12)


def _seed_spread(seeds: int, size: int) -> tuple[float, float]:
    fits = [_fit(_tpl(np.random.default_rng(100 + s), 1.6, 0.05, 1.0, size), x_min=1.0) for s in range(seeds)]
    assert all(f.converged for f in fits)
    alpha_ratio = np.std([f.alpha for f in fits], ddof=1) / np.mean([f.alpha_std for f in fits])
    lam_ratio = np.std([f.lam for f in fits], ddof=1) / np.mean([f.lam_std for f in fits])
    return float(alpha_ratio), float(lam_ratio)


def test_standard_errors_match_the_spread_over_seeds() -> None:
    # 20 seeds: the sample standard deviation is within ~16 % of the truth (one sigma); 0.6-1.6 is ~3 sigma.
    alpha_ratio, lam_ratio = _seed_spread(20, 1000)
    assert 0.6 < alpha_ratio < 1.6 and 0.6 < lam_ratio < 1.6


@pytest.mark.slow
def test_standard_errors_match_the_spread_over_many_seeds() -> None:
    alpha_ratio, lam_ratio = _seed_spread(200, 2000)  # ~5 % relative error on each ratio
    assert 0.85 < alpha_ratio < 1.15 and 0.85 < lam_ratio < 1.15


# --- pure power laws --------------------------------------------------------------------------------------


def _pure_pareto(alpha: float, seeds: int) -> tuple[list[TruncatedPowerLawFit], int]:
    fits = [_fit(_pareto(np.random.default_rng(1000 + s), alpha, 2.0, 1000), x_min=2.0) for s in range(seeds)]
    return fits, sum(f.p_value < 0.05 for f in fits)


@pytest.mark.parametrize("alpha", [2.5, 3.5])
def test_pure_power_law_needs_no_cutoff(alpha: float) -> None:
    fits, rejections = _pure_pareto(alpha, 25)
    assert sum(f.converged for f in fits) >= 24
    for fit in fits:
        assert fit.lam >= 0 and fit.lam <= 3 * fit.lam_std
        assert abs(fit.alpha - alpha) < 4 * fit.alpha_std
        assert fit.loglik_ratio >= 0 and 0 < fit.p_value <= 1
    assert rejections <= 4  # Binomial(25, 0.05): mean 1.25, P(X > 4) = 0.007
    on_boundary = [f for f in fits if f.lam == 0]
    assert on_boundary and all(f.loglik_ratio == 0 and f.p_value == 1 for f in on_boundary)
    for fit in on_boundary:  # lambda = 0: the information about lambda is finite only for alpha > 3
        assert (fit.lam_std > 0) == (fit.alpha > 3)
        if fit.alpha <= 3:
            assert fit.alpha_std == pytest.approx((fit.alpha - 1) / math.sqrt(fit.n_tail))


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [1.8, 2.5, 3.5])
def test_likelihood_ratio_test_holds_its_level_on_pure_power_laws(alpha: float) -> None:
    fits, rejections = _pure_pareto(alpha, 200)
    assert rejections / 200 <= 0.075  # observed 5.0 %, 4.5 %, 4.0 %
    assert sum(f.converged for f in fits) >= 195


def test_boundary_alpha_is_the_power_law_closed_form() -> None:
    x = _pareto(np.random.default_rng(1000), 2.5, 2.0, 1000)  # seed 1000 lands on lambda = 0
    fit = _fit(x, x_min=2.0)
    assert fit.lam == 0.0 and fit.message.startswith("lambda = 0")
    assert fit.alpha == pytest.approx(1 + x.size / np.log(x / 2.0).sum(), rel=1e-14)


# --- the powerlaw package ---------------------------------------------------------------------------------


def _reference(x: np.ndarray, x_min: float) -> tuple[object, float, float]:
    powerlaw = pytest.importorskip("powerlaw")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = powerlaw.Fit(x, xmin=x_min, verbose=False)
        ratio, p = reference.distribution_compare("power_law", "truncated_power_law", nested=True)
        _ = reference.truncated_power_law.D
    return reference, float(ratio), float(p)


@pytest.mark.parametrize(
    ("alpha", "lam", "seed"),
    [
        (2.0, 0.01, 0),  # a weak cutoff: p ~ 1e-3, comparable
        *(pytest.param(2.0, 0.01, seed, marks=pytest.mark.slow) for seed in (1, 2, 3)),
        *(pytest.param(1.6, 0.05, seed, marks=pytest.mark.slow) for seed in (0, 1, 2)),  # p ~ 1e-25
    ],
)
def test_matches_powerlaw_package(alpha: float, lam: float, seed: int) -> None:
    x = _tpl(np.random.default_rng(seed), alpha, lam, 1.0, 1000)
    fit = _fit(x, x_min=1.0)
    reference, ratio, p = _reference(x, 1.0)
    tpl = reference.truncated_power_law
    assert 1.5 < reference.power_law.alpha <= 3  # the closed-form power law (module docstring)
    assert fit.alpha == pytest.approx(tpl.alpha, abs=5e-4)
    assert fit.lam == pytest.approx(tpl.Lambda, abs=5e-4)
    assert fit.ks == pytest.approx(tpl.D, abs=1e-3)
    assert fit.loglik_ratio == pytest.approx(-ratio, abs=1e-4)
    assert fit.loglik_ratio >= -ratio - 1e-9  # ours is the maximum: never below Nelder-Mead's
    if p > 1e-12:  # powerlaw's 1 - chi2.cdf underflows to 0 for strong cutoffs
        assert fit.p_value == pytest.approx(p, rel=1e-3)


def test_default_x_min_is_the_power_law_fits() -> None:
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(0.05, 0.9, 800), _tpl(rng, 1.5, 0.02, 1.0, 1500)])  # a bulk, then the tail
    fit, power_law = _fit(x), fit_power_law(torch.from_numpy(x))
    assert fit.x_min == power_law.x_min and fit.n_tail == power_law.n_tail and fit.n == 2300
    assert fit.converged and fit.p_value < 1e-5
    assert fit == _fit(x, x_min=power_law.x_min)


# --- results, failures, input handling --------------------------------------------------------------------


def test_metrics_law_and_dtype() -> None:
    x = _tpl(np.random.default_rng(0), 1.6, 0.05, 1.0, 500)
    fit = fit_truncated_power_law(torch.from_numpy(x).float().reshape(20, 25), x_min=1.0)
    assert fit.converged and fit.n == 500
    metrics = fit.to_metrics("tpl/")
    assert list(metrics) == [
        "tpl/alpha",
        "tpl/lam",
        "tpl/x_min",
        "tpl/n_tail",
        "tpl/alpha_std",
        "tpl/lam_std",
        "tpl/loglik_ratio",
        "tpl/p_value",
        "tpl/ks",
        "tpl/converged",
    ]
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert fit.law() == TruncatedPowerLaw(alpha=fit.alpha, lam=fit.lam, x_min=1.0)


def test_zeros_are_excluded_and_said() -> None:
    x = np.concatenate([np.zeros(7), _tpl(np.random.default_rng(0), 1.6, 0.05, 1.0, 300)])
    fit = _fit(x, x_min=1.0)
    assert fit.n == 307 and fit.n_tail == 300 and "7 values <= 0 excluded" in fit.message


@pytest.mark.parametrize(
    ("x", "kwargs", "match"),
    [
        (np.ones(MIN_VALUES - 1) + np.arange(MIN_VALUES - 1), {}, "too few values"),
        (np.full(50, 3.0), {}, "degenerate input"),
        (np.arange(1.0, 51.0), {"x_min": 45.0}, "holds 6 values"),
        (np.concatenate([np.arange(1.0, 41.0), np.full(12, 99.0)]), {"x_min": 99.0}, "1 distinct"),
    ],
)
def test_failed_fits_are_results(x: np.ndarray, kwargs: dict[str, float], match: str) -> None:
    fit = _fit(x, **kwargs)
    assert not fit.converged and math.isnan(fit.alpha) and math.isnan(fit.ks) and match in fit.message
    assert fit.to_metrics("t/") == {"t/converged": 0.0}
    with pytest.raises(ValueError, match="did not converge"):
        fit.law()


def test_input_errors() -> None:
    x = torch.linspace(1.0, 5.0, 50, dtype=torch.float64)
    with pytest.raises(TypeError, match="min_tail"):
        fit_truncated_power_law(x, min_tail=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_tail"):
        fit_truncated_power_law(x, min_tail=1)
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="x_min"):
            fit_truncated_power_law(x, x_min=bad)
    with pytest.raises(ValueError, match="finite"):
        fit_truncated_power_law(torch.tensor([1.0, math.nan] * 10))
    with pytest.raises(TypeError, match="floating"):
        fit_truncated_power_law(torch.arange(20))
