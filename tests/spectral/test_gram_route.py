"""The Gram levels of ``stacked_levels(flats, "gram")`` against float64 singular values, at the accuracy the
statistics need, on the matrices a faster route is most likely to get wrong (issue 15, "Speed against the peer").

Tolerance (``SPACING_TOL``): every level within 1e-2 of its local mean spacing (the mean gap over ±5 levels of the
reference), the hard edge of a square matrix included. The statistics read the levels through their spacings:
⟨r⟩ and the spacing distribution are ratios of neighbouring gaps, the unfolding divides by the local mean
spacing, and their sampling errors at n levels are ≈ 1/√n (≥ 1e-2 up to n = 10⁴ levels); an error of 1e-2 of a
spacing moves each gap ratio by ≈ 2e-2 of itself at worst, at random, so the averages move far less than their
sampling error. The Marchenko–Pastur and power-law fits need levels to a relative accuracy far below 1/√n;
``LMAX_RTOL`` checks λ_max to 1e-6 (float32 routes reach ~1e-6, ``benchmarks/RESULTS.md``). A float32 Gram
product fails the spacing test at the hard edge of a spiked square matrix (errors of 0.05–0.15 of the spacing,
``benchmarks/bench_peer.py --routes``), which is why the Gram matrices are formed in float64.
"""

from __future__ import annotations

import pytest
import torch

from rmt_callbacks.eigensolver import scipy_offered
from rmt_callbacks.spectral import stacks
from rmt_callbacks.spectral.stacks import stacked_levels

SPACING_TOL = 1e-2
LMAX_RTOL = 1e-6
ZERO_TOL = 1e-10  # levels of an exactly rank-deficient matrix, relative to lambda_max (float64 rounding: ~1e-15)


def _reference(w: torch.Tensor) -> torch.Tensor:
    """Ascending :math:`s^2/M` from float64 singular values of ``w`` ``(B, M, N)``, with the ``N - M`` zeros."""
    m, n = w.shape[-2:]
    levels = torch.linalg.svdvals(w.double()).flip(-1).square() / m
    return torch.cat([levels.new_zeros(*levels.shape[:-1], n - m), levels], dim=-1) if n > m else levels


def _local_spacing(ref: torch.Tensor, h: int = 5) -> torch.Tensor:
    k = ref.shape[-1]
    idx = torch.arange(k)
    lo, hi = (idx - h).clamp_min(0), (idx + h).clamp_max(k - 1)
    return (ref[..., hi] - ref[..., lo]) / (hi - lo)


def _check(levels: torch.Tensor | str, w: torch.Tensor) -> None:
    assert not isinstance(levels, str), levels
    ref = _reference(w)
    assert levels.shape == ref.shape and levels.dtype == torch.float64
    top = ref[..., -1:]
    torch.testing.assert_close(levels[..., -1:], top, rtol=LMAX_RTOL, atol=0)
    zero = ref <= ZERO_TOL * top  # structural zeros and the null space of a rank-deficient matrix
    assert bool((levels[zero] <= ZERO_TOL * top.expand_as(ref)[zero]).all())
    m, n = w.shape[-2:]
    if n > m:
        assert bool((levels[..., : n - m] == 0).all())  # structural zeros, exactly
    for row, r, z in zip(levels, ref, zero, strict=True):
        live = r[~z]
        err = (row[~z] - live).abs() / _local_spacing(live)
        assert float(err.max()) <= SPACING_TOL, float(err.max())


def _gaussian(b: int, m: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, m, n, generator=g) / m**0.5


def _spiked(b: int, m: int, n: int, seed: int) -> torch.Tensor:
    """Gaussian plus 8 rank-one spikes of strength 3..30: a trained layer's outliers, λ_max ≈ 900 × the bulk's."""
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(b, m, 8, generator=g, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(b, n, 8, generator=g, dtype=torch.float64))[0]
    spikes = u @ torch.diag(torch.linspace(3, 30, 8, dtype=torch.float64)) @ v.mT
    return (_gaussian(b, m, n, seed + 1).double() + spikes).float()


def _heavy(b: int, m: int, n: int, seed: int) -> torch.Tensor:
    """Student-t entries (2.5 degrees of freedom): a heavy-tailed spectrum."""
    torch.manual_seed(seed)
    return torch.distributions.StudentT(torch.tensor(2.5)).sample((b, m, n)) / m**0.5


@pytest.fixture(params=["torch", "scipy"])
def solver(request: pytest.FixtureRequest) -> str:
    """The ``solver`` argument; ``"scipy"`` only where it is offered (else it would be torch's again)."""
    if request.param == "scipy" and not scipy_offered():
        pytest.skip("scipy's bundled OpenBLAS not found, or not at torch's thread count")
    return request.param


@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (_gaussian, (2, 256, 256)),  # square: the hard edge, levels ~ lambda_max / (4 N^2)
        (_gaussian, (2, 96, 256)),  # wide: 160 structural zeros
        (_gaussian, (2, 256, 96)),  # tall
        (_spiked, (1, 512, 512)),  # spiked square: a float32 Gram product misses by 0.05 spacing here
        (_spiked, (1, 300, 120)),
        (_heavy, (2, 200, 200)),
    ],
    ids=["square", "wide", "tall", "spiked-square", "spiked-tall", "heavy-tailed"],
)
def test_levels_within_a_hundredth_of_the_local_spacing(make, shape, solver) -> None:
    w = make(*shape, seed=0)
    (levels,) = stacked_levels([w], "gram", solver)
    _check(levels, w)


def test_rank_deficient_levels(solver) -> None:
    g = torch.Generator().manual_seed(3)
    w = torch.randn(2, 240, 180, generator=g) @ torch.randn(2, 180, 240, generator=g) / 240  # rank 180 of 240
    (levels,) = stacked_levels([w], "gram", solver)
    _check(levels, w)
    assert int((levels < ZERO_TOL * levels[..., -1:]).sum()) == 2 * 60


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_are_decomposed_exactly(dtype, solver) -> None:
    w = _spiked(2, 192, 192, seed=5).to(dtype)  # the reference is the same half-precision values in float64
    (levels,) = stacked_levels([w], "gram", solver)
    _check(levels, w)


def test_views_split_across_stacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stacks, "STACK_BYTES", 3 * 128 * 128 * 8)  # three matrices per stack
    views = [_spiked(2, 128, 160, seed=7), _gaussian(3, 128, 160, seed=8)]
    for levels, w in zip(stacked_levels(views, "gram"), views, strict=True):
        _check(levels, w)
