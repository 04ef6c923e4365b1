"""KS and L1 distances against independent computations: scipy.stats.kstest, brute force, numpy + quad."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import scipy.integrate as integrate
import scipy.stats as stats
import torch

from rmt_callbacks.fits import ks_distance, l1_distance
from rmt_callbacks.laws import GOEPairDensity, MarchenkoPastur, SpectralLaw, WignerSemicircle
from rmt_callbacks.spectral import freedman_diaconis_edges


@dataclass(frozen=True)
class _Normal(SpectralLaw):
    """A test-only law: the standard normal, written here from torch.erf."""

    def _pdf(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)

    def _cdf(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def _brute_force_ks(x: np.ndarray, law: SpectralLaw) -> float:
    """sup |F_n - F| from both one-sided limits at every sample point (F(x-) at the next float below)."""
    x = np.sort(x)
    n = x.size
    f = law.cdf(torch.from_numpy(x)).numpy()
    f_left = law.cdf(torch.from_numpy(np.nextafter(x, -np.inf))).numpy()
    fn = np.searchsorted(x, x, side="right") / n
    fn_left = np.searchsorted(x, x, side="left") / n
    return float(max(np.abs(fn - f).max(), np.abs(fn_left - f_left).max()))


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _wishart_q2(matrices: int, m: int, seed: int) -> torch.Tensor:
    """(matrices, 2m) Gram eigenvalues of (m, 2m) Gaussian W: m exact zeros, then those of W W^T / m."""
    w = _rng(seed).standard_normal((matrices, m, 2 * m))
    nonzero = np.linalg.eigvalsh(w @ w.transpose(0, 2, 1) / m)
    return torch.from_numpy(np.concatenate([np.zeros((matrices, m)), nonzero], axis=1))


@pytest.mark.parametrize("shift", [0.0, 0.1])
def test_ks_equals_scipy_kstest_for_the_semicircle(shift: float) -> None:
    x = stats.semicircular(loc=1.0, scale=2.0).rvs(size=3000, random_state=_rng(0))
    law = WignerSemicircle(center=1.0 + shift, radius=2.0)
    expected = stats.kstest(x, stats.semicircular(loc=1.0 + shift, scale=2.0).cdf).statistic
    assert ks_distance(torch.from_numpy(x), law) == pytest.approx(expected, abs=1e-12)


def test_ks_equals_scipy_kstest_for_the_normal() -> None:
    x = _rng(1).standard_normal(2000)
    assert ks_distance(torch.from_numpy(x), _Normal()) == pytest.approx(stats.kstest(x, "norm").statistic, abs=1e-12)


def test_ks_of_a_large_sample_is_exact() -> None:
    # 60 000 values: the bounded block search must return the same maximum as evaluating every point.
    x = 1.3 + 0.7 * _rng(2).standard_normal((300, 200)).ravel()
    for law in (GOEPairDensity(center=1.3, sigma=0.7), GOEPairDensity(center=1.31, sigma=0.6)):
        ours = ks_distance(torch.from_numpy(x).float().reshape(20, -1), law)  # float32, any shape
        assert ours == pytest.approx(_brute_force_ks(x.astype(np.float32).astype(np.float64), law), abs=1e-12)


def test_ks_accounts_for_the_marchenko_pastur_atom() -> None:
    eigs = _wishart_q2(5, 100, seed=3)  # q = 2: half the values are zeros
    law = MarchenkoPastur(sigma2=1.0, ratio=2.0)
    ks = ks_distance(eigs, law)
    assert ks == pytest.approx(_brute_force_ks(eigs.reshape(-1).numpy(), law), abs=1e-12)
    assert ks < 0.03  # the zeros meet the atom; a continuous-only comparison would be off by 0.5
    assert ks_distance(eigs[eigs > 0], law) >= law.atom


def test_ks_small_cases_by_hand() -> None:
    law = WignerSemicircle(center=0.0, radius=1.0)
    assert ks_distance(torch.tensor([5.0]), law) == 1.0
    assert ks_distance(torch.tensor([0.0, 0.0]), law) == 0.5
    atom = MarchenkoPastur(sigma2=1.0, ratio=4.0)  # mass 0.75 at zero, bulk on [1, 9]
    assert ks_distance(torch.tensor([0.0, 0.0, 0.0, 10.0]), atom) == pytest.approx(0.25, abs=1e-12)  # F(9-) - 3/4


def _l1_reference(x: np.ndarray, law: SpectralLaw, edges: np.ndarray) -> float:
    """numpy density histogram against the law, bin by bin with quad; the atom spread over its bin."""
    heights, _ = np.histogram(x, bins=edges, density=True)
    atom = float(getattr(law, "atom", 0.0))

    def pdf(t: float) -> float:
        return float(law.pdf(torch.tensor(t, dtype=torch.float64)))

    total, inside = 0.0, 0.0
    for k, h in enumerate(heights):
        a, b = edges[k], edges[k + 1]
        extra = atom / (b - a) if atom and (a <= 0.0 < b or (k == 0 and a == 0.0)) else 0.0
        points = [law.lambda_minus] if isinstance(law, MarchenkoPastur) and a < law.lambda_minus < b else None
        target = h - extra
        total += integrate.quad(lambda t, c=target: abs(c - pdf(t)), a, b, points=points, limit=200)[0]
        inside += integrate.quad(pdf, a, b, points=points, limit=200)[0]
    return total + (1.0 - atom - inside)


def test_l1_equals_a_numpy_histogram_and_quad_reference() -> None:
    x = stats.semicircular(loc=0.5, scale=1.5).rvs(size=5000, random_state=_rng(4))
    law = WignerSemicircle(center=0.45, radius=1.6)
    edges = freedman_diaconis_edges(torch.from_numpy(x)).numpy()
    assert l1_distance(torch.from_numpy(x), law) == pytest.approx(_l1_reference(x, law, edges), abs=2e-5)
    equal = np.linspace(x.min(), x.max(), 13)
    assert l1_distance(torch.from_numpy(x), law, bins=12) == pytest.approx(_l1_reference(x, law, equal), abs=2e-5)


def test_l1_spreads_the_marchenko_pastur_atom_over_its_bin() -> None:
    eigs = _wishart_q2(2, 150, seed=5).reshape(-1)
    law = MarchenkoPastur(sigma2=1.0, ratio=2.0)
    x = eigs.numpy()
    edges = freedman_diaconis_edges(eigs).numpy()
    ours = l1_distance(eigs, law)
    assert ours == pytest.approx(_l1_reference(x, law, edges), abs=2e-5)
    assert ours < 0.3  # without the atom the half of the values at zero alone would cost about 1


def test_l1_separates_the_right_law_from_a_wrong_one() -> None:
    x = torch.from_numpy(stats.semicircular(scale=2.0).rvs(size=50_000, random_state=_rng(6)))
    # Freedman-Diaconis bins of 50 000 values (45 bins of ~1100 counts): sampling error E sum|c_k - n p_k| / n
    # ≈ sqrt(2/pi) * 45 * sqrt(1100) / 50 000 ≈ 0.024, binning bias at the edges below 0.01; the wrong law is
    # off by ~0.8.
    assert l1_distance(x, WignerSemicircle(center=0.0, radius=2.0)) < 0.06
    assert l1_distance(x, WignerSemicircle(center=0.0, radius=1.0)) > 0.5


def test_l1_of_a_point_mass_is_two() -> None:
    assert l1_distance(torch.full((10,), 0.3), WignerSemicircle(center=0.0, radius=1.0)) == pytest.approx(2.0)


def test_distance_arguments_are_checked() -> None:
    law = WignerSemicircle(center=0.0, radius=1.0)
    with pytest.raises(ValueError, match="at least one value"):
        ks_distance(torch.empty(0), law)
    with pytest.raises(TypeError, match="law must be a SpectralLaw"):
        ks_distance(torch.zeros(3), stats.norm)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1 of its 3 values are NaN"):
        l1_distance(torch.tensor([0.0, math.nan, 0.5]), law)
    with pytest.raises(ValueError, match="bins must be >= 1"):
        l1_distance(torch.zeros(3), law, bins=0)
    with pytest.raises(TypeError, match="bins must be an int or None"):
        l1_distance(torch.zeros(3), law, bins=2.5)  # type: ignore[arg-type]


def test_l1_of_a_narrow_sample_with_a_far_outlier_caps_its_bins() -> None:
    """Freedman–Diaconis asks for ~1e12 bins here (IQR 1e-9, range 1e3); l1_distance caps them at 2^16."""
    from rmt_callbacks.laws import MarchenkoPastur

    g = torch.Generator().manual_seed(0)
    x = torch.cat([1 + 1e-9 * torch.randn(1000, generator=g, dtype=torch.float64), torch.tensor([1e3])])
    assert 1.9 < l1_distance(x, MarchenkoPastur(sigma2=1.0, ratio=0.5)) <= 2.0  # all but the mass near 1 missed
