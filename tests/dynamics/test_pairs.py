"""Pair summaries and jackknife against independent references (the scaling fit: tests/fits/test_scaling_fit.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rmt_callbacks.dynamics import jackknife, summarize_pair


def _goe_pairs(n: int, center: float, sigma: float, seed: int) -> torch.Tensor:
    """Eigenvalues (n, 2) of 2×2 GOE blocks: diagonal N(center, σ²), off-diagonal N(0, σ²/2) (docs/science.md, E10)."""
    g = torch.Generator().manual_seed(seed)
    d = center + sigma * torch.randn(n, 2, generator=g, dtype=torch.float64)
    off = sigma / math.sqrt(2.0) * torch.randn(n, generator=g, dtype=torch.float64)
    h = torch.stack([torch.stack([d[:, 0], off], -1), torch.stack([off, d[:, 1]], -1)], -2)
    return torch.linalg.eigvalsh(h)


def test_leave_one_out_jackknife_of_the_mean_is_the_standard_error() -> None:
    x = torch.randn(200, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    est, err = jackknife(x, lambda v: float(v.mean()), blocks=None)
    assert est == pytest.approx(float(x.mean()))
    assert err == pytest.approx(float(x.std() / math.sqrt(200)), rel=1e-10)


def test_blocked_jackknife_of_the_mean_is_close_to_the_standard_error() -> None:
    x = torch.randn(5000, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    _, err = jackknife(x, lambda v: float(v.mean()), blocks=50)
    # 50 blocks estimate the error itself to ~1/sqrt(2*49) = 10 %.
    assert err == pytest.approx(float(x.std() / math.sqrt(5000)), rel=0.35)


def test_jackknife_needs_two_blocks() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        jackknife(torch.ones(1), lambda v: float(v.sum()))


def _grouped_jackknife_by_hand(x: np.ndarray, labels: np.ndarray, statistic) -> float:
    """Delete-one-group jackknife written out: θ_k without group k, σ² = (n−1)/n Σ (θ_k − θ̄)²."""
    theta = np.array([statistic(x[labels != g]) for g in np.unique(labels)])
    n = len(theta)
    return float(np.sqrt((n - 1) / n * ((theta - theta.mean()) ** 2).sum()))


def test_grouped_jackknife_is_the_delete_one_group_formula() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(90, 2))
    labels = rng.integers(0, 7, size=90)  # unequal, non-contiguous groups
    for statistic in (lambda v: float(np.mean(v)), lambda v: float(np.median(np.abs(v[:, 0] - v[:, 1])))):
        on_tensor = lambda t, f=statistic: f(t.numpy())  # noqa: E731
        est, err = jackknife(torch.from_numpy(x), on_tensor, groups=torch.from_numpy(labels))
        assert est == pytest.approx(statistic(x))
        assert err == pytest.approx(_grouped_jackknife_by_hand(x, labels, statistic), rel=1e-12)


def test_grouped_jackknife_of_the_mean_of_equal_groups_is_the_error_of_the_group_means() -> None:
    # Equal groups: θ_k − θ̄ = −(m_k − m̄)/(G − 1), so σ_jk² = var(m)/G exactly (var unbiased over the G means).
    x = torch.randn(12, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    groups = torch.arange(12).repeat_interleave(5)
    _, err = jackknife(x.reshape(-1), lambda v: float(v.mean()), groups=groups)
    assert err == pytest.approx(float(x.mean(dim=1).std() / math.sqrt(12)), rel=1e-12)


def test_the_grouped_error_contains_the_shared_term_that_the_network_jackknife_misses() -> None:
    # x = a_g + e: 40 groups of 25 with a shared a_g ~ N(0, 0.5²) and e ~ N(0, 1). The error of the mean is
    # √(0.5²/40 + 1/1000) = 0.087; leaving single samples out sees only √(1.25/1000) = 0.035 (the spread of x).
    g = torch.Generator().manual_seed(8)
    shared = 0.5 * torch.randn(40, 1, generator=g, dtype=torch.float64)
    x = (shared + torch.randn(40, 25, generator=g, dtype=torch.float64)).reshape(-1)
    groups = torch.arange(40).repeat_interleave(25)
    _, grouped = jackknife(x, lambda v: float(v.mean()), groups=groups)
    _, single = jackknife(x, lambda v: float(v.mean()), blocks=None)
    # 40 groups give the error to ≈ 1/√(2·39) = 11 %: within 35 % of 0.087, and ≥ 1.8× the single-sample one.
    assert grouped == pytest.approx(math.sqrt(0.25 / 40 + 1 / 1000), rel=0.35)
    assert single == pytest.approx(math.sqrt(1.25 / 1000), rel=0.2)
    assert grouped > 1.8 * single


def test_jackknife_rejects_blocks_with_groups_and_bad_groups() -> None:
    x = torch.zeros(6)
    with pytest.raises(ValueError, match="blocks or groups, not both"):
        jackknife(x, lambda v: float(v.sum()), blocks=3, groups=torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 2 groups"):
        jackknife(x, lambda v: float(v.sum()), groups=torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        jackknife(x, lambda v: float(v.sum()), groups=torch.zeros(5, dtype=torch.long))
    with pytest.raises(TypeError, match="integer tensor"):
        jackknife(x, lambda v: float(v.sum()), groups=torch.zeros(6))


def test_summarize_pair_with_groups_gives_grouped_errors() -> None:
    pairs = _goe_pairs(600, 1.0, 0.1, seed=9)
    groups = torch.arange(600) * 12 // 600
    grouped = summarize_pair(pairs, groups=groups)
    by_hand = _grouped_jackknife_by_hand(pairs.numpy(), groups.numpy(), lambda v: float(v.mean()))
    assert grouped.mean_err == pytest.approx(by_hand, rel=1e-12)
    assert grouped.mean_spacing == summarize_pair(pairs).mean_spacing  # the estimates do not depend on the parts


def test_goe_pairs_give_sqrt_pi_sigma_spacing_and_the_fitted_width() -> None:
    sigma, n = 0.2, 20_000
    summary = summarize_pair(_goe_pairs(n, 3.0, sigma, seed=4))
    # ⟨S⟩ = √π σ (E13); the spacing has relative std √(4/π − 1) ≈ 0.52, so its mean is known to 0.52/√n ≈ 0.4 %;
    # the histogram-weighted mean adds a binning bias below 1 %; allow 3 %.
    assert summary.mean_spacing == pytest.approx(math.sqrt(math.pi) * sigma, rel=0.03)
    assert summary.sigma == pytest.approx(sigma, rel=0.03)
    assert summary.mean == pytest.approx(3.0, abs=5 * sigma * math.sqrt(1.5 / (2 * n)))
    # jackknife errors are of the size expected from the sample: std(S)/√n.
    assert summary.mean_spacing_err == pytest.approx(0.52 * summary.mean_spacing / math.sqrt(n), rel=0.5)
    assert set(summary.to_metrics("p/")) >= {"p/mean", "p/mean_spacing", "p/sigma", "p/ks"}


def test_summarize_pair_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"shape \(E, 2\)"):
        summarize_pair(torch.zeros(5, 3))
