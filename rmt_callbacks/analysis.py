r"""The per-matrix analysis shared by :class:`~rmt_callbacks.SpectrumMonitor` and :func:`analyze`.

Each selected parameter becomes one or more :class:`~rmt_callbacks.spectral.MatrixView` of shape
``(..., M, N)``; leading dimensions (an ensemble of networks, the kernel positions of a convolution) are a
batch of :math:`B` matrices. Conventions (orientation, Gram normalisation, ascending order):
:mod:`rmt_callbacks.spectral`. Per view, with :math:`X_b = W_b^\top W_b / M`:

* ``"summary"``: :func:`~rmt_callbacks.spectral.spectrum_summary` of each :math:`X_b`, averaged over the batch
  (``lambda_min``, ``lambda_max``, ``lambda_mean``, ``spectral_norm``, ``stable_rank``, ``mean_spacing_ratio``;
  the ratio is left out when no matrix has 3 non-structural levels);
* ``"marchenko_pastur"``: the Marchenko–Pastur fit of the eigenvalues pooled over the batch, ratio
  :math:`q = N/M` (``mp_…``);
* ``"semicircle"`` (not a default; ask for it): for square :math:`W`, the semicircle fit of the pooled
  eigenvalues of :math:`(W_b + W_b^\top)/2` (``semicircle_…``);
* ``"spacings"``: the Wigner-surmise fit of the pooled normalised spacings of the non-structural Gram levels
  (``surmise_…``). A matrix with at least :data:`MIN_UNFOLD_LEVELS` levels is unfolded on its own (polynomial
  degree :math:`\min(5, \lfloor n/10 \rfloor)`, 10% of the levels trimmed at each edge) in the variable
  :math:`\sqrt{\lambda}` (the singular values over :math:`\sqrt M`: unfolding is invariant under a smooth
  monotone map, and this one keeps the density finite at the hard edge of :math:`q = 1`); smaller matrices of a
  batch have their raw spacings divided by the batch mean at each level index (the papers' ensemble
  normalisation :math:`s = S / \langle S \rangle`).

.. math::

    \bar m = \frac{1}{B} \sum_{b=1}^{B} m(X_b),\qquad
    \text{fit}\Big(\bigcup_{b=1}^{B} \operatorname{spec} X_b\Big).

**Cost and memory.** The Gram spectra of equal-shape matrices (over all views of a call) are decomposed together
in stacks of bounded bytes (:mod:`rmt_callbacks.spectral.stacks`: one or two copies of the largest matrix or of
8 MiB; on a CPU by torch's or scipy's LAPACK, whichever is measured faster); the eigensolver is all but the whole
cost: one decomposition per matrix, two per square matrix with ``"semicircle"``.

**Past the dense eigensolver.** A view with :math:`\min(M, N) \ge` :data:`~rmt_callbacks.spectral.DENSE_LIMIT`
(8192) is not diagonalised: its Gram density is estimated by stochastic Lanczos quadrature
(:func:`~rmt_callbacks.spectral.estimate_density`, fixed probe seed, no global random numbers) and the result's
``method`` is ``"slq"`` instead of ``"eigvalsh"``. It gets what the estimate supports: ``lambda_max`` (the
largest Ritz value, converged to the top edge from below), ``lambda_min`` (smallest Ritz value; 0 when
:math:`N > M`), ``lambda_mean`` :math:`= \|W\|_F^2/(MN)` (exact), ``spectral_norm`` :math:`= \sqrt{M
\lambda_{\max}}`, ``stable_rank`` :math:`= N \lambda_{\rm mean}/\lambda_{\max}`, ``estimated = 1``, and the
density (``spectra["density"]`` on ``spectra["density_edges"]``, pooled over the batch). Fits and spacings need
the exact levels: they fail with that reason (``converged = 0``). No matrix is skipped for its size.

A matrix that cannot be analysed (not a real floating tensor, NaN/Inf, fewer than 2 rows or columns) is
*skipped* with a reason; the finiteness check is one sum over the stored entries, so a huge (even expanded,
stride-0) matrix full of NaN is refused without a dense pass or a mask. An analysis that fails records
``{analysis}/converged = 0`` and the reason. Nothing here raises on bad weights. Pure torch: no Lightning,
MLflow or matplotlib.

References: arXiv:2412.20496, arXiv:2407.16427; Martin & Mahoney, arXiv:1810.01075 (post-hoc ``analyze``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from .fits import fit_marchenko_pastur, fit_semicircle, fit_surmise
from .laws import SpectralLaw
from .monitors._selection import ParamFilter, available_names, select_names, validate_filter, validate_patterns
from .spectral import (
    DENSE_LIMIT,
    MatrixView,
    SpectralDensity,
    estimate_density,
    matrices_of,
    nonstructural_levels,
    spectrum_summary,
    unfolded_spacings,
    validate_matrix,
)
from .spectral.stacks import STACK_BYTES, overflow_reason, stacked_levels

__all__ = [
    "ANALYSES",
    "DEFAULT_ANALYSES",
    "MAX_DENSE_LEVELS",
    "MIN_UNFOLD_LEVELS",
    "Analysis",
    "MatrixResult",
    "analyze",
    "analyze_views",
    "is_stepwise",
    "resolve_views",
    "to_rows",
    "validate_analyses",
]

Analysis = Literal["summary", "marchenko_pastur", "semicircle", "spacings"]
ANALYSES: tuple[str, ...] = ("summary", "marchenko_pastur", "semicircle", "spacings")
DEFAULT_ANALYSES: tuple[str, ...] = ("summary", "marchenko_pastur", "spacings")
r"""What :func:`analyze` and the monitor compute unless told otherwise: everything the Gram spectrum gives, from one
eigendecomposition per matrix. ``"semicircle"`` is left out: it is the law of a *symmetric* random matrix, and for a
weight matrix it needs a second decomposition (of :math:`(W + W^\top)/2`), which would double the cost of every
analysis of a square layer (``benchmarks/RESULTS.md``, section 1), while the spectra of a general :math:`W` that
the papers follow are its Gram spectra; add it to ``analyses`` where a symmetric part means something."""
MIN_UNFOLD_LEVELS: int = 10
MAX_DENSE_LEVELS: int = DENSE_LIMIT - 1
r"""Largest :math:`\min(M, N)` diagonalised exactly (:data:`~rmt_callbacks.spectral.DENSE_LIMIT` - 1); the density
of a larger matrix is estimated (``method="slq"``), never skipped for its size."""
DENSITY_BINS: int = 100
_PROBE_SEED = 0  # the SLQ probes: a fixed seed, so an analysis is deterministic and draws no global random numbers
_FIT_ERRORS = (ValueError, TypeError, RuntimeError, ArithmeticError)  # what a bad spectrum makes a fit raise
_PREFIX = {"marchenko_pastur": "mp_", "semicircle": "semicircle_", "spacings": "surmise_"}
_RUN_CONSTANT = frozenset({"skipped", "estimated", "mp_ratio"})


def is_stepwise(stat: str, shape: Sequence[int] = ()) -> bool:
    """Whether a statistic of :attr:`MatrixResult.metrics` can change during training (a metric per step) or is
    fixed by the matrix's shape and the analysis's outcome (``skipped``, ``estimated``, ``mp_ratio``,
    ``*_converged``: table columns and run tags, not charts). Given the matrix's ``shape`` ``(..., M, N)``, also
    what the shape pins: ``lambda_min`` of a wide matrix (:math:`N > M`: a structural zero) and
    ``mp_lambda_minus`` of a square one (:math:`q = 1`: the lower edge is 0).

    Examples:
        >>> [s for s in ("lambda_max", "mp_ratio", "mp_converged", "surmise_beta") if is_stepwise(s)]
        ['lambda_max', 'surmise_beta']
        >>> is_stepwise("lambda_min", (4, 8)), is_stepwise("lambda_min", (8, 4)), is_stepwise("mp_lambda_minus", (8, 8))
        (False, True, False)
    """
    if stat in _RUN_CONSTANT or stat.endswith("_converged"):
        return False
    m, n = tuple(shape[-2:]) if len(shape) >= 2 else (0, 0)
    return not ((stat == "lambda_min" and n > m > 0) or (stat == "mp_lambda_minus" and m == n > 0))


@dataclass(frozen=True)
class MatrixResult:
    """The analysis of one matrix view.

    Attributes:
        name: the view's name (dotted parameter name, ``.q/.k/.v`` for attention in-projections).
        shape: the view's shape ``(..., M, N)``.
        source: what it came from (``"linear"``, ``"conv"``, ``"embedding"``, ``"attention"``, ``"ensemble"``, …).
        metrics: statistic name to value, e.g. ``{"lambda_max": 2.9, "mp_sigma2": 1.0, ...}``.
        skipped: why the matrix was not analysed, or ``None``.
        failures: analysis name to the reason it failed (its ``converged`` metric is 0).
        spectra: ``"gram"`` ``(..., N)``, ``"symmetric"`` ``(..., N)`` (square only; decomposed in the weights'
            precision, at least float32) and ``"spacings"`` (pooled, 1-D) as float64 CPU tensors, for arrays and
            figures.
        laws: the fitted laws by analysis name, for figure overlays.
        method: what produced the spectrum: ``"eigvalsh"`` (exact levels) or ``"slq"`` (estimated density; then
            ``spectra`` holds ``"density"`` ``(bins,)`` on ``"density_edges"`` ``(bins + 1,)``, pooled over the
            batch, and ``"gram"`` is empty, ``(..., 0)``: there are no exact levels); ``None`` when skipped.
    """

    name: str
    shape: tuple[int, ...]
    source: str
    metrics: dict[str, float]
    skipped: str | None = None
    failures: dict[str, str] = field(default_factory=dict)
    spectra: dict[str, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)
    laws: dict[str, SpectralLaw] = field(default_factory=dict, repr=False, compare=False)
    method: str | None = "eigvalsh"


def validate_analyses(analyses: object) -> tuple[str, ...]:
    """Check a non-empty list of names from :data:`ANALYSES`.

    Raises:
        TypeError: not a list of str (a bare str included).
        ValueError: empty, or an unknown name.

    Examples:
        >>> validate_analyses(["summary"])
        ('summary',)
    """
    if isinstance(analyses, str) or not isinstance(analyses, Sequence):
        raise TypeError(f"analyses must be a list of names from {ANALYSES}, got {analyses!r}")
    unknown = [a for a in analyses if a not in ANALYSES]
    if unknown or not analyses:
        raise ValueError(f"analyses must be a non-empty list of names from {ANALYSES}, got {list(analyses)!r}")
    return tuple(dict.fromkeys(analyses))


def resolve_views(
    model: nn.Module,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    param_filter: ParamFilter | None = None,
    conv: Literal["slices", "flatten"] = "slices",
) -> list[MatrixView]:
    """The matrix views of the selected parameters (see :mod:`rmt_callbacks.monitors._selection`).

    Raises:
        TypeError, ValueError: bad ``include`` / ``exclude`` / ``param_filter`` / ``conv``.
        ValueError: the selection matches no matrix; the message lists the parameters available.
    """
    inc = validate_patterns("include", include, allow_none=True)
    exc = validate_patterns("exclude", exclude, allow_none=False)
    names = select_names(model, include=inc, exclude=exc, param_filter=validate_filter(param_filter))
    views = [v for n in names for v in matrices_of(_owner(model, n), n, model.get_parameter(n), conv=conv)]
    if not views:
        raise ValueError(
            f"the parameter selection include={include!r}, exclude={list(exclude)!r}, param_filter={param_filter!r} "
            f"matches no matrix of {type(model).__name__}; parameters with ndim >= 2: {available_names(model)}"
        )
    return views


def _owner(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name.rpartition(".")[0])


def _invalid_reason(matrix: object) -> str | None:
    """Why ``matrix`` ``(..., M, N)`` cannot be analysed at all, or ``None`` (cheap for any size)."""
    try:
        validate_matrix(matrix, name="weight")
    except (TypeError, ValueError) as exc:
        return str(exc)
    m, n = matrix.shape[-2:]
    if min(m, n) < 2:
        return f"degenerate shape {tuple(matrix.shape)}: a matrix needs at least 2 rows and 2 columns"
    return None


def _skip_reason(matrix: torch.Tensor) -> str | None:
    """Why ``matrix`` cannot be diagonalised exactly, or ``None``: for callers that need exact levels (Dyson).

    The size is checked before the entries: :math:`\\min(M, N) \\ge` ``DENSE_LIMIT`` is refused unread.
    """
    if isinstance(matrix, torch.Tensor) and matrix.ndim >= 2 and min(matrix.shape[-2:]) >= DENSE_LIMIT:
        return (
            f"too large for the dense eigensolver: shape {tuple(matrix.shape)} has min(M, N) = "
            f"{min(matrix.shape[-2:])} >= DENSE_LIMIT = {DENSE_LIMIT}"
        )
    return _invalid_reason(matrix)


def _summary(gram: torch.Tensor, rows: int) -> dict[str, float]:
    """Batch means of the summary statistics; a statistic undefined for every matrix (NaN) is left out."""
    means = {k: float(torch.nanmean(v.double())) for k, v in spectrum_summary(gram, rows=rows).items()}  # each (B,)
    return {k: v for k, v in means.items() if not math.isnan(v)}


def _spacings(gram: torch.Tensor, rows: int) -> torch.Tensor:
    """Pooled normalised spacings of the non-structural levels of ``gram`` ``(B, N)``."""
    bulk = nonstructural_levels(gram, rows)
    n = bulk.shape[-1]
    if n >= MIN_UNFOLD_LEVELS:  # unfold sqrt(lambda): finite density at a hard edge (q = 1), same unfolded levels
        return unfolded_spacings(bulk.sqrt(), degree=min(5, max(1, n // 10)), trim=0.1).flatten()
    raw = torch.diff(bulk, dim=-1)  # (B, n - 1)
    if bulk.shape[0] < 2 or n < 2:
        raise ValueError(f"{n} levels in {bulk.shape[0]} matrix: too few for spacing statistics")
    mean = raw.mean(dim=0, keepdim=True)
    if bool((mean <= 0).any()):
        raise ValueError("a level spacing is zero across the whole ensemble; spacings cannot be normalised")
    return (raw / mean).flatten()


def _fit(analysis: str, gram: torch.Tensor, shape: tuple[int, int], out: dict[str, Any]) -> Any:
    m, n = shape
    if analysis == "marchenko_pastur":
        return fit_marchenko_pastur(gram.flatten(), ratio=n / m, rows=m)
    if analysis == "semicircle":
        if isinstance(out.get("symmetric"), str):  # the symmetric part's eigendecomposition failed
            raise RuntimeError(out.pop("symmetric"))
        return fit_semicircle(out["symmetric"].flatten())
    out["spacings"] = _spacings(gram, m)
    return fit_surmise(out["spacings"])


def _analyse_one(
    view: MatrixView, gram: torch.Tensor, sym: torch.Tensor | str | None, analyses: tuple[str, ...]
) -> MatrixResult:
    """``gram`` ``(B, N)`` the view's Gram spectrum, ``sym`` ``(B, N)`` its symmetric part's (or why not)."""
    m, n = view.matrix.shape[-2:]
    metrics, failures = {"skipped": 0.0}, {}
    spectra: dict[str, Any] = {"gram": gram} if sym is None else {"gram": gram, "symmetric": sym}
    laws: dict[str, SpectralLaw] = {}
    for analysis in analyses:
        if analysis == "semicircle" and m != n:
            continue
        try:
            if analysis == "summary":
                metrics.update(_summary(gram, m))
                continue
            fit = _fit(analysis, gram, (m, n), spectra)
        except _FIT_ERRORS as exc:
            failures[analysis] = f"{type(exc).__name__}: {exc}"
            if analysis in _PREFIX:
                metrics[f"{_PREFIX[analysis]}converged"] = 0.0
            continue
        metrics.update(fit.to_metrics(_PREFIX[analysis]))
        if fit.converged:
            laws[analysis] = fit.law()
        else:
            failures[analysis] = fit.message
    batch = tuple(view.matrix.shape[:-2])
    spectra = {k: (v.reshape(*batch, -1) if k != "spacings" else v).cpu() for k, v in spectra.items()}
    return MatrixResult(view.name, tuple(view.matrix.shape), view.source, metrics, None, failures, spectra, laws)


def _skipped(view: MatrixView, reason: str) -> MatrixResult:
    return MatrixResult(view.name, tuple(view.matrix.shape), view.source, {"skipped": 1.0}, reason, method=None)


def _analyse_group(views: list[MatrixView], analyses: tuple[str, ...]) -> list[MatrixResult]:
    """Equal-shape views on one device: Gram spectra (and symmetric parts if square and asked for) by stacks."""
    m, n = views[0].matrix.shape[-2:]
    flats = [v.matrix.detach().reshape(-1, m, n) for v in views]  # views of the weights (a copy if not viewable)
    grams = stacked_levels(flats, "gram")
    live = [i for i, g in enumerate(grams) if isinstance(g, torch.Tensor)]
    syms: dict[int, torch.Tensor | str] = {}
    if m == n and "semicircle" in analyses and live:
        syms = dict(zip(live, stacked_levels([flats[i] for i in live], "symmetric"), strict=True))
    return [
        _analyse_one(view, gram, syms.get(i), analyses) if isinstance(gram, torch.Tensor) else _skipped(view, gram)
        for i, (view, gram) in enumerate(zip(views, grams, strict=True))
    ]


def _frobenius2(w: torch.Tensor) -> float:
    """:math:`\\|W\\|_F^2` in float64, a panel of rows at a time (no full-size copy)."""
    rows = max(1, STACK_BYTES // (8 * w.shape[-1]))
    return sum(float(p.to(torch.float64).square().sum()) for p in w.split(rows))


def _pooled(densities: list[SpectralDensity]) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean of the batch's densities on common equal bins over all their edges: (density, edges)."""
    if len(densities) == 1:
        return densities[0].density, densities[0].edges
    lo, hi = min(float(d.edges[0]) for d in densities), max(float(d.edges[-1]) for d in densities)
    edges = torch.linspace(lo, hi, DENSITY_BINS + 1, dtype=torch.float64, device=densities[0].edges.device)
    mass = torch.stack([d.cdf(edges) for d in densities]).mean(0).diff()
    return mass / edges.diff(), edges


def _estimated(view: MatrixView, analyses: tuple[str, ...], dense_limit: int) -> MatrixResult:
    """A view past the dense eigensolver: its SLQ density, the statistics the estimate supports, no fits."""
    m, n = view.matrix.shape[-2:]
    flat = view.matrix.detach().reshape(-1, m, n)
    generator = torch.Generator(device=flat.device).manual_seed(_PROBE_SEED)
    densities, stats = [], []
    for w in flat:
        d = estimate_density(w, bins=DENSITY_BINS, generator=generator)
        mean = _frobenius2(w) / (m * n)
        lam_max = max(d.lambda_max, 0.0)
        rank = n * mean / lam_max if lam_max > 0.0 else math.nan
        densities.append(d)
        stats.append([d.lambda_min, lam_max, mean, math.sqrt(m * lam_max), rank])
    keys = ("lambda_min", "lambda_max", "lambda_mean", "spectral_norm", "stable_rank")
    means = torch.tensor(stats, dtype=torch.float64).nanmean(0).tolist()
    if not all(math.isfinite(v) for v in means[:4]):
        return _skipped(view, overflow_reason(view.matrix))
    metrics = {"skipped": 0.0, **{k: v for k, v in zip(keys, means, strict=True) if math.isfinite(v)}}
    metrics["estimated"] = 1.0
    failures = {}
    why = (
        f"needs the exact levels: the density of this {tuple(view.matrix.shape)} matrix was estimated by SLQ "
        f"(min(M, N) = {min(m, n)} >= dense_limit = {dense_limit})"
    )
    for analysis in analyses:
        if analysis in _PREFIX and (analysis != "semicircle" or m == n):
            failures[analysis] = why
            metrics[f"{_PREFIX[analysis]}converged"] = 0.0
    density, edges = _pooled(densities)
    spectra = {
        "gram": torch.empty(*view.matrix.shape[:-2], 0, dtype=torch.float64),
        "density": density.cpu(),
        "density_edges": edges.cpu(),
    }
    return MatrixResult(
        view.name, tuple(view.matrix.shape), view.source, metrics, None, failures, spectra, {}, method="slq"
    )


def analyze_views(
    views: Sequence[MatrixView], *, analyses: Sequence[str] = DEFAULT_ANALYSES, dense_limit: int = DENSE_LIMIT
) -> list[MatrixResult]:
    """Analyse matrix views; equal-shape views share batched eigen-decompositions (module docstring: cost, memory).

    Works under ``torch.no_grad()`` on stacks of at most :data:`~rmt_callbacks.spectral.stacks.STACK_BYTES`
    bytes, never changes the weights, and draws no global random numbers (the SLQ probes of matrices past the
    dense eigensolver use a fixed seed).

    Args:
        views: the views, each ``(..., M, N)``.
        analyses: names from :data:`ANALYSES`.
        dense_limit: views with :math:`\\min(M, N) \\ge` ``dense_limit`` get an SLQ density estimate instead of
            exact levels (default :data:`~rmt_callbacks.spectral.DENSE_LIMIT`, 8192).

    Returns:
        One :class:`MatrixResult` per view, in order; bad matrices come back with ``skipped`` set, matrices with
        :math:`\\min(M, N) \\ge` ``dense_limit`` with ``method="slq"``.

    Raises:
        TypeError, ValueError: ``analyses`` or ``dense_limit`` is invalid (never for bad weights).

    Examples:
        >>> w = torch.randn(3, 40, 20, generator=torch.Generator().manual_seed(0))
        >>> (r,) = analyze_views([MatrixView("w", w, "ensemble")], analyses=["summary"])
        >>> r.method, r.spectra["gram"].shape
        ('eigvalsh', torch.Size([3, 20]))
    """
    analyses = validate_analyses(analyses)
    if isinstance(dense_limit, bool) or not isinstance(dense_limit, int) or dense_limit < 2:
        raise ValueError(f"dense_limit must be an int >= 2, got {dense_limit!r}")
    results: list[MatrixResult | None] = [None] * len(views)
    groups: dict[tuple[int, int, str], list[int]] = {}
    with torch.no_grad():
        for i, view in enumerate(views):
            reason = _invalid_reason(view.matrix)
            if reason is not None:
                results[i] = _skipped(view, reason)
            elif min(view.matrix.shape[-2:]) >= dense_limit:
                results[i] = _estimated(view, analyses, dense_limit)
            else:
                groups.setdefault((*view.matrix.shape[-2:], str(view.matrix.device)), []).append(i)
        for idx in groups.values():
            for i, result in zip(idx, _analyse_group([views[i] for i in idx], analyses), strict=True):
                results[i] = result
    return [r for r in results if r is not None]


def analyze(
    model: nn.Module,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    param_filter: ParamFilter | None = None,
    analyses: Sequence[str] = DEFAULT_ANALYSES,
    conv: Literal["slices", "flatten"] = "slices",
    dense_limit: int = DENSE_LIMIT,
) -> list[MatrixResult]:
    r"""Analyse the weight matrices of any ``nn.Module``, post hoc (the code path of the monitor).

    Args:
        model: any module; its parameters are read, never changed.
        include: fnmatch patterns on dotted parameter names; ``None``: the default selection (every weight of
            Linear, ConvNd, Embedding and attention modules, and ensemble weights ``(E, M, N)``).
        exclude: fnmatch patterns to leave out.
        param_filter: ``(name, param) -> bool`` instead of, or on top of, ``include``.
        analyses: names from :data:`ANALYSES` (default :data:`DEFAULT_ANALYSES`: all but ``"semicircle"``).
        conv: convolution view, ``"slices"`` (per kernel position, pooled) or ``"flatten"``.
        dense_limit: smallest :math:`\min(M, N)` whose density is estimated (SLQ) instead of diagonalised.

    Returns:
        One :class:`MatrixResult` per matrix; :func:`to_rows` turns them into a table.

    Raises:
        TypeError, ValueError: bad arguments, or a selection that matches nothing.

    References: arXiv:2412.20496; WeightWatcher's ``analyze`` (arXiv:1810.01075).

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        >>> with torch.no_grad():
        ...     _ = model[0].weight.copy_(torch.randn(128, 64, generator=g))
        >>> rows = to_rows(analyze(model))
        >>> [r["name"] for r in rows]
        ['0.weight', '2.weight']
        >>> abs(rows[0]["mp_sigma2"] - 1.0) < 0.1  # i.i.d. N(0, 1) entries: sigma^2 = 1
        True
    """
    views = resolve_views(model, include=include, exclude=exclude, param_filter=param_filter, conv=conv)
    return analyze_views(views, analyses=analyses, dense_limit=dense_limit)


def to_rows(results: Sequence[MatrixResult]) -> list[dict[str, Any]]:
    """One flat dict per result: ``name``, ``shape``, ``source``, ``method``, ``skip_reason``, ``failures``, metrics.

    ``method`` says what produced the spectrum (``"eigvalsh"``, ``"slq"``; ``None`` when skipped).

    Examples:
        >>> to_rows([MatrixResult("w", (2, 3), "linear", {"skipped": 0.0, "lambda_max": 1.5})])
        [{'name': 'w', 'shape': '(2, 3)', 'source': 'linear', 'method': 'eigvalsh', 'skip_reason': None, 'failures': '', 'skipped': 0.0, 'lambda_max': 1.5}]
    """  # noqa: E501
    rows = []
    for r in results:
        failures = "; ".join(f"{k}: {v}" for k, v in r.failures.items())
        head = {"name": r.name, "shape": str(r.shape), "source": r.source, "method": r.method, "skip_reason": r.skipped}
        rows.append({**head, "failures": failures, **r.metrics})
    return rows
