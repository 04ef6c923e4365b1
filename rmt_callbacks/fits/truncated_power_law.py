r"""Truncated power-law fit of a spectral tail: a power law with an exponential cutoff (WeightWatcher ``fit="TPL"``).

Above :math:`x_{\min}` the tail is modelled by (Clauset, Shalizi & Newman, arXiv:0706.1062, Table 1; the
``TruncatedPowerLaw`` of Alstott et al., arXiv:1305.0215)

.. math::

    p(x) = C(\alpha, \lambda)\, x^{-\alpha} e^{-\lambda x}, \qquad
    C^{-1} = \int_{x_{\min}}^\infty t^{-\alpha} e^{-\lambda t}\, dt, \qquad x \ge x_{\min},\ \lambda \ge 0,

normalisable for every real :math:`\alpha` when :math:`\lambda > 0` and for :math:`\alpha > 1` when
:math:`\lambda = 0` (the pure power law, which it nests).

**Exponential family.** With :math:`u = \ln(x/x_{\min})`, :math:`v = x/x_{\min} - 1` and
:math:`\mu = \lambda x_{\min}` the law of :math:`u` is :math:`w(u)/Z` on :math:`[0, \infty)`,
:math:`w(u) = e^{-(\alpha - 1)u - \mu v}`, :math:`Z(\alpha, \mu) = \int_0^\infty w`, so that
:math:`p(x) = w(u) / (Z x)`. The sufficient statistics are :math:`(u, v)` and the log-likelihood of the tail,
:math:`\ell = -\alpha \sum u_i - \mu \sum v_i - n \ln Z - n \ln x_{\min}`, is concave with gradient
:math:`n(\mathrm E[u] - \bar u, \mathrm E[v] - \bar v)` and Hessian :math:`-n\, \mathrm{Cov}(u, v)` under the
model: the observed Fisher information equals the expected one, and the standard errors are the square roots
of the diagonal of :math:`(n\,\mathrm{Cov})^{-1}` (:math:`\sigma_\lambda = \sigma_\mu / x_{\min}`).

**Normalisation.** :math:`Z = \mu^{\alpha - 1} e^{\mu}\, \Gamma(1 - \alpha, \mu)`, an upper incomplete gamma
function of possibly negative order; SciPy's ``gammaincc`` covers only :math:`\alpha < 1` and the downward
recurrence for :math:`\alpha > 1` cancels digits for large :math:`\mu`. We integrate instead in log-space,
:math:`u \in [0, U]`, with ``scipy.integrate.quad`` (relative tolerance :math:`10^{-12}`), after subtracting
the maximum of :math:`\ln w` (at :math:`e^{u^*} = (1 - \alpha)/\mu` when that exceeds 1) and cutting at the
:math:`U` where :math:`\ln w` has fallen 100 below it: valid for every :math:`(\alpha, \mu > 0)`, and the same
routine gives the moments of :math:`(u, v)` the gradient and Hessian need. The CDFs at many points are one
vectorised ``scipy.integrate.quad_vec`` call, absolute tolerance :math:`10^{-12}`.

**Maximum likelihood.** On the boundary :math:`\lambda = 0` the maximum over :math:`\alpha` is the power-law
:math:`\hat\alpha_{\rm PL} = 1 + n/\sum u_i`, and by concavity it is the global maximum if and only if the
score in :math:`\mu` there is :math:`\le 0`: :math:`\hat\alpha_{\rm PL} > 2` and
:math:`\bar v \ge 1/(\hat\alpha_{\rm PL} - 2)`. Otherwise the maximum is interior and damped Newton iterations
(from :math:`\hat\alpha_{\rm PL}`, :math:`\mu = 1/\bar y`) stop when the Newton decrement is below
:math:`10^{-14}` per value of the tail; a step never lowers :math:`\ell` and shrinks :math:`\mu` at most
tenfold, :math:`\alpha` then taking the quadratic model's best value for that :math:`\mu` (scaling the whole
step instead strands :math:`\alpha` when :math:`\hat\lambda` is small). Unlike ``powerlaw`` (Nelder–Mead to
``tol=1e-4``, :math:`\alpha \in [0, 3]` by default) :math:`\alpha` is not bounded. On the boundary with
:math:`\hat\alpha \le 3` the variance of :math:`x` diverges, the information about :math:`\lambda` is
infinite and ``lam_std`` is 0 (formally): judge the cutoff by ``p_value``, not ``lam_std``.

**Cutoff or not.** :math:`R = \ell_{\rm TPL} - \ell_{\rm PL} \ge 0` (both at this :math:`x_{\min}`, the power
law at :math:`\hat\alpha_{\rm PL}`) and, the models being nested with one extra parameter, the p-value
:math:`P(\chi^2_1 > 2R)` (Wilks; arXiv:0706.1062, section 5; what ``powerlaw``'s
``distribution_compare('power_law', 'truncated_power_law', nested=True)`` returns, with :math:`-R`); a small
p-value says the cutoff is needed. With :math:`\lambda = 0` on the boundary of the parameter space the
:math:`\chi^2_1` reference is not exact (in a regular boundary problem it is conservative, the null law being
an even mixture of :math:`\chi^2_0` and :math:`\chi^2_1`); on pure power laws of 1 000 values with
:math:`\alpha` = 1.8, 2.5 and 3.5 it rejected at the 5 % level for 5.0 %, 4.5 % and 4.0 % of 200 samples.

**Convergence.** ``converged`` means the optimiser finished and the law describes the tail: the KS distance
(the form of :func:`~rmt_callbacks.fits.fit_power_law`) below ``KS_CRITICAL``:math:`/\sqrt{n_{\rm tail}}`.

References: Clauset, Shalizi & Newman, arXiv:0706.1062; Alstott, Bullmore & Plenz, arXiv:1305.0215;
Martin & Mahoney, arXiv:1810.01075.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from .._checks import finite, positive
from ..laws import SpectralLaw
from ._result import FitResult
from .power_law import KS_CRITICAL, fit_power_law, tail_input

__all__ = ["TruncatedPowerLaw", "TruncatedPowerLawFit", "fit_truncated_power_law"]

_DROP = 100.0  # ln w is integrated until it has fallen this far below its maximum
_RTOL = 1e-12  # quadrature tolerance
_DECREMENT = 1e-14  # Newton stops when the predicted gain of log-likelihood per value is below this
_NOISE = 1e-11  # relative error of a log-likelihood computed by quadrature
_MAX_ITER = 200


def _frame(a: float, mu: float) -> tuple[float, float, float]:
    """(u*, max ln w, U) for w(u) = exp(-a u - mu (e^u - 1)), mu > 0: the peak and the cut of the integrand."""
    peak = math.log(-a / mu) if -a > mu else 0.0
    top = -a * peak - mu * math.expm1(peak)
    hi = peak + 1.0
    while -a * hi - mu * math.expm1(hi) > top - _DROP:  # ln w is concave: it crosses top - _DROP once
        hi = peak + 2.0 * (hi - peak)
    lo = peak
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if -a * mid - mu * math.expm1(mid) > top - _DROP else (lo, mid)
    return peak, top, hi


def _moments(a: float, mu: float) -> tuple[float, np.ndarray, np.ndarray]:
    """ln Z, (E u, E v) and Cov(u, v) of the law w(u)/Z on [0, inf), a = alpha - 1, mu > 0."""
    from scipy.integrate import quad

    peak, top, cut = _frame(a, mu)
    points = [peak] if 0 < peak < cut else None

    def integral(power_u: int, power_v: int) -> float:
        def f(u: float) -> float:
            return u**power_u * math.expm1(u) ** power_v * math.exp(-a * u - mu * math.expm1(u) - top)

        return quad(f, 0.0, cut, points=points, epsabs=0.0, epsrel=_RTOL, limit=200)[0]

    z = integral(0, 0)
    mean = np.array([integral(1, 0), integral(0, 1)]) / z
    second = np.array([[integral(2, 0), integral(1, 1)], [integral(1, 1), integral(0, 2)]]) / z
    return math.log(z) + top, mean, second - np.outer(mean, mean)


def _cdf_u(a: float, mu: float, u: np.ndarray) -> np.ndarray:
    """P(U <= u) of the law w(u)/Z, at every u >= 0 (one vectorised quadrature)."""
    if mu == 0.0:
        return -np.expm1(-a * u)
    from scipy.integrate import quad_vec

    _, top, cut = _frame(a, mu)
    u = np.minimum(u, cut)
    nodes = np.append(u, cut)

    def f(t: float) -> np.ndarray:
        s = t * nodes
        return nodes * np.exp(-a * s - mu * np.expm1(s) - top)

    mass = quad_vec(f, 0.0, 1.0, epsabs=0.0, epsrel=_RTOL, norm="max", limit=2000)[0]
    return np.clip(mass[:-1] / mass[-1], 0.0, 1.0)


@dataclass(frozen=True)
class TruncatedPowerLaw(SpectralLaw):
    r"""The power law with exponential cutoff :math:`p(x) = C x^{-\alpha} e^{-\lambda x}`, :math:`x \ge x_{\min}`.

    ``lam`` is :math:`\lambda \ge 0`; with ``lam = 0`` it is :class:`~rmt_callbacks.fits.power_law.ParetoTail`
    (and needs ``alpha > 1``). The CDF is a numerical quadrature (module docstring).

    Example:
        >>> law = TruncatedPowerLaw(alpha=1.5, lam=0.1, x_min=1.0)
        >>> round(float(law.cdf(torch.tensor(1e3))), 6), round(float(law.pdf(1.0)), 4)
        (1.0, 0.8411)
    """

    alpha: float
    lam: float
    x_min: float

    def _validate(self) -> None:
        finite("alpha", self.alpha, owner="TruncatedPowerLaw")
        positive("x_min", self.x_min, owner="TruncatedPowerLaw")
        finite("lam", self.lam, owner="TruncatedPowerLaw")
        if self.lam < 0:
            raise ValueError(f"TruncatedPowerLaw: lam must be >= 0, got {self.lam!r}")
        if self.lam == 0:
            positive("alpha - 1 (lam = 0)", self.alpha - 1.0, owner="TruncatedPowerLaw")

    @property
    def support(self) -> tuple[float, float]:
        return (self.x_min, math.inf)

    @cached_property
    def _log_z(self) -> float:
        mu = self.lam * self.x_min
        return -math.log(self.alpha - 1) if mu == 0 else _moments(self.alpha - 1, mu)[0]

    def _pdf(self, x: torch.Tensor) -> torch.Tensor:
        u = torch.log(x / self.x_min)
        mu = self.lam * self.x_min
        return torch.exp(-(self.alpha - 1) * u - mu * torch.expm1(u) - self._log_z) / x

    def _cdf(self, x: torch.Tensor) -> torch.Tensor:
        u = torch.log(x / self.x_min).cpu().numpy().reshape(-1)
        cdf = _cdf_u(self.alpha - 1, self.lam * self.x_min, np.maximum(u, 0.0))
        return torch.from_numpy(cdf).to(x.device).reshape(x.shape)


@dataclass(frozen=True)
class TruncatedPowerLawFit(FitResult):
    r"""Truncated power-law tail fit (:func:`rmt_callbacks.fits.fit_truncated_power_law`).

    ``alpha`` and ``lam`` are :math:`\hat\alpha`, :math:`\hat\lambda` with their standard errors
    ``alpha_std``, ``lam_std`` (observed Fisher information), ``x_min`` the cutoff and ``n_tail`` the number of
    values at or above it; ``loglik_ratio`` is :math:`R = \ell_{\rm TPL} - \ell_{\rm PL} \ge 0` and ``p_value``
    :math:`P(\chi^2_1 > 2R)` (small: the cutoff is needed); ``ks`` is the KS distance of the tail and ``n`` the
    number of values given.
    """

    alpha: float
    lam: float
    x_min: float
    n_tail: int
    alpha_std: float
    lam_std: float
    loglik_ratio: float
    p_value: float

    def _law(self) -> TruncatedPowerLaw:
        return TruncatedPowerLaw(alpha=self.alpha, lam=self.lam, x_min=self.x_min)


def fit_truncated_power_law(
    values: torch.Tensor, *, x_min: float | None = None, min_tail: int = 10
) -> TruncatedPowerLawFit:
    r"""Fit :math:`p(x) \propto x^{-\alpha} e^{-\lambda x}` above :math:`x_{\min}` by maximum likelihood.

    Without ``x_min`` the cutoff is the one :func:`~rmt_callbacks.fits.fit_power_law` chooses (the pure power
    law's KS minimiser, with the same ``min_tail``): what ``powerlaw.Fit`` does, whose only
    ``xmin_distribution`` is the power law and whose ``truncated_power_law`` reuses that ``xmin``, and so what
    WeightWatcher's ``fit="TPL"`` reports. Then :math:`(\hat\alpha, \hat\lambda)`, their standard errors, the KS
    distance and the likelihood-ratio test against the pure power law (module docstring).

    Values :math:`\le 0` are excluded (the message says how many). The fit fails (``converged=False``, with the
    reason) when fewer than :data:`~rmt_callbacks.fits.MIN_VALUES` positive values remain or they are all equal,
    when the power-law fit finds no ``x_min``, or when the tail holds fewer than ``min_tail`` values or one
    distinct value; it is reported as not converged, with its numbers, when Newton's method did not finish or
    the KS distance is above ``KS_CRITICAL / sqrt(n_tail)``.

    Args:
        values: eigenvalues (or any positive sample), any shape (pooled).
        x_min: the lower cutoff, a positive number; ``None``: the power-law fit's.
        min_tail: the fewest values the tail may hold, ``>= 2``.

    Returns:
        The fit.

    Raises:
        TypeError: ``values`` is not a real floating tensor, or ``min_tail`` not an int.
        ValueError: ``values`` has non-finite entries, ``min_tail < 2`` or ``x_min`` is not positive and finite.

    References: arXiv:0706.1062 (Table 1, section 5); arXiv:1305.0215.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = 1 - 10 * torch.log(torch.rand(40000, generator=g, dtype=torch.float64))  # 1 + Exp(rate 0.1)
        >>> x = x[torch.rand(40000, generator=g, dtype=torch.float64) < x**-1.5]  # kept: x^(-1.5) e^(-x/10)
        >>> fit = fit_truncated_power_law(x, x_min=1.0)
        >>> fit.converged, abs(fit.alpha - 1.5) < 4 * fit.alpha_std, abs(fit.lam - 0.1) < 4 * fit.lam_std
        (True, True, True)
        >>> fit.p_value < 1e-6  # the cutoff is needed
        True
    """
    if x_min is not None:
        x_min = positive("x_min", x_min)
    n, x, note, failed = tail_input(TruncatedPowerLawFit, values, min_tail)
    if failed is not None:
        return failed
    if x_min is None:
        power_law = fit_power_law(x, min_tail=min_tail)
        if not math.isfinite(power_law.x_min):
            return TruncatedPowerLawFit.failed(n, f"power-law fit found no x_min: {power_law.message}{note}")
        x_min = power_law.x_min
    x_min = float(x_min)
    tail = x[x >= x_min].numpy()
    if tail.size < min_tail or tail[0] == tail[-1]:
        why = f"the tail above x_min = {x_min:.6g} holds {tail.size} values, {np.unique(tail).size} distinct"
        return TruncatedPowerLawFit.failed(n, f"{why}; need {min_tail} values, two distinct{note}")
    return _fit_tail(tail, x_min, n, note)


def _fit_tail(tail: np.ndarray, x_min: float, n: int, note: str) -> TruncatedPowerLawFit:
    """The maximum-likelihood fit to the ascending ``tail`` (all ``>= x_min``, two distinct values)."""
    m = tail.size
    u = np.log(tail / x_min)
    v = np.expm1(u)
    u_bar, v_bar = float(u.mean()), float(v.mean())
    alpha_pl = 1 + 1 / u_bar
    loglik_pl = math.log(alpha_pl - 1) - alpha_pl * u_bar  # per value, up to -ln x_min
    finished = True
    if alpha_pl > 2 and v_bar >= 1 / (alpha_pl - 2):  # the score in lambda at (alpha_pl, 0) is <= 0
        alpha, mu, loglik = alpha_pl, 0.0, loglik_pl
        a = alpha - 1
        if a > 2:  # Cov(u, v) at lambda = 0 is finite only when alpha > 3
            var_v = a / (a - 2) - (a / (a - 1)) ** 2  # Var(v) = Var(y) = E y^2 - (E y)^2
            cov = np.array([[1 / a**2, 1 / (a - 1) ** 2], [1 / (a - 1) ** 2, var_v]])
            inverse = np.linalg.inv(m * cov)
            alpha_std, mu_std = math.sqrt(inverse[0, 0]), math.sqrt(inverse[1, 1])
        else:
            alpha_std, mu_std = (alpha - 1) / math.sqrt(m), 0.0
        verdict = "lambda = 0: the pure power law maximises the likelihood"
    else:
        try:
            alpha, mu, loglik, cov, finished = _newton(u_bar, v_bar, alpha_pl, 1 / (1 + v_bar))
        except (ArithmeticError, np.linalg.LinAlgError) as error:  # pragma: no cover - not seen in practice
            return TruncatedPowerLawFit.failed(n, f"Newton's method broke down: {error}{note}")
        inverse = np.linalg.inv(m * cov)
        alpha_std, mu_std = math.sqrt(inverse[0, 0]), math.sqrt(inverse[1, 1])
        verdict = "maximum likelihood (alpha, lambda)" if finished else "Newton's method did not finish"
    ratio = max(float(m * (loglik - loglik_pl)), 0.0)
    first = np.searchsorted(tail, tail, side="left")
    ks = float(np.max(np.abs(_cdf_u(alpha - 1, mu, u) - first / m)))
    critical = KS_CRITICAL / math.sqrt(m)
    if finished and ks >= critical:
        verdict = f"not a truncated power law: D = {ks:.4g} >= {KS_CRITICAL}/sqrt(n_tail) = {critical:.4g}"
        finished = False
    return TruncatedPowerLawFit(
        ks=ks,
        n=n,
        converged=finished,
        message=verdict + note,
        alpha=float(alpha),
        lam=float(mu / x_min),
        x_min=x_min,
        n_tail=m,
        alpha_std=alpha_std,
        lam_std=mu_std / x_min,
        loglik_ratio=float(ratio),
        p_value=math.erfc(math.sqrt(ratio)),  # P(chi2_1 > 2R)
    )


def _newton(u_bar: float, v_bar: float, alpha: float, mu: float) -> tuple[float, float, float, np.ndarray, bool]:
    """Damped Newton ascent of the per-value log-likelihood -alpha u_bar - mu v_bar - ln Z over mu > 0.

    Returns alpha, mu, the log-likelihood per value (up to -ln x_min), Cov(u, v) there, and whether it finished.
    """

    def state(alpha: float, mu: float) -> tuple[float, np.ndarray, np.ndarray]:
        log_z, mean, cov = _moments(alpha - 1, mu)
        return -alpha * u_bar - mu * v_bar - log_z, mean - np.array([u_bar, v_bar]), cov

    loglik, grad, cov = state(alpha, mu)
    for _ in range(_MAX_ITER):
        step = np.linalg.solve(cov, grad)
        decrement = 0.5 * float(grad @ step)
        if decrement < _DECREMENT:
            return alpha, mu, loglik, cov, True
        if step[1] < -0.9 * mu:  # mu shrinks at most tenfold, alpha takes the model's best value for that mu
            step[1] = -0.9 * mu
            step[0] = (grad[0] - cov[0, 1] * step[1]) / cov[0, 0]
        t = 1.0
        while t > 1e-12:
            trial = state(alpha + t * step[0], mu + t * step[1])
            if trial[0] >= loglik - _NOISE * (1 + abs(loglik)):  # no lower, up to the quadrature's noise
                break
            t *= 0.5
        else:
            return alpha, mu, loglik, cov, False
        alpha, mu = alpha + t * step[0], mu + t * step[1]
        loglik, grad, cov = trial
    return alpha, mu, loglik, cov, False
