"""Trajectory estimators against a simulated Dyson Brownian motion with known D (docs/science.md, E5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rmt_callbacks.dynamics import (
    coulomb_repulsion,
    diffusion_coefficient,
    drift,
    fluctuation_width,
    noise_temperature,
    wishart_repulsion,
)


def _goe_increment(n: int, d: float, dt: float, batch: int, g: torch.Generator) -> torch.Tensor:
    """GOE increments: diagonal variance 2·D·dt, off-diagonal D·dt (docs/science.md, E5)."""
    a = torch.randn(batch, n, n, generator=g, dtype=torch.float64) * math.sqrt(d * dt / 2.0)
    return a + a.transpose(-1, -2)


def _simulate_ou(n: int, d: float, tau: float, dt: float, steps: int, batch: int, seed: int) -> torch.Tensor:
    """Matrix Ornstein–Uhlenbeck dH = −H/τ dt + dM, started in its stationary state; eigenvalues obey (E5)."""
    g = torch.Generator().manual_seed(seed)
    h = _goe_increment(n, d, tau / 2.0, batch, g)  # stationary: off-diagonal variance τD/2
    out = []
    for _ in range(steps):
        h = h - h * (dt / tau) + _goe_increment(n, d, dt, batch, g)
        out.append(torch.linalg.eigvalsh(h))
    return torch.stack(out)  # (T, batch, n)


def test_ou_recovers_d_and_the_semicircle_radius() -> None:
    # dt small enough that one step (√(2D·dt) ≈ 0.003) is far below the bulk level spacing (πR/2N ≈ 0.1):
    # larger steps let neighbours' repulsion eat into the increments (dt = 1e-3 gives D 12 % low).
    n, d, tau, dt = 200, 0.5, 1.0, 1e-5
    traj = _simulate_ou(n, d, tau, dt, steps=40, batch=4, seed=0)
    # Increments: 39·4·160 bulk values of Var = 2·D·dt; a variance from K values has relative error √(2/K) ≈ 1 %.
    d_hat = float(diffusion_coefficient(traj, dt=dt)[..., 20:-20].mean())
    assert d_hat == pytest.approx(d, rel=0.03)
    from rmt_callbacks.fits import fit_semicircle

    radius = fit_semicircle(traj[-1]).radius
    assert radius == pytest.approx(math.sqrt(2 * n * tau * d), rel=0.03)


def test_doubling_d_widens_the_semicircle_by_sqrt2() -> None:
    from rmt_callbacks.fits import fit_semicircle

    r1 = fit_semicircle(_simulate_ou(200, 0.5, 1.0, 1e-3, 5, 4, seed=1)[-1]).radius
    r2 = fit_semicircle(_simulate_ou(200, 1.0, 1.0, 1e-3, 5, 4, seed=2)[-1]).radius
    assert r2 / r1 == pytest.approx(math.sqrt(2.0), rel=0.03)


def test_drift_and_width_of_a_known_process() -> None:
    g = torch.Generator().manual_seed(3)
    steps = torch.full((10_000, 3), 0.01, dtype=torch.float64) + 0.1 * torch.randn(10_000, 3, generator=g)
    traj = steps.cumsum(0)
    # mean increment 0.01 with std 0.1: standard error 0.1/√10⁴ = 0.001.
    assert drift(traj).tolist() == pytest.approx([0.01] * 3, abs=4e-3)
    noise = torch.randn(50_000, 2, generator=g, dtype=torch.float64) * torch.tensor([0.5, 2.0])
    assert fluctuation_width(noise).tolist() == pytest.approx([0.5, 2.0], rel=0.02)


def test_repulsion_terms_against_a_direct_sum() -> None:
    lam = np.array([-1.2, 0.3, 0.9, 2.5])
    direct = [sum(1.0 / (lam[i] - lam[j]) for j in range(4) if j != i) for i in range(4)]
    assert coulomb_repulsion(torch.tensor(lam)).tolist() == pytest.approx(direct)
    x = np.array([0.5, 1.0, 4.0])
    wish = [7 + sum((x[i] + x[j]) / (x[i] - x[j]) for j in range(3) if j != i) for i in range(3)]
    assert wishart_repulsion(torch.tensor(x), rows=7).tolist() == pytest.approx(wish)


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="T >= 2"):
        diffusion_coefficient(torch.zeros(1, 3))
    with pytest.raises(TypeError, match="floating"):
        drift(torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="positive"):
        noise_temperature(0.1, 0)
