"""The Marchenko–Pastur law: the spectrum of a Gram matrix of i.i.d. entries (the untrained baseline)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._checks import positive
from ._base import SpectralLaw

__all__ = ["MarchenkoPastur"]


@dataclass(frozen=True)
class MarchenkoPastur(SpectralLaw):
    r"""Marchenko–Pastur law of variance :math:`\sigma^2` and aspect ratio :math:`q = N/M`.

    The eigenvalues of :math:`X = W^\top W / M` for ``W`` of shape ``(M, N)`` with i.i.d. entries of variance
    :math:`\sigma^2` (conventions: :mod:`rmt_callbacks.spectral`) follow, as :math:`M, N \to \infty`,

    .. math::

        \rho(x) = \frac{\sqrt{(\lambda_+ - x)(x - \lambda_-)}}{2\pi\sigma^2 q\,x}
        + \Big(1 - \frac1q\Big)_+ \delta(x),
        \qquad \lambda_\pm = \sigma^2 (1 \pm \sqrt q)^2 .

    For :math:`q > 1` the atom at zero (the :math:`N - M` structural zeros) is modelled explicitly: ``pdf``
    is the density of the continuous part (it integrates to :math:`1/q`), :attr:`atom` is the mass at zero,
    and ``cdf`` jumps by :attr:`atom` at zero.

    Args:
        sigma2: entry variance :math:`\sigma^2 > 0`.
        ratio: aspect ratio :math:`q = N / M > 0`.

    References: Marchenko & Pastur, Math. USSR-Sb. 1 (1967) 457.

    Example:
        >>> law = MarchenkoPastur(sigma2=1.0, ratio=0.25)
        >>> law.lambda_minus, law.lambda_plus
        (0.25, 2.25)
        >>> round(float(law.cdf(law.lambda_plus)), 12)
        1.0
        >>> MarchenkoPastur(sigma2=1.0, ratio=4.0).atom
        0.75
    """

    sigma2: float = 1.0
    ratio: float = 1.0

    def _validate(self) -> None:
        positive("sigma2", self.sigma2, owner="MarchenkoPastur")
        positive("ratio", self.ratio, owner="MarchenkoPastur")

    @property
    def lambda_minus(self) -> float:
        """Lower edge :math:`\\sigma^2 (1 - \\sqrt q)^2` of the continuous part."""
        return self.sigma2 * (1.0 - math.sqrt(self.ratio)) ** 2

    @property
    def lambda_plus(self) -> float:
        """Upper edge :math:`\\sigma^2 (1 + \\sqrt q)^2`."""
        return self.sigma2 * (1.0 + math.sqrt(self.ratio)) ** 2

    @property
    def atom(self) -> float:
        """Probability mass at zero, :math:`\\max(0, 1 - 1/q)`."""
        return max(0.0, 1.0 - 1.0 / self.ratio)

    @property
    def support(self) -> tuple[float, float]:
        lo = 0.0 if self.ratio > 1.0 else self.lambda_minus
        return (lo, self.lambda_plus)

    def _pdf(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.lambda_minus, self.lambda_plus
        root = torch.sqrt(((b - x) * (x - a)).clamp(min=0.0))
        density = root / (2.0 * math.pi * self.sigma2 * self.ratio * x)
        at_zero = math.inf if a == 0.0 else 0.0  # q = 1 diverges like x^(-1/2); q > 1 has a gap above the atom
        return torch.where(x > 0, density, torch.full_like(x, at_zero))

    def _cdf(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.lambda_minus, self.lambda_plus
        t = x.clamp(min=a, max=b)
        continuous = (_antiderivative(t, a, b) - _antiderivative(torch.full_like(t, a), a, b)) / (
            2.0 * math.pi * self.sigma2 * self.ratio
        )
        return self.atom + continuous


def _antiderivative(t: torch.Tensor, a: float, b: float) -> torch.Tensor:
    r""":math:`G(t) = \int^t \sqrt{(b-u)(u-a)}\,du / u` for :math:`a \le t \le b`, :math:`0 \le a < b`."""
    root = torch.sqrt(((b - t) * (t - a)).clamp(min=0.0))
    first = 0.5 * (a + b) * torch.asin(((2.0 * t - a - b) / (b - a)).clamp(-1.0, 1.0))
    if a == 0.0:
        return root + first
    second = math.sqrt(a * b) * torch.asin((((a + b) * t - 2.0 * a * b) / (t * (b - a))).clamp(-1.0, 1.0))
    return root + first - second
