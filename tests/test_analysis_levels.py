"""What the analyses' statistics rest on: non-structural levels, minimum counts, spikes left out of spacings."""

from __future__ import annotations

import math

import pytest
import torch

from rmt_callbacks.analysis import analyze_views
from rmt_callbacks.analysis._analyses import pooled_spacings
from rmt_callbacks.fits import fit_marchenko_pastur, fit_surmise
from rmt_callbacks.fits.marchenko_pastur import spike_threshold
from rmt_callbacks.spectral import MatrixView, spectrum_summary
from rmt_callbacks.spectral.summary import MIN_RATIOS


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _analyse(w: torch.Tensor, analyses: tuple[str, ...] = ("summary", "marchenko_pastur", "spacings")):
    (result,) = analyze_views([MatrixView("w", w, "matrix")], analyses=list(analyses))
    return result


def _spiked(m: int, n: int, spikes: int, seed: int, strength: tuple[float, float] = (30.0, 80.0)) -> torch.Tensor:
    """W = Z + U diag(s) V^T, Z i.i.d. N(0, 1), U, V orthonormal: ``spikes`` levels far above the bulk."""
    g = _gen(seed)
    w = torch.randn(m, n, generator=g, dtype=torch.float64)
    u, _ = torch.linalg.qr(torch.randn(m, spikes, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, spikes, generator=g, dtype=torch.float64))
    return w + u @ torch.diag(torch.linspace(*strength, spikes, dtype=torch.float64)) @ v.T


@pytest.mark.parametrize("shape", [(64, 4096), (48, 200)])
def test_wide_and_tall_views_give_the_same_verdicts(shape: tuple[int, int]) -> None:
    g = _gen(1)
    gaussian = torch.randn(*shape, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(shape[1], shape[0], generator=g, dtype=torch.float64))
    for w in (gaussian, q.T):  # i.i.d. entries (MP), then orthonormal rows (not MP)
        wide, tall = _analyse(w), _analyse(w.T.contiguous())
        for key in ("mp_converged", "surmise_converged", "n_levels", "mp_num_spikes"):
            assert wide.metrics.get(key) == tall.metrics.get(key), key
        assert wide.metrics["mp_ks"] == pytest.approx(tall.metrics["mp_ks"], abs=1e-6)
        assert wide.metrics["n_levels"] == min(shape)
    assert _analyse(gaussian).metrics["mp_converged"] == 1.0
    rejected = _analyse(q.T)
    assert rejected.metrics["mp_converged"] == 0.0 and rejected.metrics["mp_ks"] > 0.4
    assert rejected.failures["marchenko_pastur"].startswith("law rejected: KS = ")


def test_a_two_row_head_reports_no_fit_and_no_ratio() -> None:
    result = _analyse(torch.randn(2, 20_000, generator=_gen(2), dtype=torch.float64))
    assert result.metrics["mp_converged"] == 0.0 and "mp_sigma2" not in result.metrics
    assert "got 2, need at least 10" in result.failures["marchenko_pastur"]
    assert result.metrics["surmise_converged"] == 0.0 and "surmise_beta" not in result.metrics
    assert "mean_spacing_ratio" not in result.metrics and result.metrics["n_levels"] == 2.0


def test_mean_spacing_ratio_needs_min_ratios_pooled_over_the_batch() -> None:
    few = MIN_RATIOS + 1  # levels: MIN_RATIOS - 1 ratios per matrix
    one = _analyse(torch.randn(few, few, generator=_gen(3), dtype=torch.float64), ("summary",))
    assert "mean_spacing_ratio" not in one.metrics and one.metrics["n_levels"] == few
    two = _analyse(torch.randn(2, few, few, generator=_gen(3), dtype=torch.float64), ("summary",))
    assert 0.0 < two.metrics["mean_spacing_ratio"] < 1.0 and two.metrics["n_levels"] == 2 * few
    eigs = torch.linalg.eigvalsh(torch.randn(2, few + 1, few + 1, generator=_gen(4), dtype=torch.float64))
    enough = spectrum_summary(eigs.abs().sort().values, rows=few + 1)["mean_spacing_ratio"]  # MIN_RATIOS ratios
    assert not enough.isnan().any()


@pytest.mark.parametrize(("m", "n", "spikes"), [(512, 64, 8), (64, 512, 8), (300, 100, 3), (128, 128, 12)])
@pytest.mark.parametrize("seed", range(5))
def test_spikes_are_left_out_of_the_spacings(m: int, n: int, spikes: int, seed: int) -> None:
    w = _spiked(m, n, spikes, seed)
    m_, n_ = w.shape
    small = torch.linalg.eigvalsh(w @ w.T / m_) if n_ > m_ else torch.linalg.eigvalsh(w.T @ w / m_)
    gram = torch.cat([torch.zeros(max(n_ - m_, 0), dtype=w.dtype), small])[None]  # (1, N)
    mp = fit_marchenko_pastur(gram.flatten(), ratio=n_ / m_, rows=m_)
    assert mp.num_spikes == spikes
    values = pooled_spacings(gram, m_)
    bulk = min(m_, n_) - spikes
    assert values.numel() == bulk - 2 * math.floor(0.1 * bulk) - 1  # the spikes are gone before the unfolding
    assert float(values.min()) > 1e-3 and float(values.mean()) == pytest.approx(1.0)  # no collapsed spacing
    fit = fit_surmise(values)
    assert fit.converged and abs(fit.beta - 1.0) < 4 * fit.beta_std
    edge = spike_threshold(mp.sigma2, n_ / m_, m_)
    assert int((gram > edge).sum()) == spikes  # the one rule: the MP fit's num_spikes


def test_spiked_layer_through_the_analysis() -> None:
    result = _analyse(_spiked(512, 64, 8, seed=0))
    assert result.metrics["mp_num_spikes"] == 8 and result.metrics["surmise_converged"] == 1.0
    assert result.metrics["surmise_beta_std"] > 0 and result.metrics["mp_sigma2_std"] > 0
    assert result.metrics["n_levels"] == 64
