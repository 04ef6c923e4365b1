"""Spectrum statistics against torch.linalg.matrix_norm and direct computations on W."""

from __future__ import annotations

import math
import re

import pytest
import torch

from rmt_callbacks.spectral import esd, mean_spacing_ratio, spectral_norm, spectrum_summary, stable_rank


def _weight(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("shape", [(30, 12), (12, 30), (4, 20, 20)])
def test_norms_match_matrix_norm(shape: tuple[int, ...]) -> None:
    w = _weight(shape)
    eigs = esd(w)
    two = torch.linalg.matrix_norm(w, ord=2)
    fro = torch.linalg.matrix_norm(w, ord="fro")
    torch.testing.assert_close(spectral_norm(eigs, rows=shape[-2]), two, rtol=1e-12, atol=0)
    torch.testing.assert_close(stable_rank(eigs), fro**2 / two**2, rtol=1e-12, atol=0)
    torch.testing.assert_close(spectral_norm(esd(w, normalize=False), rows=1), two, rtol=1e-12, atol=0)


def test_stable_rank_bounds_and_zero_matrix() -> None:
    eigs = torch.tensor([[0.0, 0.0, 5.0], [2.0, 2.0, 2.0], [0.0, 0.0, 0.0]])
    r = stable_rank(eigs)
    assert r[0].item() == 1.0 and r[1].item() == 3.0  # rank one, and a multiple of an isometry
    assert math.isnan(r[2].item())  # ||0||_F^2 / ||0||_2^2 is undefined


@pytest.mark.parametrize("shape", [(30, 12), (12, 30), (2, 3, 25, 20)])
def test_summary_keys_shapes_and_values(shape: tuple[int, ...]) -> None:
    w = _weight(shape, seed=1)
    m, n = shape[-2:]
    summary = spectrum_summary(esd(w), rows=m, min_ratios=1)  # the default MIN_RATIOS: tests/test_analysis_levels.py
    assert set(summary) == {
        "lambda_min",
        "lambda_max",
        "lambda_mean",
        "spectral_norm",
        "stable_rank",
        "mean_spacing_ratio",
    }
    assert all(v.shape == shape[:-2] for v in summary.values())
    torch.testing.assert_close(summary["lambda_mean"], (w**2).sum((-2, -1)) / (m * n))
    torch.testing.assert_close(summary["lambda_max"], torch.linalg.matrix_norm(w, ord=2) ** 2 / m)
    smallest = torch.linalg.svdvals(w)[..., -1] ** 2 / m if n <= m else torch.zeros(shape[:-2], dtype=w.dtype)
    torch.testing.assert_close(summary["lambda_min"], smallest)
    nonzero = torch.linalg.eigvalsh(w @ w.mT if n > m else w.mT @ w)  # the min(M, N) non-structural levels
    torch.testing.assert_close(summary["mean_spacing_ratio"], mean_spacing_ratio(nonzero))


def test_summary_of_too_few_levels_has_a_nan_ratio() -> None:
    summary = spectrum_summary(esd(_weight((2, 5))), rows=2)  # two non-zero levels: no ratio
    assert math.isnan(summary["mean_spacing_ratio"].item())
    assert summary["lambda_min"].item() == 0.0


@pytest.mark.parametrize("rows", [0, -3, 2.0, True])
def test_rows_must_be_a_positive_int(rows: object) -> None:
    with pytest.raises(ValueError, match=f"rows must be a positive int.*got {re.escape(repr(rows))}"):
        spectral_norm(torch.ones(3), rows=rows)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rows must be a positive int"):
        spectrum_summary(torch.ones(3), rows=rows)  # type: ignore[arg-type]


def test_eigenvalues_are_validated() -> None:
    with pytest.raises(ValueError, match="1 of its 2 entries are NaN or Inf"):
        stable_rank(torch.tensor([1.0, float("inf")]))
    with pytest.raises(TypeError, match=r"must be a torch\.Tensor"):
        stable_rank([1.0, 2.0])  # type: ignore[arg-type]
