r"""Fit results: one frozen dataclass per fitted law, and the input checks every fit shares.

A fit never returns a bare tuple. Its result carries the fitted parameters as named fields, the
Kolmogorov–Smirnov distance :math:`\sup_x |F_n(x) - F(x)|` of the data to the fitted law (``ks``), the number
of values used (``n``), an honest ``converged`` flag and a ``message`` saying what happened. A failed fit has
``NaN`` in every parameter and in ``ks``, ``converged=False`` and a message saying why; it never holds numbers
that look like a result.

References: arXiv:2412.20496, arXiv:2407.16427.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TypeVar

import torch

from ..laws import (
    BetaSurmise,
    GOEPairDensity,
    MarchenkoPastur,
    SpectralLaw,
    TwoSpeciesPairDensity,
    WignerSemicircle,
)

__all__ = [
    "MIN_VALUES",
    "FitResult",
    "MarchenkoPasturFit",
    "PairDensityFit",
    "SemicircleFit",
    "SurmiseFit",
    "TwoSpeciesFit",
]

#: The fewest values any fit accepts; with fewer it returns a failed result (not an exception).
MIN_VALUES = 10

_R = TypeVar("_R", bound="FitResult")
_NOT_METRICS = ("n", "converged", "message")


@dataclass(frozen=True)
class FitResult:
    """Base of every fit result: goodness of fit, sample size and an honest convergence flag.

    Args:
        ks: Kolmogorov–Smirnov distance of the data to the fitted law (``NaN`` when the fit failed).
        n: number of values the fit was given (after pooling).
        converged: whether the fit produced a trustworthy result.
        message: what happened, in words (why it failed, when it did).

    Example:
        >>> fit = SemicircleFit(ks=0.01, n=400, converged=True, message="ok", center=0.0, radius=2.0)
        >>> fit.to_metrics("w/")
        {'w/center': 0.0, 'w/radius': 2.0, 'w/ks': 0.01, 'w/converged': 1.0}
        >>> fit.law()
        WignerSemicircle(center=0.0, radius=2.0)
        >>> SemicircleFit.failed(3, "too few").to_metrics("w/")
        {'w/converged': 0.0}
    """

    ks: float
    n: int
    converged: bool
    message: str

    @classmethod
    def failed(cls: type[_R], n: int, message: str) -> _R:
        """A failed result: ``NaN`` parameters and ``ks``, ``converged=False`` and the reason."""
        params = {f.name: math.nan for f in fields(cls) if f.name not in ("ks", *_NOT_METRICS)}
        return cls(ks=math.nan, n=n, converged=False, message=message, **params)

    def to_metrics(self, prefix: str = "") -> dict[str, float]:
        """Scalar metrics under ``f"{prefix}{field}"``.

        A converged fit gives every numeric field of the result (its parameters and derived numbers), then
        ``ks`` and ``converged = 1.0``; the sample size ``n`` and the message are not metrics. A failed fit
        gives only ``{f"{prefix}converged": 0.0}``.
        """
        if not self.converged:
            return {f"{prefix}converged": 0.0}
        names = [f.name for f in fields(self) if f.name not in ("ks", *_NOT_METRICS)]
        out = {f"{prefix}{name}": float(getattr(self, name)) for name in names}
        out[f"{prefix}ks"] = float(self.ks)
        out[f"{prefix}converged"] = 1.0
        return out

    def law(self) -> SpectralLaw:
        """The fitted law.

        Raises:
            ValueError: the fit did not converge (the message says why).
        """
        if not self.converged:
            raise ValueError(f"{type(self).__name__} did not converge, there is no fitted law: {self.message}")
        return self._law()

    def _law(self) -> SpectralLaw:
        raise NotImplementedError


@dataclass(frozen=True)
class SemicircleFit(FitResult):
    """Wigner semicircle fit (:func:`rmt_callbacks.fits.fit_semicircle`): centre :math:`\\lambda_0`, radius R."""

    center: float
    radius: float

    def _law(self) -> WignerSemicircle:
        return WignerSemicircle(center=self.center, radius=self.radius)


@dataclass(frozen=True)
class MarchenkoPasturFit(FitResult):
    """Marchenko–Pastur fit (:func:`rmt_callbacks.fits.fit_marchenko_pastur`).

    ``sigma2`` and ``ratio`` are the law's parameters, ``lambda_minus``/``lambda_plus`` its bulk edges and
    ``num_spikes`` the number of eigenvalues found above the upper edge plus the finite-size margin (an
    integer; ``NaN`` in a failed fit).
    """

    sigma2: float
    ratio: float
    lambda_minus: float
    lambda_plus: float
    num_spikes: int

    def _law(self) -> MarchenkoPastur:
        return MarchenkoPastur(sigma2=self.sigma2, ratio=self.ratio)


@dataclass(frozen=True)
class SurmiseFit(FitResult):
    """Generalised Wigner surmise fit (:func:`rmt_callbacks.fits.fit_surmise`): the Dyson index β."""

    beta: float

    def _law(self) -> BetaSurmise:
        return BetaSurmise(beta=self.beta)


@dataclass(frozen=True)
class PairDensityFit(FitResult):
    """One-species pair-density fit, E12 (:func:`rmt_callbacks.fits.fit_pair_density`)."""

    center: float
    sigma: float

    def _law(self) -> GOEPairDensity:
        return GOEPairDensity(center=self.center, sigma=self.sigma)


@dataclass(frozen=True)
class TwoSpeciesFit(FitResult):
    """Two-species pair-density fit, E30 (:func:`rmt_callbacks.fits.fit_two_species`), ``sigma1 <= sigma2``."""

    center: float
    sigma1: float
    sigma2: float

    def _law(self) -> TwoSpeciesPairDensity:
        return TwoSpeciesPairDensity(center=self.center, sigma1=self.sigma1, sigma2=self.sigma2)


def pooled_values(values: object, *, name: str) -> torch.Tensor:
    """``values`` of any shape as a flat float64 CPU tensor.

    Raises:
        TypeError: ``values`` is not a torch tensor of a real floating dtype.
        ValueError: some entries are NaN or infinite (the message gives how many).
    """
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(values).__name__}")
    if not values.dtype.is_floating_point:
        raise TypeError(f"{name} must have a real floating dtype, got {values.dtype}")
    flat = values.detach().reshape(-1).to("cpu", torch.float64)
    if math.isfinite(float(flat.sum())):  # fast path: a NaN or Inf entry makes the sum non-finite
        return flat
    bad = int((~torch.isfinite(flat)).sum())
    if bad:
        raise ValueError(f"{name} must be finite, but {bad} of its {flat.numel()} values are NaN or Inf")
    return flat


def check_size(cls: type[_R], values: torch.Tensor, *, minimum: int = MIN_VALUES) -> _R | None:
    """A failed ``cls`` result when ``values`` (flat) are too few or all equal, else ``None``."""
    n = values.numel()
    if n < minimum:
        return cls.failed(n, f"too few values to fit: got {n}, need at least {minimum}")
    if bool(values.max() == values.min()):
        return cls.failed(n, f"degenerate input: all {n} values equal {float(values[0])!r}")
    return None
