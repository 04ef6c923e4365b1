"""The heavy-tailed analyses of ``analyze``: power law with WeightWatcher's norms, randomize, rank statistics.

References are independent: NumPy's SVD and ``matrix_rank``, SciPy's two-sample KS, ``fit_power_law`` on levels
computed by NumPy, and the entropy written out from its definition.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

from rmt_callbacks.analysis import DEFAULT_ANALYSES, analyze, analyze_views
from rmt_callbacks.analysis._tails import two_sample_ks
from rmt_callbacks.fits import fit_power_law
from rmt_callbacks.spectral import MatrixView


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _heavy(m: int, n: int, seed: int, mu: float = 2.5) -> torch.Tensor:
    """Entries with a Pareto(mu) tail and random signs: a heavy-tailed ESD (HTSR's 'trained-like' weights)."""
    g = _gen(seed)
    mag = torch.rand(m, n, generator=g, dtype=torch.float64) ** (-1 / mu)
    return mag * torch.sign(torch.randn(m, n, generator=g, dtype=torch.float64)) / np.sqrt(n)


def _one(w: torch.Tensor, analyses=DEFAULT_ANALYSES):
    (r,) = analyze_views([MatrixView("w", w, "matrix")], analyses=analyses)
    return r


@pytest.mark.parametrize("shape", [(300, 120), (120, 300)])
def test_power_law_and_norms_match_numpy(shape: tuple[int, int]) -> None:
    w = _heavy(*shape, seed=1)
    r = _one(w)
    s = np.linalg.svd(w.numpy(), compute_uv=False)  # min(M, N) singular values
    fit = fit_power_law(torch.from_numpy(s**2 / shape[0]))
    assert fit.converged and r.metrics["pl_converged"] == 1.0
    assert r.metrics["pl_alpha"] == pytest.approx(fit.alpha, rel=1e-9)
    assert r.metrics["pl_n_tail"] == fit.n_tail and r.metrics["pl_ks"] == pytest.approx(fit.ks, rel=1e-9)
    assert r.metrics["pl_x_min"] == pytest.approx(fit.x_min, rel=1e-9)
    assert r.laws["power_law"].alpha == pytest.approx(fit.alpha, rel=1e-9)
    # WeightWatcher's convention: eigenvalues s^2 of W^T W, not divided by M
    assert r.metrics["log_norm"] == pytest.approx(np.log10(np.sum(s**2)), rel=1e-9)
    assert r.metrics["log_spectral_norm"] == pytest.approx(np.log10(s.max() ** 2), rel=1e-9)
    assert r.metrics["pl_alpha_weighted"] == pytest.approx(fit.alpha * np.log10(s.max() ** 2), rel=1e-8)
    assert r.metrics["log_alpha_norm"] == pytest.approx(np.log10(np.sum(s ** (2 * fit.alpha))), rel=1e-8)


def test_power_law_of_a_batch_is_pooled_and_norms_are_batch_means() -> None:
    w = torch.stack([_heavy(80, 60, seed=s) for s in range(3)])
    r = _one(w)
    s = np.linalg.svd(w.numpy(), compute_uv=False)  # (3, 60)
    fit = fit_power_law(torch.from_numpy(s**2 / 80))
    assert r.metrics["pl_alpha"] == pytest.approx(fit.alpha, rel=1e-9)
    assert r.metrics["log_norm"] == pytest.approx(np.mean(np.log10((s**2).sum(-1))), rel=1e-9)


def test_a_bounded_spectrum_gives_no_alpha_norms() -> None:
    """Orthonormal rows: every level equals 1, no tail: the fit fails and the alpha norms are not logged."""
    q, _ = torch.linalg.qr(torch.randn(200, 50, generator=_gen(2), dtype=torch.float64))
    r = _one(q.T.contiguous())
    assert r.metrics["pl_converged"] == 0.0 and "power_law" in r.failures
    assert "pl_alpha_weighted" not in r.metrics and "log_alpha_norm" not in r.metrics
    assert r.metrics["log_norm"] == pytest.approx(np.log10(50.0), rel=1e-9)


def test_rank_and_rank_loss_follow_numpy_matrix_rank() -> None:
    g = _gen(3)
    for dtype in (torch.float32, torch.float64):
        low = torch.randn(64, 10, generator=g, dtype=dtype) @ torch.randn(10, 48, generator=g, dtype=dtype)
        r = _one(low, analyses=["summary"])
        assert r.metrics["rank"] == np.linalg.matrix_rank(low.numpy()) == 10
        assert r.metrics["rank_loss"] == 48 - 10
    full = torch.randn(30, 70, generator=g)
    r = _one(full, analyses=["summary"])
    assert r.metrics["rank"] == 30 and r.metrics["rank_loss"] == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_keep_their_rank_and_a_bounded_entropy(dtype: torch.dtype) -> None:
    """In their own precision NumPy's rule counts nothing (max(M, N) eps >= 1): they are ranked as float32 is."""
    g = _gen(11)
    for m, n in [(256, 128), (3072, 768)]:
        r = _one(torch.randn(m, n, generator=g).to(dtype), analyses=["summary"])
        assert r.metrics["rank"] == n and r.metrics["rank_loss"] == 0
        assert 0.9 < r.metrics["spectral_entropy"] <= 1.0
    low = (torch.randn(300, 6, generator=g) @ torch.randn(6, 200, generator=g)).to(dtype)
    r = _one(low, analyses=["summary"])
    assert (
        r.metrics["rank"] == np.linalg.matrix_rank(low.float().numpy()) and 0.0 <= r.metrics["spectral_entropy"] <= 1.0
    )


def test_spectral_entropy_from_its_definition() -> None:
    w = _heavy(90, 40, seed=4)
    r = _one(w, analyses=["summary"])
    s2 = np.linalg.svd(w.numpy(), compute_uv=False) ** 2
    p = s2 / s2.sum()
    assert r.metrics["spectral_entropy"] == pytest.approx(-np.sum(p * np.log(p)) / np.log(40), rel=1e-9)
    q, _ = torch.linalg.qr(torch.randn(60, 60, generator=_gen(5), dtype=torch.float64))
    assert _one(q, analyses=["summary"]).metrics["spectral_entropy"] == pytest.approx(1.0, abs=1e-9)
    rank_one = torch.outer(torch.randn(50, generator=_gen(6)), torch.randn(30, generator=_gen(7)))
    r = _one(rank_one, analyses=["summary"])
    assert r.metrics["rank"] == 1 and r.metrics["spectral_entropy"] == 0.0


@pytest.mark.parametrize("sizes", [(50, 50), (7, 300), (400, 3)])
def test_two_sample_ks_matches_scipy(sizes: tuple[int, int]) -> None:
    g = _gen(sum(sizes))
    a, b = torch.randn(sizes[0], generator=g), torch.randn(sizes[1], generator=g) + 0.3
    assert two_sample_ks(a, b) == pytest.approx(scipy.stats.ks_2samp(a.numpy(), b.numpy()).statistic, abs=1e-12)


def test_randomize_finds_correlation_traps_and_leaves_noise_alone() -> None:
    noise = torch.randn(200, 100, generator=_gen(6), dtype=torch.float64)
    r = _one(noise, analyses=["randomize"])
    assert r.metrics["rand_traps"] == 0
    # two samples of 100 levels from the same law: below the 1 % two-sample critical value 1.63 * sqrt(2 / 100)
    assert r.metrics["rand_ks"] < 1.63 * np.sqrt(2 / 100)
    trapped = noise.clone()
    trapped[3, 7], trapped[150, 20], trapped[42, 99] = 60.0, -55.0, 50.0  # single huge entries survive a shuffle
    r = _one(trapped, analyses=["randomize"])
    assert r.metrics["rand_traps"] == 3
    learnt = noise + 3.0 * torch.outer(torch.randn(200, generator=_gen(7)), torch.randn(100, generator=_gen(8)))
    assert (
        _one(learnt.double(), analyses=["randomize"]).metrics["rand_ks"]
        > _one(noise, analyses=["randomize"]).metrics["rand_ks"]
    )


def test_randomize_is_seeded_and_draws_no_global_random_numbers() -> None:
    w = _heavy(60, 40, seed=9)
    state = torch.random.get_rng_state()
    first, second = _one(w, analyses=["randomize"]), _one(w, analyses=["randomize"])
    assert torch.equal(torch.random.get_rng_state(), state)
    assert first.metrics == second.metrics
    assert torch.equal(first.spectra["randomized"], second.spectra["randomized"])
    assert not torch.allclose(first.spectra["randomized"], first.spectra["gram"])  # the copy is not the matrix


def test_power_law_is_a_default_and_randomize_is_not() -> None:
    (r,) = analyze(nn.Linear(64, 32))
    assert "pl_converged" in r.metrics and not any(k.startswith("rand_") for k in r.metrics)


def test_the_soft_edge_of_a_random_matrix_is_not_a_heavy_tail() -> None:
    """Gaussian 128 x 128 matrices: a power law 'fits' the top few dozen levels (alpha 3-10, D below the KS
    threshold), but nothing leaves the Marchenko-Pastur bulk; heavy-tailed entries do leave it."""
    for seed in range(20):
        r = _one(torch.randn(128, 128, generator=_gen(seed)))
        assert r.metrics["pl_converged"] == 0.0 and "not a heavy tail" in r.failures["power_law"], seed
        assert "pl_alpha_weighted" not in r.metrics
    for df, top in ((1.5, 2.5), (2.0, 3.5)):
        torch.manual_seed(1)
        w = torch.distributions.StudentT(df).sample((256, 512)).double()
        r = _one(w)
        assert r.metrics["pl_converged"] == 1.0 and r.metrics["mp_num_spikes"] > 0
        assert 1.5 < r.metrics["pl_alpha"] < top


def test_a_tail_needs_twenty_levels() -> None:
    """A 10 x 256 head has 10 levels: the only 'tail' of 10 would be the whole spectrum; no fit is reported."""
    head = torch.distributions.StudentT(1.5).sample((10, 256)).double()
    r = _one(head)
    assert r.metrics["pl_converged"] == 0.0 and "too few levels for a tail: got 10" in r.failures["power_law"]
    assert not r.failures["power_law"].startswith("ValueError")
