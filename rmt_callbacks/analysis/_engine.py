r"""The analysis engine: views grouped by shape, their spectra decomposed in stacks, the named analyses run.

What it computes and at what cost: :mod:`rmt_callbacks.analysis`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import nn

from .._checks import at_least
from ..eigensolver import Solver, validate_solver
from ..spectral import DENSE_LIMIT, MatrixView, SpectralDensity, estimate_density
from ..spectral.selection import ParamFilter, resolve
from ..spectral.stacks import STACK_BYTES, overflow_reason, stacked_levels
from ._analyses import PREFIX, Levels, analyse_levels
from ._inputs import read_source
from ._report import ModelAnalysis
from ._result import DEFAULT_ANALYSES, MatrixResult, validate_analyses
from ._views import invalid_reason

__all__ = ["analyze", "analyze_views"]

DENSITY_BINS: int = 100
_PROBE_SEED = 0  # the SLQ probes: a fixed seed, so an analysis is deterministic and draws no global random numbers


def _skipped(view: MatrixView, reason: str) -> MatrixResult:
    return MatrixResult(view.name, tuple(view.matrix.shape), view.source, {"skipped": 1.0}, reason, method=None)


def _analyse_group(views: list[MatrixView], analyses: tuple[str, ...], solver: Solver) -> list[MatrixResult]:
    """Equal-shape views on one device: Gram spectra (and symmetric parts if square and asked for) by stacks."""
    m, n = views[0].matrix.shape[-2:]
    flats = [v.matrix.detach().reshape(-1, m, n) for v in views]  # views of the weights (a copy if not viewable)
    grams = stacked_levels(flats, "gram", solver)
    live = [i for i, g in enumerate(grams) if isinstance(g, torch.Tensor)]
    syms: dict[int, torch.Tensor | str] = {}
    if m == n and "semicircle" in analyses and live:
        syms = dict(zip(live, stacked_levels([flats[i] for i in live], "symmetric", solver), strict=True))
    return [
        analyse_levels(view, Levels(gram, m, n, syms.get(i), flats[i], solver), analyses)
        if isinstance(gram, torch.Tensor)
        else _skipped(view, gram)
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
        if analysis != "summary" and (analysis != "semicircle" or m == n):
            failures[analysis] = why
            if analysis in PREFIX:
                metrics[f"{PREFIX[analysis]}converged"] = 0.0
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
    views: Sequence[MatrixView],
    *,
    analyses: Sequence[str] = DEFAULT_ANALYSES,
    dense_limit: int = DENSE_LIMIT,
    solver: Solver = "auto",
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
        solver: which LAPACK decomposes on a CPU: ``"auto"`` (default: torch's below
            :data:`~rmt_callbacks.eigensolver.SCIPY_FROM` rows, scipy's from there where it is offered),
            ``"torch"`` or ``"scipy"`` (:mod:`rmt_callbacks.eigensolver`): the levels differ in rounding, the
            fitted numbers to their optimisers' tolerance (surmise β ≈ 1e-8).

    Returns:
        One :class:`MatrixResult` per view, in order; bad matrices come back with ``skipped`` set, matrices with
        :math:`\\min(M, N) \\ge` ``dense_limit`` with ``method="slq"``.

    Raises:
        TypeError, ValueError: ``analyses``, ``dense_limit`` or ``solver`` is invalid (never for bad weights).

    Examples:
        >>> w = torch.randn(3, 40, 20, generator=torch.Generator().manual_seed(0))
        >>> (r,) = analyze_views([MatrixView("w", w, "ensemble")], analyses=["summary"])
        >>> r.method, r.spectra["gram"].shape
        ('eigvalsh', torch.Size([3, 20]))
    """
    analyses = validate_analyses(analyses)
    dense_limit = at_least("dense_limit", dense_limit, 2)
    validate_solver(solver)
    results: list[MatrixResult | None] = [None] * len(views)
    groups: dict[tuple[int, int, str], list[int]] = {}
    with torch.no_grad():
        for i, view in enumerate(views):
            reason = invalid_reason(view.matrix)
            if reason is not None:
                results[i] = _skipped(view, reason)
            elif min(view.matrix.shape[-2:]) >= dense_limit:
                results[i] = _estimated(view, analyses, dense_limit)
            else:
                groups.setdefault((*view.matrix.shape[-2:], str(view.matrix.device)), []).append(i)
        for idx in groups.values():
            for i, result in zip(idx, _analyse_group([views[i] for i in idx], analyses, solver), strict=True):
                results[i] = result
    return [r for r in results if r is not None]


def analyze(
    source: nn.Module | Mapping[str, torch.Tensor] | str | os.PathLike[str],
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    param_filter: ParamFilter | None = None,
    analyses: Sequence[str] = DEFAULT_ANALYSES,
    conv: Literal["slices", "flatten"] = "slices",
    dense_limit: int = DENSE_LIMIT,
    solver: Solver = "auto",
) -> ModelAnalysis:
    r"""Analyse the weight matrices of a model, post hoc (the code path of the monitor).

    Args:
        source: what holds the weights (read, never changed; :mod:`rmt_callbacks.analysis._inputs`): an
            ``nn.Module`` (eager, ``torch.jit`` scripted or traced, ``torch.compile``-d), a state_dict (any
            ``Mapping[str, Tensor]``, or a Lightning checkpoint dict), or a path to a ``.safetensors`` /
            ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt`` file (read with ``weights_only=True`` only).
        include: fnmatch patterns on dotted parameter names; ``None``: the default selection of
            :mod:`rmt_callbacks.spectral.selection` (Linear, ConvNd, Embedding, attention, recurrent layers,
            parametrized weights as applied, ensemble weights ``(E, M, N)``).
        exclude: fnmatch patterns to leave out.
        param_filter: ``(name, param) -> bool`` instead of, or on top of, ``include``.
        analyses: names from :data:`ANALYSES` (default :data:`DEFAULT_ANALYSES`: all but ``"semicircle"``).
        conv: convolution view, ``"slices"`` (per kernel position, pooled) or ``"flatten"``.
        dense_limit: smallest :math:`\min(M, N)` whose density is estimated (SLQ) instead of diagonalised.
        solver: the CPU eigensolver, ``"auto"`` (default), ``"torch"`` or ``"scipy"``: :func:`analyze_views`.

    Returns:
        A :class:`ModelAnalysis`: one :class:`MatrixResult` per matrix view, in order (a weight that cannot be
        analysed, such as a state_dict's spectral-norm original, comes back skipped with the reason); it prints
        as a table, and has ``.rows()``, ``.to_pandas()`` and ``.summary``.

    Raises:
        TypeError: ``source`` is none of the accepted inputs (the message lists them), or a bad argument.
        ValueError: a bad ``solver`` (before ``source`` is read), an empty model or state_dict, meta-device
            weights, a file that needs arbitrary unpickling, a selection that matches nothing (the message lists
            the parameters and suggests ``include=``).
        ImportError: a ``.safetensors`` path without the ``safetensors`` package.

    References: arXiv:2412.20496; WeightWatcher's ``analyze`` (arXiv:1810.01075).

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        >>> with torch.no_grad():
        ...     _ = model[0].weight.copy_(torch.randn(128, 64, generator=g))
        >>> result = analyze(model)
        >>> [r.name for r in result], result.summary["analysed"]
        (['0.weight', '2.weight'], 2)
        >>> abs(result.rows()[0]["mp_sigma2"] - 1.0) < 0.1  # i.i.d. N(0, 1) entries: sigma^2 = 1
        True
        >>> [r.name for r in analyze(model.state_dict())] == [r.name for r in result]
        True
    """
    validate_solver(solver)
    cands, what = read_source(source)
    items = resolve(cands, include=include, exclude=exclude, param_filter=param_filter, conv=conv, what=what)
    views = [v for v in items if isinstance(v, MatrixView)]
    done = iter(analyze_views(views, analyses=analyses, dense_limit=dense_limit, solver=solver))
    return ModelAnalysis(
        (
            next(done)
            if isinstance(v, MatrixView)
            else MatrixResult(v.name, v.shape, v.source, {"skipped": 1.0}, v.reason, method=None)
            for v in items
        ),
        tied={v.name: v.aliases for v in items if v.aliases},
    )
