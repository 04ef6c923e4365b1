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

from typing import Literal

import torch

from .._checks import at_least, one_of
from ._krylov import _gram_operator, _rademacher
from ._quadrature import kpm_density, slq_density
from .histogram import SpectralDensity, density_from_eigenvalues, density_l1, exact_density

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
        return kpm_density(gram, start, num_steps, bins=bins)
    return slq_density(gram, start, min(num_steps, gram.dim), bins=bins)


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
