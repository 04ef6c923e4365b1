r"""Level spacings: raw, unfolded, ratios, near-degenerate pairs, and the papers' histogram-weighted mean.

Every function takes eigenvalues of shape ``(..., n)`` and works matrix by matrix over the leading
dimensions; spectra are sorted internally where the statistic needs an ascending order. Definitions of
spacings, unfolding, ratios and pairs: :mod:`rmt_callbacks.spectral`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from numpy.polynomial import polynomial as P

__all__ = [
    "freedman_diaconis_edges",
    "histogram_mean",
    "mean_spacing_ratio",
    "pair_spacings",
    "spacing_ratios",
    "spacings",
    "unfolded_spacings",
]


def _check_levels(eigs: object, *, min_levels: int, name: str = "eigs") -> torch.Tensor:
    """Validate a finite real floating tensor ``(..., n)`` with ``n >= min_levels``; return it."""
    if not isinstance(eigs, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(eigs).__name__}")
    if not eigs.dtype.is_floating_point:
        raise TypeError(f"{name} must have a real floating dtype, got {eigs.dtype}")
    if eigs.ndim < 1 or eigs.shape[-1] < min_levels:
        raise ValueError(f"{name} must have shape (..., n) with n >= {min_levels}, got shape {tuple(eigs.shape)}")
    bad = int((~torch.isfinite(eigs)).sum())
    if bad:
        raise ValueError(f"{name} must be finite, but {bad} of its {eigs.numel()} entries are NaN or Inf")
    return eigs


def spacings(eigs: torch.Tensor) -> torch.Tensor:
    r"""Raw nearest-neighbour spacings :math:`S_i = \lambda_{i+1} - \lambda_i` of the ascending spectrum.

    Args:
        eigs: eigenvalues, shape ``(..., n)`` with :math:`n \ge 2`, in any order.

    Returns:
        Shape ``(..., n - 1)``, non-negative.

    Raises:
        TypeError: ``eigs`` is not a real floating tensor.
        ValueError: fewer than 2 levels, or non-finite entries.

    References: arXiv:2407.16427.

    Example:
        >>> spacings(torch.tensor([3.0, 0.0, 1.0])).tolist()
        [1.0, 2.0]
    """
    eigs = _check_levels(eigs, min_levels=2)
    return torch.diff(eigs.sort(dim=-1).values, dim=-1)


def unfolded_spacings(eigs: torch.Tensor, *, degree: int = 5, trim: float = 0.0) -> torch.Tensor:
    r"""Spacings of the unfolded spectrum, rescaled to mean one per matrix.

    The counting function of the ascending levels, :math:`N(\lambda_i) = i + \tfrac12` (:math:`i = 0, \dots,
    n-1`, the midpoint of each step), is fitted per matrix by least squares with a polynomial :math:`p` of
    degree ``d`` in the standardised variable :math:`z = (\lambda - \bar\lambda) / \operatorname{std}(\lambda)`,
    and the unfolded levels are that fit with its derivative (the fitted density) clipped at zero:

    .. math::

        p(z) = \sum_{k=0}^{d} c_k z^k,\qquad
        \xi_i = p(z_0) + \int_{z_0}^{z_i} \max\big(p'(t), 0\big)\,dt,\qquad
        s_i = \frac{\xi_{i+1} - \xi_i}{\langle \xi_{j+1} - \xi_j \rangle_j}.

    So :math:`\xi` is non-decreasing by construction and no spacing is ever negative; where :math:`p` is
    non-decreasing on :math:`[z_0, z_{n-1}]` (every well-behaved spectrum) :math:`\xi_i = p(z_i)` exactly, the
    plain polynomial unfolding of the References. Where a poor fit decreases (typically across the gap to
    outliers far above the bulk), only the spacings (before the rescaling) of the levels that straddle the
    decreasing stretch change: they get the fit's increase alone, and zero where :math:`p` decreases between
    them throughout. The integral is exact: :math:`p'` keeps its sign between its real roots. A zero spacing
    there is a sign to exclude the outliers before unfolding, or to lower ``degree``.

    The fit uses all levels; then ``floor(trim * n)`` unfolded levels are dropped at each edge (the edges of a
    spectrum are badly unfolded by a polynomial) before the spacings are taken and rescaled.

    Args:
        eigs: eigenvalues, shape ``(..., n)``, in any order; at least ``degree + 2`` distinct values per matrix.
        degree: polynomial degree :math:`d \ge 1`.
        trim: fraction of levels dropped at each edge, in ``[0, 0.5)``.

    Returns:
        Shape ``(..., n - 2 * floor(trim * n) - 1)``, in the input's dtype.

    Raises:
        TypeError: ``eigs`` is not a real floating tensor, or ``degree`` is not an int.
        ValueError: ``degree < 1``, ``trim`` outside ``[0, 0.5)``, too few levels, non-finite entries,
            or a matrix whose levels are all equal.

    References: Guhr, Müller-Groeling, Weidenmüller, Phys. Rep. 299, 189 (1998), arXiv:cond-mat/9707301.

    Example:
        >>> t = torch.linspace(-1.0, 1.0, 21, dtype=torch.float64)
        >>> levels = t.sign() * t.abs() ** (1 / 3)  # counting function ~ levels**3: a cubic
        >>> float(spacings(levels).std()) > 0.1  # raw spacings vary
        True
        >>> torch.allclose(unfolded_spacings(levels, degree=3), torch.ones(20, dtype=torch.float64))
        True
    """
    if isinstance(degree, bool) or not isinstance(degree, int):
        raise TypeError(f"degree must be an int, got {degree!r}")
    if degree < 1:
        raise ValueError(f"degree must be >= 1, got {degree}")
    if not 0.0 <= trim < 0.5:
        raise ValueError(f"trim must be in [0, 0.5), got {trim!r}")
    eigs = _check_levels(eigs, min_levels=degree + 2)
    n = eigs.shape[-1]
    cut = math.floor(trim * n)
    if n - 2 * cut < 2:
        raise ValueError(f"trim={trim} leaves fewer than 2 of the n={n} levels")
    levels = eigs.sort(dim=-1).values.double()  # (..., n)
    xi = _unfold(levels, degree)  # (..., n)
    s = torch.diff(xi[..., cut : n - cut], dim=-1)
    return (s / s.mean(dim=-1, keepdim=True)).to(eigs.dtype)


def _unfold(levels: torch.Tensor, degree: int) -> torch.Tensor:
    """The fitted counting function with its derivative clipped at zero, at the (ascending, float64) levels."""
    std = levels.std(dim=-1, keepdim=True)
    if bool((std == 0).any()):
        raise ValueError("eigs: a matrix has all levels equal; its counting function cannot be unfolded")
    z = (levels - levels.mean(dim=-1, keepdim=True)) / std
    vander = z.unsqueeze(-1) ** torch.arange(degree + 1, device=z.device, dtype=z.dtype)  # (..., n, d + 1)
    counts = torch.arange(levels.shape[-1], device=z.device, dtype=z.dtype) + 0.5  # (n,)
    target = counts.expand_as(levels).unsqueeze(-1)  # (..., n, 1)
    # least squares through Householder QR: torch's lstsq (MKL's gelsy) rounds differently at different memory
    # alignments, so the same levels gave different bits from run to run; QR, an elementwise Qᵀt and a
    # triangular solve do not; a rank-deficient fit (few distinct levels) keeps lstsq's minimum-norm answer
    q, r = torch.linalg.qr(vander)  # (..., n, d + 1), (..., d + 1, d + 1)
    qt_target = (q * target).sum(dim=-2).unsqueeze(-1)  # (..., d + 1, 1)
    coef = torch.linalg.solve_triangular(r, qt_target, upper=True)  # (..., d + 1, 1)
    diagonal = r.diagonal(dim1=-2, dim2=-1).abs()
    deficient = diagonal.amin(dim=-1) <= diagonal.amax(dim=-1) * levels.shape[-1] * torch.finfo(z.dtype).eps
    if bool(deficient.any()):
        coef[deficient] = torch.linalg.lstsq(vander[deficient], target[deficient]).solution
    xi = (vander @ coef).reshape(-1, levels.shape[-1])  # (B, n): the polynomial at the levels
    flat_z, flat_c = z.reshape(xi.shape).cpu().numpy(), coef.reshape(-1, degree + 1).cpu().numpy()
    for b, (zb, cb) in enumerate(zip(flat_z, flat_c, strict=True)):
        values = _clip_decreasing(zb, cb)
        if values is not None:
            xi[b] = torch.from_numpy(values).to(xi.device)
    # a no-op in exact arithmetic; after rounding, still no spacing can be negative
    return xi.cummax(dim=-1).values.reshape(levels.shape)


def _clip_decreasing(z: np.ndarray, coef: np.ndarray) -> np.ndarray | None:
    r"""``p(z_0) + \int_{z_0}^{z_i} \max(p', 0)`` at the ascending ``z`` ``(n,)``, or ``None`` when ``p`` (coefficients
    ``coef``, lowest first) does not decrease on ``[z_0, z_{n-1}]``, so that the polynomial is kept as it is.

    Between consecutive breakpoints (the ends of the range and the real parts of all roots of ``p'`` inside it)
    ``p'`` has one sign, so the clipped integral over a piece is ``max(p(end) - p(start), 0)``; a breakpoint
    from a complex root only splits a piece of one sign, which changes nothing.
    """
    slope = np.trim_zeros(P.polyder(coef), "b")
    roots = P.polyroots(slope).real if slope.size > 1 else np.empty(0)
    inside = np.sort(roots[(roots > z[0]) & (roots < z[-1])])
    breaks = np.concatenate([z[:1], inside, z[-1:]])
    rise = np.diff(P.polyval(breaks, coef))  # the change of p over each piece of constant slope sign
    if bool((rise >= 0).all()):
        return None
    start, end = np.minimum(z[:, None], breaks[None, :-1]), np.minimum(z[:, None], breaks[None, 1:])  # (n, pieces)
    return P.polyval(breaks[0], coef) + np.clip(P.polyval(end, coef) - P.polyval(start, coef), 0.0, None).sum(-1)


def spacing_ratios(eigs: torch.Tensor) -> torch.Tensor:
    r"""Ratios of consecutive spacings, which need no unfolding.

    .. math::

        r_i = \frac{\min(S_i, S_{i+1})}{\max(S_i, S_{i+1})} \in [0, 1],\qquad S_i = \lambda_{i+1} - \lambda_i.

    Three coincident levels give :math:`0/0`; that ratio is undefined and returned as NaN (excluded by
    :func:`mean_spacing_ratio`). One zero spacing next to a positive one gives :math:`r_i = 0`.

    Args:
        eigs: eigenvalues, shape ``(..., n)`` with :math:`n \ge 3`, in any order.

    Returns:
        Shape ``(..., n - 2)``.

    Raises:
        TypeError: ``eigs`` is not a real floating tensor.
        ValueError: fewer than 3 levels, or non-finite entries.

    References: Oganesyan, Huse, PRB 75, 155111 (2007), arXiv:cond-mat/0610854; Atas et al., PRL 110,
    084101 (2013), arXiv:1212.5611.

    Example:
        >>> spacing_ratios(torch.tensor([0.0, 1.0, 3.0, 3.0, 3.0])).tolist()
        [0.5, 0.0, nan]
    """
    eigs = _check_levels(eigs, min_levels=3)
    return _ratios(eigs.sort(dim=-1).values)


def _ratios(ascending: torch.Tensor) -> torch.Tensor:
    """Spacing ratios of already validated, ascending levels ``(..., n)``, n >= 3."""
    s = torch.diff(ascending, dim=-1)
    lo = torch.minimum(s[..., :-1], s[..., 1:])
    hi = torch.maximum(s[..., :-1], s[..., 1:])
    return torch.where(hi > 0, lo / hi.clamp_min(torch.finfo(s.dtype).tiny), torch.full_like(hi, math.nan))


def mean_spacing_ratio(eigs: torch.Tensor) -> torch.Tensor:
    r"""Mean spacing ratio :math:`\langle r \rangle` per matrix, ignoring undefined (NaN) ratios.

    Reference values (large matrices): Poisson :math:`2\ln 2 - 1 \approx 0.386`, GOE 0.5307, GUE 0.5996
    (:data:`rmt_callbacks.laws.MEAN_SPACING_RATIO`). NaN where every ratio of a matrix is undefined.

    Args:
        eigs: eigenvalues, shape ``(..., n)`` with :math:`n \ge 3`.

    Returns:
        Shape ``(...)``.

    Raises:
        TypeError, ValueError: as :func:`spacing_ratios`.

    References: Atas et al., PRL 110, 084101 (2013), arXiv:1212.5611.

    Example:
        >>> mean_spacing_ratio(torch.tensor([[0.0, 1.0, 3.0], [0.0, 1.0, 2.0]])).tolist()
        [0.5, 1.0]
    """
    return torch.nanmean(spacing_ratios(eigs), dim=-1)


def pair_spacings(eigs: torch.Tensor, pairs: Sequence[tuple[int, int]]) -> torch.Tensor:
    r"""Spacings :math:`S = |x_i - x_j|` of chosen level pairs, the papers' near-degenerate pair spacings.

    Indices refer to the last dimension *as given* (no sorting): the papers index the descending eigenvalues
    of :math:`W^\top W`, so pass ``eigs.flip(-1)`` to use their indices on :func:`esd` output.

    Args:
        eigs: levels, shape ``(..., n)``; one row per network of an ensemble.
        pairs: index pairs ``(i, j)`` with ``0 <= i, j < n`` and ``i != j``.

    Returns:
        Shape ``(..., len(pairs))``.

    Raises:
        TypeError: ``eigs`` is not a real floating tensor, or an index is not an int.
        ValueError: ``pairs`` is empty, or an index is out of range or repeated within a pair.

    References: arXiv:2407.16427; docs/science.md#pair-density.

    Example:
        >>> pair_spacings(torch.tensor([5.0, 2.0, 1.5, 0.0]), [(1, 2), (0, 3)]).tolist()
        [0.5, 5.0]
    """
    eigs = _check_levels(eigs, min_levels=2)
    n = eigs.shape[-1]
    if len(pairs) == 0:
        raise ValueError("pairs must contain at least one (i, j) index pair, got an empty sequence")
    for pair in pairs:
        if len(pair) != 2 or any(isinstance(k, bool) or not isinstance(k, int) for k in pair):
            raise TypeError(f"each pair must be two ints (i, j), got {pair!r}")
        i, j = pair
        if not (0 <= i < n and 0 <= j < n) or i == j:
            raise ValueError(f"pair {pair!r} must hold two different indices in [0, {n}) (n = eigs.shape[-1])")
    first = torch.tensor([i for i, _ in pairs], device=eigs.device)
    second = torch.tensor([j for _, j in pairs], device=eigs.device)
    return (eigs[..., first] - eigs[..., second]).abs()


def _quantile(sorted_values: torch.Tensor, q: float) -> torch.Tensor:
    """Linear-interpolation quantile of an ascending 1-D tensor (numpy's default), with no size limit."""
    pos = q * (sorted_values.numel() - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, sorted_values.numel() - 1)
    return sorted_values[lo] + (pos - lo) * (sorted_values[hi] - sorted_values[lo])


def _sorted_sample(values: torch.Tensor, name: str) -> torch.Tensor:
    return _check_levels(values, min_levels=1, name=name).reshape(-1).double().sort().values


def _fd_bins(values: torch.Tensor, width_from: torch.Tensor | None = None) -> tuple[float, float, int]:
    """``(min, max, number of bins)`` of the papers' Freedman–Diaconis rule for pooled float64 values, the width
    taken from ``width_from`` (pooled) when given, else from ``values``."""
    v = _sorted_sample(values, "values")
    w = v if width_from is None else _sorted_sample(width_from, "width_from")
    lo, hi = float(v[0]), float(v[-1])
    width = 2.0 * float(_quantile(w, 0.75) - _quantile(w, 0.25)) / w.numel() ** (1.0 / 3.0)
    bins = math.floor((hi - lo) / width) if width > 0 else 1
    return lo, hi, max(bins, 1)


def _edge(k: torch.Tensor, lo: float, hi: float, bins: int) -> torch.Tensor:
    """Edge ``k`` of ``bins`` equal bins on ``[lo, hi]``, computed exactly as ``numpy.linspace`` does."""
    return torch.where(k == bins, torch.full_like(k, hi), k * ((hi - lo) / bins) + lo)


def freedman_diaconis_edges(
    values: torch.Tensor, *, max_bins: int | None = None, width_from: torch.Tensor | None = None
) -> torch.Tensor:
    r"""Bin edges of the papers' Freedman–Diaconis histogram (docs/science.md#analysis-recipe, step 2).

    .. math::

        h = \frac{2\,\mathrm{IQR}}{n^{1/3}},\qquad K = \max\Big(1, \Big\lfloor \frac{\max - \min}{h} \Big\rfloor\Big),

    :math:`K` equal bins on :math:`[\min, \max]` (one bin when the IQR vanishes), as ``numpy.histogram`` with
    ``bins=K, range=(min, max)`` makes them, except for equal values :math:`v`: one bin of width zero, :math:`[v,v]`
    (a point mass, whose L1 distance to any density is 2; numpy widens it to :math:`[v-1/2,v+1/2]`, as the figures
    do). Values of any shape are pooled. The one binning rule of the package: the fits use it as it is
    (``l1_distance`` caps it at :math:`2^{16}` bins); figures cap :math:`K` at ``max_bins`` (a far outlier would
    otherwise ask for millions of bins), and take :math:`h` from one sample and the range from others with
    ``width_from`` (the papers' spectra: the width of one level's distribution over the pooled range of all levels).
    numpy's ``bins="fd"`` has the same :math:`h` but rounds :math:`K` up.

    Args:
        values: samples, any non-empty shape; their range is the histogram's, and they give :math:`h` and
            :math:`n` unless ``width_from`` does.
        max_bins: the largest :math:`K`, or ``None`` for no cap.
        width_from: the samples :math:`h` and :math:`n` are taken from, any non-empty shape, or ``None``.

    Returns:
        Shape ``(K + 1,)``, float64, on the input's device.

    Raises:
        TypeError: ``values`` or ``width_from`` is not a real floating tensor, ``max_bins`` not an int.
        ValueError: ``values`` or ``width_from`` is empty or has non-finite entries; ``max_bins < 1``.

    References: Freedman, Diaconis, Z. Wahrsch. 57, 453 (1981); arXiv:2407.16427 (``f_bin``).

    Example:
        >>> freedman_diaconis_edges(torch.arange(8.0)).tolist()  # IQR 3.5, h = 2 * 3.5 / 2, K = floor(7 / 3.5)
        [0.0, 3.5, 7.0]
        >>> freedman_diaconis_edges(torch.tensor([0.0, 70.0]), width_from=torch.arange(8.0), max_bins=10).numel()
        11
    """
    if max_bins is not None and (isinstance(max_bins, bool) or not isinstance(max_bins, int)):
        raise TypeError(f"max_bins must be an int or None, got {max_bins!r}")
    if max_bins is not None and max_bins < 1:
        raise ValueError(f"max_bins must be >= 1 (or None for no cap), got {max_bins}")
    lo, hi, bins = _fd_bins(values, width_from)
    bins = bins if max_bins is None else min(bins, max_bins)
    k = torch.arange(bins + 1, dtype=torch.float64, device=values.device)
    return _edge(k, lo, hi, bins)


def histogram_mean(values: torch.Tensor) -> float:
    r"""The papers' histogram-weighted mean :math:`\langle S \rangle` (docs/science.md#analysis-recipe, step 3).

    With the :func:`freedman_diaconis_edges` histogram, density heights :math:`h_k` and bin centres
    :math:`p_k`,

    .. math::

        \langle S \rangle = \frac{\sum_k p_k h_k}{\sum_k h_k},

    i.e. the mean of the values moved to the centres of their bins (bins half-open, the last one closed, as
    in ``numpy.histogram``); it differs slightly from the arithmetic mean. Only the bins that hold values are
    ever computed, so a very fine binning costs no memory.

    Args:
        values: samples, any non-empty shape (pooled).

    Returns:
        The mean as a Python float.

    Raises:
        TypeError: ``values`` is not a real floating tensor.
        ValueError: ``values`` is empty or has non-finite entries.

    References: arXiv:2407.16427 (the authors' notebooks).

    Example:
        >>> histogram_mean(torch.tensor([0.0, 1.0, 2.0, 10.0]))  # IQR 3.25, h = 4.09, K = 2: centres 2.5, 7.5
        3.75
    """
    lo, hi, bins = _fd_bins(values)
    if hi == lo:
        return lo
    v = values.reshape(-1).double()
    k = ((v - lo) * (bins / (hi - lo))).floor().clamp(0, bins - 1)  # (n,) bin index, up to round-off
    k = torch.where(v < _edge(k, lo, hi, bins), k - 1, k)
    k = torch.where((v >= _edge(k + 1, lo, hi, bins)) & (k < bins - 1), k + 1, k)
    return float((0.5 * (_edge(k, lo, hi, bins) + _edge(k + 1, lo, hi, bins))).mean())
