r"""Has a mode of an ensemble relaxed? A verdict from a mid-run snapshot and the end of the run.

A *mode* is one level (``(E,)`` values, one per network) or a near-degenerate pair (``(E, 2)``) of an ensemble of
:math:`E` independent networks, read at a snapshot in mid-run and at the end. It is called *relaxed* when none of
three checks fails (docs/science.md#analysis-recipe):

* **drift**: the paired change :math:`d_e = v_e(\text{end}) - v_e(\text{mid})` of each network's value :math:`v_e`
  (a level; for a pair its mean and its spacing :math:`|x_1 - x_2|`). At stationarity :math:`\bar d` has mean
  zero; ``drift_z`` is :math:`\bar d` over :math:`\max(\mathrm{se}(\bar d), \mathrm{se}(\bar v_{\rm end}))`, both
  jackknife errors (over blocks of networks, or over the groups that share a data set). The paired error alone
  measures whether the change is real; the floor at the error of the reported mean asks whether it matters, so
  a mode that no longer moves at all (the end of an epoch of a fixed data set is the end of the previous one, to
  rounding) is not flagged for a change of :math:`10^{-16}`. Flagged beyond :data:`DRIFT_Z` = 4.5: a
  two-sided :math:`t_{49}` tail of :math:`4\times10^{-5}`, i.e. under 1 % false flags over the ≈ 100 drifts of a
  quick ``rmt-reproduce all`` (10 settings × (4 pairs × 2 + 2 levels), and the hidden-layer runs).
* **law**: the Kolmogorov–Smirnov distance of the end values to the stationary law fitted to them (a pair: the
  2×2 GOE density, E12, as :attr:`~rmt_callbacks.dynamics.PairSummary.ks`; a level: a normal law), and its
  p-value from the Kolmogorov distribution at :math:`n = E` (the networks; a pair's :math:`2E` pooled levels are
  not independent). Fitted parameters make the true p-value larger still, so the test is conservative. Flagged
  below :data:`KS_P` = :math:`10^{-4}` (under 1 % false flags over the 62 modes of a quick run); at
  :math:`E = 128` that is a distance above 0.19.
* **stragglers**: networks whose value lies more than :data:`STRAGGLER_WIDTHS` = 6 robust widths
  (:math:`1.4826\cdot\mathrm{MAD}`, the standard deviation of a normal law) from the ensemble median, in any
  column. A few networks that have not relaxed (a level still growing from a nearly singular :math:`W_0`, the
  Gaussian RBM's κ = 8 mode at ≈ 4 % of the networks after 4 000 steps at α = 0.1) move neither the mean nor a KS
  distance at :math:`E = 128`, but sit 7–8.5 widths below the relaxed ones. For a normal law six widths are
  exceeded with probability :math:`2\times10^{-9}` per value, a few :math:`10^{-5}` expected over the
  :math:`\sim 10^4` values of a quick run and under 1 % over the :math:`3\times10^6` of the papers' sizes; the
  relaxed levels of the Gaussian RBM stayed within 4.4 widths at 128–512 networks (measured).

References: arXiv:2407.16427, arXiv:2412.20496.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import EllipsisType
from typing import Any

import numpy as np
import torch

from ..fits import fit_pair_density
from .pairs import jackknife

__all__ = ["DRIFT_Z", "KS_P", "STRAGGLER_WIDTHS", "Relaxation", "check_relaxation", "ks_normal"]

#: Drift beyond this many standard errors flags a mode.
DRIFT_Z = 4.5
#: A KS p-value below this flags a mode.
KS_P = 1e-4
#: A network further than this many robust widths from the median is a straggler.
STRAGGLER_WIDTHS = 6.0
#: The standard deviation of a normal law in units of its median absolute deviation.
_MAD_TO_STD = 1.4826


@dataclass(frozen=True)
class Relaxation:
    """The verdict on one mode and the numbers behind it (module doc).

    Attributes:
        relaxed: no check failed.
        drift_z: the drift of the level (a pair: of its mean), in standard errors.
        spacing_drift_z: a pair's drift of the spacing, in standard errors; ``None`` for a level.
        ks: KS distance of the end values to the fitted stationary law.
        ks_p: its p-value at ``n`` = the number of networks.
        stragglers: networks beyond :data:`STRAGGLER_WIDTHS` robust widths from the median.
        failed: the checks that failed: ``"drift"``, ``"law"``, ``"stragglers"``.
    """

    relaxed: bool
    drift_z: float
    spacing_drift_z: float | None
    ks: float
    ks_p: float
    stragglers: int
    failed: tuple[str, ...]

    def to_summary(self) -> dict[str, Any]:
        """The verdict as ``summary.json`` holds it (no ``spacing_drift_z`` for a level)."""
        out: dict[str, Any] = {"relaxed": self.relaxed, "drift_z": self.drift_z}
        if self.spacing_drift_z is not None:
            out["spacing_drift_z"] = self.spacing_drift_z
        out.update(ks=self.ks, ks_p=self.ks_p, stragglers=self.stragglers, failed=list(self.failed))
        return out

    def to_metrics(self, prefix: str = "") -> dict[str, float]:
        """``{prefix}relaxed`` (1 or 0), ``drift_z``, ``ks_p`` and ``stragglers`` as floats."""
        names = {"relaxed": float(self.relaxed), "drift_z": self.drift_z, "ks_p": self.ks_p}
        names["stragglers"] = float(self.stragglers)
        return {f"{prefix}{k}": v for k, v in names.items()}


def check_relaxation(
    mid: torch.Tensor | np.ndarray,
    end: torch.Tensor | np.ndarray,
    *,
    ks: float | None = None,
    blocks: int | EllipsisType | None = ...,
    groups: torch.Tensor | None = None,
    drift_z: float = DRIFT_Z,
    ks_p: float = KS_P,
    straggler_widths: float = STRAGGLER_WIDTHS,
) -> Relaxation:
    r"""Judge whether one mode has relaxed, from its values at a mid-run snapshot and at the end (module doc).

    Args:
        mid: ``(E,)`` values of a level or ``(E, 2)`` of a pair, one row per network, in mid-run.
        end: the same networks' values at the end, same shape.
        ks: the KS distance of ``end`` to its fitted stationary law when the caller has it (a pair's
            :attr:`~rmt_callbacks.dynamics.PairSummary.ks`, or another law's fit); by default a pair is fitted
            with the E12 density (:func:`~rmt_callbacks.fits.fit_pair_density`) and a level with a normal law.
        blocks: jackknife blocks of the drift's errors (:func:`~rmt_callbacks.dynamics.jackknife`; 50 by default).
        groups: ``(E,)`` integer labels of what networks share (a data set): the drift's errors become a
            delete-one-group jackknife, exclusive with ``blocks``.
        drift_z: flag a drift beyond this many standard errors.
        ks_p: flag a KS p-value below this.
        straggler_widths: a straggler lies beyond this many robust widths from the median.

    Returns:
        The verdict and its numbers.

    Raises:
        ValueError: shapes that differ or are not ``(E,)``/``(E, 2)`` with ``E >= 2``; non-finite values; a
            threshold not positive; ``blocks`` or ``groups`` as :func:`~rmt_callbacks.dynamics.jackknife`.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> mid, end = (torch.randn(500, generator=g, dtype=torch.float64) for _ in range(2))
        >>> check_relaxation(mid, end).relaxed, check_relaxation(mid, end + 0.5).failed
        (True, ('drift',))
    """
    for name, value in (("drift_z", drift_z), ("ks_p", ks_p), ("straggler_widths", straggler_widths)):
        if not value > 0:
            raise ValueError(f"check_relaxation: {name} must be positive, got {value!r}")
    a, b = _as_values(mid, "mid"), _as_values(end, "end")
    if a.shape != b.shape:
        raise ValueError(f"mid and end must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    n = b.shape[0]
    pair = b.ndim == 2
    if pair:
        z = _drift(a.mean(1), b.mean(1), blocks, groups)
        z_s = _drift((a[:, 0] - a[:, 1]).abs(), (b[:, 0] - b[:, 1]).abs(), blocks, groups)
        distance = fit_pair_density(b.reshape(-1)).ks if ks is None else float(ks)
    else:
        z, z_s = _drift(a, b, blocks, groups), None
        distance = ks_normal(b) if ks is None else float(ks)
    p = _kolmogorov_sf(distance, n)
    stragglers = int(_stragglers(b if pair else b[:, None], straggler_widths))
    failed = tuple(
        name
        for name, fails in (
            ("drift", max(abs(z), abs(z_s or 0.0)) > drift_z),
            ("law", p < ks_p),
            ("stragglers", stragglers > 0),
        )
        if fails
    )
    return Relaxation(not failed, z, z_s, distance, p, stragglers, failed)


def ks_normal(values: torch.Tensor) -> float:
    r"""KS distance of a sample to the normal law with its own mean and standard deviation (``unbiased``).

    .. math:: D = \max_i \max\Big(\frac{i}{n} - \Phi(z_{(i)}),\ \Phi(z_{(i)}) - \frac{i-1}{n}\Big),
        \quad z = (x - \bar x)/s,

    ``scipy.stats.kstest(x, "norm", (x.mean(), x.std(ddof=1)))``'s statistic; 1 for a sample of equal values.

    Example:
        >>> round(ks_normal(torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)), 4)
        0.1747
    """
    x = values.reshape(-1).to(torch.float64)
    n = x.numel()
    sd = float(x.std()) if n > 1 else 0.0
    if not sd > 0:
        return 1.0
    cdf = torch.special.ndtr((x.sort().values - x.mean()) / sd)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(i / n - cdf, cdf - (i - 1) / n).max())


def _as_values(values: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    t = torch.as_tensor(values).detach().to("cpu", torch.float64)
    if t.ndim not in (1, 2) or (t.ndim == 2 and t.shape[1] != 2) or t.shape[0] < 2:
        raise ValueError(f"{name} must have shape (E,) or (E, 2) with E >= 2, got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} has non-finite values")
    return t


def _drift(
    mid: torch.Tensor, end: torch.Tensor, blocks: int | EllipsisType | None, groups: torch.Tensor | None
) -> float:
    """The paired change of the mean over ``max(se(change), se(end mean))``; 0 when neither moves nor spreads."""

    def mean(v: torch.Tensor) -> float:
        return float(v.mean())

    change, change_err = jackknife(end - mid, mean, blocks=blocks, groups=groups)
    _, end_err = jackknife(end, mean, blocks=blocks, groups=groups)
    scale = max(change_err, end_err)
    if scale > 0:
        return change / scale
    return 0.0 if change == 0 else math.copysign(math.inf, change)


def _stragglers(values: torch.Tensor, widths: float) -> int:
    """Rows of ``values`` (E, k) with a column further than ``widths`` robust widths from that column's median."""
    median = values.median(dim=0).values
    deviation = (values - median).abs()
    width = _MAD_TO_STD * deviation.median(dim=0).values
    width = torch.where(width > 0, width, values.std(dim=0))  # more than half the values equal: their spread
    far = torch.where(width > 0, deviation > widths * width, torch.zeros_like(deviation, dtype=torch.bool))
    return int(far.any(dim=1).sum())


def _kolmogorov_sf(distance: float, n: int) -> float:
    """P(D_n >= distance) for the two-sided one-sample KS statistic of ``n`` values (``scipy.stats.kstwo``)."""
    from scipy.stats import kstwo

    return float(kstwo.sf(distance, n))
