r"""Fit results: one frozen dataclass per fitted law, and the input checks every fit shares.

A fit never returns a bare tuple. Its result carries the fitted parameters as named fields, the
Kolmogorov–Smirnov distance :math:`\sup_x |F_n(x) - F(x)|` of the data to the fitted law (``ks``), the number
of values used (``n``), an honest ``converged`` flag and a ``message`` saying what happened. Three outcomes:

* **converged** (``converged=True``): the optimiser finished *and* the law describes the data, i.e. the KS
  distance is below the acceptance threshold :func:`ks_threshold` of the number of values.
* **rejected** (``converged=False``, :attr:`FitResult.fitted` true): the optimiser finished, the parameters and
  ``ks`` are real numbers, but ``ks`` is at or above the threshold; the message says
  ``"law rejected: KS = ... >= threshold ... for n = ..."``. Fits whose parameters mean something without the law
  (:attr:`FitResult.REPORTS_REJECTED`: the Marchenko–Pastur :math:`\sigma^2` is the trace, the surmise
  :math:`\beta` the likelihood's optimum, the semicircle's centre and radius the moments) still give them as
  metrics, with ``converged = 0``.
* **failed** (``converged=False``, not ``fitted``): too few values, degenerate input, or an optimiser that did not
  finish; ``NaN`` in every parameter and in ``ks``, a message saying why, never numbers that look like a result.

References: arXiv:2412.20496, arXiv:2407.16427.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import ClassVar, TypeVar

import numpy as np
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
    "KS_ACCEPT",
    "MIN_VALUES",
    "CurveFit",
    "FitResult",
    "MarchenkoPasturFit",
    "PairDensityFit",
    "SemicircleFit",
    "SurmiseFit",
    "TwoSpeciesFit",
    "ks_threshold",
]

MIN_VALUES = 10
r"""The fewest values (non-structural levels, spacings) any fit accepts; with fewer it returns a failed result (not
an exception) whose message says how many it had and needs. Why 10: below it the acceptance threshold
:func:`ks_threshold` exceeds 0.43, so almost no law could be rejected, and the statistical error of a fitted scale
(:math:`\sigma^2`, the semicircle radius: relative error :math:`\gtrsim\sqrt{2/n}`) is as large as the changes
the fit is meant to show. The surmise asks for more (:data:`~rmt_callbacks.fits.surmise.MIN_SPACINGS`)."""

KS_ACCEPT = 1.358
r"""A fit converges only when its KS distance is below :math:`D^* = c/\sqrt{n}`, ``c = KS_ACCEPT``
(:func:`ks_threshold`): the 5 % critical value of the Kolmogorov distribution for :math:`n` i.i.d. values, the
rule of :mod:`rmt_callbacks.fits.power_law`. For eigenvalues and unfolded spacings it is lenient on two counts
that make true-law samples pass more often than 95 %: the parameters are fitted to the same data (Lilliefors), and
eigenvalues are rigid (the counting function of :math:`n` levels fluctuates by :math:`O(\log n)`, not
:math:`\sqrt n`), so the KS distance of one matrix's levels to its law is :math:`O(\log n / n)`. Calibration
(``tests/fits/test_fit_verdicts.py``): Wishart and GOE samples pass at the rates given in docs/science.md."""


def ks_threshold(n: int) -> float:
    """The KS distance at and above which a fit to ``n`` values is rejected: :data:`KS_ACCEPT` / sqrt(n)."""
    return KS_ACCEPT / math.sqrt(n)


_R = TypeVar("_R", bound="FitResult")
_NOT_METRICS = ("n", "converged", "message")


@dataclass(frozen=True)
class FitResult:
    """Base of every fit result: goodness of fit, sample size and an honest convergence flag.

    Args:
        ks: Kolmogorov–Smirnov distance of the data to the fitted law (``NaN`` when the fit failed).
        n: number of values the fit rests on (after pooling; for Gram levels the non-structural ones).
        converged: the optimiser finished and the law describes the data (``ks`` below :func:`ks_threshold`).
        message: what happened, in words (why it failed or was rejected, when it was).

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

    REPORTS_REJECTED: ClassVar[bool] = False
    """Whether :meth:`to_metrics` of a rejected fit (module docstring) still gives its parameters."""

    @classmethod
    def failed(cls: type[_R], n: int, message: str) -> _R:
        """A failed result: ``NaN`` parameters and ``ks``, ``converged=False`` and the reason."""
        params = {f.name: math.nan for f in fields(cls) if f.name not in ("ks", *_NOT_METRICS)}
        return cls(ks=math.nan, n=n, converged=False, message=message, **params)

    @classmethod
    def judged(cls: type[_R], ks: float, n: int, message: str, *, ks_n: int | None = None, **params: object) -> _R:
        """A fit whose optimiser finished: converged when ``ks < ks_threshold(ks_n)`` (``ks_n``: the values the KS
        distance was taken over, default ``n``), else rejected with the numbers in the message (``message``
        describes the fit either way)."""
        size = n if ks_n is None else ks_n
        threshold = ks_threshold(size)
        if ks < threshold:
            return cls(ks=ks, n=n, converged=True, message=message, **params)
        verdict = f"law rejected: KS = {ks:.4g} >= threshold {KS_ACCEPT}/sqrt(n) = {threshold:.4g} for n = {size}"
        return cls(ks=ks, n=n, converged=False, message=f"{verdict} ({message})", **params)

    @property
    def fitted(self) -> bool:
        """Whether the optimiser finished (parameters and ``ks`` are numbers), whatever the verdict."""
        return math.isfinite(self.ks)

    def to_metrics(self, prefix: str = "") -> dict[str, float]:
        """Scalar metrics under ``f"{prefix}{field}"``.

        A converged fit gives every numeric field of the result (its parameters and derived numbers), then
        ``ks`` and ``converged = 1.0``; the sample size ``n`` and the message are not metrics. A rejected fit
        (module docstring) of a class with :attr:`REPORTS_REJECTED` gives the same with ``converged = 0.0``;
        any other non-converged fit gives only ``{f"{prefix}converged": 0.0}``.
        """
        if not (self.converged or (self.REPORTS_REJECTED and self.fitted)):
            return {f"{prefix}converged": 0.0}
        names = [f.name for f in fields(self) if f.name not in ("ks", *_NOT_METRICS)]
        out = {f"{prefix}{name}": float(getattr(self, name)) for name in names}
        out[f"{prefix}ks"] = float(self.ks)
        out[f"{prefix}converged"] = float(self.converged)
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

    REPORTS_REJECTED: ClassVar[bool] = True

    def _law(self) -> WignerSemicircle:
        return WignerSemicircle(center=self.center, radius=self.radius)


@dataclass(frozen=True)
class MarchenkoPasturFit(FitResult):
    """Marchenko–Pastur fit (:func:`rmt_callbacks.fits.fit_marchenko_pastur`).

    ``sigma2`` and ``ratio`` are the law's parameters, ``lambda_minus``/``lambda_plus`` its bulk edges,
    ``num_spikes`` the number of levels above :func:`~rmt_callbacks.fits.marchenko_pastur.spike_threshold` (the
    upper edge plus a Tracy–Widom margin; an integer, ``NaN`` in a failed fit) and ``sigma2_std`` the standard error
    of ``sigma2``. ``n`` counts the non-structural levels (spikes included); ``ks`` is that of the bulk.
    """

    sigma2: float
    ratio: float
    lambda_minus: float
    lambda_plus: float
    num_spikes: int
    sigma2_std: float

    REPORTS_REJECTED: ClassVar[bool] = True

    def _law(self) -> MarchenkoPastur:
        return MarchenkoPastur(sigma2=self.sigma2, ratio=self.ratio)


@dataclass(frozen=True)
class SurmiseFit(FitResult):
    """Generalised Wigner surmise fit (:func:`rmt_callbacks.fits.fit_surmise`): the Dyson index β and its standard
    error ``beta_std``."""

    beta: float
    beta_std: float

    REPORTS_REJECTED: ClassVar[bool] = True

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


_C = TypeVar("_C", bound="CurveFit")


@dataclass(frozen=True)
class CurveFit:
    """Base of the results of fitting a curve :math:`y(x)` to points (not a law to a sample): no KS distance.

    The same outcomes as :class:`FitResult` without the KS verdict: ``converged`` means the fit finished with finite
    parameters; a failed fit (too few points, degenerate input, an optimiser that did not finish) has ``NaN`` in every
    parameter, ``converged=False`` and a message saying why.

    Args:
        n: number of points the fit rests on.
        converged: the fit finished with finite parameters.
        message: what happened, in words.
    """

    n: int
    converged: bool
    message: str

    @classmethod
    def failed(cls: type[_C], n: int, message: str) -> _C:
        """A failed result: ``NaN`` parameters, ``converged=False`` and the reason."""
        params = {f.name: math.nan for f in fields(cls) if f.name not in _NOT_METRICS}
        return cls(n=n, converged=False, message=message, **params)

    def to_metrics(self, prefix: str = "") -> dict[str, float]:
        """Scalar metrics under ``f"{prefix}{field}"``: every numeric field, then ``converged = 1.0``, for a converged
        fit (``n`` and the message are not metrics); ``{f"{prefix}converged": 0.0}`` alone for any other."""
        if not self.converged:
            return {f"{prefix}converged": 0.0}
        out = {f"{prefix}{f.name}": float(getattr(self, f.name)) for f in fields(self) if f.name not in _NOT_METRICS}
        out[f"{prefix}converged"] = 1.0
        return out


def curve_points(**arrays: object) -> list[np.ndarray]:
    """The named arrays (tensors, arrays or sequences of reals) as flat float64 NumPy arrays of one length.

    Raises:
        TypeError: an array is not real-valued.
        ValueError: the lengths differ, or some entries are NaN or infinite (the message names the array).
    """
    out = []
    for name, value in arrays.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().to("cpu", torch.float64).numpy()
        array = np.asarray(value)
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
        array = array.astype(np.float64).reshape(-1)
        bad = int((~np.isfinite(array)).sum())
        if bad:
            raise ValueError(f"{name} must be finite, but {bad} of its {array.size} values are NaN or Inf")
        out.append(array)
    sizes = {name: a.size for name, a in zip(arrays, out, strict=True)}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"{', '.join(sizes)} must have one length, got {sizes}")
    return out


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


def check_size(cls: type[_R], values: torch.Tensor, *, minimum: int = MIN_VALUES, what: str = "values") -> _R | None:
    """A failed ``cls`` result when ``values`` (flat) are too few or all equal, else ``None``."""
    n = values.numel()
    if n < minimum:
        return cls.failed(n, f"too few {what} to fit: got {n}, need at least {minimum}")
    if bool(values.max() == values.min()):
        return cls.failed(n, f"degenerate input: all {n} values equal {float(values[0])!r}")
    return None
