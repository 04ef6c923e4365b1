"""Window statistics against numpy and against processes whose width and diffusion are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rmt_callbacks.dynamics import diffusion_coefficient, level_spacing, normalized, window_statistics


def _ou(rng: np.random.Generator, steps: int, levels: int, *, dt: float, tau: float, d: float) -> np.ndarray:
    """Exact discretisation of dλ = -(λ - μ)/τ dt + √(2D) dB, started in its stationary law (variance Dτ)."""
    a = math.exp(-dt / tau)
    sd = math.sqrt(d * tau * (1 - a * a))
    x = np.empty((steps, levels))
    x[0] = rng.normal(0.0, math.sqrt(d * tau), levels)
    for t in range(1, steps):
        x[t] = a * x[t - 1] + sd * rng.normal(size=levels)
    return x


def test_stationary_width_and_diffusion_of_ornstein_uhlenbeck_levels() -> None:
    rng = np.random.default_rng(0)
    spacing, d, tau, dt = 2.0, 0.01, 1.0, 0.01
    centres = spacing * np.arange(500)
    x = centres + _ou(rng, 2000, 500, dt=dt, tau=tau, d=d)  # 20 τ per level, 500 levels
    times = torch.arange(2000, dtype=torch.float64) * dt
    stats = window_statistics(torch.from_numpy(x), times)
    assert stats["level_spacing"] == pytest.approx(spacing, rel=2e-3)
    # A window of 20 τ, detrended, keeps E[s²] = tr(P Σ)/T of the stationary variance Dτ (Σ_ij = Dτ a^|i-j|, P
    # the projector off span{1, t}): about 1 - 4τ/L. One level's s² scatters by ≈ √(2τ/L) ≈ 32 %, so the mean
    # std of 500 levels is known to ≈ 0.7 %, and lies ≈ 1.2 % below √E[s²] (Jensen: Var(s²)/8); 5 % is ≈ 5 σ.
    n = 2000
    k = np.arange(n)
    cov = d * tau * math.exp(-dt / tau) ** np.abs(k[:, None] - k[None, :])
    basis = np.linalg.qr(np.stack([np.ones(n), k], axis=1))[0]
    kept = (np.trace(cov) - np.trace(basis.T @ cov @ basis)) / n
    assert 0.75 < kept / (d * tau) < 0.85  # the detrending's price in a window of 20 relaxation times
    assert stats["width"] * spacing == pytest.approx(math.sqrt(kept), rel=0.05)
    # increments: Var = 2D dt (1 - dt/τ) to first order; 500 × 1999 of them pin the variance to 0.2 %
    assert stats["diffusion"] * spacing**2 == pytest.approx(d * (1 - dt / tau), rel=0.02)


def test_the_width_is_about_a_straight_line_fit_like_numpy_polyfit() -> None:
    rng = np.random.default_rng(1)
    t = np.sort(rng.uniform(0.0, 5.0, 40))
    x = np.stack([1.0 + 0.3 * t, 4.0 - 0.1 * t + 0.2 * t**2]).T + rng.normal(0, 0.05, (40, 2))
    expected = np.mean([np.std(x[:, i] - np.polyval(np.polyfit(t, x[:, i], 1), t)) for i in range(2)])
    stats = window_statistics(torch.from_numpy(x), torch.from_numpy(t))
    mean = x.mean(0)
    spacing = (mean.max() - mean.min()) / (len(mean) - 1)
    assert stats["level_spacing"] == pytest.approx(spacing, rel=1e-12)
    assert stats["width"] == pytest.approx(expected / spacing, rel=1e-10)


def test_irregular_steps_give_the_diffusion_of_a_random_walk() -> None:
    rng = np.random.default_rng(2)
    dt = rng.choice([0.5, 1.0, 2.0], size=20_000)
    d = 0.3
    walk = np.concatenate([[0.0], np.cumsum(rng.normal(0.0, np.sqrt(2 * d * dt)))])
    x = np.stack([walk, walk + 10.0]).T  # two levels 10 apart: spacing 10
    times = torch.from_numpy(np.concatenate([[0.0], np.cumsum(dt)]))
    stats = window_statistics(torch.from_numpy(x), times)
    assert stats["diffusion"] * 100 == pytest.approx(d, rel=0.03)  # 20 000 increments: 1 % standard error
    # with equal steps the estimator is the package's diffusion_coefficient
    equal = torch.from_numpy(x[:500])
    ours = window_statistics(equal, torch.arange(500, dtype=torch.float64) * 0.5)["diffusion"] * 100
    assert ours == pytest.approx(float(diffusion_coefficient(equal, dt=0.5).mean()), rel=1e-12)


def test_ensemble_width_is_the_spread_across_networks_at_the_last_snapshot() -> None:
    rng = np.random.default_rng(3)
    x = np.sort(rng.normal(0, 1, (3, 50, 4)), axis=-1) + np.arange(4) * 5.0  # (T, E, n)
    stats = window_statistics(torch.from_numpy(x), torch.arange(3.0, dtype=torch.float64), ensemble=True)
    mean = x.mean(0)  # (E, n): each network's mean spacing, averaged over networks
    spacing = float(np.mean((mean.max(-1) - mean.min(-1)) / 3))
    assert stats["ensemble_width"] == pytest.approx(np.std(x[-1], axis=0).mean() / spacing, rel=1e-12)
    assert "ensemble_width" not in window_statistics(torch.from_numpy(x), torch.arange(3.0, dtype=torch.float64))


def test_degenerate_or_single_levels_give_only_the_spacing() -> None:
    one = torch.ones(5, 1, dtype=torch.float64)
    assert math.isnan(level_spacing(one))
    assert list(window_statistics(one, torch.arange(5.0, dtype=torch.float64))) == ["level_spacing"]
    with pytest.raises(ValueError, match="increasing"):
        window_statistics(torch.rand(3, 2, dtype=torch.float64), torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64))


def test_normalized_scales_widths_by_root_temperature_and_diffusion_by_temperature() -> None:
    out = normalized({"level_spacing": 3.0, "width": 0.2, "ensemble_width": 0.4, "diffusion": 0.1}, 0.04)
    assert out == pytest.approx(
        {"width_normalized": 1.0, "ensemble_width_normalized": 2.0, "diffusion_normalized": 2.5}
    )
    with pytest.raises(ValueError):
        normalized({"width": 1.0}, 0.0)
