"""Property-based: the pure analysis layer never raises on bad weights, and says exactly when it skips.

Over shapes (empty, 1×n, n×1, batched), dtypes (half, bfloat16, float32/64, integer, bool, complex), layouts
(contiguous, transposed) and values (Gaussian, zeros, constants, huge, tiny, NaN, Inf), for every matrix view:

* :func:`~rmt_callbacks.analysis.analyze_views` returns one result per view and raises nothing;
* a view is skipped iff it is not a real floating tensor, has an empty dimension or one of size 1, or holds a
  NaN/Inf (or the eigensolver gives up on, or the spectrum overflows for, a finite but extreme matrix, with a
  reason saying so);
* a skipped view logs ``skipped = 1`` and nothing else; an analysed one ``skipped = 0``, and every value is a
  finite float (nothing MLflow would store as NaN);
* a healthy view gets the same metrics whatever bad views share its call (bad input does not leak).
"""

from __future__ import annotations

import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rmt_callbacks.analysis import ANALYSES, MAX_DENSE_LEVELS, analyze_views
from rmt_callbacks.spectral import MatrixView

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64, torch.bool, torch.complex64]
FILLS = ["gauss", "zeros", "const", "huge", "tiny", "nan", "inf"]
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def views(draw: st.DrawFn) -> tuple[MatrixView, bool]:
    """A view and whether it should be analysed (before the eigensolver has its say)."""
    batch = draw(st.lists(st.integers(0, 3), max_size=2))
    m, n = draw(st.integers(0, 9)), draw(st.integers(0, 9))
    dtype, fill = draw(st.sampled_from(DTYPES)), draw(st.sampled_from(FILLS))
    seed = draw(st.integers(0, 2**16))
    x = torch.randn(*batch, m, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = {"gauss": x, "zeros": 0 * x, "const": 0 * x + 3.0, "huge": x * 1e200, "tiny": x * 1e-300}.get(fill, x)
    if fill in ("nan", "inf") and x.numel():
        x.view(-1)[draw(st.integers(0, x.numel() - 1))] = float(fill)
    w = x.to(dtype) if not dtype.is_complex else torch.complex(x, x).to(dtype)
    if draw(st.booleans()):
        w = w.mT.contiguous().mT  # same values, transposed strides: non-contiguous
    finite = bool(torch.isfinite(w).all()) if w.dtype.is_floating_point else False
    healthy = w.dtype.is_floating_point and w.numel() > 0 and min(m, n) >= 2 and finite
    return MatrixView("w", w, "ensemble" if batch else "matrix"), healthy


def _check(result, healthy: bool) -> None:
    assert set(result.metrics) >= {"skipped"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in result.metrics.values()), result.metrics
    if result.skipped is not None:
        assert result.metrics == {"skipped": 1.0}
        assert isinstance(result.skipped, str) and result.skipped
        assert healthy is False or result.skipped.startswith("eigendecomposition failed"), result.skipped
    else:
        assert healthy, result  # everything that should be skipped was
        assert result.metrics["skipped"] == 0.0 and "lambda_max" in result.metrics


@SETTINGS
@given(views())
def test_any_view_is_analysed_or_skipped_never_raised(case: tuple[MatrixView, bool]) -> None:
    view, healthy = case
    (result,) = analyze_views([view], analyses=ANALYSES)
    _check(result, healthy)
    assert result.shape == tuple(view.matrix.shape)


@SETTINGS
@given(st.lists(views(), min_size=1, max_size=4), st.integers(0, 2**16))
def test_bad_views_do_not_change_healthy_ones(cases: list[tuple[MatrixView, bool]], seed: int) -> None:
    good = MatrixView("good", torch.randn(12, 8, generator=torch.Generator().manual_seed(seed)), "linear")
    alone = analyze_views([good], analyses=ANALYSES)[0]
    results = analyze_views([good, *(v for v, _ in cases)], analyses=ANALYSES)
    assert len(results) == 1 + len(cases)
    for result, (_, healthy) in zip(results[1:], cases, strict=True):
        _check(result, healthy)
    assert results[0].skipped is None
    for key, value in alone.metrics.items():  # batched with equal shapes or not: same to round-off
        assert math.isclose(results[0].metrics[key], value, rel_tol=1e-6, abs_tol=1e-9), key


def test_finite_entries_whose_squares_overflow_are_skipped_and_do_not_leak() -> None:
    """Entries near 1e200 are finite, their Gram matrix is not: that batch is skipped, its shape-mate is not."""
    g = torch.Generator().manual_seed(0)
    huge = MatrixView("huge", torch.randn(2, 2, generator=g, dtype=torch.float64) * 1e200, "matrix")
    fine = MatrixView("fine", torch.randn(2, 2, generator=g, dtype=torch.float64), "matrix")
    huge_r, fine_r = analyze_views([huge, fine], analyses=ANALYSES)
    assert huge_r.metrics == {"skipped": 1.0}
    assert huge_r.skipped.startswith("eigendecomposition failed: the spectrum overflows float64"), huge_r.skipped
    assert fine_r.skipped is None and math.isfinite(fine_r.metrics["lambda_max"])


def test_nan_matrix_beyond_the_dense_solver_is_skipped_without_a_dense_pass() -> None:
    """An expanded (stride-0) view: huge shape, one stored NaN; refused for the NaN from its one stored entry."""
    k = MAX_DENSE_LEVELS + 1
    big = MatrixView("big", torch.full((1, 1), float("nan")).expand(k, k + 3), "matrix")
    small = MatrixView("small", torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), "matrix")
    big_r, small_r = analyze_views([big, small], analyses=ANALYSES)
    assert big_r.skipped == (
        f"weight must be finite, but {k * (k + 3)} of its {k * (k + 3)} entries are NaN or Inf (shape ({k}, {k + 3}))"
    )
    assert big_r.metrics == {"skipped": 1.0} and big_r.method is None
    assert small_r.skipped is None and small_r.method == "eigvalsh"  # the healthy one is still analysed exactly


def test_finite_matrix_beyond_the_dense_solver_is_estimated_not_skipped() -> None:
    """A constant expanded (k, k) view: rank one, X = c^2 k 11^T / k has the single non-zero level c^2 k."""
    k, c = MAX_DENSE_LEVELS + 1, 0.5
    (r,) = analyze_views([MatrixView("big", torch.full((1, 1), c).expand(k, k), "matrix")], analyses=ANALYSES)
    assert r.skipped is None and r.method == "slq" and r.metrics["estimated"] == 1.0
    assert r.metrics["lambda_mean"] == c * c  # ||W||_F^2 / (M N), exact in float64
    # float32 products of length k: worst-case relative rounding k * eps32 = 8192 * 6e-8 = 5e-4
    assert math.isclose(r.metrics["lambda_max"], c * c * k, rel_tol=5e-4)
    assert set(r.failures) == {"marchenko_pastur", "semicircle", "spacings", "power_law", "randomize"}
    assert all("needs the exact levels" in why for why in r.failures.values())
    assert r.spectra["gram"].numel() == 0  # no exact levels
    mass = float((r.spectra["density"] * r.spectra["density_edges"].diff()).sum())
    assert math.isclose(mass, 1.0, rel_tol=1e-9)
    _check(r, healthy=True)
