r"""Near-degenerate eigenvalue pairs over an ensemble, as the papers analyse them (docs/science.md#analysis-recipe).

For a pair of levels that share a target, each network contributes its two eigenvalues and their spacing
:math:`S = |x_i - x_j|`. Over the ensemble the pair is summarised by its mean, the papers' histogram-weighted
mean spacing :math:`\langle S \rangle`, and the width :math:`\sigma` of the 2×2 GOE density (E12) fitted to
the pooled eigenvalues, for which :math:`\langle S \rangle = \sqrt\pi\,\sigma` (E13). Errors come from a
jackknife over networks, or over groups of networks that share a data set.

References: arXiv:2407.16427, arXiv:2412.20496.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from types import EllipsisType

import torch

from ..fits import fit_pair_density
from ..spectral import histogram_mean

__all__ = ["PairSummary", "jackknife", "summarize_pair"]

_BLOCKS = 50  # jackknife blocks when neither blocks nor groups is given


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
    samples: torch.Tensor,
    statistic: Callable[[torch.Tensor], float],
    *,
    blocks: int | EllipsisType | None = ...,
    groups: torch.Tensor | None = None,
) -> tuple[float, float]:
    r"""Jackknife estimate and standard error of ``statistic`` over the first dimension of ``samples``.

    The samples are split into :math:`n` parts, ``blocks`` contiguous blocks (``None``: one per sample,
    leave-one-out) or the ``groups`` they belong to; with :math:`\theta_k` the statistic without part :math:`k`,

    .. math::

        \sigma_{\rm jk} = \sqrt{\frac{n-1}{n}\sum_k (\theta_k - \bar\theta)^2}
        = \mathrm{std}(\theta)\,\sqrt{n - 1},

    the papers' formula (docs/science.md#analysis-recipe, step 5). The estimate is the statistic on all samples.

    Delete-one-group is the jackknife for samples that share something within a group and nothing across
    groups (the networks trained on one data set, docs/science.md#teacher-student): its error contains the
    shared term, which a jackknife over single samples misses. Groups of unequal size enter with equal weight:
    exact for equal sizes, a close approximation when the sizes differ by one (``E`` not a multiple of their
    number).

    Args:
        samples: tensor of shape ``(E, ...)``, one row per network.
        statistic: maps a ``(E', ...)`` tensor to a number.
        blocks: number of contiguous jackknife blocks (at most ``E``), or ``None`` for leave-one-out; 50 when
            neither ``blocks`` nor ``groups`` is given.
        groups: ``(E,)`` integer labels, one per sample: delete one group at a time (instead of ``blocks``).

    Raises:
        ValueError: fewer than two samples, blocks or groups; both ``blocks`` and ``groups``; ``groups`` not of
            shape ``(E,)``.
        TypeError: ``groups`` not an integer tensor.

    Example:
        >>> x = torch.arange(10.0)
        >>> est, err = jackknife(x, lambda v: float(v.mean()), blocks=None)
        >>> est, round(err, 6) == round(float(x.std() / 10**0.5), 6)
        (4.5, True)
        >>> jackknife(x, lambda v: float(v.mean()), groups=torch.tensor([0] * 5 + [1] * 5))  # |2 - 7| / 2
        (4.5, 2.5)
    """
    n = samples.shape[0]
    if groups is not None:
        if blocks is not ...:
            raise ValueError(f"jackknife takes blocks or groups, not both: got blocks={blocks!r} and groups")
        labels = _group_labels(groups, n)
        dropped = [labels == g for g in labels.unique()]
        if len(dropped) < 2:
            raise ValueError(f"jackknife needs at least 2 groups, got {len(dropped)}")
    else:
        nb = n if blocks is None else min(_BLOCKS if blocks is ... else blocks, n)
        if nb < 2:
            raise ValueError(f"jackknife needs at least 2 samples and blocks, got {n} samples and blocks={blocks!r}")
        edges = torch.linspace(0, n, nb + 1).round().long().tolist()
        index = torch.arange(n)
        dropped = [(index >= lo) & (index < hi) for lo, hi in itertools.pairwise(edges)]
    theta = torch.tensor([statistic(samples[~d]) for d in dropped], dtype=torch.float64)
    return float(statistic(samples)), float(theta.std(unbiased=False) * math.sqrt(len(dropped) - 1))


def _group_labels(groups: torch.Tensor, n: int) -> torch.Tensor:
    """``groups`` checked: an integer tensor of shape ``(n,)``."""
    if not isinstance(groups, torch.Tensor) or groups.is_floating_point() or groups.is_complex():
        raise TypeError(f"groups must be an integer tensor, got {getattr(groups, 'dtype', type(groups).__name__)}")
    if groups.shape != (n,):
        raise ValueError(f"groups must have shape ({n},), one label per sample, got {tuple(groups.shape)}")
    return groups.cpu()


def summarize_pair(
    pair: torch.Tensor, *, blocks: int | EllipsisType | None = ..., groups: torch.Tensor | None = None
) -> PairSummary:
    r"""Summarise one near-degenerate pair, given as ``(E, 2)`` eigenvalues per network.

    ``mean`` is the ensemble mean of both levels, ``mean_spacing`` the histogram-weighted
    :math:`\langle S\rangle` of :math:`S = |x_1 - x_2|` (docs/science.md#analysis-recipe, step 3), and ``sigma``,
    ``center`` the E12 fit to the pooled ``2E`` values (maximum likelihood,
    :func:`rmt_callbacks.fits.fit_pair_density`).

    Args:
        pair: ``(E, 2)`` tensor, the pair's two eigenvalues in each network.
        blocks: jackknife blocks (see :func:`jackknife`; 50 unless ``groups`` is given).
        groups: ``(E,)`` integer labels of what the networks share (their data set): the errors become a
            delete-one-group jackknife (see :func:`jackknife`), exclusive with ``blocks``.

    Raises:
        ValueError: ``pair`` is not ``(E, 2)`` with ``E >= 2``; ``blocks`` or ``groups`` as :func:`jackknife`.

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
    mean, mean_err = jackknife(pair, lambda p: float(p.mean()), blocks=blocks, groups=groups)
    s, s_err = jackknife(pair, spacing, blocks=blocks, groups=groups)
    sig, sig_err = jackknife(pair, sigma, blocks=blocks, groups=groups)
    return PairSummary(mean, mean_err, s, s_err, sig, sig_err, fit.center, fit.ks)
