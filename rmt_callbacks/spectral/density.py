r"""Spectral densities of Gram matrices too large to diagonalise: stochastic Lanczos quadrature (SLQ) and KPM.

The density of :math:`X = W^\top W / M` (conventions: :mod:`rmt_callbacks.spectral`) is estimated from
products with ``W`` and ``W.T`` only: ``X`` is never formed and nothing large is diagonalised.

**SLQ.** For a probe :math:`v` (Rademacher, :math:`\|v\| = 1`), :math:`m` Lanczos steps with full
re-orthogonalisation give :math:`T_m = U \operatorname{diag}(\theta) U^\top`; the Ritz values :math:`\theta_i`
and weights :math:`\tau_i = U_{1i}^2` are the :math:`m`-point Gauss rule of :math:`\mu_v = \sum_j (u_j^\top
v)^2 \delta_{\lambda_j}`, whose mean over probes is the density:

.. math::

    \rho \approx \frac1k \sum_{l=1}^{k} \sum_{i=1}^{m} \tau^{(l)}_i\, \delta_{\theta^{(l)}_i} .

For large :math:`N` the rules of different probes nearly coincide, so binning the Ritz values leaves a comb of
:math:`m` spikes, and a Gaussian of one bin width blurs the edges (L1 ≈ 0.15–0.27 at :math:`N = 4096`,
:math:`m = 32`). Instead each probe's distribution function is set at every node to the middle of its jump,
:math:`\sum_{j<i}\tau_j + \tau_i/2` (the Chebyshev–Markov–Stieltjes bracket), less the trapezoid bias of that
sum (Euler–Maclaurin in the variable in which Gauss nodes are equally spaced, :math:`\approx \tfrac1{12}` of the
central difference of the weights; kept inside the bracket), to 0 and 1 at a third of the extreme node spacing
beyond the extreme nodes (where a square-root edge lies: Chebyshev-:math:`U` nodes), flat there, and joined by a
monotone cubic (Fritsch–Carlson) in :math:`s = \sqrt x`, where the hard-edge :math:`x^{-1/2}` of a square matrix
becomes a regular quarter circle. The two corrections are what lets 12 steps resolve a soft lower edge (MP
:math:`q = 0.5`, L1 0.030 at :math:`m = 12`, against 0.040 for the plain midpoints and half a spacing). Ritz
values with residual bound :math:`|\beta_m U_{mi}|` below 1 % of a bin are eigenvalues and are binned as point
masses (a matrix of rank at most :math:`m` gets exact nodes; its weights remain a :math:`k`-probe estimate). For
:math:`N > M` Lanczos runs on :math:`W W^\top / M` and the :math:`N - M` zeros are an exact atom. The edges enclose
the interpolation's end points and the converged Ritz values (± bound), plus 0.5 % of the span.

**KPM** (``method="kpm"``): Chebyshev moments of :math:`X` rescaled to :math:`[0, 1]` are the even moments
of the symmetric density of :math:`s = \sqrt{x}`; that series, Jackson-damped, is integrated over the bins in
closed form. :math:`m` products give :math:`2m + 1` moments in :math:`x`, degree :math:`4m` in :math:`s`; the
edges come from a short two-probe Lanczos run, which doubles the cost. L1 ≤ 0.05–0.06 on the test matrices (SLQ
is more accurate at the soft edges, and cheaper).

**Cost and the switch-over.** Exact: :math:`2MN^2` flops for the Gram product plus :math:`\approx\tfrac43 N^3` for
``eigvalsh``, both compute-bound and using every core. SLQ: :math:`m` steps, each one pass over ``W`` for all
:math:`k` probes at once (on a CPU in cache-sized panels of rows, :math:`P^\top (P v)`; for a wide ``W`` each vector
carries its image :math:`q W`, so the pass is over its contiguous rows too, plus one product for the start and no
transposed copy), so its cost grows with :math:`m`, hardly with :math:`k` (:math:`k = 4, 8, 16`: 0.9, 1, 1.3), and
its share falls like :math:`1/N`. The panel products have :math:`k` rows: MKL runs them at 25–35 GFlop/s on one
core, reading ``W`` at a quarter of the memory bandwidth, and gains little from a second core. The defaults
:math:`k = 8`, :math:`m = 12` keep the L1 distance to the exact 100-bin histogram ≤ 0.035 on Marchenko–Pastur
(:math:`q = 0.5, 1, 2`) and spiked :math:`N = 4096` matrices (2 matrix seeds × 4 probe seeds; ≤ 0.038 on 2 more
matrix seeds), near the exact histogram's own fluctuation about its limit (≈ 0.02); :math:`m = 16` gains nothing
measurable (≤ 0.032), :math:`m = 10` little (≤ 0.038). On a 2-core AMD EPYC (``benchmarks/bench_density.py``, one
thread for both paths) SLQ costs 0.05 (square), 0.08 (:math:`8192 \times 4096`) and 0.09 (:math:`4096 \times 8192`)
of the exact path at :math:`\min(M, N) = 4096`, and 0.027–0.039 at 8192, where ``eigvalsh`` alone takes 30–33 s and
the Gram product 19–39 s more; with two threads for both the exact path runs 1.4–1.7 times faster and SLQ 1.0–1.5
times, and the rectangular shares at 4096 rise to 0.10–0.13 (squares: 0.06–0.07). Hence :data:`DENSE_LIMIT`
``= 8192``, the one threshold of the project: :func:`rmt_callbacks.analysis.analyze_views` (and so the monitors'
analyses) diagonalises a matrix whose :math:`\min(M, N)` is below it (exact spectra, which spacing statistics need,
for at most a few seconds), estimates the density at or above it, and records which method produced each spectrum
(``MatrixResult.method``: ``"eigvalsh"`` or ``"slq"``; here :attr:`SpectralDensity.method`). No matrix is skipped
for its size.

References: Lin, Saad & Yang, arXiv:1308.5467; Ubaru, Chen & Saad, SIAM J. Matrix Anal. Appl. 38 (2017) 1075;
Weiße, Wellein, Alvermann & Fehske, arXiv:cond-mat/0504627 (KPM).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from .._checks import at_least, one_of
from ._krylov import Operator, _gauss_rules, _Gram, _gram_operator, _lanczos, _rademacher

__all__ = [
    "DENSE_LIMIT",
    "SpectralDensity",
    "density_from_eigenvalues",
    "density_l1",
    "estimate_density",
    "exact_density",
]

DENSE_LIMIT: int = 8192
"""Smallest :math:`\\min(M, N)` for which a monitor estimates the density instead of diagonalising."""

_DEFAULT_STEPS = {"slq": 12, "kpm": 16}  # num_steps=None (module docstring: accuracy and cost)
_MARGIN = 0.005  # edges: extreme Ritz values widened by this fraction of the span
_CONVERGED = 0.01  # Ritz values with residual bound below this fraction of a bin are point masses
_EDGE = 1.0 / 3.0  # soft edge beyond an extreme node, in units of the extreme node spacing (Chebyshev U asymptotics)
_TINY = 1e-300


@dataclass(frozen=True)
class SpectralDensity:
    """A spectral density as a histogram on ``bins`` equal bins.

    Args:
        edges: bin edges, shape ``(bins + 1,)``, increasing.
        density: density in each bin, shape ``(bins,)``; :math:`\\sum_b \\rho_b\\,\\Delta_b = 1`.
        lambda_min: smallest eigenvalue (exact, or the smallest Ritz value; ``edges[0]`` lies below it).
        lambda_max: largest eigenvalue (exact, or the largest Ritz value; ``edges[-1]`` lies above it).
        method: ``"exact"``, ``"slq"`` or ``"kpm"``: what produced it.

    Example:
        >>> d = density_from_eigenvalues(torch.tensor([0.0, 1.0, 1.0, 2.0]), bins=4)
        >>> d.method, float(d.cdf(d.edges[-1]))
        ('exact', 1.0)
    """

    edges: torch.Tensor
    density: torch.Tensor
    lambda_min: float
    lambda_max: float
    method: str

    @property
    def mass(self) -> torch.Tensor:
        """Probability of each bin, shape ``(bins,)``."""
        return self.density * self.edges.diff()

    def cdf(self, x: torch.Tensor | float) -> torch.Tensor:
        """Cumulative distribution, linear inside each bin, 0 below ``edges[0]`` and 1 above ``edges[-1]``."""
        t = torch.as_tensor(x, dtype=self.edges.dtype, device=self.edges.device)
        cum = torch.cat([self.mass.new_zeros(1), self.mass.cumsum(0)])
        i = torch.searchsorted(self.edges, t.contiguous()).clamp(1, self.edges.numel() - 1)
        frac = ((t - self.edges[i - 1]) / self.edges.diff()[i - 1]).clamp(0.0, 1.0)
        return cum[i - 1] + frac * self.mass[i - 1]

    def to_metrics(self, prefix: str = "") -> dict[str, float]:
        """``lambda_min``, ``lambda_max``, the histogram ``mean`` and ``estimated`` (1.0 unless exact)."""
        centres = 0.5 * (self.edges[1:] + self.edges[:-1])
        mean, estimated = float((centres * self.mass).sum()), float(self.method != "exact")
        stats = {"lambda_min": self.lambda_min, "lambda_max": self.lambda_max, "mean": mean, "estimated": estimated}
        return {f"{prefix}{key}": value for key, value in stats.items()}


def exact_density(eigs: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    r"""Histogram density :math:`\rho_b = \#\{\lambda_j \in [e_b, e_{b+1})\} / (n\,\Delta_b)` of exact eigenvalues.

    The last bin is closed; eigenvalues outside the edges are not counted (the density then integrates to
    less than one).

    Args:
        eigs: eigenvalues, any shape (flattened), ``n`` elements.
        edges: increasing bin edges, shape ``(bins + 1,)``.

    Returns:
        Float64 density, shape ``(bins,)``, on ``edges.device``.

    Raises:
        ValueError: if ``edges`` is not 1-D, increasing, with at least two entries.

    Example:
        >>> exact_density(torch.tensor([0.1, 0.2, 0.7, 1.0]), torch.tensor([0.0, 0.5, 1.0])).tolist()
        [1.0, 1.0]
    """
    ed = _check_edges(edges)
    e = eigs.detach().to(device=ed.device, dtype=torch.float64).flatten()
    return _bin_points(e, torch.full_like(e, 1.0 / max(e.numel(), 1)), ed) / ed.diff()


def density_l1(a: SpectralDensity, b_density: torch.Tensor) -> float:
    r""":math:`\sum_b |\rho^a_b - \rho^b_b|\,\Delta_b`, the L1 distance of two densities on the edges of ``a``.

    Example:
        >>> d = density_from_eigenvalues(torch.tensor([0.0, 1.0]), bins=2)
        >>> density_l1(d, exact_density(torch.tensor([0.0, 0.0]), d.edges))
        1.0
    """
    if b_density.shape != a.density.shape:
        raise ValueError(
            f"density_l1: b_density must have shape {tuple(a.density.shape)}, got {tuple(b_density.shape)}"
        )
    diff = a.density - b_density.to(a.density)
    return float((diff.abs() * a.edges.diff()).sum())


def density_from_eigenvalues(eigs: torch.Tensor, *, bins: int = 100) -> SpectralDensity:
    """The ``"exact"`` :class:`SpectralDensity` of given eigenvalues on ``bins`` bins over their range.

    Args:
        eigs: eigenvalues, any shape (flattened), at least one, finite.
        bins: number of bins, at least 1.

    Raises:
        ValueError: if ``eigs`` is empty or not finite, or ``bins < 1``.

    Example:
        >>> d = density_from_eigenvalues(torch.tensor([1.0, 2.0, 3.0]), bins=2)
        >>> d.edges.tolist(), d.mass.tolist()
        ([1.0, 2.0, 3.0], [0.3333333333333333, 0.6666666666666666])
    """
    e = eigs.detach().to(torch.float64).flatten()
    if e.numel() == 0 or not bool(torch.isfinite(e).all()):
        raise ValueError("density_from_eigenvalues: eigs must be non-empty and finite")
    bins = at_least("bins", bins, 1, owner="density_from_eigenvalues")
    lo, hi = float(e.min()), float(e.max())
    pad = 0.5 if hi == lo else 0.0
    edges = torch.linspace(lo - pad, hi + pad, bins + 1, dtype=torch.float64, device=e.device)
    return SpectralDensity(edges, exact_density(e, edges), lo, hi, "exact")


def estimate_density(
    weight: torch.Tensor,
    *,
    kind: Literal["gram"] = "gram",
    bins: int = 100,
    method: Literal["slq", "kpm"] = "slq",
    num_vectors: int = 8,
    num_steps: int | None = None,
    generator: torch.Generator | None = None,
) -> SpectralDensity:
    r"""Density of :math:`X = W^\top W / M` from ``num_vectors × num_steps`` products with ``W`` and ``W.T``.

    See the module docstring for the estimator; ``X`` is never formed and nothing large is diagonalised.

    Args:
        weight: ``W``, shape ``(M, N)``, floating (float16/bfloat16 are computed in float32), finite.
        kind: ``"gram"`` (the only kind: ``W`` need not be square).
        bins: number of equal bins between the estimated spectral edges.
        method: ``"slq"`` (stochastic Lanczos quadrature) or ``"kpm"`` (kernel polynomial method).
        num_vectors: number of Rademacher probes ``k``, run together as one block.
        num_steps: Lanczos steps ``m`` per probe (KPM: ``m`` products give ``2m`` Chebyshev moments); ``None``:
            12 for SLQ, 16 for KPM.
        generator: source of the probes (on its own device); ``None`` uses the global one.

    Returns:
        A :class:`SpectralDensity` on ``weight.device`` (float64) with ``method`` set.

    Raises:
        TypeError: if ``weight`` is not a floating tensor.
        ValueError: if ``weight`` is not 2-D, empty or not finite, or an option is outside its allowed set.

    References: arXiv:1308.5467.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> w = torch.randn(400, 200, generator=g)
        >>> d = estimate_density(w, bins=20, generator=g)
        >>> e = torch.linalg.eigvalsh(w.T @ w / 400)  # exact, for comparison
        >>> d.method, round(float(d.mass.sum()), 6), bool(d.edges[0] <= e[0]) and bool(e[-1] <= d.edges[-1])
        ('slq', 1.0, True)
    """
    w = _check_weight(weight, kind=kind, method=method)
    bins = at_least("bins", bins, 1, owner="estimate_density")
    num_vectors = at_least("num_vectors", num_vectors, 1, owner="estimate_density")
    num_steps = _DEFAULT_STEPS[method] if num_steps is None else num_steps
    num_steps = at_least("num_steps", num_steps, 2, owner="estimate_density")
    gram = _gram_operator(w)
    start = gram.lift(_rademacher(num_vectors, gram.dim, w, generator))
    if method == "kpm":
        return _kpm_density(gram, start, num_steps, bins=bins)
    return _slq_density(gram, start, min(num_steps, gram.dim), bins=bins)


def _slq_density(gram: _Gram, start: torch.Tensor, steps: int, *, bins: int) -> SpectralDensity:
    atom = gram.atom
    nodes, weights, bounds = _gauss_rules(*_lanczos(gram, start, steps))
    weights = weights * (1.0 - atom) / nodes.shape[0]  # the average over probes, scaled to the non-zero part
    edges, point, xs, fs = _frame(nodes, weights, bounds, bins=bins, atom=atom)
    query = edges.clamp_min(0.0).sqrt().expand(xs.shape[0], -1).contiguous()  # interpolate in s = sqrt(x)
    mass = _bin_points(nodes[point], weights[point], edges) + _pchip(query, xs.clamp_min(0.0).sqrt(), fs).sum(
        0
    ).diff().clamp_min(0.0)
    if atom > 0.0:
        mass = mass + _bin_points(nodes.new_zeros(1), nodes.new_full((1,), atom), edges)
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


def _kpm_density(gram: _Gram, start: torch.Tensor, steps: int, *, bins: int) -> SpectralDensity:
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
        mass = mass + _bin_points(edges.new_zeros(1), edges.new_full((1,), atom), edges)
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


def _bin_points(x: torch.Tensor, w: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Mass ``w`` at points ``x`` summed per bin (last bin closed, outside points dropped)."""
    bins = edges.numel() - 1
    x, w = x.to(edges).flatten(), w.to(edges).flatten()
    idx = torch.bucketize(x, edges, right=True) - 1
    idx = torch.where(x == edges[-1], bins - 1, idx)
    inside = (idx >= 0) & (idx < bins)
    return edges.new_zeros(bins).index_add_(0, idx[inside], w[inside])


def _check_edges(edges: torch.Tensor) -> torch.Tensor:
    ed = torch.as_tensor(edges).detach().to(torch.float64)
    if ed.ndim != 1 or ed.numel() < 2 or not bool((ed.diff() > 0).all()):
        raise ValueError(f"edges must be a 1-D increasing tensor of length >= 2, got shape {tuple(ed.shape)}")
    return ed


def _check_weight(weight: torch.Tensor, *, kind: str, method: str) -> torch.Tensor:
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
        got = weight.dtype if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise TypeError(f"estimate_density: weight must be a floating torch.Tensor, got {got}")
    if kind != "gram":
        raise ValueError(f"estimate_density: kind must be 'gram', got {kind!r}")
    one_of("method", method, ("slq", "kpm"), owner="estimate_density")
    if weight.ndim != 2 or weight.numel() == 0:
        raise ValueError(f"estimate_density: weight must be a non-empty 2-D (M, N) matrix, got {tuple(weight.shape)}")
    w = weight.detach()
    w = w if w.dtype in (torch.float32, torch.float64) else w.float()
    if not bool(torch.isfinite(w.sum())) and not bool(torch.isfinite(w).all()):  # one cheap pass first
        raise ValueError("estimate_density: weight must be finite (found NaN or inf)")
    return w
