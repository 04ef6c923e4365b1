r"""Marchenko–Pastur fit of Gram eigenvalues, robust to outliers ("spikes") above the bulk.

Conventions (:mod:`rmt_callbacks.spectral`): ``W`` is ``(M, N)``, :math:`X = W^\top W / M` has :math:`N`
eigenvalues (with the :math:`N - M` structural zeros when :math:`q = N/M > 1`), and for i.i.d. entries of
variance :math:`\sigma^2` their mean is :math:`\sigma^2` and their law :math:`\mathrm{MP}(\sigma^2, q)`.

**Spikes and the trace.** A rank-one signal of strength :math:`\theta` (``W = Z + P`` with
:math:`P^\top P / M = \theta vv^\top`, or a row covariance :math:`\sigma^2(1 + vv^\top\theta/\sigma^2)`) adds
:math:`\theta` to :math:`\operatorname{tr} X`, and for :math:`\theta > \sigma^2\sqrt q` (the BBP threshold) it
pushes one eigenvalue out of the bulk, to

.. math::

    \ell = \frac{(\theta + \sigma^2)(\theta + q\sigma^2)}{\theta} > \lambda_+ = \sigma^2(1 + \sqrt q)^2
    \quad\Longleftrightarrow\quad
    \theta(\ell) = \tfrac12\Big[\ell - \sigma^2(1+q) + \sqrt{(\ell - \sigma^2(1+q))^2 - 4q\sigma^4}\Big].

Both spiked models give the same two relations, so with :math:`k` outliers :math:`\ell_j` among :math:`n`
eigenvalues (pooled over matrices), :math:`\operatorname{tr} X = n\sigma^2 + \sum_j \theta_j`, i.e.

.. math::

    \sigma^2 = \frac1n\Big(\sum_{i=1}^n \lambda_i - \sum_{j=1}^k \theta(\ell_j; \sigma^2)\Big),

which is the bulk mean corrected for the trace the spikes carry away: to leading order the :math:`n - k` bulk
eigenvalues sum to :math:`\sigma^2 (n - k(1 + q))`, not :math:`\sigma^2 (n - k)`.

**Non-structural levels.** For :math:`q > 1` the fit and its KS distance use the :math:`M` non-zero levels only,
against the continuous part of :math:`\mathrm{MP}(\sigma^2, q)`: they are :math:`q` times the levels of
:math:`WW^\top/N`, whose law is :math:`\mathrm{MP}(\sigma^2, 1/q)`, i.e. :math:`\mathrm{MP}(q\sigma^2, 1/q)`.
The fit runs in the frame of that smaller Gram matrix, so ``W`` and ``W.T`` give the same :math:`\sigma^2`, spikes,
KS distance and verdict. (Counting the :math:`N - M` zeros, which the atom matches exactly, would shrink the KS
distance by :math:`M/N` and let any :math:`M \ll N` matrix pass.)

**Standard error.** Without spikes :math:`\hat\sigma^2 = \operatorname{tr}X/N` is the mean of the :math:`MN`
squared entries, so for Gaussian entries :math:`MN\hat\sigma^2/\sigma^2 \sim \chi^2_{MN}` and
:math:`\operatorname{sd}(\hat\sigma^2) = \sigma^2\sqrt{2/(MN)}` (pooled over :math:`B` matrices:
:math:`\sqrt{2/(BMN)}`): ``sigma2_std``, with :math:`\hat\sigma^2` for :math:`\sigma^2`. For other entry laws the
factor 2 is :math:`\mu_4/\sigma^4 - 1` (0.8 for uniform entries, the default ``nn.Linear`` initialisation: the
reported error is then 1.6 times too large); the spikes' estimated signal adds an error not included.

**Finite-size edge.** The largest bulk eigenvalue fluctuates on the Tracy–Widom scale
:math:`s_{\rm TW} = \sigma^2(\sqrt M + \sqrt N)(1/\sqrt M + 1/\sqrt N)^{1/3}/M` around :math:`\lambda_+`
(Johnstone 2001), with mean :math:`\approx -1.2\,s_{\rm TW}` and a TW1 tail
:math:`P(> c) \approx 2\cdot10^{-4}` at :math:`c = 4`. An eigenvalue counts as a spike when it exceeds
:math:`\lambda_+ + c\, s_{\rm TW}`, ``c = margin``; with the default ``margin = 4`` Gaussian matrices from
:math:`5\times20` to :math:`400\times400` gave no false spike in 10^4 matrices (largest observed: 3.6).
Spikes closer to the edge than this margin stay in the bulk. This rule, :func:`spike_threshold`, is the one
definition of a spike: ``num_spikes``, the figures' spike markers (the ``num_spikes`` largest levels) and the levels
the spacing analysis leaves out (:mod:`rmt_callbacks.analysis`) all use it.

References: Marchenko & Pastur (1967); Baik, Ben Arous & Péché, Ann. Probab. 33 (2005) 1643;
Benaych-Georges & Nadakuditi, J. Multivar. Anal. 111 (2012) 120 (arXiv:1103.2221); Johnstone, Ann. Stat. 29
(2001) 295.
"""

from __future__ import annotations

import functools
import math

import torch

from .._checks import non_negative, positive
from ..laws import MarchenkoPastur
from ._result import MIN_VALUES, MarchenkoPasturFit, check_size, pooled_values
from .distances import ks_sorted, sort_values

__all__ = ["SPIKE_MARGIN", "fit_marchenko_pastur", "spike_threshold"]

SPIKE_MARGIN = 4.0
"""The default margin :math:`c` of :func:`spike_threshold`, in Tracy–Widom units (module docstring)."""

_MAX_ITERATIONS = 100
_RELATIVE_TOLERANCE = 1e-12
_NEGATIVE_TOLERANCE = 1e-4  # eigenvalues below -this * max are not Gram eigenvalues


def fit_marchenko_pastur(
    eigs: torch.Tensor, *, ratio: float, rows: int | None = None, margin: float = SPIKE_MARGIN
) -> MarchenkoPasturFit:
    r"""Fit :math:`\mathrm{MP}(\sigma^2, q)` to Gram eigenvalues at known :math:`q`, counting spikes.

    Iterates from a robust start (:math:`\sigma^2` = the median of the non-structural levels over that of the
    law's continuous part): spikes are the levels above :func:`spike_threshold`; :math:`\sigma^2` is re-estimated
    from the trace with the spikes' signal removed (module docstring), until the spike count is stable and
    :math:`\sigma^2` settles. The KS distance is that of the bulk (the non-structural levels but the spikes) to
    the continuous part of :math:`\mathrm{MP}(\hat\sigma^2, q)`; the fit converges when it is below
    :func:`~rmt_callbacks.fits._result.ks_threshold` of the bulk's size, and is rejected (numbers kept,
    ``converged=False``) otherwise.

    Args:
        eigs: Gram eigenvalues in the project normalisation, any shape (pooled over matrices), including the
            structural zeros when ``ratio > 1``; at least :data:`~rmt_callbacks.fits.MIN_VALUES` non-structural
            ones. Round-off negatives (down to :math:`-10^{-4}\max|\lambda|`) are set to zero, and for
            ``ratio > 1`` the :math:`n(1 - 1/q)` smallest values, which must lie within :math:`10^{-4}\max\lambda`
            of zero, are the structural zeros and are left out.
        ratio: :math:`q = N/M > 0` of the matrices.
        rows: :math:`M`, the rows of each matrix (for the Tracy–Widom margin and ``sigma2_std``). ``None``:
            ``eigs`` are the :math:`N` eigenvalues of one matrix, :math:`M = n / q`. Pass it when pooling matrices.
        margin: :math:`c \ge 0`, the spike threshold in Tracy–Widom units above :math:`\lambda_+`.

    Returns:
        The fit, ``n`` its non-structural levels; failed (``converged=False``, ``NaN`` parameters, with the
        reason) for too few non-structural levels or all-equal ones, a non-positive :math:`\sigma^2`, or a
        spike count that does not settle; rejected (parameters kept, ``converged=False``) when the bulk's KS
        distance is too large.

    Raises:
        TypeError: ``eigs`` is not a real floating tensor; ``ratio``/``margin`` not real numbers; ``rows`` not
            an int.
        ValueError: non-finite entries (the message gives how many), negative eigenvalues beyond round-off, or
            missing structural zeros for ``ratio > 1``;
            ``ratio <= 0``, ``rows < 1``, ``margin < 0`` or not finite.

    References: arXiv:1103.2221; arXiv:2411.13512 (Marchenko–Pastur at initialisation).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> w = torch.randn(400, 100, generator=g, dtype=torch.float64)
        >>> w[:, 0] += 3.0  # a rank-one signal: theta = 9 >> sqrt(q) = 0.5
        >>> fit = fit_marchenko_pastur(torch.linalg.eigvalsh(w.T @ w / 400), ratio=0.25)
        >>> fit.converged, fit.num_spikes, round(fit.sigma2, 1), round(fit.sigma2_std, 4)
        (True, 1, 1.0, 0.0071)
    """
    q = positive("ratio", ratio)
    c = non_negative("margin", margin)
    x = sort_values(pooled_values(eigs, name="eigs"))
    if x.numel() and float(x[0]) < 0.0:
        floor = -_NEGATIVE_TOLERANCE * float(x.abs().max())
        negative = int((x < floor).sum())
        if negative:
            raise ValueError(f"eigs must be Gram eigenvalues (>= 0), but {negative} of them are below {floor:.3g}")
        x = x.clamp(min=0.0)  # round-off around the structural zeros: they belong to the atom at zero
    m = float(x.numel()) / q if rows is None else float(_rows(rows))
    levels = _nonstructural(x, q) if x.numel() else x
    failed = check_size(MarchenkoPasturFit, levels, minimum=MIN_VALUES, what="non-structural levels")
    if failed is not None:
        return failed
    # the frame of the smaller Gram matrix (module docstring): levels / q ~ MP(sigma2, 1/q), M' = N = q M
    scale, q_small, m_small = (q, 1.0 / q, m * q) if q > 1.0 else (1.0, q, m)
    y = levels / scale
    n = y.numel()
    sigma2, k, message = _iterate(y, q_small, m_small, c)
    if message:
        return MarchenkoPasturFit.failed(n, message)
    law = MarchenkoPastur(sigma2=sigma2, ratio=q)
    return MarchenkoPasturFit.judged(
        ks_sorted(y[: n - k], MarchenkoPastur(sigma2=sigma2, ratio=q_small)),
        n,
        f"sigma2 from the trace less {k} spikes' signal (BBP), margin {c:g} Tracy-Widom units; KS of the {n - k} "
        f"bulk levels",
        ks_n=n - k,
        sigma2=sigma2,
        ratio=q,
        lambda_minus=law.lambda_minus,
        lambda_plus=law.lambda_plus,
        num_spikes=k,
        sigma2_std=sigma2 * math.sqrt(2.0 / (n * m_small)),  # n m_small = B M N (module docstring)
    )


def spike_threshold(sigma2: float, ratio: float, rows: float, margin: float = SPIKE_MARGIN) -> float:
    r"""The level above which an eigenvalue of :math:`X = W^\top W/M` is a spike:
    :math:`\lambda_+ + c\,s_{\rm TW}`, with :math:`\lambda_+ = \sigma^2(1 + \sqrt q)^2` and the Tracy–Widom scale
    :math:`s_{\rm TW} = \sigma^2(\sqrt M + \sqrt N)(1/\sqrt M + 1/\sqrt N)^{1/3}/M`, :math:`N = qM` (module
    docstring). The one definition of ``num_spikes``.

    Example:
        >>> round(spike_threshold(1.0, 1.0, 100), 4)  # lambda_+ = 4, s_TW = 20 * 0.2^(1/3) / 100
        4.4678
    """
    m = float(rows)
    tw = (math.sqrt(m) + math.sqrt(m * ratio)) * (1.0 / math.sqrt(m) + 1.0 / math.sqrt(m * ratio)) ** (1 / 3) / m
    return sigma2 * ((1.0 + math.sqrt(ratio)) ** 2 + margin * tw)


def _iterate(x: torch.Tensor, q: float, m: float, c: float) -> tuple[float, int, str]:
    """The fixed point ``(sigma2, spikes, "")`` for ascending ``x`` (``q <= 1``), or ``(nan, -1, reason)``."""
    n, total = x.numel(), float(x.sum())
    sigma2 = _robust_start(x, q)
    k = -1
    for _ in range(_MAX_ITERATIONS):
        if not sigma2 > 0.0:
            return math.nan, -1, f"non-positive sigma2 estimate {sigma2!r}: the spectrum is not Marchenko-Pastur"
        threshold = torch.tensor([spike_threshold(sigma2, q, m, c)], dtype=torch.float64)
        k_new = n - int(torch.searchsorted(x, threshold, right=True))
        theta = _signal_strength(x[n - k_new :], sigma2, q)
        sigma2_new = (total - float(theta.sum())) / n
        if k_new == k and abs(sigma2_new - sigma2) <= _RELATIVE_TOLERANCE * sigma2:
            return sigma2_new, k, ""
        sigma2, k = sigma2_new, k_new
    return math.nan, -1, f"spike count did not settle in {_MAX_ITERATIONS} iterations (last {k})"


def _nonstructural(x: torch.Tensor, q: float) -> torch.Tensor:
    """For q > 1, ``x`` (ascending) without its ``n (1 - 1/q)`` smallest values, the structural zeros, once checked."""
    zeros = round(x.numel() * (1.0 - 1.0 / q)) if q > 1.0 else 0
    if zeros == 0:
        return x
    tolerance = _NEGATIVE_TOLERANCE * float(x[-1])
    if float(x[zeros - 1]) > tolerance:
        found = int((x <= tolerance).sum())
        raise ValueError(
            f"eigs must include the N - M structural zeros of ratio={q:g} > 1: expected {zeros} of the "
            f"{x.numel()} values within {tolerance:.3g} of zero, found {found}"
        )
    return x[zeros:]


def _signal_strength(ell: torch.Tensor, sigma2: float, q: float) -> torch.Tensor:
    r"""The :math:`\theta` whose BBP outlier is at :math:`\ell \ge \lambda_+` (module docstring)."""
    b = ell - sigma2 * (1.0 + q)
    return 0.5 * (b + torch.sqrt((b * b - 4.0 * q * sigma2**2).clamp(min=0.0)))


def _robust_start(x: torch.Tensor, q: float) -> float:
    """Median of the continuous part of the sample over that of MP(1, q): insensitive to a few spikes."""
    p, median = _unit_median(q)
    sample = float(x[min(int(p * x.numel()), x.numel() - 1)])
    return sample / median


@functools.lru_cache(maxsize=64)
def _unit_median(q: float) -> tuple[float, float]:
    r"""The cdf level ``p`` of the median of the continuous part of MP(1, q) (atom included), and that median:
    three rounds of a 257-point grid search of the cdf.

    Each round brackets the root within one grid cell, so the bracket shrinks 256-fold per round: after three,
    to :math:`(\lambda_+ - \lambda_-)/2^{24}`, and the cell's midpoint is returned. Cached: a monitor fits the same
    :math:`q` at every analysis.
    """
    unit = MarchenkoPastur(sigma2=1.0, ratio=q)
    p = unit.atom + 0.5 * (1.0 - unit.atom)
    lo, hi = unit.lambda_minus, unit.lambda_plus
    for _ in range(3):
        grid = torch.linspace(lo, hi, 257, dtype=torch.float64)
        i = int(torch.searchsorted(unit.cdf(grid), torch.tensor([p], dtype=torch.float64)))  # cdf(grid[i-1]) < p
        lo, hi = float(grid[max(i - 1, 0)]), float(grid[min(i, 256)])
    return p, 0.5 * (lo + hi)


def _rows(rows: object) -> int:
    if isinstance(rows, bool) or not isinstance(rows, int):
        raise TypeError(f"rows must be an int or None, got {rows!r}")
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    return rows
