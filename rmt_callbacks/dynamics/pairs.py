r"""Near-degenerate eigenvalue pairs over an ensemble, as the papers analyse them (docs/science.md#analysis-recipe).

For a pair of levels that share a target, each network contributes its two eigenvalues and their spacing
:math:`S = |x_i - x_j|`. Over the ensemble the pair is summarised by its mean, the papers' histogram-weighted
mean spacing :math:`\langle S \rangle`, and the width :math:`\sigma` of the 2×2 GOE density (E12) fitted to
the pooled eigenvalues, for which :math:`\langle S \rangle = \sqrt\pi\,\sigma` (E13). Errors come from a
jackknife over networks.

References: arXiv:2407.16427, arXiv:2412.20496.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..fits import fit_pair_density
from ..spectral import histogram_mean

__all__ = ["PairSummary", "jackknife", "summarize_pair"]


@dataclass(frozen=True)
class PairSummary:
    """One near-degenerate pair over an ensemble; ``*_err`` are jackknife standard errors."""

    mean: float
    mean_err: float
    mean_spacing: float
    mean_spacing_err: float
    sigma: float
    sigma_err: float
    center: float
    ks: float

    def to_metrics(self, prefix: str = "") -> dict[str, float]:
        """Every field as ``{prefix}{field}: float``."""
        return {f"{prefix}{k}": float(v) for k, v in self.__dict__.items()}


def jackknife(
    samples: torch.Tensor, statistic: Callable[[torch.Tensor], float], *, blocks: int | None = 50
) -> tuple[float, float]:
    r"""Jackknife estimate and standard error of ``statistic`` over the first dimension of ``samples``.

    The samples are split into ``blocks`` contiguous blocks (``None``: one per sample, leave-one-out); with
    :math:`\theta_k` the statistic without block :math:`k`,

    .. math::

        \sigma_{\rm jk} = \sqrt{\frac{n-1}{n}\sum_k (\theta_k - \bar\theta)^2}
        = \mathrm{std}(\theta)\,\sqrt{n - 1},

    the papers' formula (docs/science.md#analysis-recipe, step 5). The estimate is the statistic on all samples.

    Args:
        samples: tensor of shape ``(E, ...)``, one row per network.
        statistic: maps a ``(E', ...)`` tensor to a number.
        blocks: number of jackknife blocks (at most ``E``), or ``None`` for leave-one-out.

    Raises:
        ValueError: fewer than two samples or blocks.

    Example:
        >>> x = torch.arange(10.0)
        >>> est, err = jackknife(x, lambda v: float(v.mean()), blocks=None)
        >>> est, round(err, 6) == round(float(x.std() / 10**0.5), 6)
        (4.5, True)
    """
    n = samples.shape[0]
    nb = n if blocks is None else min(blocks, n)
    if nb < 2:
        raise ValueError(f"jackknife needs at least 2 samples and blocks, got {n} samples and blocks={blocks!r}")
    edges = torch.linspace(0, n, nb + 1).round().long().tolist()
    keep = torch.ones(n, dtype=torch.bool)
    values = []
    for lo, hi in itertools.pairwise(edges):
        keep[lo:hi] = False
        values.append(statistic(samples[keep]))
        keep[lo:hi] = True
    theta = torch.tensor(values, dtype=torch.float64)
    return float(statistic(samples)), float(theta.std(unbiased=False) * math.sqrt(nb - 1))


def summarize_pair(pair: torch.Tensor, *, blocks: int | None = 50) -> PairSummary:
    r"""Summarise one near-degenerate pair, given as ``(E, 2)`` eigenvalues per network.

    ``mean`` is the ensemble mean of both levels, ``mean_spacing`` the histogram-weighted
    :math:`\langle S\rangle` of :math:`S = |x_1 - x_2|` (docs/science.md#analysis-recipe, step 3), and ``sigma``,
    ``center`` the E12 fit to the pooled ``2E`` values (maximum likelihood,
    :func:`rmt_callbacks.fits.fit_pair_density`).

    Args:
        pair: ``(E, 2)`` tensor, the pair's two eigenvalues in each network.
        blocks: jackknife blocks (see :func:`jackknife`).

    Raises:
        ValueError: ``pair`` is not ``(E, 2)`` with ``E >= 2``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> d = torch.randn(4000, 2, generator=g, dtype=torch.float64) * 0.1 + 2.0
        >>> off = torch.randn(4000, generator=g, dtype=torch.float64) * 0.1 / 2**0.5
        >>> h = torch.stack([torch.stack([d[:, 0], off], -1), torch.stack([off, d[:, 1]], -1)], -2)
        >>> s = summarize_pair(torch.linalg.eigvalsh(h))
        >>> abs(s.sigma - 0.1) < 0.005 and abs(s.mean_spacing / (math.pi**0.5 * 0.1) - 1) < 0.05
        True
    """
    if pair.ndim != 2 or pair.shape[1] != 2 or pair.shape[0] < 2:
        raise ValueError(f"pair must have shape (E, 2) with E >= 2, got {tuple(pair.shape)}")
    pair = pair.to(torch.float64)

    def spacing(p: torch.Tensor) -> float:
        return histogram_mean((p[:, 0] - p[:, 1]).abs())

    def sigma(p: torch.Tensor) -> float:
        return fit_pair_density(p.reshape(-1)).sigma

    fit = fit_pair_density(pair.reshape(-1))
    mean, mean_err = jackknife(pair, lambda p: float(p.mean()), blocks=blocks)
    s, s_err = jackknife(pair, spacing, blocks=blocks)
    sig, sig_err = jackknife(pair, sigma, blocks=blocks)
    return PairSummary(mean, mean_err, s, s_err, sig, sig_err, fit.center, fit.ks)
