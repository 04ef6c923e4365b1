"""Marchenko–Pastur fits of Wishart spectra at several aspect ratios, with and without planted spikes.

W is (M, N) with i.i.d. N(0, SIGMA2) entries, X = W^T W / M (project convention), q = N / M; eigenvalues by
numpy's LAPACK. Standard errors: with no spikes the fit's sigma^2 is the mean of the E M N squared entries,
relative standard error sqrt(2 / (E M N)). Edges: the extreme eigenvalues of each matrix fluctuate on the
Tracy–Widom scale s = SIGMA2 (sqrt M + sqrt N) |1/sqrt M ± 1/sqrt N|^(1/3) / M around lambda_± (TW1: mean -1.2,
sd 1.3, so |z| < 5 fails with probability ~1e-4 per edge).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.optimize import brentq

from rmt_callbacks.fits import fit_marchenko_pastur
from rmt_callbacks.fits.marchenko_pastur import _unit_median

SIGMA2, N, E = 2.0, 200, 4
RATIOS = [0.25, 0.5, 1.0, 2.0]
SPIKES = (4.0, 6.0, 9.0)  # theta / (SIGMA2 sqrt q): well above the BBP threshold theta = SIGMA2 sqrt q


def _wishart(q: float, seed: int, spikes: tuple[float, ...] = ()) -> tuple[np.ndarray, int]:
    """(E, N) ascending eigenvalues of X = W^T W / M, W = Z + sum_j sqrt(M theta_j) u_j e_j^T; and M."""
    m = round(N / q)
    g = torch.Generator().manual_seed(seed)
    w = math.sqrt(SIGMA2) * torch.randn(E, m, N, generator=g, dtype=torch.float64)
    if spikes:
        u, _ = torch.linalg.qr(torch.randn(E, m, len(spikes), generator=g, dtype=torch.float64))  # orthonormal
        for j, strength in enumerate(spikes):
            theta = strength * SIGMA2 * math.sqrt(q)
            w[:, :, j] += math.sqrt(m * theta) * u[:, :, j]  # P^T P / M = sum_j theta_j e_j e_j^T
    gram = (w.transpose(-1, -2) @ w / m).numpy()
    return np.linalg.eigvalsh(gram), m


def _tw_scale(m: int, sign: float) -> float:
    return SIGMA2 * (math.sqrt(m) + math.sqrt(N)) * abs(1 / math.sqrt(m) + sign / math.sqrt(N)) ** (1 / 3) / m


@pytest.mark.parametrize("q", RATIOS)
def test_pure_noise(q: float) -> None:
    eigs, m = _wishart(q, seed=int(100 * q))
    fit = fit_marchenko_pastur(torch.from_numpy(eigs), ratio=q, rows=m)
    assert fit.converged and fit.num_spikes == 0 and fit.ratio == q and fit.n == E * min(m, N)  # non-structural
    assert fit.sigma2_std == pytest.approx(fit.sigma2 * math.sqrt(2 / (E * m * N)))
    assert fit.sigma2 == pytest.approx(SIGMA2, rel=4 * math.sqrt(2 / (E * m * N)))
    assert fit.lambda_plus == pytest.approx(fit.sigma2 * (1 + math.sqrt(q)) ** 2)
    assert fit.lambda_minus == pytest.approx(fit.sigma2 * (1 - math.sqrt(q)) ** 2)
    # Upper edge: the largest eigenvalue of every matrix within 5 TW scales of lambda_+.
    assert np.abs(eigs[:, -1] - fit.lambda_plus).max() < 5 * _tw_scale(m, +1)
    # Lower edge: the smallest non-zero eigenvalue (the N - M zeros excluded for q > 1) near lambda_-; at q = 1
    # the hard edge: N s_min(W/sqrt(SIGMA2 M))^2 ... gives lambda_min ~ SIGMA2 xi^2 / N^2, P(xi^2 > 25) < 1e-7.
    smallest = eigs[:, max(N - m, 0)]
    if q == 1.0:
        assert smallest.max() < 25 * SIGMA2 / N**2
    else:
        assert np.abs(smallest - fit.lambda_minus).max() < 5 * _tw_scale(m, -1)
    # 800 rigid levels: their KS distance to the fitted law is ~1e-2 (iid would give ~0.03).
    assert fit.ks < 0.03


@pytest.mark.parametrize("q", RATIOS)
def test_planted_spikes_are_counted_and_do_not_bias_sigma2(q: float) -> None:
    eigs, m = _wishart(q, seed=7 + int(100 * q), spikes=SPIKES)
    fit = fit_marchenko_pastur(torch.from_numpy(eigs), ratio=q, rows=m)
    assert fit.converged and fit.num_spikes == len(SPIKES) * E
    # Besides the noise's own error, each spike's trace correction carries the cross term 2 tr(P^T Z) / M,
    # of standard deviation 2 sqrt(theta SIGMA2 / M) per spike: 5 standard errors of the sum of both.
    theta = np.array(SPIKES) * SIGMA2 * math.sqrt(q)
    cross = 2 * math.sqrt(E * theta.sum() * SIGMA2 / m) / (E * N)
    tolerance = 5 * math.hypot(SIGMA2 * math.sqrt(2 / (E * m * N)), cross)
    assert fit.sigma2 == pytest.approx(SIGMA2, abs=tolerance)
    # The plain mean of everything misses by sum(theta) / N, 2.5 to 5 times that tolerance.
    assert abs(eigs.mean() - SIGMA2) > 2 * tolerance
    # The largest bulk eigenvalue of every matrix sits at the fitted edge.
    assert np.abs(eigs[:, -len(SPIKES) - 1] - fit.lambda_plus).max() < 5 * _tw_scale(m, +1)
    # One matrix alone, M inferred from n and q: the same three spikes.
    single = fit_marchenko_pastur(torch.from_numpy(eigs[0]), ratio=q)
    assert single.num_spikes == len(SPIKES)
    assert single.sigma2 == pytest.approx(SIGMA2, abs=2 * tolerance * math.sqrt(E))


def test_a_larger_margin_keeps_weaker_spikes_in_the_bulk() -> None:
    eigs, m = _wishart(0.5, seed=21, spikes=SPIKES)
    # q = 0.5, M = 400: lambda_+ = 5.83 and one TW scale is 0.084. The outliers (theta + s)(theta + q s)/theta
    # of theta = (4, 6, 9) sqrt(q) SIGMA2 lie at 9.0, 11.7 and 15.9: 38, 70 and 120 TW scales above the edge.
    counts = [
        fit_marchenko_pastur(torch.from_numpy(eigs), ratio=0.5, rows=m, margin=c).num_spikes for c in (4, 50, 200)
    ]
    assert counts == [12, 8, 0]


def test_a_spectrum_with_no_bulk_fails_honestly() -> None:
    values = torch.tensor([0.0] * 19 + [1000.0], dtype=torch.float64)  # median zero: no Marchenko-Pastur scale
    fit = fit_marchenko_pastur(values, ratio=0.5)
    assert not fit.converged and math.isnan(fit.sigma2) and "non-positive sigma2" in fit.message


def test_round_off_zeros_join_the_atom_but_real_negatives_and_missing_zeros_are_errors() -> None:
    eigs, m = _wishart(2.0, seed=31)  # LAPACK returns the N - M structural zeros as +-1e-15
    values = torch.from_numpy(eigs.copy())
    values[:, :50] = -1e-13
    fit = fit_marchenko_pastur(values, ratio=2.0, rows=m)
    assert fit.converged and fit.ks < 0.03  # the atom at zero is matched: without it the KS distance is ~0.25
    values[0, 0] = -1.0
    with pytest.raises(ValueError, match="1 of them are below"):
        fit_marchenko_pastur(values, ratio=2.0, rows=m)
    with pytest.raises(ValueError, match=r"expected 200 of the 400 values within .* of zero, found 0"):
        fit_marchenko_pastur(torch.from_numpy(eigs[:, N - m :].copy()), ratio=2.0, rows=m)  # zeros left out


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"ratio": 0.0}, ValueError, "ratio must be a positive finite number, got 0.0"),
        ({"ratio": math.nan}, ValueError, "ratio must be a positive finite number"),
        ({"ratio": True}, TypeError, "ratio must be a real number"),
        ({"ratio": 1.0, "rows": 0}, ValueError, "rows must be >= 1, got 0"),
        ({"ratio": 1.0, "rows": 2.5}, TypeError, "rows must be an int or None"),
        ({"ratio": 1.0, "margin": -1.0}, ValueError, "margin must be a finite number >= 0"),
        ({"ratio": 1.0, "margin": "4"}, TypeError, "margin must be a real number"),
    ],
)
def test_arguments_are_validated(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        fit_marchenko_pastur(torch.rand(20, dtype=torch.float64), **kwargs)


@pytest.mark.parametrize("q", [0.25, 1.0, 3.0])
def test_start_is_the_median_of_the_continuous_part_against_scipy(q: float) -> None:
    """The fit's robust start divides the sample median by this: scipy's root of the integrated density."""
    a, b = (1 - q**0.5) ** 2, (1 + q**0.5) ** 2
    pdf = lambda x: math.sqrt(max((b - x) * (x - a), 0.0)) / (2 * math.pi * q * x)  # noqa: E731, MP(1, q) for x > 0
    continuous = 1.0 - max(0.0, 1.0 - 1.0 / q)
    # quad's absolute error on this smooth integrand is far below 1e-10; the grid search brackets to span / 2^24
    median = brentq(lambda x: quad(pdf, a, x, limit=200)[0] / continuous - 0.5, a + 1e-12, b - 1e-12, xtol=1e-12)
    level, found = _unit_median(q)
    assert level == pytest.approx(1.0 - continuous / 2, abs=1e-15)  # the atom plus half the continuous mass
    assert found == pytest.approx(median, abs=(b - a) / 2**24)
