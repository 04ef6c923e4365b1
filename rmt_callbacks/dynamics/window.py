r"""Fluctuation statistics of a window of spectra, in units a person can read (docs/science.md, E32).

A *window* is ``levels`` of shape ``(T, ..., n)``: :math:`T` snapshots of the ascending non-structural levels
of a batch of matrices, taken at Langevin times ``times`` (shape ``(T,)``: the sum of the effective learning
rates of the updates so far, docs/science.md, E4 and E31). Every statistic is averaged over levels and batch
members, and measured in the window's *mean level spacing* :math:`\bar\Delta = (\bar\lambda_{\max} -
\bar\lambda_{\min})/(n - 1)` of the time-averaged levels (the range is set by the largest levels, which are
steady; a median gap would jump between clusters of close and far levels), so it is a number of order one
whatever the scale of the weights:

.. math::

    w = \Big\langle \frac{\operatorname{std}_t\!\big(\lambda_i(t) - a_i - b_i t\big)}{\bar\Delta} \Big\rangle_i, \qquad
    D = \Big\langle \frac{\operatorname{Var}_k\!\big(\Delta\lambda_{i,k}/\sqrt{\delta t_k}\big)}{2\,\bar\Delta^2}
    \Big\rangle_i, \qquad
    w_E = \Big\langle \frac{\operatorname{std}_e \lambda_{e,i}(t_T)}{\bar\Delta} \Big\rangle_i ,

the *width* (about a least-squares line in time, so that a slow drift of the spectrum while training is not
counted as fluctuation), the *diffusion* per unit Langevin time (increments :math:`\Delta\lambda_{i,k}` over
:math:`\delta t_k`; for equal steps :math:`\operatorname{Var}(\Delta\lambda)/(2\delta t)`, as
:func:`~rmt_callbacks.dynamics.diffusion_coefficient`) and, for an ensemble of :math:`E` networks (the
``(E, M, N)`` parameters of the reference models), the width across networks at the last snapshot. At noise
temperature :math:`T_{\rm n}` the *normalised* values are :math:`w/\sqrt{T_{\rm n}}`, :math:`D/T_{\rm n}` and
:math:`w_E/\sqrt{T_{\rm n}}`: equal for runs at equal :math:`\alpha/|B|` (the linear scaling rule, E4).

References: arXiv:2412.20496, arXiv:2407.16427.
"""

from __future__ import annotations

import math

import torch

from .._checks import positive

__all__ = ["level_spacing", "normalized", "window_statistics"]


def level_spacing(levels: torch.Tensor) -> float:
    r"""The mean level spacing :math:`\bar\Delta = (\bar\lambda_{\max} - \bar\lambda_{\min})/(n - 1)` of the
    time-averaged levels of a ``(T, ..., n)`` window, averaged over batch members.

    NaN with fewer than two levels or when all are degenerate.

    Example:
        >>> level_spacing(torch.tensor([[0.0, 1.0, 4.0], [0.0, 1.0, 4.0]]))
        2.0
    """
    n = levels.shape[-1]
    if n < 2:
        return math.nan
    mean = levels.mean(dim=0)
    spacing = float((mean.amax(dim=-1) - mean.amin(dim=-1)).mean()) / (n - 1)
    return spacing if spacing > 0 else math.nan


def _detrended_std(levels: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """The standard deviation of every level about its least-squares line in ``times``: shape ``(..., n)``."""
    t = (times - times.mean()).to(levels.dtype).reshape(-1, *([1] * (levels.ndim - 1)))
    centred = levels - levels.mean(dim=0)
    norm = float((t * t).sum())
    slope = (t * centred).sum(dim=0) / norm if norm > 0 else torch.zeros_like(centred[0])
    return (centred - t * slope).std(dim=0, unbiased=False)


def window_statistics(levels: torch.Tensor, times: torch.Tensor, *, ensemble: bool = False) -> dict[str, float]:
    r"""Width, diffusion and (for an ensemble) cross-network width of a window, in level spacings (module doc).

    Args:
        levels: ``(T, ..., n)`` ascending levels; with ``ensemble`` the first batch dimension indexes networks.
        times: ``(T,)`` increasing Langevin times of the snapshots.
        ensemble: also give ``ensemble_width``.

    Returns:
        ``level_spacing`` (:math:`\bar\Delta`, in the levels' units) always; ``width`` and ``diffusion`` from
        three snapshots (a line fits two exactly), ``ensemble_width`` with ``ensemble``; nothing but the spacing
        when :math:`\bar\Delta` is undefined (one level, or all degenerate).

    Raises:
        ValueError: ``times`` not of shape ``(T,)`` or not increasing.

    Example:
        >>> levels = torch.tensor([[0.0, 1.0], [0.1, 1.1], [0.0, 1.0]], dtype=torch.float64)
        >>> stats = window_statistics(levels, torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64))
        >>> round(stats["width"], 4), round(stats["diffusion"], 4)
        (0.0471, 0.01)
    """
    if times.shape != levels.shape[:1] or (times.numel() > 1 and not bool((times.diff() > 0).all())):
        raise ValueError(f"times must be increasing, of shape ({levels.shape[0]},), got {times.tolist()}")
    spacing = level_spacing(levels)
    out: dict[str, float] = {"level_spacing": spacing}
    if math.isnan(spacing):
        return out
    if ensemble and levels.ndim >= 3:
        out["ensemble_width"] = float(levels[-1].std(dim=0, unbiased=False).mean()) / spacing
    if levels.shape[0] >= 3:
        out["width"] = float(_detrended_std(levels, times).mean()) / spacing
        dt = times.diff().to(levels.dtype).reshape(-1, *([1] * (levels.ndim - 1)))
        scaled = levels.diff(dim=0) / dt.sqrt()
        out["diffusion"] = float(scaled.var(dim=0, unbiased=True).mean()) / (2.0 * spacing**2)
    return out


def normalized(stats: dict[str, float], temperature: float) -> dict[str, float]:
    r"""The statistics divided by the noise temperature's scaling: widths by :math:`\sqrt{T}`, diffusion by :math:`T`.

    Example:
        >>> normalized({"level_spacing": 2.0, "width": 0.5, "diffusion": 0.5}, 0.25)
        {'width_normalized': 1.0, 'diffusion_normalized': 2.0}
    """
    positive("temperature", temperature, owner="normalized")
    powers = {"width": 0.5, "ensemble_width": 0.5, "diffusion": 1.0}
    return {f"{k}_normalized": v / temperature ** powers[k] for k, v in stats.items() if k in powers}
