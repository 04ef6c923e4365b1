"""Spectral-density estimates (SLQ, KPM) against exact eigenvalues from numpy, on seeded random matrices."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

from rmt_callbacks.laws import MarchenkoPastur
from rmt_callbacks.spectral._quadrature import _trapezoid_bias
from rmt_callbacks.spectral.density import (
    DENSE_LIMIT,
    SpectralDensity,
    density_from_eigenvalues,
    density_l1,
    estimate_density,
    exact_density,
)

# Test matrices of Gram dimension N: Marchenko–Pastur with q = N/M = 1, 0.5, 2 (an atom of mass 1/2 at zero) and a
# non-MP bulk (column scales uniform in [0.5, 1.5]) with three spikes.


def _matrix(name: str, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    rows = {"mp_q1": n, "mp_q05": 2 * n, "mp_q2": n // 2, "spiked": n}[name]
    w = torch.randn(rows, n, generator=g)
    if name == "spiked":
        scales = torch.rand(n, generator=g) + 0.5
        scales[:3] = torch.tensor([4.0, 3.0, 2.5])
        w = w * scales
    return w


def _exact_eigs(w: torch.Tensor) -> torch.Tensor:
    """Independent reference: numpy's float64 eigenvalues of X = WᵀW / M."""
    w64 = w.double().numpy()
    return torch.from_numpy(np.linalg.eigvalsh(w64.T @ w64 / w64.shape[0]))


@pytest.fixture(scope="module")
def small() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    mats = {name: _matrix(name, 1024) for name in ("mp_q1", "mp_q05", "mp_q2", "spiked")}
    return {name: (w, _exact_eigs(w)) for name, w in mats.items()}


def _seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ accuracy


@pytest.mark.parametrize("method", ["slq", "kpm"])
@pytest.mark.parametrize("name", ["mp_q1", "mp_q05", "mp_q2", "spiked"])
def test_l1_to_exact_histogram_at_n1024(small: dict, name: str, method: str) -> None:
    w, eigs = small[name]
    est = estimate_density(w, bins=40, method=method, generator=_seeded())
    # Tolerance: the exact 40-bin histogram of N = 1024 eigenvalues itself fluctuates by ~1 level per bin about its
    # limit (L1 ≈ 40 · 0.8 / 1024 ≈ 0.03; measured against the MP law below), plus the noise of k = 8 probes,
    # ≈ 0.8 · sqrt(2 / (N k)) · Σ_b sqrt(p_b) ≈ 0.05: 0.08 in all.
    assert density_l1(est, exact_density(eigs, est.edges)) <= 0.08


@pytest.mark.parametrize("name", ["mp_q1", "mp_q05", "mp_q2"])
def test_exact_histogram_floor_against_the_marchenko_pastur_law(small: dict, name: str) -> None:
    """The L1 floor the tolerance above relies on: the exact histogram vs its limit law is itself ≈ 0.03."""
    w, eigs = small[name]
    law = MarchenkoPastur(sigma2=1.0, ratio=w.shape[1] / w.shape[0])
    edges = estimate_density(w, bins=40, generator=_seeded()).edges
    exact_mass = exact_density(eigs, edges) * edges.diff()
    assert 0.01 <= float((exact_mass - law.cdf(edges).diff()).abs().sum()) <= 0.045


@functools.cache
def _large(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    w = _matrix(name, 4096)
    return w, _exact_eigs(w)


@pytest.mark.slow
@pytest.mark.parametrize(("method", "target"), [("slq", 0.05), ("kpm", 0.06)])
@pytest.mark.parametrize("name", ["mp_q1", "mp_q05", "mp_q2", "spiked"])
def test_issue_target_l1_at_n4096(name: str, method: str, target: float) -> None:
    """The issue's target with the defaults: L1 <= 0.05 to the exact 100-bin histogram at N = 4096 (SLQ).

    At N = 4096 the exact histogram fluctuates about its limit by L1 ≈ 100 · 0.8 / 4096 ≈ 0.02 and 8 probes
    add ≈ 0.8 · sqrt(2 / (N k)) · Σ_b sqrt(p_b) ≈ 0.015–0.03; SLQ (12 steps) measures 0.016–0.033 over 4 probe
    seeds. KPM (16 products), the alternative, blurs the sharp lower edge of q = 0.5 (measured 0.042–0.050), so it
    is held to 0.06.
    """
    w, eigs = _large(name)
    est = estimate_density(w, method=method, generator=_seeded())
    assert density_l1(est, exact_density(eigs, est.edges)) <= target
    assert float(est.edges[0]) <= float(eigs[0]) + 1e-9 and float(eigs[-1]) <= float(est.edges[-1])


@pytest.mark.parametrize("method", ["slq", "kpm"])
@pytest.mark.parametrize("name", ["mp_q1", "mp_q05", "mp_q2", "spiked"])
def test_density_integrates_to_one_and_edges_bracket_the_spectrum(small: dict, name: str, method: str) -> None:
    w, eigs = small[name]
    est = estimate_density(w, method=method, generator=_seeded())
    assert est.method == method
    assert est.edges.shape == (101,) and est.density.shape == (100,)
    assert bool((est.density >= 0).all())
    assert float(est.mass.sum()) == pytest.approx(1.0, abs=1e-12)
    # float64 eigenvalues of a singular Gram matrix can be -1e-14: the lower edge lies below zero by the margin
    assert float(est.edges[0]) <= float(eigs[0]) + 1e-9
    assert float(eigs[-1]) <= float(est.edges[-1])
    assert est.lambda_min >= float(est.edges[0]) and est.lambda_max <= float(est.edges[-1])


@pytest.mark.parametrize(("method", "rtol"), [("slq", 0.01), ("kpm", 0.03)])
@pytest.mark.parametrize("name", ["mp_q1", "mp_q05", "spiked"])
def test_lambda_max_is_the_converged_top_ritz_value(small: dict, name: str, method: str, rtol: float) -> None:
    # the top Ritz value converges fastest (error ~ 1/m² at a soft edge; SLQ uses k·m steps, KPM 2 probes × 16)
    w, eigs = small[name]
    est = estimate_density(w, method=method, generator=_seeded())
    assert est.lambda_max == pytest.approx(float(eigs[-1]), rel=rtol)
    assert est.lambda_max <= float(eigs[-1]) * (1 + 1e-6)  # a Ritz value never exceeds the top eigenvalue


def test_cdf_at_the_edges_matches_the_empirical_distribution(small: dict) -> None:
    w, eigs = small["mp_q05"]
    est = estimate_density(w, bins=40, generator=_seeded())
    empirical = torch.from_numpy(np.searchsorted(eigs.numpy(), est.edges.numpy(), side="right") / eigs.numel())
    # the cumulative error of the per-bin differences: bounded by L1 / 2 + the edge bins, here ~0.02
    assert float((est.cdf(est.edges) - empirical).abs().max()) <= 0.03
    assert float(est.cdf(est.edges[0] - 1.0)) == 0.0 and float(est.cdf(est.edges[-1] + 1.0)) == pytest.approx(1.0)
    mid = 0.5 * (est.edges[1:] + est.edges[:-1])
    cum = est.mass.cumsum(0)
    assert torch.allclose(est.cdf(mid), cum - 0.5 * est.mass)  # linear inside each bin


def test_atom_of_structural_zeros_for_wide_matrices(small: dict) -> None:
    w, eigs = small["mp_q2"]  # N = 2M: N - M zeros, mass 1/2 exactly
    est = estimate_density(w, generator=_seeded())
    zero_bin = int(torch.bucketize(torch.tensor(0.0, dtype=torch.float64), est.edges, right=True)) - 1
    assert float(est.mass[zero_bin]) == pytest.approx(0.5, abs=float(est.mass[zero_bin + 1]) + 1e-12)
    assert est.lambda_min == 0.0
    # count / (n width) * width: exact up to the rounding of that product
    assert float(exact_density(eigs, est.edges)[zero_bin] * est.edges.diff()[zero_bin]) >= 0.5 - 1e-12


@pytest.mark.parametrize(
    ("rows", "cols", "seed", "zero_mass"),
    [
        # tall W: the weight of zero is a probe average of 1 - (weight on the two eigenvectors), 198/200
        (300, 200, 3, 198 / 200),
        # wide W: Lanczos runs on W W^T / M (60 x 60, rank 2) with each vector carrying its image under W; zero
        # holds the exact atom 40/100 plus 60/100 times a probe estimate of 58/60
        (60, 100, 4, 0.4 + 0.6 * 58 / 60),
    ],
)
def test_low_rank_matrix_gives_exact_nodes(rows: int, cols: int, seed: int, zero_mass: float) -> None:
    g = _seeded(seed)
    w = torch.randn(rows, 2, generator=g, dtype=torch.float64) @ torch.randn(2, cols, generator=g, dtype=torch.float64)
    eigs = _exact_eigs(w)
    est = estimate_density(w, bins=51, generator=_seeded())
    # Lanczos breaks down after 3 steps: the Ritz values are the eigenvalues {0, λ1, λ2}, binned as point masses
    assert est.lambda_max == pytest.approx(float(eigs[-1]), rel=1e-9)
    occupied = exact_density(eigs, est.edges) > 0
    assert float(est.mass[~occupied].sum()) == pytest.approx(0.0, abs=1e-12)
    # the probe estimate of the weight off the two eigenvectors: 8 probes, relative error ~ 1/2 on the remainder
    assert float(est.mass[occupied].max()) == pytest.approx(zero_mass, abs=0.02)


def test_wide_matrix_matches_its_rescaled_transpose() -> None:
    """W (M, N), N > M, and T = sqrt(N/M) W^T have the same M x M Gram matrix W W^T / M: same probes, same rule."""
    w = torch.randn(200, 500, generator=_seeded(5), dtype=torch.float64)
    t = math.sqrt(500 / 200) * w.mT
    wide = estimate_density(w, bins=2000, generator=_seeded())
    tall = estimate_density(t, bins=2000, generator=_seeded())
    assert wide.lambda_max == pytest.approx(tall.lambda_max, rel=1e-10)
    atom, zero_bin = 1.0 - 200 / 500, int(torch.bucketize(torch.tensor(0.0).double(), wide.edges, right=True)) - 1
    assert float(wide.mass[zero_bin]) == pytest.approx(atom, abs=1e-12)  # T's spectrum starts far above 0
    # wide = atom at 0 + (1 - atom) tall: their CDFs agree at tall's edges up to wide's linear interpolation
    # inside one of its bins, at most its largest bin mass besides the atom's (~0.002)
    bulk = wide.mass.clone()
    bulk[zero_bin] -= atom
    expected = atom + (1.0 - atom) * tall.cdf(tall.edges)
    assert float((wide.cdf(tall.edges) - expected).abs().max()) <= float(bulk.max()) + 1e-9


def test_single_eigenvalue_and_zero_matrix() -> None:
    w = torch.full((7, 1), 2.0)  # X = [[4]]
    est = estimate_density(w, bins=5, generator=_seeded())
    assert est.lambda_min == pytest.approx(4.0) and est.lambda_max == pytest.approx(4.0)
    assert float(est.mass[2]) == pytest.approx(1.0)
    zero = estimate_density(torch.zeros(20, 10), bins=5, generator=_seeded())
    assert float(zero.mass[2]) == pytest.approx(1.0) and zero.lambda_max == 0.0


def test_seeded_generator_reproduces_and_other_seeds_differ(small: dict) -> None:
    w, _ = small["spiked"]
    a = estimate_density(w, generator=_seeded(7))
    b = estimate_density(w, generator=_seeded(7))
    c = estimate_density(w, generator=_seeded(8))
    assert torch.equal(a.edges, b.edges) and torch.equal(a.density, b.density)
    assert not torch.equal(a.density, c.density)


@pytest.mark.parametrize(("method", "steps"), [("slq", 12), ("kpm", 16)])
def test_default_steps_per_method(small: dict, method: str, steps: int) -> None:
    w, _ = small["mp_q05"]
    default = estimate_density(w, method=method, generator=_seeded())
    explicit = estimate_density(w, method=method, num_steps=steps, generator=_seeded())
    assert torch.equal(default.edges, explicit.edges) and torch.equal(default.density, explicit.density)


def test_half_precision_is_computed_in_float32(small: dict) -> None:
    w, eigs = small["mp_q1"]
    est = estimate_density(w.to(torch.bfloat16), bins=40, generator=_seeded())
    assert est.density.dtype == torch.float64
    # bfloat16 rounding (relative 2^-9 per entry) moves the spectrum far less than a bin
    assert density_l1(est, exact_density(eigs, est.edges)) <= 0.08


@pytest.mark.parametrize("name", ["mp_q05", "mp_q2"])
def test_strided_input_gives_the_same_estimate(small: dict, name: str) -> None:
    w, _ = small[name]
    strided = w.mT.contiguous().mT  # same values, column-major: the CPU panels are strided views
    a = estimate_density(w, generator=_seeded())
    b = estimate_density(strided, generator=_seeded())
    assert not strided.is_contiguous()
    assert torch.allclose(a.edges, b.edges, rtol=1e-5) and density_l1(a, b.density) <= 1e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_input_device() -> None:
    w = _matrix("mp_q1", 512).cuda()
    est = estimate_density(w, generator=torch.Generator(device="cuda").manual_seed(0))
    assert est.edges.device.type == "cuda" and est.density.device.type == "cuda"


# ------------------------------------------------------------------ helpers against numpy


@pytest.mark.parametrize("m", [8, 12, 16])
def test_knot_values_match_closed_form_cdfs_at_chebyshev_gauss_nodes(m: int) -> None:
    """Corrected knots against closed forms: the Gauss rules of the semicircle and arcsine laws are Chebyshev's."""
    h = math.pi / (m + 1)
    theta = torch.arange(m, 0, -1, dtype=torch.float64) * h  # nodes cos(j h), ascending
    tau = (2.0 / (m + 1)) * torch.sin(theta) ** 2  # Chebyshev U: the Gauss rule of the semicircle on [-1, 1]
    exact = 1.0 - (theta - torch.sin(theta) * torch.cos(theta)) / math.pi  # its CDF at the nodes
    mid = tau.cumsum(0) - 0.5 * tau
    corrected = mid - _trapezoid_bias(tau[None], torch.tensor([[m]]))[0]
    # the midpoints are a trapezoid sum of f(θ) = (2/π) sin²θ, off by h²/12 f' (up to h²/(6π) = 0.003 at m = 12);
    # corrected, what is left are the next terms: central differences h⁴/72 |f⁽³⁾|, one-sided ones at the ends
    # h⁴/36 |f⁽³⁾|, with |f⁽³⁾| <= 8/π: at most 0.071 h⁴ (2.3e-4 at m = 12; measured 1.7e-4)
    assert float((mid - exact).abs().max()) >= 0.8 * h * h / (6 * math.pi)
    assert float((corrected - exact).abs().max()) <= 0.071 * h**4
    # Chebyshev T, the Gauss rule of the arcsine law (a hard edge at both ends): equal weights, nothing to correct
    flat = torch.full((1, m), 1.0 / m, dtype=torch.float64)
    assert float(_trapezoid_bias(flat, torch.tensor([[m]])).abs().max()) <= 1e-15


def test_exact_density_matches_numpy_histogram(small: dict) -> None:
    _, eigs = small["mp_q05"]
    edges = torch.linspace(0.0, 3.0, 31, dtype=torch.float64)
    expected, _ = np.histogram(eigs.numpy(), bins=edges.numpy())
    got = exact_density(eigs, edges)
    np.testing.assert_allclose(got.numpy(), expected / eigs.numel() / np.diff(edges.numpy()), rtol=1e-12)


def test_exact_density_drops_values_outside_the_edges() -> None:
    got = exact_density(torch.tensor([-1.0, 0.25, 0.75, 1.0, 2.0]), torch.tensor([0.0, 0.5, 1.0]))
    assert got.tolist() == pytest.approx([0.4, 0.8])  # 1 and 2 of 5 values, width 0.5; 1.0 is in the closed last bin


def test_density_l1_matches_a_direct_sum() -> None:
    rng = np.random.default_rng(0)
    edges = np.sort(rng.uniform(0, 1, 11))
    a, b = rng.uniform(0, 2, 10), rng.uniform(0, 2, 10)
    d = SpectralDensity(torch.from_numpy(edges), torch.from_numpy(a), 0.0, 1.0, "exact")
    assert density_l1(d, torch.from_numpy(b)) == pytest.approx(float(np.sum(np.abs(a - b) * np.diff(edges))))


def test_density_from_eigenvalues_matches_numpy_density_histogram() -> None:
    eigs = torch.from_numpy(np.random.default_rng(1).gamma(2.0, size=500))
    d = density_from_eigenvalues(eigs, bins=25)
    expected, edges = np.histogram(eigs.numpy(), bins=25, density=True)
    np.testing.assert_allclose(d.edges.numpy(), edges, rtol=1e-12)
    np.testing.assert_allclose(d.density.numpy(), expected, rtol=1e-12)
    assert (d.method, d.lambda_min, d.lambda_max) == ("exact", float(eigs.min()), float(eigs.max()))


def test_to_metrics_keys_and_values() -> None:
    d = density_from_eigenvalues(torch.tensor([1.0, 2.0, 3.0]), bins=2)
    metrics = d.to_metrics("layer/")
    assert metrics == pytest.approx(
        {"layer/lambda_min": 1.0, "layer/lambda_max": 3.0, "layer/mean": 13 / 6, "layer/estimated": 0.0}
    )
    est = estimate_density(torch.randn(50, 20, generator=_seeded()), generator=_seeded())
    assert est.to_metrics()["estimated"] == 1.0


def test_dense_limit_is_documented_int() -> None:
    import rmt_callbacks.spectral.density as module

    assert DENSE_LIMIT == 8192 and isinstance(DENSE_LIMIT, int)
    assert "DENSE_LIMIT" in module.__doc__ and "8192" in module.__doc__


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("weight", "kwargs", "error", "match"),
    [
        (torch.ones(4, 3, dtype=torch.int64), {}, TypeError, "floating torch.Tensor, got torch.int64"),
        ([[1.0, 2.0]], {}, TypeError, "floating torch.Tensor, got list"),
        (torch.ones(5), {}, ValueError, r"2-D \(M, N\) matrix, got \(5,\)"),
        (torch.ones(2, 3, 4), {}, ValueError, "2-D"),
        (torch.ones(0, 3), {}, ValueError, "non-empty"),
        (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), {}, ValueError, "finite"),
        (torch.tensor([[1.0, float("inf")], [0.0, 1.0]]), {}, ValueError, "finite"),
        (torch.ones(4, 3), {"kind": "singular"}, ValueError, "kind must be 'gram', got 'singular'"),
        (torch.ones(4, 3), {"method": "lanczos"}, ValueError, r"method must be one of \('slq', 'kpm'\)"),
        (torch.ones(4, 3), {"bins": 0}, ValueError, "bins must be an int >= 1, got 0"),
        (torch.ones(4, 3), {"bins": True}, ValueError, "bins must be an int"),
        (torch.ones(4, 3), {"num_vectors": 0}, ValueError, "num_vectors must be an int >= 1"),
        (torch.ones(4, 3), {"num_steps": 1}, ValueError, "num_steps must be an int >= 2, got 1"),
    ],
)
def test_estimate_density_rejects_bad_input(weight: object, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        estimate_density(weight, **kwargs)  # type: ignore[arg-type]


def test_helpers_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="1-D increasing"):
        exact_density(torch.ones(3), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="finite"):
        density_from_eigenvalues(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="non-empty"):
        density_from_eigenvalues(torch.tensor([]))
    d = density_from_eigenvalues(torch.tensor([0.0, 1.0]), bins=2)
    with pytest.raises(ValueError, match=r"b_density must have shape \(2,\)"):
        density_l1(d, torch.ones(3))
