"""Spacings, unfolding and ratios against the classical ensembles, and the papers' pair statistics (docs/science.md)."""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rmt_callbacks.fits import fit_surmise
from rmt_callbacks.laws import MEAN_SPACING_RATIO
from rmt_callbacks.spectral import (
    freedman_diaconis_edges,
    histogram_mean,
    mean_spacing_ratio,
    pair_spacings,
    spacing_ratios,
    spacings,
    unfolded_spacings,
)

GOE_LARGE_N_MEAN_SQUARE = 1.286  # <s^2> of the exact (Gaudin) GOE spacing law; the 2x2 surmise gives 4/pi = 1.273


def _goe(batch: int, n: int, seed: int) -> torch.Tensor:
    a = torch.randn(batch, n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.linalg.eigvalsh((a + a.mT) / 2)


def _gue(batch: int, n: int, seed: int) -> torch.Tensor:
    a = torch.randn(batch, n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.complex128)
    return torch.linalg.eigvalsh((a + a.mH) / 2)


def _poisson(batch: int, n: int, seed: int) -> torch.Tensor:
    return torch.rand(batch, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture(scope="module")
def goe() -> torch.Tensor:
    return _goe(200, 100, seed=0)  # (200, 100): 200 independent spectra of 100 levels


def _within(per_matrix: torch.Tensor, expected: float, *, sigmas: float = 4.0, bias: float = 0.0) -> None:
    """The ensemble mean of a per-matrix statistic is within `sigmas` standard errors (+ a stated bias) of a value.

    The matrices are independent, so the standard error is the spread of the per-matrix values / sqrt(count).
    """
    mean = float(per_matrix.mean())
    se = float(per_matrix.std()) / math.sqrt(per_matrix.numel())
    assert abs(mean - expected) < sigmas * se + bias, (mean, se, expected)


def test_spacings_match_numpy_diff_of_the_sorted_spectrum() -> None:
    x = torch.randn(3, 4, 9, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    np.testing.assert_array_equal(spacings(x).numpy(), np.diff(np.sort(x.numpy(), axis=-1), axis=-1))


def test_mean_spacing_ratio_of_goe(goe: torch.Tensor) -> None:
    _within(mean_spacing_ratio(goe), MEAN_SPACING_RATIO["goe"])


def test_mean_spacing_ratio_of_gue() -> None:
    _within(mean_spacing_ratio(_gue(100, 100, seed=1)), MEAN_SPACING_RATIO["gue"])


def test_mean_spacing_ratio_of_poisson_levels() -> None:
    # ratios of spacings of sorted uniforms are ratios of i.i.d. exponentials: exactly 2 ln 2 - 1
    _within(mean_spacing_ratio(_poisson(200, 200, seed=2)), MEAN_SPACING_RATIO["poisson"])


def test_ratios_are_batched_and_order_free() -> None:
    x = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    s = np.diff(np.sort(x.numpy(), axis=-1), axis=-1)
    ref = np.minimum(s[..., :-1], s[..., 1:]) / np.maximum(s[..., :-1], s[..., 1:])
    shuffled = x[..., torch.randperm(7, generator=torch.Generator().manual_seed(4))]
    np.testing.assert_allclose(spacing_ratios(shuffled).numpy(), ref, rtol=1e-14)
    np.testing.assert_allclose(mean_spacing_ratio(x).numpy(), ref.mean(-1), rtol=1e-14)


def test_undefined_ratios_are_nan_and_left_out_of_the_mean() -> None:
    x = torch.tensor([[0.0, 1.0, 1.0, 1.0, 3.0], [2.0, 2.0, 2.0, 2.0, 2.0]])
    r = spacing_ratios(x)
    assert r[0, 0].item() == 0.0 and math.isnan(r[0, 1].item()) and r[0, 2].item() == 0.0
    m = mean_spacing_ratio(x)
    assert m[0].item() == 0.0 and math.isnan(m[1].item())  # all ratios undefined: NaN, not 0


def test_unfolded_goe_bulk_has_unit_mean_and_the_goe_second_moment(goe: torch.Tensor) -> None:
    s = unfolded_spacings(goe, degree=5, trim=0.1)
    assert s.shape == (200, 100 - 2 * 10 - 1)
    torch.testing.assert_close(s.mean(-1), torch.ones(200, dtype=torch.float64), rtol=0, atol=1e-12)
    # 200 x 79 spacings give a standard error ~0.004 on <s^2>: this separates GOE from GUE (1.178) and
    # Poisson (2), not from the surmise's 4/pi (1.273), which is only 0.013 away
    _within((s**2).mean(-1), GOE_LARGE_N_MEAN_SQUARE)


def test_unfolding_poisson_levels_of_a_non_uniform_density() -> None:
    levels = torch.randn(50, 1000, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    s = unfolded_spacings(levels, degree=5, trim=0.1)
    _within((s**2).mean(-1), 2.0)  # exponential spacings; the finite-n bias (~0.01) is below 4 SE (~0.045)
    raw = spacings(levels)
    assert float(((raw / raw.mean(-1, keepdim=True)) ** 2).mean()) > 3.0  # without unfolding: far from 2


def test_unfolding_is_per_matrix_and_trims_the_edges() -> None:
    x = torch.randn(2, 3, 40, generator=torch.Generator().manual_seed(6), dtype=torch.float32)
    s = unfolded_spacings(x, degree=3, trim=0.1)
    assert s.shape == (2, 3, 40 - 2 * 4 - 1) and s.dtype == torch.float32
    torch.testing.assert_close(s[1, 2], unfolded_spacings(x[1, 2], degree=3, trim=0.1))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"degree": 0}, ValueError, "degree must be >= 1, got 0"),
        ({"degree": 2.0}, TypeError, "degree must be an int, got 2.0"),
        ({"trim": 0.5}, ValueError, r"trim must be in \[0, 0.5\), got 0.5"),
        ({"degree": 10}, ValueError, r"n >= 12, got shape \(11,\)"),
        ({"trim": 0.46}, ValueError, "leaves fewer than 2 of the n=11 levels"),
    ],
)
def test_unfolding_rejects_bad_arguments(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        unfolded_spacings(torch.arange(11.0), **kwargs)


def test_unfolding_rejects_a_degenerate_spectrum() -> None:
    with pytest.raises(ValueError, match="all levels equal"):
        unfolded_spacings(torch.ones(2, 10), degree=2)


def test_level_validation() -> None:
    with pytest.raises(ValueError, match=r"n >= 3, got shape \(4, 2\)"):
        spacing_ratios(torch.ones(4, 2))
    with pytest.raises(ValueError, match="1 of its 3 entries are NaN or Inf"):
        spacings(torch.tensor([0.0, float("nan"), 1.0]))
    with pytest.raises(TypeError, match=r"real floating dtype, got torch\.int64"):
        mean_spacing_ratio(torch.arange(5))


def _goe_pairs(n: int, center: float, sigma: float, seed: int) -> torch.Tensor:
    """Eigenvalues (n, 2) of 2x2 GOE blocks: diagonal N(center, sigma^2), off-diagonal N(0, sigma^2/2)."""
    g = torch.Generator().manual_seed(seed)
    d = center + sigma * torch.randn(n, 2, generator=g, dtype=torch.float64)
    off = sigma / math.sqrt(2.0) * torch.randn(n, generator=g, dtype=torch.float64)
    h = torch.stack([torch.stack([d[:, 0], off], -1), torch.stack([off, d[:, 1]], -1)], -2)
    return torch.linalg.eigvalsh(h)


def test_pair_spacing_of_2x2_goe_blocks() -> None:
    center, sigma = 1.3, 0.7
    eigs = _goe_pairs(200_000, center, sigma, seed=7)
    s = pair_spacings(eigs, [(1, 0)])[:, 0]
    # docs/science.md#reference-numbers: <S> = sqrt(pi) sigma to 1% with 2e5 samples (the standard error is 0.12%)
    assert float(s.mean()) == pytest.approx(math.sqrt(math.pi) * sigma, rel=0.01)
    assert histogram_mean(s) == pytest.approx(math.sqrt(math.pi) * sigma, rel=0.01)
    assert float(eigs.std()) == pytest.approx(sigma * math.sqrt(1.5), rel=0.01)


def test_pair_spacings_use_the_given_order() -> None:
    x = torch.tensor([[5.0, 2.0, 1.5, 0.0], [4.0, 3.0, 1.0, -1.0]])  # e.g. descending, as in the papers
    torch.testing.assert_close(pair_spacings(x, [(1, 2), (3, 0)]), torch.tensor([[0.5, 5.0], [2.0, 5.0]]))


@pytest.mark.parametrize(
    ("pairs", "error", "match"),
    [
        ([], ValueError, "at least one"),
        ([(0, 4)], ValueError, r"pair \(0, 4\) must hold two different indices in \[0, 4\)"),
        ([(1, 1)], ValueError, "two different indices"),
        ([(0, 1.0)], TypeError, "two ints"),
    ],
)
def test_pair_spacings_reject_bad_pairs(pairs: list, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        pair_spacings(torch.arange(4.0), pairs)


def _numpy_histogram_mean(y: np.ndarray) -> tuple[float, np.ndarray]:
    """The authors' recipe (docs/science.md#analysis-recipe, steps 2-3), written directly with numpy."""
    q75, q25 = np.percentile(y, [75, 25])
    width = 2 * (q75 - q25) / len(y) ** (1 / 3)
    bins = max(int(np.floor((y.max() - y.min()) / width)), 1) if width > 0 else 1
    heights, edges = np.histogram(y, bins=bins, range=(y.min(), y.max()), density=True)
    centres = (edges[1:] + edges[:-1]) / 2
    return float((centres * heights).sum() / heights.sum()), edges


@pytest.mark.parametrize(
    "sample",
    [
        lambda g: torch.randn(1000, generator=g, dtype=torch.float64),
        lambda g: torch.empty(300, dtype=torch.float64).exponential_(generator=g),
        lambda g: torch.rand(5, generator=g, dtype=torch.float64),
        lambda g: torch.randint(0, 6, (301,), generator=g).double(),  # ties on the bin edges
    ],
)
def test_histogram_mean_matches_the_numpy_recipe(sample: Callable[[torch.Generator], torch.Tensor]) -> None:
    y = sample(torch.Generator().manual_seed(8))
    ref, edges = _numpy_histogram_mean(y.numpy())
    assert histogram_mean(y) == pytest.approx(ref, rel=1e-12)
    np.testing.assert_array_equal(freedman_diaconis_edges(y).numpy(), edges)


@pytest.mark.parametrize("seed", range(3))
def test_the_binning_rule_has_numpys_freedman_diaconis_width(seed: int) -> None:
    x = np.random.default_rng(seed).standard_normal(400 + 700 * seed)
    ours = freedman_diaconis_edges(torch.from_numpy(x)).numpy()
    theirs = np.histogram_bin_edges(x, bins="fd")
    q75, q25 = np.percentile(x, [75, 25])
    h = 2.0 * (q75 - q25) / x.size ** (1 / 3)
    span = x.max() - x.min()
    assert (ours[0], ours[-1]) == (theirs[0], theirs[-1]) == (x.min(), x.max())
    assert len(theirs) - 1 == math.ceil(span / h)  # numpy: the same width h, the bin count rounded up
    assert len(ours) - 1 == math.floor(span / h)  # the papers': rounded down
    assert np.diff(theirs).max() <= h * (1 + 1e-12) and np.diff(ours).min() >= h * (1 - 1e-12)
    exact = np.arange(8.0)  # span / h = 2 exactly: both rules give the same edges
    np.testing.assert_array_equal(freedman_diaconis_edges(torch.from_numpy(exact)).numpy(),
                                  np.histogram_bin_edges(exact, bins="fd"))  # fmt: skip


def test_the_binning_rule_honours_its_cap_and_a_width_from_another_sample() -> None:
    cauchy = torch.from_numpy(np.random.default_rng(1).standard_cauchy(20000))
    free = freedman_diaconis_edges(cauchy)
    assert free.numel() - 1 > 200
    capped = freedman_diaconis_edges(cauchy, max_bins=200)
    assert capped.numel() == 201 and (capped[0], capped[-1]) == (free[0], free[-1])
    np.testing.assert_allclose(np.diff(capped.numpy()), (free[-1] - free[0]).item() / 200, rtol=1e-9)
    torch.testing.assert_close(freedman_diaconis_edges(cauchy, max_bins=free.numel()), free)  # above K: no effect
    pooled = torch.tensor([0.0, 70.0], dtype=torch.float64)
    edges = freedman_diaconis_edges(pooled, width_from=torch.arange(8.0, dtype=torch.float64))  # h = 3.5
    torch.testing.assert_close(edges, torch.linspace(0.0, 70.0, 21, dtype=torch.float64))
    with pytest.raises(ValueError, match="max_bins must be >= 1"):
        freedman_diaconis_edges(cauchy, max_bins=0)
    with pytest.raises(TypeError, match="max_bins must be an int"):
        freedman_diaconis_edges(cauchy, max_bins=2.0)
    with pytest.raises(ValueError, match="width_from must be finite"):
        freedman_diaconis_edges(cauchy, width_from=torch.tensor([math.nan]))


def test_histogram_mean_is_exact_with_millions_of_bins() -> None:
    y = torch.rand(2000, generator=torch.Generator().manual_seed(8), dtype=torch.float64) ** -1.2  # heavy tail
    ref, edges = _numpy_histogram_mean(y.numpy())
    assert len(edges) > 10**6
    index = np.minimum(np.searchsorted(edges, y.numpy(), side="right") - 1, len(edges) - 2)  # numpy's binning
    exact = sum((Fraction(edges[k]) + Fraction(edges[k + 1])) / 2 for k in index) / len(index)
    assert histogram_mean(y) == pytest.approx(float(exact), rel=1e-14)
    assert histogram_mean(y) == pytest.approx(ref, rel=1e-8)  # numpy's sum over 3e6 bins loses ~1e-10


def test_histogram_mean_differs_from_the_arithmetic_mean_and_handles_degenerate_input() -> None:
    y = torch.tensor([0.0, 1.0, 2.0, 10.0])
    assert histogram_mean(y) == 3.75 and float(y.mean()) == 3.25
    assert histogram_mean(torch.full((7,), 2.5)) == 2.5
    assert histogram_mean(torch.tensor([[1.0, 2.0], [3.0, 4.0]])) == pytest.approx(2.5)  # values are pooled
    with pytest.raises(ValueError, match=r"n >= 1, got shape \(0,\)"):
        histogram_mean(torch.tensor([]))


# -- unfolding that is monotone by construction ------------------------------------------------------------------


def _polynomial_unfolding(levels: np.ndarray, degree: int, trim: float) -> np.ndarray:
    """The plain polynomial unfolding (no clipping), written with numpy: the rule before the derivative clip."""
    x = np.sort(levels, axis=-1)
    n, cut = x.shape[-1], math.floor(trim * levels.shape[-1])
    out = []
    for row in x.reshape(-1, n):
        z = (row - row.mean()) / row.std(ddof=1)
        xi = np.polynomial.polynomial.polyval(z, np.polynomial.polynomial.polyfit(z, np.arange(n) + 0.5, degree))
        s = np.diff(xi[cut : n - cut])
        out.append(s / s.mean())
    return np.array(out).reshape(*x.shape[:-1], -1)


def _spiked_gram(seed: int, m: int = 512, n: int = 64, spikes: int = 8) -> torch.Tensor:
    """Ascending eigenvalues of W^T W, W = G / sqrt(M) + sum_k s_k u_k v_k^T with s_k in [3, 6].

    The bulk is Marchenko-Pastur with q = N / M = 1/8, top edge (1 + sqrt q)^2 = 1.83; the spikes sit at
    ~s_k^2 >= 9, far above it (the BBP threshold is s^2 = sqrt q).
    """
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(m, n, generator=g, dtype=torch.float64) / math.sqrt(m)
    u = torch.linalg.qr(torch.randn(m, spikes, generator=g, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(n, spikes, generator=g, dtype=torch.float64)).Q
    w = noise + (u * torch.linspace(3.0, 6.0, spikes, dtype=torch.float64)) @ v.T
    return torch.linalg.eigvalsh(w.T @ w)


MP_TOP_EDGE = (1 + math.sqrt(64 / 512)) ** 2
SURMISE_BETA_SPREAD = 2.7  # sd of the surmise-fit beta times sqrt(spacings), measured on unspiked 512 x 64 bulks


@pytest.mark.parametrize("seed", range(5))
def test_spiked_wishart_unfolds_without_negative_spacings(seed: int) -> None:
    # the tester's case at the analysis' settings (sqrt(lambda), degree 5, 10% trimmed): 2 of the 8 spikes stay
    # in the kept window and the degree-5 fit decreases between them
    levels = _spiked_gram(seed).sqrt()
    old = _polynomial_unfolding(levels.numpy(), 5, 0.1)
    assert (old < 0).sum() == 1  # before: one negative spacing on every seed, and fit_surmise raised
    s = unfolded_spacings(levels, degree=5, trim=0.1)
    assert bool((s >= 0).all())
    fit_surmise(s)  # no longer raises on negative spacings
    # spacings of bulk levels are those of the polynomial; only the ones between outliers change
    bulk = int((levels**2 < MP_TOP_EDGE).sum()) - 6 - 1  # spacings from kept level 6 up to the last bulk level
    np.testing.assert_allclose(s.numpy()[:bulk] / float(s[0]), old[:bulk] / old[0], rtol=1e-9)  # same up to the mean
    assert bool((s[bulk + 1 :] == 0).any())  # the decreasing stretch: zero there, not negative


def test_spiked_wishart_bulk_beta_is_goe_when_the_spikes_are_trimmed() -> None:
    # trimming 15% (9 of 64 levels) at each edge keeps the 8 spikes out of the window (they stay in the fit)
    pooled = []
    for seed in range(5):
        s = unfolded_spacings(_spiked_gram(seed).sqrt(), degree=5, trim=0.15)
        assert bool((s >= 0).all()) and fit_surmise(s).converged
        pooled.append(s)
    s = torch.cat(pooled)
    assert fit_surmise(s).beta == pytest.approx(1.0, abs=3 * SURMISE_BETA_SPREAD / math.sqrt(s.numel()))


def _wishart(batch: int, m: int, n: int, seed: int) -> torch.Tensor:
    w = torch.randn(batch, m, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.linalg.eigvalsh(w.mT @ w / m)


@pytest.mark.parametrize(
    ("name", "levels", "ratio"),
    [
        ("goe", lambda: _goe(100, 100, seed=10), MEAN_SPACING_RATIO["goe"]),
        ("gue", lambda: _gue(100, 100, seed=11), MEAN_SPACING_RATIO["gue"]),
        ("wishart", lambda: _wishart(100, 400, 100, seed=12).sqrt(), MEAN_SPACING_RATIO["goe"]),
        (
            "poisson",
            lambda: torch.randn(100, 200, generator=torch.Generator().manual_seed(13), dtype=torch.float64),
            MEAN_SPACING_RATIO["poisson"],
        ),
    ],
)
def test_reference_ensembles_unfold_as_the_plain_polynomial(
    name: str, levels: Callable[[], torch.Tensor], ratio: float
) -> None:
    x = levels()
    s = unfolded_spacings(x, degree=5, trim=0.1)
    # the polynomial is monotone on these: the result is the plain polynomial unfolding, to rounding
    np.testing.assert_allclose(s.numpy(), _polynomial_unfolding(x.numpy(), 5, 0.1), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(s.mean(-1), torch.ones(s.shape[0], dtype=torch.float64), rtol=0, atol=1e-12)
    r = torch.minimum(s[:, :-1], s[:, 1:]) / torch.maximum(s[:, :-1], s[:, 1:])
    _within(r.mean(-1), ratio, bias=0.005)  # finite-n deviation of <r> at n = 100 is below 0.005 (arXiv:1212.5611)


finite_levels = st.lists(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False), min_size=3, max_size=60
)


@settings(max_examples=200, deadline=None)
@given(values=finite_levels, degree=st.integers(1, 6), trim=st.sampled_from([0.0, 0.1, 0.25]))
def test_unfolded_spacings_are_never_negative(values: list[float], degree: int, trim: float) -> None:
    x = torch.tensor(sorted(values), dtype=torch.float64)
    n = x.numel()
    if n < degree + 2 or n - 2 * math.floor(trim * n) < 2 or float(x.std()) == 0.0:
        return  # rejected with a ValueError: too few levels, or all equal
    s = unfolded_spacings(x, degree=degree, trim=trim)
    assert not bool((s < 0).any()), s  # NaN only when every kept unfolded level coincides (0 / 0)
