r"""The Krylov machinery of :mod:`rmt_callbacks.spectral.density`: the Gram product that streams ``W``, the
Rademacher probes, block Lanczos with full re-orthogonalisation, and the Gauss rules it yields.

The estimators built on them, their accuracy and cost: :mod:`rmt_callbacks.spectral.density`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

_PANEL_BYTES = 1 << 21  # CPU: rows of W per panel of the Gram product, sized to stay in cache

Operator = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class _Gram:
    """The product :math:`v \\mapsto v X` on the smaller side, on blocks of row vectors (k, size).

    Only the first ``dim`` coordinates of a row are the vector; the others, if any, carry its image under ``W``
    (a wide ``W`` on a CPU, see :func:`_gram_operator`). Every map used on them is linear, so the carried
    image stays the image; inner products and norms take the first ``dim`` coordinates.
    """

    apply: Operator  # (k, size) -> (k, size)
    dim: int  # the Gram dimension min(M, N)
    atom: float  # mass of the N - M structural zeros of a wide W
    lift: Operator  # probes (k, dim) -> start vectors (k, size)


def _gram_operator(w: torch.Tensor) -> _Gram:
    r"""The product with :math:`X` on the smaller side, streaming ``W`` once per product on a CPU.

    On a CPU ``W`` is read in panels of rows (about 2 MB, contiguous for a row-major ``W``) that stay in cache
    between the two products with a panel :math:`P`. Tall or square ``W``: :math:`v X = \sum_P (v P^\top) P / M`.
    Wide ``W`` (``N > M``, :math:`X_M = W W^\top / M` on :math:`\mathbb R^M`): a row vector :math:`q` travels
    with its image :math:`g = q W`, and one pass gives both :math:`q X_M = g W^\top / M` (the panels' first
    products, row block by row block) and its image :math:`(g W^\top / M) W` (the sum of their second
    products). That replaces a transposed copy of ``W`` (as large as ``W``: 0.2–0.3 s at 4096 × 8192 on one
    core, mostly page faults) or column panels of ``W`` (strided: twice as slow per pass); the lift
    :math:`q \mapsto (q, q W)` costs one plain product. Other devices use two plain products per step.
    """
    rows, cols = w.shape
    wide = cols > rows  # then W W^T / M on R^M, plus N - M structural zeros
    dim, atom = (rows, 1.0 - rows / cols) if wide else (cols, 0.0)
    if w.device.type != "cpu":
        mat = w.mT if wide else w  # (L, dim): X_small = mat^T mat / M
        return _Gram(lambda v: (v @ mat.mT) @ mat / rows, dim, atom, lambda p: p)
    panels = w.split(max(8, _PANEL_BYTES // (cols * w.element_size())))

    def apply(v: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(v)
        for panel in panels:
            out.addmm_(v @ panel.mT, panel)
        return out / rows

    def apply_wide(x: torch.Tensor) -> torch.Tensor:
        image = x[:, rows:]  # g = q W, (k, N)
        parts, out_image = [], torch.zeros_like(image)
        for panel in panels:
            part = image @ panel.mT  # (k, panel rows): these coordinates of g W^T
            out_image.addmm_(part, panel)
            parts.append(part)
        return torch.cat([*parts, out_image], 1) / rows

    if not wide:
        return _Gram(apply, dim, atom, lambda p: p)
    return _Gram(apply_wide, dim, atom, lambda p: torch.cat([p, p @ w], 1))


def _rademacher(k: int, dim: int, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else like.device
    signs = torch.randint(0, 2, (k, dim), generator=generator, device=device)
    return (2.0 * signs - 1.0).to(device=like.device, dtype=like.dtype) / math.sqrt(dim)


def _lanczos(gram: _Gram, start: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lanczos on each row of ``start`` (k, size) at once: ``alpha`` (k, s), ``beta`` (k, s), ``beta[:, -1]`` residual.

    Inner products and norms use the first ``gram.dim`` coordinates (the others carry images, see :class:`_Gram`).
    """
    k, size = start.shape
    d = gram.dim
    basis = start.new_zeros(k, steps, size)
    alpha, beta = start.new_zeros(steps, k), start.new_zeros(steps, k)
    q, scale = start, start.new_zeros(k)
    tol = 100.0 * torch.finfo(start.dtype).eps
    for j in range(steps):
        basis[:, j] = q
        v = gram.apply(q)  # (k, size)
        alpha[j] = (q[:, :d] * v[:, :d]).sum(1)
        done = basis[:, : j + 1]  # (k, j+1, size)
        for _ in range(2):  # full re-orthogonalisation, classical Gram-Schmidt twice
            v = v - torch.bmm(torch.bmm(done[..., :d], v[:, :d, None]).mT, done).squeeze(1)
        b = v[:, :d].norm(dim=1)
        scale = torch.maximum(scale, torch.maximum(alpha[j].abs(), b))
        alive = b > tol * scale  # False: the Krylov space is invariant, the rule is exact
        beta[j] = torch.where(alive, b, torch.zeros_like(b))
        q = torch.where(alive.unsqueeze(1), v / b.clamp_min(tol).unsqueeze(1), torch.zeros_like(v))
        if not bool(alive.any()):
            return alpha[: j + 1].T, beta[: j + 1].T
    return alpha.T, beta.T


def _gauss_rules(alpha: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nodes, weights and residual bounds (each (k, s), float64) of the tridiagonal matrices."""
    a, b = alpha.double(), beta.double()
    off = b[:, :-1]
    nodes, vecs = torch.linalg.eigh(torch.diag_embed(a) + torch.diag_embed(off, 1) + torch.diag_embed(off, -1))
    return nodes, vecs[:, 0, :] ** 2, (b[:, -1:] * vecs[:, -1, :]).abs()
