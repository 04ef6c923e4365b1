r"""Maximum-likelihood fits of the pair densities: one species (E12) and two species (E30).

Both laws are location–scale families, so every fit works on standardised values
:math:`z = (\lambda - m)/s` with the robust centre :math:`m` = median and scale :math:`s = \mathrm{IQR}/1.349`
(the standard deviation of a normal with that IQR; the plain standard deviation if the IQR vanishes), and maps
the result back: the parameters are of order one whatever the data's scale (the papers' pairs have
:math:`\sigma \sim 10^{-2}` around :math:`\lambda_0 \approx 2`), and a few far outliers cannot squash the bulk.

**Likelihood.** Up to :data:`BINNED_ABOVE` values the exact log-likelihood :math:`\sum_i \log\rho(z_i)` is
maximised. Above it, the values within :data:`WINDOW` robust scales of the median are binned once on a grid of
width :data:`BIN_WIDTH` and enter through the exact multinomial likelihood of the counts,
:math:`\sum_k c_k \log[F(e_{k+1}) - F(e_k)]`; the few values outside the window enter exactly, through
:math:`\log\rho(z_i)` (the two differ by the parameter-free :math:`\log` of the bin width). Each evaluation
then costs one cdf per occupied bin edge (a few hundred), independent of the sample size, so :math:`10^6`
values fit in tens of milliseconds. Bins of a fiftieth of a standard deviation lose a negligible fraction of
the information (of relative order :math:`w^2/12 \approx 3\cdot10^{-5}`), far below the statistical error.
Densities are floored at :math:`10^{-300}`, so a value far beyond the fitted tails costs a bounded penalty.
The optimiser is Nelder–Mead (``scipy.optimize.minimize``) on the centre and the log-widths, started from the
robust moments (median, and the E12 variance :math:`\tfrac32\sigma^2` equated to :math:`s^2`).

References: arXiv:2407.16427 (E12 fits of every pair); arXiv:2412.20496 (Fig. 5, two species);
docs/science.md (E12, E30).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ..laws import GOEPairDensity, SpectralLaw, TwoSpeciesPairDensity
from ._result import PairDensityFit, TwoSpeciesFit, check_size, pooled_values
from .distances import ks_sorted, sort_values

__all__ = ["BINNED_ABOVE", "BIN_WIDTH", "WINDOW", "fit_pair_density", "fit_two_species"]

#: Above this many values the fits maximise the binned likelihood instead of the exact one.
BINNED_ABOVE = 1024
#: Width of the likelihood bins, in robust scales (IQR / 1.349).
BIN_WIDTH = 0.02
#: Values farther than this many robust scales from the median enter the binned likelihood one by one.
WINDOW = 50.0
_WIDTH_RANGE = 1e3  # fitted widths (in robust scales) outside [1/_WIDTH_RANGE, _WIDTH_RANGE] are degenerate

_Objective = Callable[[SpectralLaw], float]


def fit_pair_density(eigs: torch.Tensor) -> PairDensityFit:
    r"""Fit the one-point density of a 2×2 GOE block (E12, :class:`~rmt_callbacks.laws.GOEPairDensity`).

    .. math::

        (\hat\lambda_0, \hat\sigma) = \arg\max \sum_i \log\rho_2(\lambda_i; \lambda_0, \sigma)

    (binned above :data:`BINNED_ABOVE` values: see the module docstring), started from
    :math:`\lambda_0` = median, :math:`\sigma = s/\sqrt{3/2}` (module docstring). Pool both levels of the pair over
    the ensemble. The KS distance is taken to the fitted law.

    Args:
        eigs: the pooled levels, any shape, at least :data:`~rmt_callbacks.fits.MIN_VALUES` of them.

    Returns:
        The fit; failed (``converged=False``, with the reason) for too few or all-equal values, or when the
        optimiser does not converge.

    Raises:
        TypeError: ``eigs`` is not a real floating tensor.
        ValueError: ``eigs`` has non-finite entries (the message gives how many).

    References: arXiv:2407.16427; docs/science.md, E12.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> d = 2.0 + 0.1 * torch.randn(5000, 2, generator=g, dtype=torch.float64)
        >>> off = 0.1 / 2**0.5 * torch.randn(5000, generator=g, dtype=torch.float64)
        >>> blocks = torch.stack([torch.stack([d[:, 0], off], -1), torch.stack([off, d[:, 1]], -1)], -2)
        >>> fit = fit_pair_density(torch.linalg.eigvalsh(blocks))
        >>> round(fit.center, 2), round(fit.sigma, 2)
        (2.0, 0.1)
    """
    x = sort_values(pooled_values(eigs, name="eigs"))
    failed = check_size(PairDensityFit, x)
    if failed is not None:
        return failed
    shift, scale, objective, method = _standardised_objective(x)
    start = np.array([0.0, -0.5 * math.log(1.5)])
    params, problem = _minimise(lambda p: objective(GOEPairDensity(center=float(p[0]), sigma=math.exp(p[1]))), start)
    if problem:
        return PairDensityFit.failed(x.numel(), problem)
    center, sigma = shift + scale * float(params[0]), scale * math.exp(params[1])
    law = GOEPairDensity(center=center, sigma=sigma)
    return PairDensityFit(ks=ks_sorted(x, law), n=x.numel(), converged=True, message=method, center=center, sigma=sigma)


def fit_two_species(eigs: torch.Tensor) -> TwoSpeciesFit:
    r"""Fit the two-species pair density (E30, :class:`~rmt_callbacks.laws.TwoSpeciesPairDensity`).

    .. math::

        (\hat\lambda_0, \hat\sigma_1, \hat\sigma_2) = \arg\max \sum_i \log\rho(\lambda_i; \lambda_0, \sigma_1,
        \sigma_2),\qquad \hat\sigma_1 \le \hat\sigma_2,

    (binned above :data:`BINNED_ABOVE` values), started from the robust moments with the two widths a factor
    :math:`e^{0.5}` apart (the likelihood is symmetric in :math:`\sigma_1 \leftrightarrow \sigma_2`, so a start on
    the diagonal could never leave it). The density is symmetric in the two widths; the result is ordered.
    On one-species data the fit returns :math:`\sigma_1 \approx \sigma_2`. A width that runs off to zero or
    infinity (more than a factor :math:`10^3` from the robust scale) is reported as a failed fit.

    Args:
        eigs: the pooled levels, any shape, at least :data:`~rmt_callbacks.fits.MIN_VALUES` of them.

    Returns:
        The fit, with the KS distance to the fitted law.

    Raises:
        TypeError: ``eigs`` is not a real floating tensor.
        ValueError: ``eigs`` has non-finite entries (the message gives how many).

    References: arXiv:2412.20496 (Fig. 5); docs/science.md, E30 (the project's parametrisation).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> d = 2.0 + 0.1 * torch.randn(5000, 2, generator=g, dtype=torch.float64)
        >>> off = 0.1 / 2**0.5 * torch.randn(5000, generator=g, dtype=torch.float64)
        >>> blocks = torch.stack([torch.stack([d[:, 0], off], -1), torch.stack([off, d[:, 1]], -1)], -2)
        >>> fit = fit_two_species(torch.linalg.eigvalsh(blocks))  # one species: both widths near 0.1
        >>> round(fit.sigma1, 1), round(fit.sigma2, 1), fit.sigma1 <= fit.sigma2
        (0.1, 0.1, True)
    """
    x = sort_values(pooled_values(eigs, name="eigs"))
    failed = check_size(TwoSpeciesFit, x)
    if failed is not None:
        return failed
    shift, scale, objective, method = _standardised_objective(x)
    log_sigma = -0.5 * math.log(1.5)
    start = np.array([0.0, log_sigma - 0.25, log_sigma + 0.25])

    def law_of(p: np.ndarray) -> TwoSpeciesPairDensity:
        return TwoSpeciesPairDensity(center=float(p[0]), sigma1=math.exp(p[1]), sigma2=math.exp(p[2]))

    params, problem = _minimise(lambda p: objective(law_of(p)), start)
    if problem:
        return TwoSpeciesFit.failed(x.numel(), problem)
    center = shift + scale * float(params[0])
    sigma1, sigma2 = sorted(scale * math.exp(float(v)) for v in params[1:])
    law = TwoSpeciesPairDensity(center=center, sigma1=sigma1, sigma2=sigma2)
    return TwoSpeciesFit(
        ks=ks_sorted(x, law),
        n=x.numel(),
        converged=True,
        message=method,
        center=center,
        sigma1=sigma1,
        sigma2=sigma2,
    )


def _standardised_objective(x: torch.Tensor) -> tuple[float, float, _Objective, str]:
    """Robust centre and scale, the mean negative log-likelihood of a law on the standardised values, the method.

    ``x`` is the pooled sample in ascending order.
    """
    n = x.numel()
    center = float(_quantile(x, 0.5))
    scale = float(_quantile(x, 0.75) - _quantile(x, 0.25)) / 1.349
    if scale <= 0.0:  # more than half the values equal (but not all): fall back to the standard deviation
        scale = float(x.std(unbiased=False))
    z = (x - center) / scale  # (n,) ascending
    if n <= BINNED_ABOVE:
        return center, scale, _exact(z), f"maximum likelihood, exact ({n} values)"
    return center, scale, _binned(z), f"maximum likelihood, binned ({n} values > {BINNED_ABOVE})"


def _quantile(x: torch.Tensor, p: float) -> torch.Tensor:
    """Linear-interpolation quantile of an ascending 1-D tensor (numpy's default)."""
    pos = p * (x.numel() - 1)
    lo = math.floor(pos)
    return x[lo] + (pos - lo) * (x[min(lo + 1, x.numel() - 1)] - x[lo])


def _exact(z: torch.Tensor) -> _Objective:
    def objective(law: SpectralLaw) -> float:
        return -float(torch.log(law.pdf(z).clamp(min=1e-300)).mean())

    return objective


def _binned(z: torch.Tensor) -> _Objective:
    """Binned likelihood inside ``|z| <= WINDOW``, exact outside it; ``z`` ascending."""
    n = z.numel()
    inside = z.abs() <= WINDOW
    outliers = z[~inside]  # (n_out,) usually empty
    z = z[inside]
    lo = BIN_WIDTH * math.floor(float(z[0]) / BIN_WIDTH)
    bins = max(1, math.ceil((float(z[-1]) - lo) / BIN_WIDTH))
    counts = torch.bincount(((z - lo) / BIN_WIDTH).floor().clamp(0, bins - 1).long(), minlength=bins)  # (bins,)
    occupied = torch.nonzero(counts).squeeze(1)  # (K,) indices of the non-empty bins
    weights = counts[occupied].double() / n  # (K,)
    edge_index, position = torch.unique(torch.cat([occupied, occupied + 1]), return_inverse=True)
    edges = lo + BIN_WIDTH * edge_index.double()  # (<= 2K,) the distinct edges the counts need
    left, right = position[: occupied.numel()], position[occupied.numel() :]

    def objective(law: SpectralLaw) -> float:
        cdf = law.cdf(edges)
        mass = (cdf[right] - cdf[left]).clamp(min=1e-300)
        far = torch.log(law.pdf(outliers).clamp(min=1e-300)).sum() if outliers.numel() else 0.0
        return -float((weights * torch.log(mass)).sum() + far / n)

    return objective


def _minimise(objective: Callable[[np.ndarray], float], start: np.ndarray) -> tuple[np.ndarray, str]:
    """Nelder–Mead from ``start`` (centre, log-widths); returns the optimum and a problem ("" when none)."""
    from scipy.optimize import minimize

    def guarded(p: np.ndarray) -> float:
        if not np.all(np.isfinite(p)) or np.any(np.abs(p[1:]) > math.log(_WIDTH_RANGE) + 1.0):
            return math.inf
        return objective(p)

    simplex = np.vstack([start, start + 0.1 * np.eye(start.size)])
    options = {"xatol": 1e-6, "fatol": 1e-10, "maxiter": 400 * start.size, "initial_simplex": simplex}
    result = minimize(guarded, start, method="Nelder-Mead", options=options)
    if not result.success or not math.isfinite(result.fun):
        return result.x, f"optimiser did not converge: {result.message}"
    if np.any(np.abs(result.x[1:]) > math.log(_WIDTH_RANGE)):
        widths = ", ".join(f"{math.exp(v):.3g}" for v in result.x[1:])
        return result.x, f"degenerate fit: a width ran off to {widths} robust scales (IQR / 1.349)"
    return result.x, ""
