r"""The two estimators behind :func:`~rmt_callbacks.spectral.density.estimate_density`: stochastic Lanczos
quadrature (smoothed Gauss rules, :func:`slq_density`) and the kernel polynomial method (:func:`kpm_density`).

Their derivation, accuracy and cost: :mod:`rmt_callbacks.spectral.density`; the Krylov machinery they run on:
:mod:`rmt_callbacks.spectral._krylov`.
"""

from __future__ import annotations

import math

import torch

from ._krylov import Operator, _gauss_rules, _Gram, _lanczos
from .histogram import SpectralDensity, bin_points

__all__ = ["kpm_density", "slq_density"]

_MARGIN = 0.005  # edges: extreme Ritz values widened by this fraction of the span
_CONVERGED = 0.01  # Ritz values with residual bound below this fraction of a bin are point masses
_EDGE = 1.0 / 3.0  # soft edge beyond an extreme node, in units of the extreme node spacing (Chebyshev U asymptotics)
_TINY = 1e-300


def slq_density(gram: _Gram, start: torch.Tensor, steps: int, *, bins: int) -> SpectralDensity:
    atom = gram.atom
    nodes, weights, bounds = _gauss_rules(*_lanczos(gram, start, steps))
    weights = weights * (1.0 - atom) / nodes.shape[0]  # the average over probes, scaled to the non-zero part
    edges, point, xs, fs = _frame(nodes, weights, bounds, bins=bins, atom=atom)
    query = edges.clamp_min(0.0).sqrt().expand(xs.shape[0], -1).contiguous()  # interpolate in s = sqrt(x)
    mass = bin_points(nodes[point], weights[point], edges) + _pchip(query, xs.clamp_min(0.0).sqrt(), fs).sum(
        0
    ).diff().clamp_min(0.0)
    if atom > 0.0:
        mass = mass + bin_points(nodes.new_zeros(1), nodes.new_full((1,), atom), edges)
    live = nodes[weights > 0]
    lam_min = 0.0 if atom > 0.0 else float(live.min().clamp_min(0.0))
    return SpectralDensity(edges, mass / edges.diff(), lam_min, float(live.max()), "slq")


def _frame(
    nodes: torch.Tensor, weights: torch.Tensor, bounds: torch.Tensor, *, bins: int, atom: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bin edges, the point-mass mask and the CDF knots ``(xs, fs)`` of the Gauss rules (k, s)."""
    spread = max(float(nodes.max() - nodes.min().clamp_max(0.0)), 1e-12 * max(float(nodes.max()), 1.0))
    point = bounds <= _CONVERGED * spread / bins  # converged Ritz values
    xs, fs, count = _knots(nodes, weights.masked_fill(point, 0.0), point, spread)
    smooth, live = count.squeeze(1) > 0, point & (weights > 0)  # live: not from a broken-down Lanczos tail
    tops = xs[smooth].gather(1, count[smooth] + 1).flatten()
    low = float(torch.cat([xs[smooth, 0], (nodes - bounds)[live]]).min())
    high = float(torch.cat([tops, (nodes + bounds)[live]]).max())
    low = 0.0 if atom > 0.0 else max(low, 0.0)
    span = max(high - low, 1e-4 * abs(high)) or 1.0  # a single eigenvalue: a narrow window around it
    pad = 0.5 * (span - (high - low)) + _MARGIN * span
    edges = torch.linspace(low - pad, high + pad, bins + 1, dtype=torch.float64)
    return edges.to(nodes.device), point, xs, fs


def _knots(
    nodes: torch.Tensor, weights: torch.Tensor, point: torch.Tensor, spread: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per probe, the knots ``(x, F)`` (k, s+2) of the CDF of its non-point Ritz masses, and their count (k, 1).

    Knots: ``(lo, 0)``, every node at the middle of its jump less the trapezoid bias
    (:func:`_trapezoid_bias`), ``(hi, total)``; ``lo``/``hi`` lie :data:`_EDGE` of the extreme node spacing
    beyond the extreme nodes (``lo >= 0``: the Gram matrix is positive semi-definite). Point masses are parked,
    with zero weight, beyond ``hi``.
    """
    k, s = nodes.shape
    parked = float(nodes.max()) + spread + 1.0 + torch.arange(s, dtype=nodes.dtype, device=nodes.device)
    x, order = torch.where(point, parked, nodes).sort(dim=1)
    w = weights.gather(1, order)
    count = (~point).sum(1, keepdim=True)  # the smooth nodes are x[:, :count]
    first, second = x[:, :1], x[:, 1:2] if s > 1 else x[:, :1]
    last, before = x.gather(1, (count - 1).clamp_min(0)), x.gather(1, (count - 2).clamp_min(0))
    two = count >= 2
    lo = torch.where(two, first - _EDGE * (second - first), first).clamp_min(0.0).minimum(first)
    hi = torch.where(two, last + _EDGE * (last - before), last)
    total = w.sum(1, keepdim=True)
    mid = w.cumsum(1) - 0.5 * w - _trapezoid_bias(w, count)
    xs = torch.cat([lo, x, parked[-1:].expand(k, 1) + 1.0], 1).scatter(1, count + 1, hi)  # hi: first parked slot
    fs = torch.cat([w.new_zeros(k, 1), mid, total], 1).scatter(1, count + 1, total)
    return xs, fs, count


def _trapezoid_bias(w: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    r"""Euler–Maclaurin bias (k, s) of the knot values :math:`\sum_{i<j}\tau_i + \tau_j/2` of the smooth nodes.

    The nodes of a Gauss rule on an interval are asymptotically equally spaced, by :math:`h`, in
    :math:`\theta = \arccos` of the rescaled :math:`x`, with :math:`\tau_j \approx h f(\theta_j)`, so the
    knot values are a trapezoid sum of :math:`\int f\,d\theta`, too high by :math:`\tfrac{h^2}{12} f'(\theta_j)
    \approx \tfrac1{12}\,\partial_j \tau_j` (the end term vanishes at a soft edge, :math:`f \propto \theta^2` with
    nodes at :math:`jh`, and at a hard one, :math:`f` even with nodes at :math:`(j-\tfrac12)h`). For the
    semicircle (Chebyshev :math:`U`) this is exact to leading order at every node: the first knot becomes
    :math:`\tau_1/3`, the true :math:`F`. :math:`\partial_j` is the central difference, of second order one-sided
    at the extreme smooth nodes; the bias is clamped to :math:`\pm\tau_j/2`, which keeps every knot inside its
    Chebyshev–Markov–Stieltjes bracket and so the knots monotone. Fewer than 3 smooth nodes: no correction.
    """
    k, s = w.shape
    j = torch.arange(s, device=w.device).expand(k, s)
    end = count - 1  # (k, 1): the last smooth node

    def at(i: torch.Tensor) -> torch.Tensor:
        return w.gather(1, i.clamp(0, s - 1))

    central = 0.5 * (at(j + 1) - at(j - 1))
    head = 0.5 * (4.0 * at(j * 0 + 1) - 3.0 * at(j * 0) - at(j * 0 + 2))
    tail = 0.5 * (3.0 * at(end) - 4.0 * at(end - 1) + at(end - 2))
    slope = torch.where(j == 0, head, torch.where(j == end, tail, central))
    bias = torch.where((j < count) & (count >= 3), slope / 12.0, 0.0)
    return torch.minimum(bias, 0.5 * w).maximum(-0.5 * w)


def _pchip(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Monotone piecewise-cubic Hermite interpolation (Fritsch–Carlson), row by row; ``xp`` sorted."""
    h = xp.diff(dim=-1).clamp_min(_TINY)
    delta = fp.diff(dim=-1) / h  # non-negative secants
    d0, d1 = delta[..., :-1], delta[..., 1:]
    w1, w2 = 2.0 * h[..., 1:] + h[..., :-1], h[..., 1:] + 2.0 * h[..., :-1]
    harmonic = (w1 + w2) / (w1 / d0.clamp_min(_TINY) + w2 / d1.clamp_min(_TINY))
    slope = torch.cat(
        [torch.zeros_like(delta[..., :1]), torch.where((d0 > 0) & (d1 > 0), harmonic, 0.0), delta[..., -1:]], -1
    )
    i = torch.searchsorted(xp, x).clamp(1, xp.shape[-1] - 1)
    x0, x1, f0, f1 = xp.gather(-1, i - 1), xp.gather(-1, i), fp.gather(-1, i - 1), fp.gather(-1, i)
    width = (x1 - x0).clamp_min(_TINY)
    t = ((x - x0) / width).clamp(0.0, 1.0)
    m0, m1 = slope.gather(-1, i - 1) * width, slope.gather(-1, i) * width
    return f0 * (1 + 2 * t) * (1 - t) ** 2 + m0 * t * (1 - t) ** 2 + f1 * t * t * (3 - 2 * t) + m1 * t * t * (t - 1)


def kpm_density(gram: _Gram, start: torch.Tensor, steps: int, *, bins: int) -> SpectralDensity:
    """KPM in the singular-value variable: ``steps`` products give Chebyshev moments of ``s`` up to ``4 steps``."""
    atom = gram.atom
    edge_start = start[: min(2, start.shape[0])]
    nodes, weights, bounds = _gauss_rules(*_lanczos(gram, edge_start, min(steps, 20, gram.dim)))
    edges, *_ = _frame(nodes, weights, bounds, bins=bins, atom=atom)
    scale = float(edges[-1])  # X / scale has its spectrum in [0, 1]
    # c_j of T_j(2X/scale-1)
    moments = _chebyshev_moments(lambda v: 2.0 * gram.apply(v) / scale - v, start, steps, gram.dim)
    degree = 2 * (moments.numel() - 1)  # s-moments: mu_{2j} = c_j, odd ones vanish
    n = torch.arange(0, degree + 1, 2, dtype=torch.float64, device=edges.device)
    a = math.pi / (degree + 2)  # Jackson damping of a series of degree + 1 terms
    g = ((degree + 2 - n) * torch.cos(a * n) + torch.sin(a * n) / math.tan(a)) / (degree + 2)
    theta = torch.arccos((edges.clamp(0.0, scale) / scale).sqrt())  # y = s / sqrt(scale) = cos(theta)
    terms = torch.where(n[:, None] > 0, torch.sin(n[:, None] * theta) / n.clamp_min(1.0)[:, None], theta)
    cdf_part = -(2.0 / math.pi) * ((g * moments * torch.where(n > 0, 2.0, 1.0))[:, None] * terms).sum(0)
    mass = cdf_part.diff().clamp_min(0.0)
    mass = mass * (1.0 - atom) / mass.sum().clamp_min(_TINY)
    if atom > 0.0:
        mass = mass + bin_points(edges.new_zeros(1), edges.new_full((1,), atom), edges)
    live = nodes[weights > 0]
    lam_min = 0.0 if atom > 0.0 else float(live.min().clamp_min(0.0))
    return SpectralDensity(edges, mass / edges.diff(), lam_min, float(live.max()), "kpm")


def _chebyshev_moments(operator: Operator, start: torch.Tensor, steps: int, dim: int) -> torch.Tensor:
    """Probe-averaged :math:`c_j = v^T T_j(Z) v`, ``j = 0..2 steps``, with the doubling identities.

    Inner products use the first ``dim`` coordinates of the rows (the others carry images, see :class:`_Gram`).
    """

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a[:, :dim] * b[:, :dim]).sum(1)

    t_prev, t = start, operator(start)
    even, odd = [dot(start, start)], [dot(start, t)]
    for _ in range(steps - 1):
        even.append(2.0 * dot(t, t) - even[0])
        t_prev, t = t, 2.0 * operator(t) - t_prev
        odd.append(2.0 * dot(t, t_prev) - odd[0])
    even.append(2.0 * dot(t, t) - even[0])
    c = torch.stack([x for pair in zip(even, odd, strict=False) for x in pair] + [even[-1]])
    return c.double().mean(1)
