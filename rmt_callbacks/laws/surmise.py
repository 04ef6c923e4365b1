"""Nearest-neighbour spacing laws: Wigner's surmise (β = 1, 2, 4), its generalisation to any β, and Poisson.

Spacings are normalised to unit mean, :math:`s = S / \\langle S \\rangle` (conventions:
:mod:`rmt_callbacks.spectral`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._checks import positive
from ._base import SpectralLaw

__all__ = [
    "MEAN_SPACING_RATIO",
    "MEAN_SPACING_RATIO_SURMISE",
    "BetaSurmise",
    "PoissonSpacing",
    "WignerSurmise",
    "surmise_constants",
]

#: Mean spacing ratio :math:`\langle r \rangle` of large matrices: Poisson exactly :math:`2\ln 2 - 1`;
#: GOE, GUE and GSE from Atas, Bogomolny, Giraud, Roux, PRL 110, 084101 (2013), numerically at large N.
MEAN_SPACING_RATIO: dict[str, float] = {
    "poisson": 2.0 * math.log(2.0) - 1.0,
    "goe": 0.5307,
    "gue": 0.5996,
    "gse": 0.6744,
}

#: The same in the 3×3 surmise (Atas et al. 2013): :math:`4 - 2\sqrt3`, :math:`2\sqrt3/\pi - 1/2`,
#: :math:`32\sqrt3/(15\pi) - 1/2`.
MEAN_SPACING_RATIO_SURMISE: dict[str, float] = {
    "goe": 4.0 - 2.0 * math.sqrt(3.0),
    "gue": 2.0 * math.sqrt(3.0) / math.pi - 0.5,
    "gse": 32.0 * math.sqrt(3.0) / (15.0 * math.pi) - 0.5,
}


def surmise_constants(beta: float) -> tuple[float, float]:
    r"""The constants :math:`(a_\beta, b_\beta)` of :math:`P_\beta(s) = a_\beta s^\beta e^{-b_\beta s^2}` (E14).

    .. math::

        b_\beta = \Big[\frac{\Gamma(\frac{\beta+2}{2})}{\Gamma(\frac{\beta+1}{2})}\Big]^2,\qquad
        a_\beta = \frac{2\,\Gamma(\frac{\beta+2}{2})^{\beta+1}}{\Gamma(\frac{\beta+1}{2})^{\beta+2}},

    which make :math:`P_\beta` normalised with unit mean.

    Example:
        >>> a, b = surmise_constants(1.0)
        >>> round(a, 6), round(b, 6)
        (1.570796, 0.785398)
    """
    lg_h, lg_g = math.lgamma(0.5 * (beta + 2.0)), math.lgamma(0.5 * (beta + 1.0))
    log_a = math.log(2.0) + (beta + 1.0) * lg_h - (beta + 2.0) * lg_g
    return math.exp(log_a), math.exp(2.0 * (lg_h - lg_g))


@dataclass(frozen=True)
class BetaSurmise(SpectralLaw):
    r"""Generalised Wigner surmise for any Dyson index :math:`\beta > 0` (E14), used for fitting.

    .. math::

        P_\beta(s) = a_\beta\, s^\beta e^{-b_\beta s^2},\qquad
        F_\beta(s) = P\big(\tfrac{\beta+1}{2},\, b_\beta s^2\big),

    with :math:`P` the regularised lower incomplete gamma function; :math:`\langle s \rangle = 1`.

    References: Wigner (1957); Mehta, *Random Matrices*; arXiv:2407.16427.

    Example:
        >>> round(float(BetaSurmise(beta=2.5).cdf(torch.tensor(1e9))), 6)
        1.0
    """

    beta: float = 1.0

    def _validate(self) -> None:
        positive("beta", self.beta, owner=type(self).__name__)

    @property
    def support(self) -> tuple[float, float]:
        return (0.0, math.inf)

    @property
    def mean_square(self) -> float:
        r""":math:`\langle s^2 \rangle = (\beta + 1) / (2 b_\beta)`."""
        return (self.beta + 1.0) / (2.0 * surmise_constants(self.beta)[1])

    def _pdf(self, x: torch.Tensor) -> torch.Tensor:
        a, b = surmise_constants(self.beta)
        return torch.exp(math.log(a) + self.beta * torch.log(x) - b * x * x)  # log space: no inf·0 at huge s

    def _cdf(self, x: torch.Tensor) -> torch.Tensor:
        _, b = surmise_constants(self.beta)
        shape = torch.full_like(x, 0.5 * (self.beta + 1.0))
        return torch.special.gammainc(shape, b * x * x)


@dataclass(frozen=True)
class WignerSurmise(BetaSurmise):
    r"""Wigner's surmise for the three classical ensembles, :math:`\beta \in \{1, 2, 4\}` (GOE, GUE, GSE).

    For :math:`\beta = 1`: :math:`P(s) = \frac{\pi}{2} s\, e^{-\pi s^2/4}`, the exact spacing law of a 2×2 GOE
    block, hence of each near-degenerate eigenvalue pair in the papers.

    Example:
        >>> law = WignerSurmise(beta=1)
        >>> round(float(law.pdf(1.0)), 6) == round(math.pi / 2 * math.exp(-math.pi / 4), 6)
        True
        >>> round(law.mean_square, 6) == round(4 / math.pi, 6)
        True
    """

    def _validate(self) -> None:
        if self.beta not in (1.0, 2.0, 4.0):
            raise ValueError(
                f"WignerSurmise: beta must be 1, 2 or 4, got {self.beta!r}; use BetaSurmise for other values"
            )


@dataclass(frozen=True)
class PoissonSpacing(SpectralLaw):
    r"""Spacings of uncorrelated levels: :math:`P(s) = e^{-s}`, the :math:`\beta \to 0` reference.

    Example:
        >>> round(float(PoissonSpacing().cdf(1.0)), 6) == round(1 - math.exp(-1), 6)
        True
    """

    @property
    def support(self) -> tuple[float, float]:
        return (0.0, math.inf)

    def _pdf(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(-x)

    def _cdf(self, x: torch.Tensor) -> torch.Tensor:
        return -torch.expm1(-x)
