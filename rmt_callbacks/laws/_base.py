"""The interface every spectral law shares (its parameters are checked with :mod:`rmt_callbacks._checks`).

A law is a frozen dataclass of its parameters with ``pdf(x)``, ``cdf(x)`` and ``support``. Subclasses write
only their formula (``_pdf``/``_cdf`` on the float64 tensor ``x``); this base converts inputs, keeps the
caller's dtype and device, and zeroes the density outside the support.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields

import torch

__all__ = ["SpectralLaw"]


@dataclass(frozen=True)
class SpectralLaw:
    """Base of the laws: torch in, torch out, parameters validated at construction."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):  # numpy's scalars too
                raise TypeError(f"{type(self).__name__}: {f.name} must be a real number, got {value!r}")
            object.__setattr__(self, f.name, float(value))
        self._validate()

    def _validate(self) -> None:  # pragma: no cover - overridden where there is something to check
        pass

    @property
    def support(self) -> tuple[float, float]:
        """The closed interval outside which the density vanishes (may be infinite)."""
        return (-math.inf, math.inf)

    def pdf(self, x: torch.Tensor | float) -> torch.Tensor:
        """Probability density at ``x`` (any shape), zero outside :attr:`support`."""
        t, dtype = _as_float64(x)
        lo, hi = self.support
        inside = (t >= lo) & (t <= hi)
        safe = torch.where(inside, t, torch.full_like(t, self._interior_point()))
        out = torch.where(inside, self._pdf(safe), torch.zeros_like(t))
        return out.to(dtype)

    def cdf(self, x: torch.Tensor | float) -> torch.Tensor:
        """Cumulative distribution :math:`P(X \\le x)`: 0 below the support, 1 above it."""
        t, dtype = _as_float64(x)
        lo, hi = self.support
        safe = t.clamp(min=lo, max=hi)
        out = self._cdf(safe).clamp(0.0, 1.0)
        out = torch.where(t < lo, torch.zeros_like(t), torch.where(t >= hi, torch.ones_like(t), out))
        return out.to(dtype)

    def _interior_point(self) -> float:
        lo, hi = self.support
        if math.isinf(lo) and math.isinf(hi):
            return 0.0
        if math.isinf(hi):
            return lo + 1.0
        if math.isinf(lo):
            return hi - 1.0
        return 0.5 * (lo + hi)

    def _pdf(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _cdf(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _as_float64(x: torch.Tensor | float) -> tuple[torch.Tensor, torch.dtype]:
    """``x`` as a float64 tensor on its own device, and the floating dtype to hand back."""
    if not isinstance(x, torch.Tensor):  # a Python number: float64, not torch's float32 default
        return torch.as_tensor(x, dtype=torch.float64), torch.float64
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float64
    return x.to(torch.float64), dtype
