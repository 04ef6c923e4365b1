"""esd against numpy's eigvalsh / svd, its exact structural zeros, and the validation of its input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rmt_callbacks.spectral import esd, validate_matrix

SHAPES = [(9, 5), (5, 9), (6, 6), (3, 9, 5), (2, 3, 5, 9)]  # tall, wide, square, batched


def _weight(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def _atol(w: torch.Tensor, scale: float) -> float:
    """Round-off of an eigen-decomposition: a few ulps of the largest eigenvalue."""
    return 50 * torch.finfo(w.dtype).eps * scale


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_gram_matches_numpy_eigvalsh(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    w = _weight(shape, dtype)
    m = shape[-2]
    a = w.double().numpy()
    ref = np.linalg.eigvalsh(np.swapaxes(a, -1, -2) @ a / m)  # (..., N), ascending
    got = esd(w)
    assert got.shape == (*shape[:-2], shape[-1]) and got.dtype == dtype
    np.testing.assert_allclose(got.double().numpy(), ref, rtol=0, atol=_atol(w, ref.max()))
    np.testing.assert_allclose(esd(w, normalize=False).double().numpy(), m * ref, atol=m * _atol(w, ref.max()))


@pytest.mark.parametrize("shape", [(3, 8), (2, 4, 11)])
def test_wide_gram_pads_exact_zeros(shape: tuple[int, ...]) -> None:
    w = _weight(shape, torch.float64)
    m, n = shape[-2:]
    got = esd(w)
    assert torch.equal(got[..., : n - m], torch.zeros(*shape[:-2], n - m, dtype=torch.float64))
    assert bool((got[..., n - m :] > 1e-3).all())  # a Gaussian matrix has full rank: the rest are not zeros
    full = torch.linalg.eigvalsh(w.mT @ w / m)  # the N x N route gives round-off instead of zeros
    torch.testing.assert_close(got, full.clamp_min(0.0), rtol=0, atol=1e-12)


def test_round_off_negatives_are_clamped_to_zero() -> None:
    g = torch.Generator().manual_seed(3)
    u, v = torch.randn(200, 8, 1, generator=g), torch.randn(200, 1, 6, generator=g)
    w = u @ v  # rank one: five exact zeros among six Gram eigenvalues
    assert bool((torch.linalg.eigvalsh(w.mT @ w / 8) < 0).any())  # the raw decomposition does go negative
    got = esd(w)
    assert bool((got >= 0).all())
    torch.testing.assert_close(got[..., -1], (w**2).sum((-2, -1)) / 8)  # the one non-zero eigenvalue


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_singular_values_match_numpy_svd(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    w = _weight(shape, dtype, seed=1)
    ref = np.sort(np.linalg.svd(w.double().numpy(), compute_uv=False), axis=-1)
    got = esd(w, kind="singular")
    assert got.shape == (*shape[:-2], min(shape[-2:])) and got.dtype == dtype
    np.testing.assert_allclose(got.double().numpy(), ref, rtol=0, atol=_atol(w, ref.max()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(7, 7), (4, 7, 7)])
def test_symmetric_part_matches_numpy_eigvalsh(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    w = _weight(shape, dtype, seed=2)
    a = w.double().numpy()
    ref = np.linalg.eigvalsh((a + np.swapaxes(a, -1, -2)) / 2)
    got = esd(w, kind="symmetric")
    assert got.dtype == dtype
    np.testing.assert_allclose(got.double().numpy(), ref, rtol=0, atol=_atol(w, np.abs(ref).max()))


def test_symmetric_needs_a_square_matrix() -> None:
    with pytest.raises(ValueError, match=r"square.*\(4, 5\)"):
        esd(torch.ones(4, 5), kind="symmetric")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_decomposed_in_float32(dtype: torch.dtype) -> None:
    w = _weight((9, 5), dtype)
    got = esd(w)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, esd(w.float()))  # same input values, upcast first


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"kind must be one of .*'gram'.*got 'svd'"):
        esd(torch.ones(3, 3), kind="svd")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ([[1.0, 2.0]], TypeError, "must be a torch.Tensor, got list"),
        (torch.ones(3, 3, dtype=torch.int64), TypeError, "real floating dtype.*got torch.int64"),
        (torch.ones(3, 3, dtype=torch.complex64), TypeError, "real floating dtype.*got torch.complex64"),
        (torch.ones(3), ValueError, r"at least 2 dimensions.*got shape \(3,\)"),
        (torch.ones(0, 3), ValueError, r"empty dimension.*\(0, 3\)"),
        (torch.ones(2, 0, 3), ValueError, r"empty dimension.*\(2, 0, 3\)"),
    ],
)
def test_validation_errors(value: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        esd(value)  # type: ignore[arg-type]


def test_non_finite_entries_are_counted() -> None:
    w = torch.ones(3, 4)
    w[0, 1], w[2, 2] = float("nan"), float("inf")
    with pytest.raises(ValueError, match=r"2 of its 12 entries are NaN or Inf \(shape \(3, 4\)\)"):
        esd(w)
    with pytest.raises(ValueError, match=r"^layer\.weight must be finite"):
        validate_matrix(w, name="layer.weight")
    validate_matrix(torch.ones(3, 4))  # a valid matrix passes silently


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["gram", "singular"])
@pytest.mark.parametrize("shape", [(40, 30), (30, 40), (3, 40, 30)])
def test_cuda_result_stays_on_device_and_matches_cpu(kind: str, shape: tuple[int, ...]) -> None:
    w = _weight(shape, torch.float32, seed=4)
    got = esd(w.cuda(), kind=kind)  # type: ignore[arg-type]
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), esd(w, kind=kind), rtol=0, atol=1e-4)  # type: ignore[arg-type]
