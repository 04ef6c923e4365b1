"""Dyson-index fits to the spacings of 2×2 GOE, GUE and GSE blocks, whose spacing laws are the surmise exactly.

Standard error: the fit is maximum likelihood in the two-parameter family P_beta(s / c) / c with the scale c set
by the sample mean; its asymptotic variance is taken as the (beta, beta) entry of the inverse Fisher matrix of
(beta, log c), computed here by quadrature from scipy's gamma functions (independently of the laws' code).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate as integrate
import scipy.special as special
import scipy.stats as stats
import torch

from rmt_callbacks.fits import fit_surmise
from rmt_callbacks.fits.surmise import BETA_BOUNDS

SAMPLES = 20_000


def _blocks(beta: int, n: int, seed: int) -> np.ndarray:
    """(n, d, d) Hermitian 2×2 blocks over the reals, complexes or quaternions (as 4×4 complex), beta = 1, 2, 4.

    The diagonal entries have variance 1 and every real component of the off-diagonal element variance 1/2, so
    the spacing sqrt((a - d)^2 + 4 |b|^2) is a chi variable with beta + 1 degrees of freedom: the beta surmise.
    """
    g = torch.Generator().manual_seed(seed)
    a, d = torch.randn(2, n, generator=g, dtype=torch.float64).numpy()
    parts = (torch.randn(beta, n, generator=g, dtype=torch.float64) / math.sqrt(2)).numpy()
    if beta == 1:
        return np.stack([np.stack([a, parts[0]], -1), np.stack([parts[0], d], -1)], -2)
    b = parts[0] + 1j * parts[1]
    if beta == 2:
        return np.stack([np.stack([a + 0j, b], -1), np.stack([b.conj(), d + 0j], -1)], -2)
    q = np.stack([np.stack([b, parts[2] + 1j * parts[3]], -1), np.stack([-parts[2] + 1j * parts[3], b.conj()], -1)], -2)
    eye = np.eye(2)
    top = np.concatenate([a[:, None, None] * eye, q], axis=-1)
    bottom = np.concatenate([q.conj().transpose(0, 2, 1), d[:, None, None] * eye], axis=-1)
    return np.concatenate([top, bottom], axis=-2)  # quaternion self-dual: every level doubly degenerate


def _spacings(beta: int, n: int = SAMPLES, seed: int = 0) -> torch.Tensor:
    levels = np.linalg.eigvalsh(_blocks(beta, n, seed))  # ascending; GSE: (l1, l1, l2, l2)
    return torch.from_numpy(levels[:, -1] - levels[:, 0])


def _standard_error(beta: float, n: int) -> float:
    lh, lg = special.gammaln((beta + 2) / 2), special.gammaln((beta + 1) / 2)
    dh, dg = special.digamma((beta + 2) / 2) / 2, special.digamma((beta + 1) / 2) / 2
    b = math.exp(2 * (lh - lg))
    dlog_a = lh + (beta + 1) * dh - lg - (beta + 2) * dg
    db = 2 * b * (dh - dg)
    law = stats.chi(df=beta + 1, scale=1 / math.sqrt(2 * b))  # the surmise, from scipy

    def score(s: float) -> np.ndarray:  # d/d(beta, log c) of log P_beta(s / c) / c at c = 1
        return np.array([dlog_a - db * s * s + math.log(s), -(beta + 1) + 2 * b * s * s])

    fisher = np.array(
        [
            [integrate.quad(lambda s, i=i, j=j: score(s)[i] * score(s)[j] * law.pdf(s), 0, np.inf)[0] for j in range(2)]
            for i in range(2)
        ]
    )
    return math.sqrt(np.linalg.inv(fisher)[0, 0] / n)


@pytest.mark.parametrize("beta", [1, 2, 4], ids=["GOE", "GUE", "GSE"])
def test_beta_of_the_classical_ensembles(beta: int) -> None:
    fit = fit_surmise(_spacings(beta, seed=beta))
    assert fit.converged and fit.n == SAMPLES
    se = _standard_error(beta, SAMPLES)
    assert 0.005 < se < 0.1  # a real, finite tolerance
    assert fit.beta == pytest.approx(beta, abs=5 * se)
    # The data follow the fitted surmise: KS below the 1 % critical value of 20 000 values.
    assert fit.ks < 1.63 / math.sqrt(SAMPLES)


def test_raw_and_normalised_spacings_give_the_same_beta() -> None:
    s = _spacings(1, n=2000, seed=9)
    assert fit_surmise(s).beta == pytest.approx(fit_surmise(17.0 * s.float()).beta, rel=1e-5)


def test_poisson_spacings_fail_at_the_lower_bound() -> None:
    # e^{-s} is not a beta surmise: the likelihood grows as beta -> 0, so the fit is reported as failed.
    s = torch.from_numpy(stats.expon.rvs(size=SAMPLES, random_state=np.random.default_rng(5)))
    fit = fit_surmise(s)
    assert not fit.converged and math.isnan(fit.beta)
    assert fit.message == f"beta at the lower bound {BETA_BOUNDS[0]}: no level repulsion (Poisson-like spacings)"


def test_picket_fence_spacings_fail_at_the_upper_bound() -> None:
    s = 1.0 + 0.01 * torch.rand(1000, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    fit = fit_surmise(s)
    assert not fit.converged and "upper bound" in fit.message


def test_zero_spacings_fail_and_negative_spacings_are_errors() -> None:
    s = _spacings(1, n=100)
    s[:3] = 0.0
    fit = fit_surmise(s)
    assert not fit.converged and fit.message.startswith("3 of 100 spacings are exactly zero")
    s[0] = -0.1
    with pytest.raises(ValueError, match="1 of its 100 values are negative"):
        fit_surmise(s)
