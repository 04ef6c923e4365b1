r"""Empirical spectral densities: eigenvalues or singular values of (batches of) weight matrices.

Conventions (orientation ``(..., M, N)``, Gram normalisation :math:`W^\top W / M`, ascending order, device and
dtype): :mod:`rmt_callbacks.spectral`.
"""

from __future__ import annotations

from typing import Literal

import torch

from .._checks import one_of

__all__ = ["esd", "validate_matrix"]

_KINDS = ("gram", "singular", "symmetric")
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def validate_matrix(weight: object, *, name: str = "weight") -> None:
    """Check that ``weight`` is a finite, real floating tensor of shape ``(..., M, N)`` with no empty dimension.

    Args:
        weight: the tensor to check, shape ``(..., M, N)``.
        name: how the argument is called in the error messages.

    Finiteness costs one sum over the stored entries (no mask is allocated; the entries are counted only when
    the sum is not finite), and an expanded (stride-0) tensor is checked on the entries it stores, so the
    check is cheap for any size.

    Raises:
        TypeError: ``weight`` is not a ``torch.Tensor``, or its dtype is not a real floating type (integer,
            boolean and complex tensors are rejected).
        ValueError: ``weight`` has fewer than 2 dimensions, an empty dimension, or non-finite entries
            (the message says how many).

    Example:
        >>> validate_matrix(torch.ones(3, 2))
        >>> validate_matrix(torch.ones(3))
        Traceback (most recent call last):
        ...
        ValueError: weight must have at least 2 dimensions (..., M, N), got shape (3,)
    """
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(weight).__name__}")
    if not weight.dtype.is_floating_point:
        raise TypeError(
            f"{name} must have a real floating dtype (float16, bfloat16, float32, float64), got {weight.dtype}"
        )
    shape = tuple(weight.shape)
    if weight.ndim < 2:
        raise ValueError(f"{name} must have at least 2 dimensions (..., M, N), got shape {shape}")
    if weight.numel() == 0:
        raise ValueError(f"{name} must not have an empty dimension, got shape {shape}")
    stored, copies = _stored(weight)
    if bool(torch.isfinite(stored.sum())):  # one pass, no mask: a finite sum means every entry is finite
        return
    bad = int((~torch.isfinite(stored)).sum()) * copies  # NaN/Inf, or a sum that overflowed: count them
    if bad:
        raise ValueError(
            f"{name} must be finite, but {bad} of its {weight.numel()} entries are NaN or Inf (shape {shape})"
        )


def _stored(weight: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The entries ``weight`` actually stores, and how often each appears: an expanded (stride-0) dimension is
    one stored slice repeated, so it is narrowed to length 1 (a huge expanded matrix is checked in O(1))."""
    copies = 1
    for dim, (size, stride) in enumerate(zip(weight.shape, weight.stride(), strict=True)):
        if stride == 0 and size > 1:
            weight, copies = weight.narrow(dim, 0, 1), copies * size
    return weight, copies


def esd(
    weight: torch.Tensor,
    *,
    kind: Literal["gram", "singular", "symmetric"] = "gram",
    normalize: bool = True,
) -> torch.Tensor:
    r"""The spectrum of each matrix of ``weight``, in ascending order, computed on the tensor's own device.

    .. math::

        \texttt{gram}:\ \operatorname{eig}\Big(\frac{1}{M} W^\top W\Big) \in \mathbb{R}^N_{\ge 0},\qquad
        \texttt{singular}:\ \operatorname{svd}(W) \in \mathbb{R}^{\min(M, N)},\qquad
        \texttt{symmetric}:\ \operatorname{eig}\Big(\frac{W + W^\top}{2}\Big) \in \mathbb{R}^N.

    For ``"gram"`` with :math:`N > M` the smaller matrix :math:`W W^\top / M` is diagonalised and the
    :math:`N - M` structural zeros are prepended as exact zeros; tiny negative round-off is clamped to 0.
    float16 / bfloat16 inputs are decomposed in float32.

    Args:
        weight: shape ``(..., M, N)``; leading dimensions are a batch analysed matrix by matrix.
        kind: ``"gram"`` (eigenvalues of the Gram matrix), ``"singular"`` (singular values of ``W``) or
            ``"symmetric"`` (eigenvalues of the symmetric part of a square ``W``).
        normalize: for ``"gram"`` only: divide by :math:`M` (default); ``False`` gives :math:`W^\top W`,
            the papers' :math:`X`.

    Returns:
        Shape ``(..., N)`` for ``"gram"`` and ``"symmetric"``, ``(..., min(M, N))`` for ``"singular"``;
        float32, or float64 for float64 input.

    Raises:
        TypeError, ValueError: see :func:`validate_matrix`; ValueError also for an unknown ``kind`` or a
            non-square ``weight`` with ``kind="symmetric"``.

    References: arXiv:2412.20496, arXiv:2407.16427.

    Example:
        >>> w = torch.tensor([[3.0, 0.0, 0.0], [0.0, 4.0, 0.0]])  # M = 2, N = 3
        >>> esd(w).tolist()
        [0.0, 4.5, 8.0]
        >>> esd(w, kind="singular").tolist()
        [3.0, 4.0]
    """
    validate_matrix(weight)
    one_of("kind", kind, _KINDS)
    w = weight.float() if weight.dtype in _LOW_PRECISION else weight
    if kind == "singular":
        return torch.linalg.svdvals(w).flip(-1)
    if kind == "symmetric":
        return _symmetric_eigenvalues(w)
    return _gram_eigenvalues(w, normalize=normalize)


def _symmetric_eigenvalues(w: torch.Tensor) -> torch.Tensor:
    m, n = w.shape[-2:]
    if m != n:
        raise ValueError(f"kind='symmetric' needs a square weight (M == N), got shape {tuple(w.shape)}")
    return torch.linalg.eigvalsh(0.5 * (w + w.mT))


def _gram_eigenvalues(w: torch.Tensor, *, normalize: bool) -> torch.Tensor:
    m, n = w.shape[-2:]
    gram = w.mT @ w if n <= m else w @ w.mT  # (..., min(M, N), min(M, N))
    eigs = torch.linalg.eigvalsh(gram).clamp_min(0.0)
    if normalize:
        eigs = eigs / m
    if n > m:
        zeros = eigs.new_zeros((*eigs.shape[:-1], n - m))
        eigs = torch.cat([zeros, eigs], dim=-1)
    return eigs
