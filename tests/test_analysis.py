"""The shared per-matrix analysis against numpy and known ensembles (Wishart/GOE, Poisson levels)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from rmt_callbacks import analyze
from rmt_callbacks.analysis import ANALYSES, DEFAULT_ANALYSES, MatrixResult, analyze_views, to_rows
from rmt_callbacks.eigensolver import SCIPY_FROM, backend_for, scipy_blas, scipy_offered
from rmt_callbacks.laws import MEAN_SPACING_RATIO
from rmt_callbacks.spectral import MatrixView
from rmt_callbacks.spectral.stacks import GRAM_BLOCK


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Holder(nn.Module):
    """A module with one ``weight`` parameter of any shape (how the reference models hold an ensemble)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)


def _numpy_summary(w: np.ndarray) -> dict[str, float]:
    """The summary statistics of one matrix (M, N), straight from numpy."""
    m, n = w.shape
    eigs = np.linalg.eigvalsh(w.T @ w / m)  # ascending, N values
    bulk = eigs[max(n - m, 0) :]
    s = np.diff(bulk)
    r = np.minimum(s[:-1], s[1:]) / np.maximum(s[:-1], s[1:])
    return {
        "lambda_min": eigs[0],
        "lambda_max": eigs[-1],
        "lambda_mean": eigs.mean(),
        "spectral_norm": np.linalg.norm(w, 2),
        "stable_rank": np.linalg.norm(w, "fro") ** 2 / np.linalg.norm(w, 2) ** 2,
        "mean_spacing_ratio": r.mean(),
    }


def test_summary_of_a_linear_layer_against_numpy() -> None:
    layer = nn.Linear(64, 96)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(96, 64, generator=_gen(0), dtype=torch.float64))
    (result,) = analyze(nn.Sequential(layer), analyses=["summary"])
    expected = _numpy_summary(layer.weight.detach().double().numpy())
    assert result.name == "0.weight" and result.shape == (96, 64) and result.source == "linear"
    for stat, value in expected.items():
        assert result.metrics[stat] == pytest.approx(value, rel=1e-5), stat  # float32 weights, float64 analysis
    assert result.metrics["skipped"] == 0.0


@pytest.mark.parametrize("shape", [(3, 700, 300), (2, 300, 700), (1, 2 * GRAM_BLOCK + 17, 2 * GRAM_BLOCK + 17)])
def test_gram_spectra_from_blocks_and_panels_against_numpy(shape: tuple[int, int, int]) -> None:
    """Wider than one block of the lower-triangle product and taller than one row panel; tall, wide and square."""
    w = torch.randn(*shape, generator=_gen(11))  # float32 weights, as a model holds them
    (result,) = analyze_views([MatrixView("w", w, "ensemble")], analyses=["summary"])
    w64 = w.double().numpy()
    expected = np.linalg.eigvalsh(w64.transpose(0, 2, 1) @ w64 / shape[1])  # (B, N), N - M zeros first if wide
    # float64 eigvalsh: absolute error ~ N eps lambda_max ~ 700 * 1.1e-16 * lambda_max < 1e-12 lambda_max
    np.testing.assert_allclose(result.spectra["gram"].numpy(), expected, rtol=0, atol=1e-12 * expected.max())


def test_eigvalsh_reads_only_the_lower_triangle() -> None:
    """What the Gram products rely on: the blocks above the diagonal blocks are never written."""
    x = torch.randn(3, 50, 50, generator=_gen(13), dtype=torch.float64)
    x = x + x.mT
    garbage = x.clone()
    rows, cols = torch.triu_indices(50, 50, 1)
    garbage[:, rows, cols] = float("nan")
    assert torch.equal(torch.linalg.eigvalsh(garbage), torch.linalg.eigvalsh(x))


def test_defaults_decompose_each_matrix_once() -> None:
    model = nn.Linear(40, 40)
    (default,) = analyze(model)
    assert DEFAULT_ANALYSES == tuple(a for a in ANALYSES if a not in ("semicircle", "randomize"))
    assert set(default.spectra) == {"gram", "spacings"}  # no symmetric part: one eigendecomposition
    assert not any(k.startswith("semicircle_") for k in default.metrics)
    (asked,) = analyze(model, analyses=[*DEFAULT_ANALYSES, "semicircle"])
    assert asked.spectra["symmetric"].shape == (40,) and asked.metrics["semicircle_converged"] == 1.0
    others = {k: v for k, v in asked.metrics.items() if not k.startswith("semicircle_")}
    assert others == pytest.approx(default.metrics, rel=1e-6)  # the surmise fit's optimiser stops at ~1e-8


def test_ensemble_is_analysed_matrix_by_matrix_and_pooled_for_fits() -> None:
    w = torch.randn(6, 20, 30, generator=_gen(1), dtype=torch.float64)  # E = 6, M = 20 < N = 30: 10 zeros each
    (result,) = analyze(Holder(w))
    per_matrix = [_numpy_summary(w[e].numpy()) for e in range(6)]
    for stat in per_matrix[0]:
        assert result.metrics[stat] == pytest.approx(np.mean([p[stat] for p in per_matrix]), rel=1e-9), stat
    gram = result.spectra["gram"].numpy()
    assert gram.shape == (6, 30)
    np.testing.assert_allclose(gram, np.linalg.eigvalsh(np.einsum("emi,emj->eij", w, w) / 20), atol=1e-10)
    # sigma^2 = 1: the trace estimate averages E M N = 3600 squares, relative s.e. sqrt(2 / 3600) = 0.024; 5 s.e.
    assert result.metrics["mp_sigma2"] == pytest.approx(1.0, abs=0.12)
    assert result.metrics["mp_ratio"] == 1.5 and result.metrics["mp_converged"] == 1.0
    assert "semicircle_converged" not in result.metrics  # not square


def test_semicircle_of_the_symmetric_part() -> None:
    w = torch.randn(4, 100, 100, generator=_gen(2), dtype=torch.float64)
    (result,) = analyze(Holder(w), analyses=["semicircle"])
    # (W + W^T)/2 has off-diagonal variance v = 1/2: radius 2 sqrt(N v) = sqrt(200); the fit's relative bias is
    # ~1/(2N) and the pooled variance of 400 levels averages 20000 squares: 3% is > 5 standard errors.
    assert result.metrics["semicircle_radius"] == pytest.approx(200**0.5, rel=0.03)
    assert abs(result.metrics["semicircle_center"]) < 0.05 * 200**0.5
    sym = result.spectra["symmetric"].numpy()
    np.testing.assert_allclose(sym, np.linalg.eigvalsh((w + w.mT).numpy() / 2), atol=1e-10)
    assert set(result.metrics) == {"skipped", "semicircle_center", "semicircle_radius", "semicircle_ks",
                                   "semicircle_converged", "n_levels"}  # fmt: skip
    assert result.metrics["n_levels"] == 400  # the 4 x 100 levels the fit rests on


def test_level_statistics_separate_wishart_from_poisson() -> None:
    wishart = torch.randn(8, 400, 200, generator=_gen(3), dtype=torch.float64)
    (goe,) = analyze(Holder(wishart), analyses=["summary", "spacings"])
    # 8 x ~200 ratios with s.d. ~0.27: s.e. ~0.007; 0.03 is > 4 s.e.
    assert goe.metrics["mean_spacing_ratio"] == pytest.approx(MEAN_SPACING_RATIO["goe"], abs=0.03)
    assert goe.metrics["surmise_beta"] == pytest.approx(1.0, abs=0.2)  # ~1300 unfolded spacings
    # independent levels: W = diag(sqrt(M x)), x ~ Exp(1) i.i.d., so the Gram eigenvalues are the x_i
    x = -torch.log(torch.rand(8, 200, generator=_gen(4), dtype=torch.float64))
    (poisson,) = analyze(Holder(torch.diag_embed((200 * x).sqrt())), analyses=["summary", "spacings"])
    assert poisson.metrics["mean_spacing_ratio"] == pytest.approx(MEAN_SPACING_RATIO["poisson"], abs=0.03)
    # no level repulsion: a small beta, or the fit stops at its lower bound and says so (converged = 0)
    assert poisson.metrics.get("surmise_beta", 0.0) < 0.3


def test_small_matrices_use_the_ensemble_mean_spacing() -> None:
    w = torch.randn(500, 2, 2, generator=_gen(5), dtype=torch.float64)
    (result,) = analyze(Holder(w), analyses=["spacings"])
    eigs = np.linalg.eigvalsh(np.einsum("emi,emj->eij", w.numpy(), w.numpy()) / 2)
    gaps = eigs[:, 1] - eigs[:, 0]
    np.testing.assert_allclose(result.spectra["spacings"].numpy(), gaps / gaps.mean(), rtol=1e-9)
    assert result.metrics["surmise_converged"] == 1.0


def test_conv_attention_and_embedding_views() -> None:
    model = nn.ModuleDict(
        {"emb": nn.Embedding(40, 16), "conv": nn.Conv2d(4, 16, 3), "attn": nn.MultiheadAttention(16, 2)}
    )
    results = {r.name: r for r in analyze(model)}
    assert sorted(results) == ["attn.in_proj_weight.k", "attn.in_proj_weight.q", "attn.in_proj_weight.v",
                               "attn.out_proj.weight", "conv.weight", "emb.weight"]  # fmt: skip
    conv = results["conv.weight"]
    assert conv.shape == (9, 16, 4) and conv.spectra["gram"].shape == (9, 4)
    weight = model["conv"].weight.detach().double()
    np.testing.assert_allclose(
        conv.spectra["gram"][4].numpy(),  # kernel position (1, 1)
        np.linalg.eigvalsh(weight[:, :, 1, 1].T.numpy() @ weight[:, :, 1, 1].numpy() / 16),
        atol=1e-6,
    )
    q = model["attn"].in_proj_weight.detach().double()[:16]
    assert results["attn.in_proj_weight.q"].metrics["lambda_max"] == pytest.approx(
        np.linalg.eigvalsh(q.T.numpy() @ q.numpy() / 16)[-1], rel=1e-6
    )
    assert "semicircle_radius" not in results["attn.in_proj_weight.q"].metrics  # not a default analysis
    asked = {r.name: r for r in analyze(model, analyses=ANALYSES)}
    assert "semicircle_radius" in asked["attn.in_proj_weight.q"].metrics  # square: (16, 16)
    assert "semicircle_radius" not in asked["emb.weight"].metrics  # (40, 16) is not square


def test_bad_matrices_are_skipped_and_others_unaffected() -> None:
    good = torch.randn(30, 20, generator=_gen(6), dtype=torch.float64)
    nan = good.clone()
    nan[3, 4] = float("nan")
    views = [MatrixView("nan", nan, "matrix"), MatrixView("thin", good[:1], "matrix"), MatrixView("ok", good, "linear")]
    nan_r, thin_r, ok_r = analyze_views(views)
    assert nan_r.skipped == "weight must be finite, but 1 of its 600 entries are NaN or Inf (shape (30, 20))"
    assert thin_r.skipped.startswith("degenerate shape (1, 20)")
    assert nan_r.metrics == {"skipped": 1.0} and thin_r.metrics == {"skipped": 1.0}
    assert ok_r.skipped is None
    alone = analyze_views([MatrixView("ok", good, "linear")])[0].metrics
    assert ok_r.metrics == pytest.approx(alone, rel=1e-6)  # fits converge to ~1e-8 from eigenvalues equal to 1e-15


def test_failed_fits_report_converged_zero_and_why() -> None:
    (result,) = analyze_views([MatrixView("w", torch.eye(3, dtype=torch.float64) + 0.1, "matrix")], analyses=ANALYSES)
    assert result.skipped is None
    assert result.metrics["mp_converged"] == 0.0 and result.metrics["semicircle_converged"] == 0.0
    assert result.metrics["surmise_converged"] == 0.0
    assert "too few non-structural levels to fit: got 3" in result.failures["marchenko_pastur"]
    assert "too few for spacing statistics" in result.failures["spacings"]
    w = np.eye(3) + 0.1
    assert result.metrics["lambda_max"] == pytest.approx(np.linalg.eigvalsh(w.T @ w / 3)[-1])  # summary still there


def test_batched_shapes_equal_one_by_one() -> None:
    a, b = torch.randn(2, 40, 40, generator=_gen(7), dtype=torch.float64)
    together = analyze_views([MatrixView("a", a, "matrix"), MatrixView("b", b, "matrix")])
    alone = [analyze_views([MatrixView(n, w, "matrix")])[0] for n, w in (("a", a), ("b", b))]
    for t, s in zip(together, alone, strict=True):
        assert t.metrics.keys() == s.metrics.keys()
        for k in t.metrics:
            # batched and single eigvalsh agree to ~1e-15; iterative fits amplify that to their tolerance ~1e-8
            assert t.metrics[k] == pytest.approx(s.metrics[k], rel=1e-6, abs=1e-12), k


@pytest.mark.skipif(scipy_blas() is None, reason="scipy's bundled OpenBLAS not found")
def test_both_cpu_solvers_give_the_same_analysis() -> None:
    assert scipy_offered()  # one BLAS thread like torch's (conftest): "scipy" is not torch in disguise
    model = nn.Sequential(nn.Linear(60, 60), nn.Linear(60, 90), nn.Linear(90, 40))
    by_solver = {solver: analyze(model, analyses=ANALYSES, solver=solver) for solver in ("torch", "scipy")}
    for t, s in zip(by_solver["torch"], by_solver["scipy"], strict=True):
        # LAPACK's backward error ~ n eps ||X||, n <= 90: Gram spectra in float64, symmetric parts in float32
        for kind, eps in (("gram", 2.2e-16), ("symmetric", 1.2e-7)):
            if kind in t.spectra:
                atol = 90 * eps * float(t.spectra[kind].abs().max())
                np.testing.assert_allclose(s.spectra[kind], t.spectra[kind], rtol=0, atol=atol)
        np.testing.assert_allclose(s.spectra["spacings"], t.spectra["spacings"], rtol=1e-9)
        for key, value in t.metrics.items():  # fits stop at ~1e-8; the semicircle's from float32 levels (~1e-6)
            rel = 1e-4 if key.startswith("semicircle_") else 1e-6
            assert s.metrics[key] == pytest.approx(value, rel=rel, abs=1e-12), key


REPEAT = """
import hashlib, json, torch
from torch import nn
from rmt_callbacks import analyze
from rmt_callbacks.analysis import ANALYSES
from rmt_callbacks.eigensolver import backend_for, scipy_offered
g = torch.Generator().manual_seed(0)
model = nn.Sequential(nn.Linear(300, 260), nn.Linear(256, 256), nn.Linear(48, 40))  # scipy's, scipy's, torch's
with torch.no_grad():
    for p in model.parameters():
        p.copy_(torch.randn(p.shape, generator=g) / 16)
result = analyze(model, analyses=ANALYSES)
metrics = {r.name: {k: float(v).hex() for k, v in r.metrics.items()} for r in result}
digest = lambda t: hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()
spectra = {f"{r.name}/{k}": digest(v) for r in result for k, v in r.spectra.items() if k != "spacings"}
print(json.dumps([scipy_offered(), backend_for("auto", torch.empty(0, 256, 256)), spectra, metrics]))
"""


def _repeat_here() -> list:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(REPEAT, {})
    return json.loads(printed.getvalue())


def test_an_analysis_repeated_gives_the_same_bits_in_this_process_and_in_fresh_ones() -> None:
    """What a timing race between the two CPU solvers broke: the backend of a stack depends on its size and the
    environment only, so the same analysis gives bit-identical spectra and metrics, repeated here or in two fresh
    processes (one BLAS thread like torch's, as here, so that scipy's is offered above the crossover).

    The unfolding's polynomial fit is part of this: torch's ``lstsq`` (MKL's ``gelsy``) rounded differently with
    where its buffers lay in memory, so it is now fitted by Householder QR (:mod:`rmt_callbacks.spectral.spacing`).
    """
    first, second = _repeat_here(), _repeat_here()
    assert first == second and len(first[3]) == 3  # in one process: every metric to the bit
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    runs = [
        json.loads(subprocess.run([sys.executable, "-c", REPEAT], capture_output=True, text=True, check=True, env=env)
                   .stdout)
        for _ in range(2)
    ]  # fmt: skip
    assert runs[0] == runs[1] and len(runs[0][3]) == 3  # the same backends, levels and metrics, to the bit
    if scipy_blas() is not None:  # both backends took part, here and there
        assert first[:2] == runs[0][:2] == [True, "scipy"] and SCIPY_FROM <= 256
        assert backend_for("auto", torch.empty(0, 40, 40)) == "torch"


def test_no_rng_no_grad_no_mutation() -> None:
    model = nn.Sequential(nn.Linear(32, 48), nn.Linear(48, 48))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.random.get_rng_state()
    results = analyze(model)
    assert torch.equal(torch.random.get_rng_state(), rng)  # no global random number drawn
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    for r in results:
        for t in r.spectra.values():
            assert not t.requires_grad and t.untyped_storage().data_ptr() not in params


def test_to_rows_is_a_table() -> None:
    rows = to_rows([MatrixResult("a", (2, 3), "linear", {"skipped": 0.0, "lambda_max": 1.5}, failures={"x": "y"}),
                    MatrixResult("b", (3, 3), "matrix", {"skipped": 1.0}, skipped="NaN", method=None)])  # fmt: skip
    assert rows == [
        {"name": "a", "shape": "(2, 3)", "source": "linear", "method": "eigvalsh", "skip_reason": None,
         "failures": "x: y", "skipped": 0.0, "lambda_max": 1.5},
        {"name": "b", "shape": "(3, 3)", "source": "matrix", "method": None, "skip_reason": "NaN", "failures": "",
         "skipped": 1.0},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"analyses": ["summary", "alpha"]}, ValueError, r"analyses must be a non-empty list of names from"),
        ({"analyses": "summary"}, TypeError, r"analyses must be a list of names"),
        ({"include": "0.*"}, TypeError, r"include must be a list of fnmatch patterns, got the str"),
        ({"conv": "unroll"}, ValueError, r"conv must be one of \('slices', 'flatten'\), got 'unroll'"),
        ({"dense_limit": 1}, ValueError, r"dense_limit must be an int >= 2, got 1"),
        ({"solver": "mkl"}, ValueError, r"solver must be one of \('auto', 'torch', 'scipy'\), got 'mkl'"),
        ({"solver": None}, ValueError, r"solver must be one of \('auto', 'torch', 'scipy'\), got None"),
        (
            {"include": ["nothing"]},
            ValueError,
            r"matches no matrix of Sequential; parameters with ndim >= 2: \['0.weight'",
        ),
    ],
)
def test_bad_arguments(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        analyze(nn.Sequential(nn.Linear(4, 3)), **kwargs)


def test_a_bad_solver_is_refused_before_anything_is_read_or_decomposed() -> None:
    with pytest.raises(ValueError, match=r"solver must be one of .*, got 'MKL'"):
        analyze("no/such/file.pt", solver="MKL")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"solver must be one of .*, got 'fast'"):
        analyze_views([MatrixView("w", torch.eye(3), "linear")], solver="fast")  # type: ignore[arg-type]


def test_analysis_loads_no_framework() -> None:
    names = ("lightning", "mlflow", "matplotlib")
    code = f"import sys, rmt_callbacks.analysis\nprint([m for m in {names!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_undefined_statistics_are_left_out_not_nan() -> None:
    (result,) = analyze(Holder(torch.randn(50, 2, 2, generator=_gen(8), dtype=torch.float64)), analyses=["summary"])
    assert "mean_spacing_ratio" not in result.metrics  # 2 levels: no ratio of consecutive spacings
    assert all(np.isfinite(v) for v in result.metrics.values()) and "stable_rank" in result.metrics


def test_past_the_dense_limit_the_density_is_estimated_against_numpy() -> None:
    """``dense_limit`` lowered to 300: a (600, 400) Gaussian matrix gets an SLQ density, not exact levels."""
    w = torch.randn(600, 400, generator=_gen(9), dtype=torch.float64)
    small = torch.randn(30, 20, generator=_gen(10), dtype=torch.float64)
    est, exact = analyze_views([MatrixView("w", w, "linear"), MatrixView("s", small, "linear")], dense_limit=300)
    assert est.method == "slq" and exact.method == "eigvalsh" and est.skipped is None
    eigs = np.linalg.eigvalsh(w.numpy().T @ w.numpy() / 600)
    assert est.metrics["lambda_mean"] == pytest.approx(eigs.mean(), rel=1e-12)  # exact: ||W||_F^2 / (M N)
    # Ritz values approach the top edge from inside, fast: measured 3e-5 to 7e-5 low over 4 seeds; bound 1%
    assert eigs[-1] * 0.99 <= est.metrics["lambda_max"] <= eigs[-1] * (1 + 1e-9)
    assert est.metrics["spectral_norm"] == pytest.approx(np.sqrt(600 * est.metrics["lambda_max"]))
    assert est.metrics["stable_rank"] == pytest.approx(400 * eigs.mean() / est.metrics["lambda_max"])
    assert "mean_spacing_ratio" not in est.metrics and est.metrics["estimated"] == 1.0
    assert est.metrics["mp_converged"] == 0.0 and "needs the exact levels" in est.failures["marchenko_pastur"]
    assert "semicircle" not in est.failures  # not square: never attempted
    edges, density = est.spectra["density_edges"], est.spectra["density"]
    cdf = np.concatenate([[0.0], np.cumsum(density.numpy() * np.diff(edges.numpy()))])
    empirical = np.searchsorted(eigs, edges.numpy(), side="right") / eigs.size
    # KS distance on the bin edges (a 100-bin L1 at n = 400 would measure the ~4 levels per bin, not SLQ): the
    # empirical CDF of rigid levels is within ~log(n)/n = 0.015 of its limit, SLQ's own error is ~0.01 (measured
    # 0.011-0.022 over 4 seeds); 0.05 leaves room for both
    assert np.abs(cdf - empirical).max() < 0.05
    assert to_rows([est])[0]["method"] == "slq"


def test_batched_estimates_are_pooled_on_common_edges() -> None:
    w = torch.randn(3, 200, 100, generator=_gen(11))
    (r,) = analyze_views([MatrixView("e", w, "ensemble")], dense_limit=50)
    assert r.method == "slq" and r.spectra["gram"].shape == (3, 0)
    mass = (r.spectra["density"] * r.spectra["density_edges"].diff()).sum()
    assert float(mass) == pytest.approx(1.0, abs=1e-9)
    assert r.metrics["lambda_mean"] == pytest.approx(float(w.double().square().sum()) / (3 * 200 * 100), rel=1e-9)


def test_symmetric_part_of_float32_weights_in_float32_gram_in_float64() -> None:
    w = torch.randn(64, 64, generator=_gen(12))  # float32, as a Linear layer holds it
    (r,) = analyze_views([MatrixView("w", w, "linear")], analyses=["summary", "semicircle"])
    s = w.double().numpy()
    sym, gram = np.linalg.eigvalsh((s + s.T) / 2), np.linalg.eigvalsh(s.T @ s / 64)
    # float32 eigvalsh: backward error ~ n * eps32 * ||S|| = 64 * 6e-8 * ||S|| ~ 4e-6 ||S|| (LAPACK's bound)
    assert np.abs(r.spectra["symmetric"].numpy() - sym).max() <= 4e-6 * np.abs(sym).max()
    # float64 Gram: the smallest (hard-edge, q = 1) levels keep their relative accuracy
    assert np.allclose(r.spectra["gram"].numpy(), gram, rtol=1e-6, atol=1e-12 * gram.max())
