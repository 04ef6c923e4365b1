"""One-point densities of a two-level Coulomb gas: a near-degenerate eigenvalue pair (E12, E30).

With :math:`u = \\lambda - \\lambda_0`, :math:`\\phi_\\sigma` the :math:`\\mathcal N(0, \\sigma^2)` density and
:math:`\\Phi` the standard normal cdf.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._checks import finite, positive
from ._base import SpectralLaw

__all__ = ["GOEPairDensity", "TwoSpeciesPairDensity"]

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)


@dataclass(frozen=True)
class GOEPairDensity(SpectralLaw):
    r"""Exact one-point density of a 2×2 GOE block, the papers' "N = 2 semicircle" (docs/science.md, E12).

    The marginal of :math:`P(\lambda_1, \lambda_2) \propto |\lambda_1 - \lambda_2|
    e^{-\sum_i (\lambda_i - \lambda_0)^2 / 2\sigma^2}`:

    .. math::

        \rho_2(\lambda) = \frac{e^{-u^2/2\sigma^2}}{4\sqrt\pi\,\sigma}
        \Big[2 e^{-u^2/2\sigma^2} + \sqrt{2\pi}\,\frac{u}{\sigma}\,
        \mathrm{erf}\Big(\frac{u}{\sqrt2\sigma}\Big)\Big],\qquad
        F(\lambda) = \frac{1 + \mathrm{erf}(u/\sigma)}{2}
        - \frac{\sqrt2}{4} e^{-u^2/2\sigma^2}\,\mathrm{erf}\Big(\frac{u}{\sqrt2\sigma}\Big).

    Mean :math:`\lambda_0`, variance :math:`\tfrac32\sigma^2`; the pair's spacing has mean
    :math:`\sqrt\pi\sigma` (E13).

    Args:
        center: :math:`\lambda_0`.
        sigma: :math:`\sigma > 0`.

    References: arXiv:2407.16427 (the authors' ``rho``); docs/science.md#pair-density.

    Example:
        >>> round(float(GOEPairDensity(center=1.3, sigma=0.7).pdf(0.0)), 6)
        0.169435
    """

    center: float = 0.0
    sigma: float = 1.0

    def _validate(self) -> None:
        finite("center", self.center, owner="GOEPairDensity")
        positive("sigma", self.sigma, owner="GOEPairDensity")

    def _pdf(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.center) / self.sigma
        gauss = torch.exp(-0.5 * z * z)
        return gauss / (4.0 * math.sqrt(math.pi) * self.sigma) * (2.0 * gauss + _SQRT2PI * z * torch.erf(z / _SQRT2))

    def _cdf(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.center) / self.sigma
        return 0.5 * (1.0 + torch.erf(z)) - _SQRT2 / 4.0 * torch.exp(-0.5 * z * z) * torch.erf(z / _SQRT2)


@dataclass(frozen=True)
class TwoSpeciesPairDensity(SpectralLaw):
    r"""One-point density of two levels with different confinement widths and one repulsion (docs/science.md, E30).

    The marginal of :math:`P(\lambda_1, \lambda_2) \propto |\lambda_1 - \lambda_2|
    e^{-(\lambda_1-\lambda_0)^2/2\sigma_1^2 - (\lambda_2-\lambda_0)^2/2\sigma_2^2}`, averaged over the two
    levels. With :math:`g_\sigma(u) = \sigma\sqrt{2/\pi}\,e^{-u^2/2\sigma^2} + u\,\mathrm{erf}(u/\sqrt2\sigma)`,
    :math:`Z = \sqrt{2/\pi}\sqrt{\sigma_1^2 + \sigma_2^2}` and
    :math:`s = \sigma_1\sigma_2/\sqrt{\sigma_1^2+\sigma_2^2}`:

    .. math::

        \rho(\lambda) = \frac{\phi_{\sigma_1}(u)\,g_{\sigma_2}(u) + \phi_{\sigma_2}(u)\,g_{\sigma_1}(u)}{2Z},
        \qquad
        F(\lambda) = \Phi(u/s) - \frac{\sigma_1^2\phi_{\sigma_1}(u)\,\mathrm{erf}(u/\sqrt2\sigma_2)
        + \sigma_2^2\phi_{\sigma_2}(u)\,\mathrm{erf}(u/\sqrt2\sigma_1)}{2Z}.

    For :math:`\sigma_1 = \sigma_2` it is exactly :class:`GOEPairDensity`. This parametrisation of the
    two-species gas is the project's own (docs/science.md#hidden-layer), not taken from the papers.

    Args:
        center: :math:`\lambda_0`.
        sigma1: width of the first species, :math:`> 0`.
        sigma2: width of the second species, :math:`> 0`.

    References: arXiv:2412.20496 (Fig. 5, "generalised Wigner semicircle"); docs/science.md, E30.

    Example:
        >>> goe = GOEPairDensity(center=0.5, sigma=0.3)
        >>> two = TwoSpeciesPairDensity(center=0.5, sigma1=0.3, sigma2=0.3)
        >>> x = torch.linspace(-1.0, 2.0, 7, dtype=torch.float64)
        >>> bool(torch.allclose(goe.pdf(x), two.pdf(x)))
        True
    """

    center: float = 0.0
    sigma1: float = 1.0
    sigma2: float = 1.0

    def _validate(self) -> None:
        finite("center", self.center, owner="TwoSpeciesPairDensity")
        positive("sigma1", self.sigma1, owner="TwoSpeciesPairDensity")
        positive("sigma2", self.sigma2, owner="TwoSpeciesPairDensity")

    @property
    def _norm(self) -> float:
        return 2.0 * math.sqrt(2.0 / math.pi) * math.hypot(self.sigma1, self.sigma2)

    def _pdf(self, x: torch.Tensor) -> torch.Tensor:
        u = x - self.center
        s1, s2 = self.sigma1, self.sigma2
        return (_normal_pdf(u, s1) * _abs_moment(u, s2) + _normal_pdf(u, s2) * _abs_moment(u, s1)) / self._norm

    def _cdf(self, x: torch.Tensor) -> torch.Tensor:
        u = x - self.center
        s1, s2 = self.sigma1, self.sigma2
        s = s1 * s2 / math.hypot(s1, s2)
        tails = s1**2 * _normal_pdf(u, s1) * torch.erf(u / (_SQRT2 * s2)) + s2**2 * _normal_pdf(u, s2) * torch.erf(
            u / (_SQRT2 * s1)
        )
        return 0.5 * (1.0 + torch.erf(u / (_SQRT2 * s))) - tails / self._norm


def _normal_pdf(u: torch.Tensor, sigma: float) -> torch.Tensor:
    return torch.exp(-0.5 * (u / sigma) ** 2) / (_SQRT2PI * sigma)


def _abs_moment(u: torch.Tensor, sigma: float) -> torch.Tensor:
    """:math:`g_\\sigma(u) = E|u - \\sigma\\xi|` for a standard normal :math:`\\xi`."""
    return sigma * math.sqrt(2.0 / math.pi) * torch.exp(-0.5 * (u / sigma) ** 2) + u * torch.erf(u / (_SQRT2 * sigma))
