"""Pair summaries and jackknife against independent references (the scaling fit: tests/fits/test_scaling_fit.py)."""

from __future__ import annotations

import math

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
