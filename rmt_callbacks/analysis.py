r"""The per-matrix analysis shared by :class:`~rmt_callbacks.SpectrumMonitor` and :func:`analyze`.

Each selected parameter becomes one or more :class:`~rmt_callbacks.spectral.MatrixView` of shape
``(..., M, N)``; leading dimensions (an ensemble of networks, the kernel positions of a convolution) are a
batch of :math:`B` matrices. Conventions (orientation, Gram normalisation, ascending order):
:mod:`rmt_callbacks.spectral`. Per view, with :math:`X_b = W_b^\top W_b / M`:

* ``"summary"``: :func:`~rmt_callbacks.spectral.spectrum_summary` of each :math:`X_b`, averaged over the batch
  (``lambda_min``, ``lambda_max``, ``lambda_mean``, ``spectral_norm``, ``stable_rank``, ``mean_spacing_ratio``;
  the ratio is left out when no matrix has 3 non-structural levels);
* ``"marchenko_pastur"``: the Marchenko–Pastur fit of the eigenvalues pooled over the batch, ratio
  :math:`q = N/M` (``mp/…``);
* ``"semicircle"``: for square :math:`W`, the semicircle fit of the pooled eigenvalues of
  :math:`(W_b + W_b^\top)/2` (``semicircle/…``);
* ``"spacings"``: the Wigner-surmise fit of the pooled normalised spacings of the non-structural Gram levels
  (``surmise/…``). A matrix with at least :data:`MIN_UNFOLD_LEVELS` levels is unfolded on its own (polynomial
  degree :math:`\min(5, \lfloor n/10 \rfloor)`, 10% of the levels trimmed at each edge) in the variable
  :math:`\sqrt{\lambda}` (the singular values over :math:`\sqrt M`: unfolding is invariant under a smooth
  monotone map, and this one keeps the density finite at the hard edge of :math:`q = 1`); smaller matrices of a
  batch have their raw spacings divided by the batch mean at each level index (the papers' ensemble
  normalisation :math:`s = S / \langle S \rangle`).

.. math::

    \bar m = \frac{1}{B} \sum_{b=1}^{B} m(X_b),\qquad
    \text{fit}\Big(\bigcup_{b=1}^{B} \operatorname{spec} X_b\Big).

A matrix that cannot be analysed (not a real floating tensor, NaN/Inf, fewer than 2 rows or columns, more than
:data:`MAX_DENSE_LEVELS` non-structural levels for the dense eigensolver) is *skipped* with a reason; an
analysis that fails records ``{analysis}/converged = 0`` and the reason. Nothing here raises on bad weights.
Pure torch: no Lightning, MLflow or matplotlib.

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
from .spectral import MatrixView, esd, matrices_of, spectrum_summary, unfolded_spacings, validate_matrix

__all__ = [
    "ANALYSES",
    "MAX_DENSE_LEVELS",
    "MIN_UNFOLD_LEVELS",
    "Analysis",
    "MatrixResult",
    "analyze",
    "analyze_views",
    "resolve_views",
    "to_rows",
    "validate_analyses",
]

Analysis = Literal["summary", "marchenko_pastur", "semicircle", "spacings"]
ANALYSES: tuple[str, ...] = ("summary", "marchenko_pastur", "semicircle", "spacings")
MIN_UNFOLD_LEVELS: int = 10
MAX_DENSE_LEVELS: int = 8192
r"""Largest :math:`\min(M, N)` decomposed: the dense eigensolver costs :math:`O(\min(M, N)^3)` time and
:math:`O(\min(M, N)^2)` memory per matrix; larger matrices are skipped (checked before any entry is read)."""
_FIT_ERRORS = (ValueError, TypeError, RuntimeError, ArithmeticError)  # what a bad spectrum makes a fit raise
_PREFIX = {"marchenko_pastur": "mp/", "semicircle": "semicircle/", "spacings": "surmise/"}


@dataclass(frozen=True)
class MatrixResult:
    """The analysis of one matrix view.

    Attributes:
        name: the view's name (dotted parameter name, ``.q/.k/.v`` for attention in-projections).
        shape: the view's shape ``(..., M, N)``.
        source: what it came from (``"linear"``, ``"conv"``, ``"embedding"``, ``"attention"``, ``"ensemble"``, …).
        metrics: statistic name to value, e.g. ``{"lambda_max": 2.9, "mp/sigma2": 1.0, ...}``.
        skipped: why the matrix was not analysed, or ``None``.
        failures: analysis name to the reason it failed (its ``converged`` metric is 0).
        spectra: ``"gram"`` ``(..., N)``, ``"symmetric"`` ``(..., N)`` (square only) and ``"spacings"`` (pooled,
            1-D) as float64 CPU tensors, for arrays and figures.
        laws: the fitted laws by analysis name, for figure overlays.
    """

    name: str
    shape: tuple[int, ...]
    source: str
    metrics: dict[str, float]
    skipped: str | None = None
    failures: dict[str, str] = field(default_factory=dict)
    spectra: dict[str, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)
    laws: dict[str, SpectralLaw] = field(default_factory=dict, repr=False, compare=False)


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


def _skip_reason(matrix: torch.Tensor) -> str | None:
    """Why ``matrix`` ``(..., M, N)`` cannot be analysed, or ``None``; the size is checked before the entries."""
    if isinstance(matrix, torch.Tensor) and matrix.ndim >= 2 and min(matrix.shape[-2:]) > MAX_DENSE_LEVELS:
        return (
            f"too large for the dense eigensolver: shape {tuple(matrix.shape)} has min(M, N) = "
            f"{min(matrix.shape[-2:])} > MAX_DENSE_LEVELS = {MAX_DENSE_LEVELS}"
        )
    try:
        validate_matrix(matrix, name="weight")
    except (TypeError, ValueError) as exc:
        return str(exc)
    m, n = matrix.shape[-2:]
    if min(m, n) < 2:
        return f"degenerate shape {tuple(matrix.shape)}: a matrix needs at least 2 rows and 2 columns"
    return None


def _batch_copy(matrix: torch.Tensor) -> torch.Tensor:
    """A detached float64 copy of ``matrix`` ``(..., M, N)`` as a batch ``(B, M, N)``."""
    return matrix.detach().to(torch.float64, copy=True).reshape(-1, *matrix.shape[-2:])


def _summary(gram: torch.Tensor, rows: int) -> dict[str, float]:
    """Batch means of the summary statistics; a statistic undefined for every matrix (NaN) is left out."""
    means = {k: float(torch.nanmean(v.double())) for k, v in spectrum_summary(gram, rows=rows).items()}  # each (B,)
    return {k: v for k, v in means.items() if not math.isnan(v)}


def _spacings(gram: torch.Tensor, rows: int) -> torch.Tensor:
    """Pooled normalised spacings of the non-structural levels of ``gram`` ``(B, N)``."""
    bulk = gram[:, max(gram.shape[-1] - rows, 0) :]  # drop the N - M structural zeros
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


def _fit(analysis: str, gram: torch.Tensor, w: torch.Tensor, out: dict[str, Any]) -> Any:
    m, n = w.shape[-2:]
    if analysis == "marchenko_pastur":
        return fit_marchenko_pastur(gram.flatten(), ratio=n / m, rows=m)
    if analysis == "semicircle":
        out["symmetric"] = esd(w, kind="symmetric")
        return fit_semicircle(out["symmetric"].flatten())
    out["spacings"] = _spacings(gram, m)
    return fit_surmise(out["spacings"])


def _analyse_one(view: MatrixView, w: torch.Tensor, gram: torch.Tensor, analyses: tuple[str, ...]) -> MatrixResult:
    """``w`` ``(B, M, N)`` float64 copy of the view, ``gram`` its ``(B, N)`` spectrum."""
    m, n = w.shape[-2:]
    metrics, failures = {"skipped": 0.0}, {}
    spectra: dict[str, torch.Tensor] = {"gram": gram}
    laws: dict[str, SpectralLaw] = {}
    for analysis in analyses:
        if analysis == "semicircle" and m != n:
            continue
        try:
            if analysis == "summary":
                metrics.update(_summary(gram, m))
                continue
            fit = _fit(analysis, gram, w, spectra)
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
    return MatrixResult(view.name, tuple(view.matrix.shape), view.source, {"skipped": 1.0}, reason)


def _finite_or_reason(gram: torch.Tensor, w: torch.Tensor) -> torch.Tensor | str:
    """``gram`` if every level is finite, else why not (finite entries whose squares overflow float64)."""
    if bool(torch.isfinite(gram).all()):
        return gram
    return (
        "eigendecomposition failed: the spectrum overflows float64 "
        f"(largest |entry| {float(w.abs().max()):.3g}; its square exceeds {torch.finfo(torch.float64).max:.3g})"
    )


def _grams(ws: list[torch.Tensor]) -> list[torch.Tensor | str]:
    """Gram spectra ``(B_i, N)`` of equal-shape batches in one call; per batch (a reason on error) if that fails."""
    try:
        grams = esd(torch.cat(ws)).split([w.shape[0] for w in ws])
        return [_finite_or_reason(g, w) for g, w in zip(grams, ws, strict=True)]
    except _FIT_ERRORS:
        pass
    out: list[torch.Tensor | str] = []
    for w in ws:
        try:
            out.append(_finite_or_reason(esd(w), w))
        except _FIT_ERRORS as exc:
            out.append(f"eigendecomposition failed: {type(exc).__name__}: {exc}")
    return out


def analyze_views(views: Sequence[MatrixView], *, analyses: Sequence[str] = ANALYSES) -> list[MatrixResult]:
    """Analyse matrix views; equal-shape views share one batched eigen-decomposition.

    Works on float64 copies, under ``torch.no_grad()``, and draws no random numbers.

    Args:
        views: the views, each ``(..., M, N)``.
        analyses: names from :data:`ANALYSES`.

    Returns:
        One :class:`MatrixResult` per view, in order; bad matrices come back with ``skipped`` set.

    Raises:
        TypeError, ValueError: ``analyses`` is invalid (never for bad weights).
    """
    analyses = validate_analyses(analyses)
    results: list[MatrixResult | None] = [None] * len(views)
    groups: dict[tuple[int, int, str], list[int]] = {}
    for i, view in enumerate(views):
        reason = _skip_reason(view.matrix)
        if reason is not None:
            results[i] = _skipped(view, reason)
        else:
            groups.setdefault((*view.matrix.shape[-2:], str(view.matrix.device)), []).append(i)
    with torch.no_grad():
        for idx in groups.values():
            ws = [_batch_copy(views[i].matrix) for i in idx]  # (B_i, M, N) float64 copies
            for i, w, gram in zip(idx, ws, _grams(ws), strict=True):
                ok = isinstance(gram, torch.Tensor)
                results[i] = _analyse_one(views[i], w, gram, analyses) if ok else _skipped(views[i], gram)
    return [r for r in results if r is not None]


def analyze(
    model: nn.Module,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    param_filter: ParamFilter | None = None,
    analyses: Sequence[str] = ANALYSES,
    conv: Literal["slices", "flatten"] = "slices",
) -> list[MatrixResult]:
    r"""Analyse the weight matrices of any ``nn.Module``, post hoc (the code path of the monitor).

    Args:
        model: any module; its parameters are read, never changed.
        include: fnmatch patterns on dotted parameter names; ``None``: the default selection (every weight of
            Linear, ConvNd, Embedding and attention modules, and ensemble weights ``(E, M, N)``).
        exclude: fnmatch patterns to leave out.
        param_filter: ``(name, param) -> bool`` instead of, or on top of, ``include``.
        analyses: names from :data:`ANALYSES` (default: all).
        conv: convolution view, ``"slices"`` (per kernel position, pooled) or ``"flatten"``.

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
        >>> abs(rows[0]["mp/sigma2"] - 1.0) < 0.1  # i.i.d. N(0, 1) entries: sigma^2 = 1
        True
    """
    views = resolve_views(model, include=include, exclude=exclude, param_filter=param_filter, conv=conv)
    return analyze_views(views, analyses=analyses)


def to_rows(results: Sequence[MatrixResult]) -> list[dict[str, Any]]:
    """One flat dict per result: ``name``, ``shape``, ``source``, ``skip_reason``, ``failures``, then the metrics.

    Examples:
        >>> to_rows([MatrixResult("w", (2, 3), "linear", {"skipped": 0.0, "lambda_max": 1.5})])
        [{'name': 'w', 'shape': '(2, 3)', 'source': 'linear', 'skip_reason': None, 'failures': '', 'skipped': 0.0, 'lambda_max': 1.5}]
    """  # noqa: E501
    rows = []
    for r in results:
        failures = "; ".join(f"{k}: {v}" for k, v in r.failures.items())
        head = {"name": r.name, "shape": str(r.shape), "source": r.source, "skip_reason": r.skipped}
        rows.append({**head, "failures": failures, **r.metrics})
    return rows
