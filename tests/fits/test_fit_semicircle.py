"""Semicircle fits of GOE and GUE spectra and of scipy.stats.semicircular samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg as linalg
import scipy.stats as stats
import torch

from rmt_callbacks.fits import fit_semicircle

N, E, V, CENTER = 400, 4, 0.5, 3.0  # matrix size, matrices, off-diagonal variance E|H_ij|^2, centre


def _gaussian_ensemble(beta: int, seed: int) -> torch.Tensor:
    """(E, N) eigenvalues of GOE (beta = 1: diagonal variance 2V) or GUE (beta = 2: diagonal variance V) matrices.

    Householder tridiagonalisation maps such a matrix, without changing its spectrum, to the symmetric
    tridiagonal matrix with the same diagonal law and off-diagonal entries sqrt(V / beta) chi_{beta k},
    k = N - 1, ..., 1 (Dumitriu & Edelman, J. Math. Phys. 43 (2002) 5830, math-ph/0206043): the exact GOE/GUE
    spectra at O(N^2) cost, diagonalised by scipy's LAPACK tridiagonal solver.
    """
    g = torch.Generator().manual_seed(seed)
    diagonal = CENTER + math.sqrt(2 * V / beta) * torch.randn(E, N, generator=g, dtype=torch.float64)
    normals = torch.randn(E, N - 1, beta * (N - 1), generator=g, dtype=torch.float64)
    k = torch.arange(N - 1, 0, -1)[:, None]  # (N - 1, 1) degrees of freedom / beta of each off-diagonal entry
    mask = torch.arange(beta * (N - 1))[None, :] < beta * k  # (N - 1, beta (N - 1))
    off = math.sqrt(V / beta) * torch.sqrt((normals**2 * mask).sum(-1))  # (E, N - 1): sqrt(V/beta) chi_{beta k}
    levels = [linalg.eigvalsh_tridiagonal(d.numpy(), e.numpy()) for d, e in zip(diagonal, off, strict=True)]
    return torch.from_numpy(np.stack(levels))


@pytest.mark.parametrize(("beta", "extra"), [(1, 1), (2, 0)], ids=["GOE", "GUE"])
def test_radius_and_centre_of_gaussian_ensembles(beta: int, extra: int) -> None:
    eigs = _gaussian_ensemble(beta, seed=11 + beta)  # (E, N)
    fit = fit_semicircle(eigs)
    # E tr H^2 / N = V (N + extra) (extra = 1 for GOE's doubled diagonal variance), so the moment radius is
    # 2 sqrt(N V) (1 + extra / 2N). Var(tr H^2) ≈ 4 N^2 V^2 (GOE; less for GUE) gives a relative error of R of
    # 1/N per matrix, 1/(N sqrt(E)) pooled: 4 of those is 0.005.
    radius = 2 * math.sqrt(N * V)
    assert fit.radius == pytest.approx(radius * (1 + extra / (2 * N)), rel=4 / (N * math.sqrt(E)))
    # tr H / N has variance (2V or V) / N per matrix: 4 standard errors of the pooled mean.
    assert fit.center == pytest.approx(CENTER, abs=4 * math.sqrt(2 * V / (N * E)))
    assert fit.converged and fit.n == N * E
    # Rigid levels: the KS distance of the pooled spectra is far below the iid 1.36 / sqrt(1600) = 0.034.
    assert fit.ks < 0.01


def test_dense_and_tridiagonal_goe_agree() -> None:
    # The tridiagonal model against a dense GOE matrix (smaller: dense LAPACK is the slow part): same radius.
    g = torch.Generator().manual_seed(14)
    a = torch.randn(2, 100, 100, generator=g, dtype=torch.float64)
    dense = np.linalg.eigvalsh((math.sqrt(V / 2) * (a + a.transpose(-1, -2))).numpy())
    expected = 2 * math.sqrt(100 * V) * (1 + 1 / 200)  # relative standard error 1 / (100 sqrt 2): 4 of them
    assert fit_semicircle(torch.from_numpy(dense)).radius == pytest.approx(expected, rel=4 / (100 * math.sqrt(2)))


def test_radius_of_iid_semicircle_samples() -> None:
    n, loc, radius = 20_000, -1.0, 2.5
    x = stats.semicircular(loc=loc, scale=radius).rvs(size=n, random_state=np.random.default_rng(12))
    fit = fit_semicircle(torch.from_numpy(x))
    # The semicircle has fourth moment 2 sigma^4, so Var(s^2) = sigma^4 / n: R = 2 s has relative standard
    # error 1/(2 sqrt n) = 0.0035; the mean has standard error R / (2 sqrt n). Four of each.
    assert fit.radius == pytest.approx(radius, rel=4 / (2 * math.sqrt(n)))
    assert fit.center == pytest.approx(loc, abs=4 * radius / (2 * math.sqrt(n)))
    # Parameters estimated from the sample only lower the KS distance: below the 1 % critical value.
    assert fit.ks < 1.63 / math.sqrt(n)


def test_a_wrong_shape_shows_in_the_ks_distance() -> None:
    x = torch.rand(20_000, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    fit = fit_semicircle(x)  # uniform on [0, 1]: same moments as a semicircle of radius 1/sqrt 3 ...
    assert fit.radius == pytest.approx(1 / math.sqrt(3), rel=0.02)
    # ... but not its shape: the semicircle puts 0.029 below 0, where the uniform has none; the sampling KS
    # of 20 000 values is ~0.006.
    assert fit.ks > 0.02
