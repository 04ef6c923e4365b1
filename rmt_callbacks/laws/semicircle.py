"""Wigner's semicircle law: the large-N spectral density of GOE/GUE matrices and of the Coulomb gas."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._checks import finite, positive
from ._base import SpectralLaw

__all__ = ["WignerSemicircle"]


@dataclass(frozen=True)
class WignerSemicircle(SpectralLaw):
    r"""Semicircle of centre :math:`\lambda_0` and radius :math:`R` (docs/science.md, E11).

    .. math::

        \rho(\lambda) = \frac{2}{\pi R^2}\sqrt{R^2 - (\lambda - \lambda_0)^2},
        \qquad |\lambda - \lambda_0| \le R .

    Its variance is :math:`R^2/4`. For an :math:`N \times N` GOE matrix with off-diagonal variance :math:`v`,
    :math:`R = 2\sqrt{N v}`.

    Args:
        center: :math:`\lambda_0`.
        radius: :math:`R > 0`.

    References: Wigner, Ann. Math. 67 (1958); arXiv:2412.20496.

    Example:
        >>> law = WignerSemicircle(center=0.0, radius=2.0)
        >>> round(float(law.pdf(0.0)), 6) == round(1 / math.pi, 6)
        True
        >>> float(law.cdf(0.0))
        0.5
    """

    center: float = 0.0
    radius: float = 1.0

    def _validate(self) -> None:
        finite("center", self.center, owner="WignerSemicircle")
        positive("radius", self.radius, owner="WignerSemicircle")

    @property
    def support(self) -> tuple[float, float]:
        return (self.center - self.radius, self.center + self.radius)

    def _pdf(self, x: torch.Tensor) -> torch.Tensor:
        r2 = self.radius**2
        return 2.0 / (math.pi * r2) * torch.sqrt((r2 - (x - self.center) ** 2).clamp(min=0.0))

    def _cdf(self, x: torch.Tensor) -> torch.Tensor:
        u = ((x - self.center) / self.radius).clamp(-1.0, 1.0)
        return 0.5 + (u * torch.sqrt(1.0 - u * u) + torch.asin(u)) / math.pi
