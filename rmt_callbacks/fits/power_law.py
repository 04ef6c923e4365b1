r"""Power-law fit of the tail of a spectral density (heavy-tailed self-regularisation, HTSR).

Above a lower cutoff :math:`x_{\min}` the tail of an empirical spectral density is modelled by the continuous
power law (Clauset, Shalizi & Newman 2009, arXiv:0706.1062, eq. 2.2)

.. math::

    p(x) = \frac{\alpha - 1}{x_{\min}} \Big(\frac{x}{x_{\min}}\Big)^{-\alpha}, \qquad
    F(x) = 1 - \Big(\frac{x}{x_{\min}}\Big)^{1 - \alpha}, \qquad x \ge x_{\min}.

For a given :math:`x_{\min}` the :math:`n_{\rm tail}` values :math:`x_i \ge x_{\min}` give the maximum-likelihood
exponent and its standard error (eqs. 3.1 and 3.2)

.. math::

    \hat\alpha = 1 + n_{\rm tail} \Big(\sum_{x_i \ge x_{\min}} \ln\frac{x_i}{x_{\min}}\Big)^{-1}, \qquad
    \sigma_\alpha = \frac{\hat\alpha - 1}{\sqrt{n_{\rm tail}}},

and :math:`x_{\min}` is the observed value that minimises the Kolmogorov–Smirnov distance between the tail and
its fitted law (section 3.3),

.. math::

    D = \max_{0 \le j < n_{\rm tail}} \Big| F(x_{(j)}) - \frac{j}{n_{\rm tail}} \Big|,

with :math:`x_{(0)} \le x_{(1)} \le \dots` the ascending tail and :math:`j/n_{\rm tail}` the empirical CDF
just below :math:`x_{(j)}` (for tied values, the index of the first of them). This is the form of Clauset's
reference code ``plfit`` and of the ``powerlaw`` package that WeightWatcher calls (arXiv:1305.0215), so
:math:`\hat\alpha`, :math:`x_{\min}` and :math:`D` agree with theirs; it is at most :math:`1/n_{\rm tail}`
below the two-sided :math:`\sup_x |F_n - F|`. This is the HTSR exponent of Martin & Mahoney (arXiv:1810.01075;
arXiv:2002.06716).

**Vectorised search.** The values are sorted once; with :math:`u_i = \ln x_i - \ln x_{\max}` the suffix sums
:math:`U_k = \sum_{i \ge k} u_i` give every candidate's exponent at once,
:math:`\hat\alpha_k = 1 + n_k / (U_k - n_k u_k)` (logs taken relative to the largest value, so the short
tails near the top do not lose precision to cancellation). A candidate's distance is one masked broadcast against
its tail, :math:`O(n)`, so trying all of them is :math:`O(n^2)`. Most need not be tried: on a few order statistics
of each tail the distance is known exactly at those points (a lower bound) and, since both CDFs are
non-decreasing, bounded between them (an upper bound); a candidate whose lower bound exceeds the smallest upper
bound cannot be the minimiser. Three such rounds (32, 128, 512 points per tail) leave tens to hundreds of
candidates on spectra (a 1 500-level Marchenko–Pastur or heavy-tailed spectrum: about 120 and 50 of 1 490, a few ms
on one core), whose exact distances decide; every exact minimiser survives, so the result is that of the
exhaustive search (tested against it). A pure Pareto sample, whose distance is nearly flat in :math:`x_{\min}`,
keeps more: 15 000 values take about 2 s on one core, half the exhaustive search.

**Candidates.** Every distinct value whose tail holds at least ``min_tail`` values and two distinct values
(a tail of one repeated value has no exponent). The default ``min_tail = 10`` follows WeightWatcher's practice
of ignoring fits to a handful of the largest eigenvalues. ``powerlaw.Fit`` with its defaults instead tries
every distinct value but the two largest (``min_tail = 3`` for distinct data). An upper cutoff
:math:`x_{\max}` (truncated power law) is not supported.

**Convergence.** A fit is ``converged`` only when the law describes the tail: :math:`D` below the 5 % critical
value :math:`c/\sqrt{n_{\rm tail}}` of the Kolmogorov distribution, :math:`c = 1.358` (``KS_CRITICAL``), and
:math:`\hat\alpha \le` ``ALPHA_MAX`` = 20. The first test is lenient (the parameters were fitted and
:math:`x_{\min}` chosen to minimise :math:`D`; Clauset et al. use a bootstrap p-value, section 4.1), the second
rejects the degenerate fits every bounded sample admits: the few largest values of a uniform sample are
matched by a power law of exponent in the hundreds.

References: Clauset, Shalizi & Newman, SIAM Rev. 51 (2009) 661, arXiv:0706.1062 (eqs. 2.2, 3.1, 3.2 and
section 3.3); Alstott, Bullmore & Plenz, arXiv:1305.0215; Martin & Mahoney, arXiv:1810.01075, arXiv:2002.06716.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeVar

import torch

from .._checks import positive
from ..laws import SpectralLaw
from ._result import FitResult, check_size, pooled_values

_F = TypeVar("_F", bound=FitResult)

__all__ = ["ALPHA_MAX", "KS_CRITICAL", "ParetoTail", "PowerLawFit", "fit_power_law"]

#: The 5 % critical value of the Kolmogorov distribution: a fit converges when D < KS_CRITICAL / sqrt(n_tail).
KS_CRITICAL = 1.358
#: The largest exponent a converged fit may have; steeper "tails" are the edge of a bounded density.
ALPHA_MAX = 20.0
_CHUNK = 1 << 22  # entries of the (candidates, values) block evaluated at once
_EXHAUSTIVE = 1 << 18  # (candidates x values) entries below which every candidate's distance is computed
_PRUNING_POINTS = (32, 128, 512)  # order statistics per tail in the successive bounds


@dataclass(frozen=True)
class ParetoTail(SpectralLaw):
    r"""The power law :math:`p(x) = (\alpha - 1) x_{\min}^{\alpha - 1} x^{-\alpha}` for :math:`x \ge x_{\min}`."""

    alpha: float
    x_min: float

    def _validate(self) -> None:
        positive("alpha - 1", self.alpha - 1.0, owner="ParetoTail")
        positive("x_min", self.x_min, owner="ParetoTail")

    @property
    def support(self) -> tuple[float, float]:
        return (self.x_min, math.inf)

    def _pdf(self, x: torch.Tensor) -> torch.Tensor:
        return (self.alpha - 1) / self.x_min * (x / self.x_min) ** (-self.alpha)

    def _cdf(self, x: torch.Tensor) -> torch.Tensor:
        return 1 - (x / self.x_min) ** (1 - self.alpha)


@dataclass(frozen=True)
class PowerLawFit(FitResult):
    """Power-law tail fit (:func:`rmt_callbacks.fits.fit_power_law`).

    ``alpha`` is :math:`\\hat\\alpha`, ``x_min`` the chosen cutoff, ``n_tail`` the number of values at or above
    it and ``alpha_std`` :math:`\\sigma_\\alpha = (\\hat\\alpha - 1)/\\sqrt{n_{\\rm tail}}`; ``ks`` is the
    distance :math:`D` of the tail (module docstring) and ``n`` the number of values given, zeros included.
    """

    alpha: float
    x_min: float
    n_tail: int
    alpha_std: float

    def _law(self) -> ParetoTail:
        return ParetoTail(alpha=self.alpha, x_min=self.x_min)


def fit_power_law(values: torch.Tensor, *, min_tail: int = 10) -> PowerLawFit:
    r"""Fit :math:`p(x) \propto x^{-\alpha}` above :math:`x_{\min}` to the tail of ``values`` (Clauset et al.).

    :math:`\hat\alpha` by maximum likelihood for every candidate :math:`x_{\min}`, and the candidate with the
    smallest KS distance :math:`D` (module docstring); ties go to the smallest :math:`x_{\min}`.

    Values :math:`\le 0` (the zero eigenvalues of a rank-deficient Gram matrix) are excluded; the message says
    how many. The fit fails (``converged=False``, with the reason) when fewer than
    :data:`~rmt_callbacks.fits.MIN_VALUES` positive values remain, when they are all equal, or when no value
    leaves a tail of ``min_tail`` values; it is reported as not converged, with its numbers, when :math:`D` is
    above the critical value or :math:`\hat\alpha` above :data:`ALPHA_MAX`.

    Args:
        values: eigenvalues (or any positive sample), any shape (pooled).
        min_tail: the fewest values a candidate's tail may hold, ``>= 2``.

    Returns:
        The fit.

    Raises:
        TypeError: ``values`` is not a real floating tensor, or ``min_tail`` not an int.
        ValueError: ``values`` has non-finite entries, or ``min_tail < 2``.

    References: Clauset, Shalizi & Newman, arXiv:0706.1062, eqs. 3.1, 3.2 and section 3.3.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = 2.0 * torch.rand(2000, generator=g, dtype=torch.float64) ** (-1 / 1.5)  # Pareto, alpha = 2.5
        >>> fit = fit_power_law(x)
        >>> fit.converged, round(fit.alpha, 1), abs(fit.alpha - 2.5) < 4 * fit.alpha_std
        (True, 2.5, True)
    """
    n, x, note, failed = tail_input(PowerLawFit, values, min_tail)
    if failed is not None:
        return failed
    best = _best(x, min_tail)
    if best is None:
        return PowerLawFit.failed(n, f"no x_min leaves a tail of {min_tail} values with two distinct ones{note}")
    k, alpha, d = best
    n_tail = x.numel() - k
    critical = KS_CRITICAL / math.sqrt(n_tail)
    if d >= critical:
        verdict, converged = f"not a power law: D = {d:.4g} >= {KS_CRITICAL}/sqrt(n_tail) = {critical:.4g}", False
    elif alpha > ALPHA_MAX:
        verdict, converged = f"not a power law: alpha = {alpha:.4g} > {ALPHA_MAX} (a bounded density)", False
    else:
        verdict, converged = "maximum likelihood alpha at the x_min minimising the KS distance", True
    return PowerLawFit(
        ks=d,
        n=n,
        converged=converged,
        message=verdict + note,
        alpha=alpha,
        x_min=float(x[k]),
        n_tail=n_tail,
        alpha_std=(alpha - 1) / math.sqrt(n_tail),
    )


def tail_input(cls: type[_F], values: torch.Tensor, min_tail: int) -> tuple[int, torch.Tensor, str, _F | None]:
    """What a tail fit starts from: the number of values, the ascending positive ones, a note on those excluded,
    and a failed ``cls`` result when too few remain (or all are equal), else ``None``.

    Raises:
        TypeError: ``min_tail`` is not an int, or ``values`` not a real floating tensor.
        ValueError: ``min_tail < 2``, or ``values`` has non-finite entries.
    """
    if isinstance(min_tail, bool) or not isinstance(min_tail, int):
        raise TypeError(f"min_tail must be an int, got {type(min_tail).__name__}")
    if min_tail < 2:
        raise ValueError(f"min_tail must be >= 2, got {min_tail}")
    flat = pooled_values(values, name="values")
    n = flat.numel()
    x = torch.sort(flat[flat > 0]).values
    dropped = n - x.numel()
    note = f"; {dropped} values <= 0 excluded" if dropped else ""
    failed = check_size(cls, x)
    return n, x, note, None if failed is None else cls.failed(n, failed.message + note)


def _candidates(x: torch.Tensor, min_tail: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exponents, KS distances and start indices of every candidate x_min of the ascending positive ``x``."""
    u, first, starts = _prepare(x, min_tail)
    alphas = _alphas(u, starts)
    return alphas, _exact(u, first, alphas, starts), starts


def _prepare(x: torch.Tensor, min_tail: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``u = ln(x / x_max)``, the index of the first value tied with each one, and the candidates' start indices."""
    n = x.numel()
    first = torch.searchsorted(x, x, right=False)  # index of the first value tied with each one
    distinct_above = torch.zeros(n, dtype=torch.bool)
    distinct_above[:-1] = x[:-1] < x[-1]  # the tail from here holds two distinct values
    is_start = first == torch.arange(n)
    starts = torch.nonzero(is_start & distinct_above & (n - torch.arange(n) >= min_tail)).reshape(-1)
    return torch.log(x) - math.log(float(x[-1])), first, starts


def _alphas(u: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    n = u.numel()
    suffix = torch.flip(torch.cumsum(torch.flip(u, [0]), 0), [0])
    tail = (n - starts).to(u.dtype)
    return 1 + tail / (suffix[starts] - tail * u[starts])


def _exact(u: torch.Tensor, first: torch.Tensor, alphas: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """The KS distance of each candidate's tail (ascending ``starts``), in chunks of candidates."""
    n = u.numel()
    distances = torch.empty_like(alphas)
    index = torch.arange(n)
    step = max(1, _CHUNK // n)
    for lo in range(0, starts.numel(), step):
        k = starts[lo : lo + step, None]
        a = alphas[lo : lo + step, None]
        j = int(starts[lo])  # the chunk's tails all lie in u[j:]
        model = -torch.expm1((1 - a) * (u[j:] - u[k]))  # F(x_i) = 1 - (x_i / x_k)^(1 - alpha)
        empirical = (first[j:] - k).to(u.dtype) / (n - k).to(u.dtype)
        gap = torch.where(index[j:] >= k, (model - empirical).abs(), torch.zeros((), dtype=u.dtype))
        distances[lo : lo + step] = gap.amax(dim=1)
    return distances


def _bounds(
    u: torch.Tensor, first: torch.Tensor, alphas: torch.Tensor, starts: torch.Tensor, points: int
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Lower and upper bounds on each candidate's KS distance from ``points`` order statistics of its tail.

    At the sampled indices the deviation is exact (a lower bound on the maximum); between two of them,
    :math:`j_a \le j \le j_b`, the model CDF :math:`F` and the empirical one :math:`E` are both non-decreasing, so
    :math:`|F_j - E_j| \le \max(F_{j_b} - E_{j_a}, E_{j_b} - F_{j_a})` (an upper bound).
    """
    n = u.numel()
    lower, upper = torch.empty_like(alphas), torch.empty_like(alphas)
    t = torch.linspace(0.0, 1.0, points, dtype=u.dtype)
    step = max(1, _CHUNK // points)
    for lo in range(0, starts.numel(), step):
        k = starts[lo : lo + step, None]
        j = k + torch.floor(t * (n - 1 - k).to(u.dtype)).long()  # (K, points): k first, n - 1 last
        model = -torch.expm1((1 - alphas[lo : lo + step, None]) * (u[j] - u[k]))
        empirical = (first[j] - k).to(u.dtype) / (n - k).to(u.dtype)
        lower[lo : lo + step] = (model - empirical).abs().amax(dim=1)
        rise = torch.maximum(model[:, 1:] - empirical[:, :-1], empirical[:, 1:] - model[:, :-1])
        upper[lo : lo + step] = rise.amax(dim=1)
    return lower, upper


def _best(x: torch.Tensor, min_tail: int) -> tuple[int, float, float] | None:
    """Start index, exponent and KS distance of the candidate with the smallest distance (the first, on ties).

    The result of the exhaustive search over every candidate, at a fraction of its cost: candidates whose lower
    bound (:func:`_bounds`) exceeds the smallest upper bound cannot hold the minimum and are dropped, on 32, 128
    and then 512 order statistics per tail, before the survivors' exact distances are computed (a margin of 1e-12
    covers rounding). Every exact minimiser survives, so the choice is the exhaustive one.
    """
    u, first, starts = _prepare(x, min_tail)
    if not starts.numel():
        return None
    alphas = _alphas(u, starts)
    keep = torch.arange(starts.numel())
    for points in _PRUNING_POINTS:
        if keep.numel() * u.numel() <= _EXHAUSTIVE:
            break
        lower, upper = _bounds(u, first, alphas[keep], starts[keep], points)
        keep = keep[lower <= upper.min() + 1e-12]
    distances = _exact(u, first, alphas[keep], starts[keep])
    best = int(torch.argmin(distances))  # the first minimum: the smallest x_min
    return int(starts[keep[best]]), float(alphas[keep[best]]), float(distances[best])
