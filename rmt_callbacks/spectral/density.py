"""draft"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["DENSE_LIMIT", "SpectralDensity", "density_l1", "estimate_density", "exact_density"]

DENSE_LIMIT: int = 8192


@dataclass(frozen=True)
class SpectralDensity:
    edges: torch.Tensor
    density: torch.Tensor
    lambda_min: float
    lambda_max: float
    method: str


def _gram_operator(weight: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor], int, float]:
    rows, cols = weight.shape
    if cols <= rows:
        return (lambda v: weight.mT @ (weight @ v) / rows), cols, 0.0
    return (lambda v: weight @ (weight.mT @ v) / rows), rows, 1.0 - rows / cols


def _lanczos(
    matvec: Callable[[torch.Tensor], torch.Tensor], probes: torch.Tensor, steps: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """probes (k, d) -> alpha (k, s), beta (k, s) (beta[:, -1] is the residual norm)."""
    k, d = probes.shape
    basis = probes.new_zeros(k, steps, d)
    alpha = probes.new_zeros(steps, k)
    beta = probes.new_zeros(steps, k)
    q = probes / probes.norm(dim=1, keepdim=True)
    scale = probes.new_zeros(k)
    tol = 100.0 * torch.finfo(probes.dtype).eps
    for j in range(steps):
        basis[:, j] = q
        w = matvec(q.T).T  # (k, d)
        alpha[j] = (q * w).sum(1)
        done = basis[:, : j + 1]  # (k, j+1, d)
        for _ in range(2):  # classical Gram-Schmidt twice ("twice is enough")
            w = w - (done.mT @ (done @ w.unsqueeze(-1))).squeeze(-1)
        b = w.norm(dim=1)
        scale = torch.maximum(scale, torch.maximum(alpha[j].abs(), b))
        alive = b > tol * scale
        beta[j] = torch.where(alive, b, torch.zeros_like(b))
        q = torch.where(
            alive.unsqueeze(1), w / b.clamp_min(torch.finfo(b.dtype).tiny).unsqueeze(1), torch.zeros_like(w)
        )
    return alpha.T, beta.T


def _gauss_quadrature(alpha: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    a, b = alpha.double(), beta.double()
    t = torch.diag_embed(a) + torch.diag_embed(b[:, :-1], 1) + torch.diag_embed(b[:, :-1], -1)
    nodes, vecs = torch.linalg.eigh(t)
    weights = vecs[:, 0, :] ** 2
    bounds = (b[:, -1:] * vecs[:, -1, :]).abs()
    return nodes, weights, bounds


def _bin(nodes: torch.Tensor, weights: torch.Tensor, edges: torch.Tensor, smoothing: str) -> torch.Tensor:
    """mass per bin (bins,), nodes/weights (k, s)."""
    k = nodes.shape[0]
    bins = edges.numel() - 1
    if smoothing == "none":
        idx = torch.bucketize(nodes, edges, right=True) - 1
        idx = idx.clamp(0, bins - 1)
        return torch.zeros(bins, dtype=nodes.dtype).index_add_(0, idx.flatten(), weights.flatten()) / k
    if smoothing == "gaussian":
        sigma = edges[1] - edges[0]
        z = (edges.view(1, 1, -1) - nodes.unsqueeze(-1)) / sigma
        cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))  # (k, s, bins+1)
        mass = (weights.unsqueeze(-1) * cdf.diff(dim=-1)).sum((0, 1)) / k
        return mass / mass.sum()
    if smoothing == "linear":
        # per-vector CDF through the jump midpoints, linear between nodes
        cum = weights.cumsum(1) - 0.5 * weights  # (k, s)
        lo = edges[0].expand(k, 1)
        hi = edges[-1].expand(k, 1)
        xs = torch.cat([lo, nodes, hi], 1)
        fs = torch.cat([torch.zeros(k, 1, dtype=cum.dtype), cum, torch.ones(k, 1, dtype=cum.dtype)], 1)
        out = []
        for i in range(k):
            out.append(_interp(edges, xs[i], fs[i]))
        f = torch.stack(out).mean(0)
        return f.diff()
    raise ValueError(smoothing)


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    idx = torch.searchsorted(xp, x).clamp(1, xp.numel() - 1)
    x0, x1 = xp[idx - 1], xp[idx]
    f0, f1 = fp[idx - 1], fp[idx]
    t = ((x - x0) / (x1 - x0).clamp_min(1e-300)).clamp(0, 1)
    return f0 + t * (f1 - f0)


def estimate_density(
    weight: torch.Tensor,
    *,
    kind: Literal["gram"] = "gram",
    bins: int = 100,
    method: Literal["slq", "kpm"] = "slq",
    num_vectors: int = 16,
    num_steps: int = 32,
    generator: torch.Generator | None = None,
    smoothing: str = "none",
    margin: float = 0.005,
) -> SpectralDensity:
    w = weight if weight.dtype in (torch.float32, torch.float64) else weight.float()
    matvec, dim, atom = _gram_operator(w)
    steps = min(num_steps, dim)
    gen_device = generator.device if generator is not None else w.device
    signs = torch.randint(0, 2, (num_vectors, dim), generator=generator, device=gen_device)
    probes = (2.0 * signs - 1.0).to(device=w.device, dtype=w.dtype)
    alpha, beta = _lanczos(matvec, probes, steps)
    nodes, weights, bounds = _gauss_quadrature(alpha, beta)
    top = float((nodes[:, -1] + bounds[:, -1]).max())
    bottom = float((nodes[:, 0] - bounds[:, 0]).min())
    if atom > 0:
        bottom = min(bottom, 0.0)
    span = top - bottom
    lo, hi = bottom - margin * span, top + margin * span
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    mass = _bin(nodes.cpu(), weights.cpu(), edges, smoothing) * (1.0 - atom)
    if atom > 0:
        mass[int(torch.bucketize(torch.tensor(0.0, dtype=torch.float64), edges, right=True)) - 1] += atom
    density = mass / edges.diff()
    return SpectralDensity(edges, density, lo, hi, "slq")


def exact_density(eigs: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    e = eigs.double().flatten()
    ed = edges.double()
    bins = ed.numel() - 1
    idx = torch.bucketize(e, ed, right=True) - 1
    idx = torch.where(e == ed[-1], torch.full_like(idx, bins - 1), idx)
    inside = (idx >= 0) & (idx < bins)
    counts = torch.zeros(bins, dtype=torch.float64).index_add_(0, idx[inside], torch.ones_like(e[inside]))
    return counts / (e.numel() * ed.diff())


def density_l1(a: SpectralDensity, b_density: torch.Tensor) -> float:
    return float(((a.density - b_density.to(a.density)).abs() * a.edges.diff()).sum())
