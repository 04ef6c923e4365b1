"""Honest fit verdicts: non-structural levels, minimum counts, KS acceptance, standard errors against seed spread.

Calibration (docs/science.md#marchenko-pastur): true-law samples must pass the KS acceptance rule
``ks < KS_ACCEPT / sqrt(n)`` at least 95 % of the time; with S seeds the observed pass rate of a true 95 % rule
has a binomial standard error sqrt(0.05 * 0.95 / S), so the tests ask for >= 0.95 - 3 * that. Standard errors: the
sample standard deviation of S estimates has a relative standard error 1 / sqrt(2 (S - 1)); the tests accept a
ratio spread / predicted error within 4 of those (normal approximation; the surmise's Fisher error is that of
independent spacings, a little below the spread of unfolded ones, hence a one-sided margin there).
"""

from __future__ import annotations

import math

import pytest
import torch

from rmt_callbacks.fits import MIN_VALUES, fit_marchenko_pastur, fit_semicircle, fit_surmise
from rmt_callbacks.fits._result import KS_ACCEPT, ks_threshold
from rmt_callbacks.fits.marchenko_pastur import spike_threshold
from rmt_callbacks.fits.surmise import MIN_SPACINGS
from rmt_callbacks.spectral import unfolded_spacings


def _gram(w: torch.Tensor) -> torch.Tensor:
    """The N ascending levels of W^T W / M (structural zeros included), from the smaller Gram matrix."""
    m, n = w.shape[-2:]
    if n <= m:
        return torch.linalg.eigvalsh(w.transpose(-1, -2) @ w / m)
    small = torch.linalg.eigvalsh(w @ w.transpose(-1, -2) / m)  # the M non-zero levels
    return torch.cat([torch.zeros(*w.shape[:-2], n - m, dtype=w.dtype), small], dim=-1)


def _fit(w: torch.Tensor):
    m, n = w.shape[-2:]
    return fit_marchenko_pastur(_gram(w).flatten(), ratio=n / m, rows=m)


def _orthonormal_rows(m: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(max(m, n), min(m, n), generator=g, dtype=torch.float64))
    return q.T if m < n else q


def _pass_floor(seeds: int) -> float:
    return 0.95 - 3 * math.sqrt(0.05 * 0.95 / seeds)


@pytest.mark.parametrize("shape", [(64, 4096), (32, 128), (100, 300)])
def test_a_matrix_and_its_transpose_get_the_same_verdict(shape: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(sum(shape))
    for w in (torch.randn(*shape, generator=g, dtype=torch.float64), _orthonormal_rows(*shape, seed=1)):
        wide, tall = _fit(w), _fit(w.T)
        assert wide.converged == tall.converged and wide.n == tall.n == min(shape)
        assert wide.ks == pytest.approx(tall.ks, abs=1e-6) and wide.num_spikes == tall.num_spikes  # eigvalsh: 1e-8
        assert wide.sigma2 == pytest.approx(tall.sigma2, rel=1e-9)
        assert wide.sigma2_std == pytest.approx(tall.sigma2_std, rel=1e-9)


@pytest.mark.parametrize("shape", [(64, 4096), (4096, 64), (128, 128)])
def test_orthonormal_rows_are_not_marchenko_pastur(shape: tuple[int, int]) -> None:
    fit = _fit(_orthonormal_rows(*shape, seed=2))  # every non-zero level is the same: nothing like MP
    assert not fit.converged and fit.fitted and fit.ks > 0.4
    assert fit.message.startswith("law rejected: KS = ") and f"for n = {min(shape)}" in fit.message
    metrics = fit.to_metrics("mp_")  # a rejected fit keeps its numbers, flagged converged = 0
    assert metrics["mp_converged"] == 0.0 and metrics["mp_ks"] == fit.ks and "mp_sigma2" in metrics


def test_gaussian_matrices_pass_either_way_round() -> None:
    g = torch.Generator().manual_seed(3)
    w = torch.randn(64, 4096, generator=g, dtype=torch.float64)
    for fit in (_fit(w), _fit(w.T)):
        assert fit.converged and fit.ks < ks_threshold(64) and fit.sigma2 == pytest.approx(1.0, abs=0.02)


def test_a_two_row_head_has_too_few_levels() -> None:
    g = torch.Generator().manual_seed(4)
    fit = _fit(torch.randn(2, 20_000, generator=g, dtype=torch.float64))
    assert not fit.converged and not fit.fitted and math.isnan(fit.sigma2)
    assert fit.n == 2 and fit.message == f"too few non-structural levels to fit: got 2, need at least {MIN_VALUES}"
    assert fit.to_metrics("mp_") == {"mp_converged": 0.0}


def test_too_few_spacings_give_no_beta() -> None:
    g = torch.Generator().manual_seed(5)
    a, d, b = torch.randn(3, MIN_SPACINGS - 1, generator=g, dtype=torch.float64)
    fit = fit_surmise(torch.sqrt((a - d) ** 2 + 2 * b**2))
    assert not fit.converged and math.isnan(fit.beta)
    assert fit.message == f"too few spacings to fit: got {MIN_SPACINGS - 1}, need at least {MIN_SPACINGS}"


@pytest.mark.parametrize(("batch", "m", "n", "seeds"), [(1, 32, 128, 100), (1, 128, 32, 100), (1, 12, 12, 100),
                                                        (16, 32, 32, 60), (1, 256, 64, 60)])  # fmt: skip
def test_wishart_passes_at_the_calibrated_rate_and_sigma2_std_matches_the_seed_spread(
    batch: int, m: int, n: int, seeds: int
) -> None:
    g = torch.Generator().manual_seed(6)
    fits = [_fit(torch.randn(batch, m, n, generator=g, dtype=torch.float64)) for _ in range(seeds)]
    assert sum(f.converged for f in fits) / seeds >= _pass_floor(seeds)
    assert max(f.ks * math.sqrt(f.n) for f in fits) < KS_ACCEPT  # rigid levels: far below the i.i.d. value
    sigma2 = torch.tensor([f.sigma2 for f in fits])
    predicted = math.sqrt(2.0 / (batch * m * n))  # sd of the mean of B M N squared N(0, 1) entries
    assert fits[0].sigma2_std == pytest.approx(fits[0].sigma2 * predicted)
    assert float(sigma2.std()) / predicted == pytest.approx(1.0, abs=4 / math.sqrt(2 * (seeds - 1)))


def _goe_spacings(n: int, g: torch.Generator) -> torch.Tensor:
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    return unfolded_spacings(torch.linalg.eigvalsh((a + a.T) / 2), degree=5, trim=0.1)


@pytest.mark.parametrize(("n", "seeds"), [(100, 100), (400, 50)])
def test_goe_spacings_pass_and_beta_std_matches_the_seed_spread(n: int, seeds: int) -> None:
    g = torch.Generator().manual_seed(7)
    fits = [fit_surmise(_goe_spacings(n, g)) for _ in range(seeds)]
    assert sum(f.converged for f in fits) / seeds >= _pass_floor(seeds)
    beta = torch.tensor([f.beta for f in fits])
    predicted = sum(f.beta_std for f in fits) / seeds
    ratio, tolerance = float(beta.std()) / predicted, 4 / math.sqrt(2 * (seeds - 1))
    assert 1 - tolerance < ratio < 1.15 + tolerance  # measured 0.96-1.2 (docs/science.md#surmise)


def test_beta_std_is_the_fisher_error_of_exact_surmise_samples() -> None:
    # 2x2 GOE spacings follow P_1 exactly and are independent: the Fisher error is exact (0.174 per spacing).
    g = torch.Generator().manual_seed(8)
    fits = []
    for _ in range(200):
        a, d, b = torch.randn(3, 400, generator=g, dtype=torch.float64)
        fits.append(fit_surmise(torch.sqrt((a - d) ** 2 + 2 * b**2)))
    assert sum(f.converged for f in fits) / 200 >= _pass_floor(200)
    beta = torch.tensor([f.beta for f in fits])
    assert fits[0].beta_std == pytest.approx(1 / math.sqrt(400 * 0.17416), rel=0.1)
    predicted = sum(f.beta_std for f in fits) / 200
    assert float(beta.std()) / predicted == pytest.approx(1.0, abs=4 / math.sqrt(2 * 199))


def test_poisson_levels_are_not_a_surmise() -> None:
    # exp(-s) is not in the family: the likelihood grows to the lower bound of beta, and the fit says so
    g = torch.Generator().manual_seed(9)
    for _ in range(20):
        levels = torch.rand(500, generator=g, dtype=torch.float64).sort().values
        fit = fit_surmise(unfolded_spacings(levels, degree=5, trim=0.1))
        assert not fit.converged and "no level repulsion (Poisson-like spacings)" in fit.message


def test_spike_threshold_is_the_one_rule_behind_num_spikes() -> None:
    g = torch.Generator().manual_seed(10)
    w = torch.randn(400, 100, generator=g, dtype=torch.float64)
    u, _ = torch.linalg.qr(torch.randn(400, 3, generator=g, dtype=torch.float64))
    w[:, :3] += 20.0 * torch.tensor([2.0, 3.0, 4.0], dtype=torch.float64) * u  # three orthogonal rank-one signals
    eigs = _gram(w)
    fit = fit_marchenko_pastur(eigs, ratio=0.25, rows=400)
    edge = spike_threshold(fit.sigma2, 0.25, 400)
    assert fit.num_spikes == int((eigs > edge).sum()) == 3 and edge > fit.lambda_plus
    assert fit.converged and fit.n == 100


@pytest.mark.parametrize(("batch", "n", "seeds"), [(1, 12, 100), (1, 100, 60), (16, 32, 40)])
def test_goe_levels_pass_the_semicircle_at_the_calibrated_rate(batch: int, n: int, seeds: int) -> None:
    g = torch.Generator().manual_seed(11)
    fits = []
    for _ in range(seeds):
        a = torch.randn(batch, n, n, generator=g, dtype=torch.float64)
        fits.append(fit_semicircle(torch.linalg.eigvalsh((a + a.mT) / 2).flatten()))
    assert sum(f.converged for f in fits) / seeds >= _pass_floor(seeds)
    two_points = fit_semicircle(torch.tensor([-1.0, 1.0], dtype=torch.float64).repeat(batch * n // 2))
    assert batch * n < 20 or not two_points.converged  # KS 0.30: rejected once 1.358 / sqrt(n) < 0.30
    assert two_points.fitted and (two_points.converged or two_points.message.startswith("law rejected"))
