"""Statistics of rounding noise are not physics: the numerical-rank cut and the spacing resolution
(rmt_callbacks.spectral.resolution) in every analysis, and full-rank matrices unchanged by them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rmt_callbacks import analyze
from rmt_callbacks.analysis._analyses import _group_spacings, pooled_spacings
from rmt_callbacks.fits import fit_marchenko_pastur, fit_power_law, fit_surmise
from rmt_callbacks.fits.marchenko_pastur import spike_threshold
from rmt_callbacks.spectral import (
    esd,
    mean_spacing_ratio,
    nonstructural_levels,
    numerical_rank,
    spacing_resolution,
    spectrum_summary,
)

GOE_R = 0.5307


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _low_rank(rank: int, m: int = 300, n: int = 200, seed: int = 0) -> torch.Tensor:
    g = _gen(seed)
    return torch.randn(m, rank, generator=g) @ torch.randn(rank, n, generator=g)


def _orthogonal(n: int = 256, seed: int = 0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=_gen(seed), dtype=torch.float64))
    return q.float()


def _gram(w: torch.Tensor) -> torch.Tensor:
    return esd(w.double()).reshape(-1, w.shape[-1])  # (B, N), float64, as the analyses read them


def _result(w: torch.Tensor):
    (result,) = analyze({"layer.weight": w})
    return result


# --- defect 1: low-rank matrices ------------------------------------------------------------------------------


@pytest.mark.parametrize("rank", [1, 5])
def test_low_rank_defect_reproduced_on_all_levels(rank: int) -> None:
    """What the analyses computed before: the null space's rounding noise as spikes, GOE-like ratios."""
    w = _low_rank(rank)
    gram = _gram(w)
    everything = fit_marchenko_pastur(gram.flatten(), ratio=200 / 300, rows=300)
    if rank == 5:
        assert everything.num_spikes > rank  # 63-66 "spikes" in a rank-5 matrix
    else:
        assert "non-positive sigma2" in everything.message
    assert abs(float(mean_spacing_ratio(gram[0])) - GOE_R) < 0.05  # ratios of noise look like level repulsion
    noise = float(gram[0, -rank - 1] / gram[0, -1])
    assert 0 < noise < 1e-9  # the null space: rounding noise, far below the cut


@pytest.mark.parametrize("rank", [1, 5])
def test_low_rank_statistics_fail_with_the_rank(rank: int) -> None:
    w = _low_rank(rank)
    result = _result(w)
    assert result.metrics["rank"] == np.linalg.matrix_rank(w.numpy()) == rank
    note = f"rank {rank} of 200: too few levels above the numerical-rank cut"
    assert "mp_num_spikes" not in result.metrics and result.metrics["mp_converged"] == 0.0
    assert note in result.failures["marchenko_pastur"]
    assert "mean_spacing_ratio" not in result.metrics and note in result.failures["summary"]
    assert result.metrics["surmise_converged"] == 0.0 and note in result.failures["spacings"]
    assert result.metrics["pl_converged"] == 0.0 and note in result.failures["power_law"]


def test_partial_rank_fits_only_the_levels_above_the_cut() -> None:
    w = _low_rank(60, m=300, n=200, seed=1)
    gram = _gram(w)
    assert int(numerical_rank(gram, rows=300, dtype=w.dtype)) == np.linalg.matrix_rank(w.numpy()) == 60
    result = _result(w)
    assert result.metrics["mp_num_spikes"] <= 60
    r = float(spectrum_summary(gram, rows=300, dtype=w.dtype)["mean_spacing_ratio"])
    assert r == pytest.approx(float(mean_spacing_ratio(gram[0, -60:])))
    assert result.metrics["mean_spacing_ratio"] == pytest.approx(r)
    assert pooled_spacings(gram, 300, w.dtype).numel() > 25


def test_wide_rank_deficient_matrix_gives_the_same_fit_as_its_transpose() -> None:
    w = _low_rank(40, m=100, n=300, seed=2)
    assert np.linalg.matrix_rank(w.numpy()) == 40
    a, b = _result(w), _result(w.T.contiguous())
    assert a.metrics["rank"] == b.metrics["rank"] == 40
    for key in ("mp_sigma2", "mp_num_spikes", "mp_ks"):
        assert a.metrics[key] == pytest.approx(b.metrics[key], rel=1e-6), key
    assert a.metrics["mp_lambda_plus"] == pytest.approx(a.metrics["mp_sigma2"] * (1 + math.sqrt(3)) ** 2)
    assert a.metrics["mp_ratio"] == pytest.approx(3.0) and b.metrics["mp_ratio"] == pytest.approx(1 / 3)


def test_batch_with_different_ranks_is_handled_per_matrix() -> None:
    g = _gen(3)
    ranks = (30, 45, 80)
    w = torch.stack([torch.randn(120, k, generator=g) @ torch.randn(k, 80, generator=g) for k in ranks])
    gram = _gram(w)
    found = numerical_rank(gram, rows=120, dtype=w.dtype)
    assert found.tolist() == [np.linalg.matrix_rank(x.numpy()) for x in w] == list(ranks)
    per_matrix = spectrum_summary(gram, rows=120, dtype=w.dtype)["mean_spacing_ratio"]
    for b, k in enumerate(ranks):
        assert float(per_matrix[b]) == pytest.approx(float(mean_spacing_ratio(gram[b, -k:])))
    result = _result(w)
    assert result.metrics["rank"] == pytest.approx(sum(ranks) / 3)
    assert result.metrics["mp_num_spikes"] <= sum(ranks)
    assert "surmise_beta" in result.metrics and "spacings" in result.spectra


# --- defect 2: unresolved spectra ---------------------------------------------------------------------------


def _parametrized_orthogonal() -> torch.Tensor:
    torch.manual_seed(0)
    layer = torch.nn.utils.parametrizations.orthogonal(torch.nn.Linear(256, 256, bias=False))
    return layer.weight.detach().clone()


@pytest.mark.parametrize("make", [_orthogonal, _parametrized_orthogonal])
def test_orthogonal_defect_reproduced_and_fixed(make) -> None:
    w = make()
    gram = _gram(w)
    spread = float(gram.max() / gram.min() - 1)
    assert 0 < spread < 1e-4  # equal levels up to the rounding of the stored entries
    # before: the float32 weights' rounding was not looked at; the noise's spacings were fitted as repulsion
    assert float(spectrum_summary(gram, rows=256)["mean_spacing_ratio"]) > 0.45
    before = fit_surmise(pooled_spacings(gram, 256))
    assert before.fitted and before.beta > 0.5  # a "Dyson index" of rounding noise (0.87 +- 0.16 for QR's Q)
    assert float(spacing_resolution(gram, rows=256, dtype=w.dtype)) < 0.01
    result = _result(w)
    assert result.metrics["rank"] == 256
    assert "mean_spacing_ratio" not in result.metrics and "not resolved" in result.failures["summary"]
    assert result.metrics["surmise_converged"] == 0.0 and "surmise_beta" not in result.metrics
    assert "levels not resolved" in result.failures["spacings"] and "times below" in result.failures["spacings"]
    with pytest.raises(ValueError, match="not resolved"):
        pooled_spacings(gram, 256, w.dtype)


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [
        ((64, 64), torch.float32),
        ((300, 100), torch.float32),
        ((100, 300), torch.float64),
        ((512, 512), torch.bfloat16),
        ((64, 1024), torch.bfloat16),
        ((1024, 1024), torch.float16),
        ((4, 50, 40), torch.float32),
    ],
)
def test_gaussian_matrices_are_resolved_and_keep_their_statistics(shape: tuple[int, ...], dtype) -> None:
    w = torch.randn(*shape, generator=_gen(4)).to(dtype)
    gram = _gram(w)
    assert bool((spacing_resolution(gram, rows=shape[-2], dtype=dtype) > 10).all())
    result = _result(w)
    assert abs(result.metrics["mean_spacing_ratio"] - GOE_R) < 0.08
    assert "surmise_beta" in result.metrics and "spacings" not in result.failures


def test_goe_like_spectra_are_unaffected() -> None:
    a = torch.randn(5, 200, 200, generator=_gen(5), dtype=torch.float64)
    goe = torch.linalg.eigvalsh((a + a.mT) / 2)
    levels = (goe + 30.0).sort().values  # a shifted GOE spectrum read as Gram levels
    summary = spectrum_summary(levels, rows=200)
    torch.testing.assert_close(summary["mean_spacing_ratio"], mean_spacing_ratio(levels))
    assert abs(float(summary["mean_spacing_ratio"].mean()) - GOE_R) < 0.02
    squared = spectrum_summary(goe.square().sort().values, rows=200)  # the Gram levels of a symmetric W
    assert not squared["mean_spacing_ratio"].isnan().any()


# --- full-rank matrices: the same numbers as before ---------------------------------------------------------


def _before(gram: torch.Tensor, rows: int) -> dict[str, float]:
    """The statistics as computed before the rule: every non-structural level."""
    cols = gram.shape[-1]
    bulk = nonstructural_levels(gram, rows)
    mp = fit_marchenko_pastur(gram.flatten(), ratio=cols / rows, rows=rows)
    edge = spike_threshold(mp.sigma2, cols / rows, rows) if mp.fitted else math.inf
    kept = (bulk <= edge).sum(dim=-1)
    parts = [_group_spacings(bulk[kept == k, :k]) for k in torch.unique(kept).tolist()]
    surmise = fit_surmise(torch.cat([p for p in parts if p is not None]))
    ratio = mean_spacing_ratio(bulk)
    return {
        "mp_sigma2": mp.sigma2,
        "mp_num_spikes": mp.num_spikes,
        "mp_ks": mp.ks,
        "surmise_beta": surmise.beta,
        "surmise_ks": surmise.ks,
        "mean_spacing_ratio": float(ratio.mean()),
        "pl_ks": fit_power_law(bulk).ks,
    }


@pytest.mark.parametrize(
    ("shape", "dtype", "seed"),
    [
        ((300, 100), torch.float32, 0),
        ((100, 300), torch.float32, 0),
        ((128, 128), torch.float64, 0),
        ((256, 256), torch.bfloat16, 0),
        ((64, 512), torch.bfloat16, 0),
        ((3, 40, 30), torch.float32, 0),
        ((2048, 2048), torch.float32, 2),
    ],
)
def test_full_rank_matrices_give_the_same_numbers(shape: tuple[int, ...], dtype, seed: int) -> None:
    w = torch.randn(*shape, generator=_gen(seed)).to(dtype)
    m, n = shape[-2:]
    gram = _gram(w)
    assert bool((numerical_rank(gram, rows=m, dtype=dtype) == min(m, n)).all())
    if len(shape) == 2 and max(shape) <= 512:
        assert np.linalg.matrix_rank(w.float().numpy()) == min(m, n)
    before = _before(gram, m)
    result = _result(w)
    for key, value in before.items():
        if key != "pl_ks" or key in result.metrics:  # a rejected power law logs no numbers
            assert result.metrics[key] == pytest.approx(value, rel=1e-6), key


def test_a_batch_pools_at_least_min_ratios_behind_its_mean_spacing_ratio() -> None:
    """15 zero matrices and one random 3 x 3: one ratio is left, below MIN_RATIOS pooled; no <r> is reported."""
    w = torch.zeros(16, 3, 3, dtype=torch.float64)
    w[0] = torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    (r,) = analyze({"e.weight": w})
    assert "mean_spacing_ratio" not in r.metrics and "numerical-rank cut" in r.failures["summary"]
    full = torch.randn(16, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (r,) = analyze({"e.weight": full})
    assert 0.0 < r.metrics["mean_spacing_ratio"] < 1.0  # 16 matrices x 1 ratio = MIN_RATIOS
