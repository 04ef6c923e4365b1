"""What an analysis leaves beside the metrics: spectra as ``.npz``, the fit table, run tags, figures, the summary.

Figures are rendered here (on the monitor's background thread) to PNG bytes and RGB pixels
(``Rendered``, :mod:`rmt_callbacks.figures`), once for every sink: MLflow takes the PNGs as artifacts through the
run's :class:`~rmt_callbacks.sinks.spool.MlflowWriter` (built here, queued by the training thread: :mod:`._recorder`),
TensorBoard the pixels as images. Values fixed for a matrix during a run (shape, aspect ratio, method, skip and
failure reasons) are run tags, sent when they change, never per-step metrics. Every artifact path starts with the
monitor's folder ``root`` = ``<log_key_prefix><label>`` (:mod:`._identity`), so monitors sharing a run never
overwrite each other's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..analysis import MatrixResult, is_stepwise, nonstructural, to_rows
from ..sinks.keys import artifact_path, tag_key
from ._history import LevelHistory

__all__ = [
    "record_levels",
    "render_evolution",
    "render_step",
    "run_tags",
    "summary_rows",
    "write_artifacts",
    "write_closing",
]

MEAN_ROW = "(model mean)"


def render_step(results: Sequence[MatrixResult], *, step: int) -> dict[str, Any]:
    """Each analysed matrix's figure at ``step``, rendered: ``{matrix: Rendered}`` (none for estimated spectra)."""
    from ..figures.canvas import render  # imports matplotlib: only when figures are due
    from ..figures.matrix import matrix_figure
    from ..figures.recipes import panels_of

    out = {}
    for r in results:
        panels = panels_of(r)
        if panels:  # an estimated density has no levels to histogram: its arrays are the record
            out[r.name] = render(matrix_figure(panels, title=f"{r.name} {tuple(r.shape)}, step {step}"))
    return out


def render_evolution(history: LevelHistory, last: Mapping[str, MatrixResult]) -> dict[str, Any]:
    """Each matrix's spectrum over the run (``evolution_figure``, :mod:`rmt_callbacks.figures`), rendered."""
    from ..figures.canvas import render
    from ..figures.evolution import evolution_figure
    from ..figures.recipes import evolution_curves

    out = {}
    for name in history.names():
        steps, samples = history.series(name)
        if len(steps) < 2:
            continue
        result = last.get(name)
        shape = f" {tuple(result.shape)}" if result is not None else ""
        title = f"{name}{shape}: spectrum over training"
        curves = evolution_curves(result, samples)
        fig = evolution_figure(steps, samples, curves=curves, title=title, xlabel="eigenvalue λ")
        out[name] = render(fig)
    return out


def record_levels(history: LevelHistory, results: Sequence[MatrixResult], *, step: int) -> dict[str, Any]:
    """Add each analysed matrix's non-structural levels at ``step`` to ``history``; return them by name."""
    levels = {r.name: nonstructural(r) for r in results if r.skipped is None}
    for name, values in levels.items():
        if values.numel():
            history.add(name, step, values)
    return {name: v.numpy() for name, v in levels.items() if v.numel()}


def run_tags(results: Sequence[MatrixResult]) -> dict[str, str]:
    """The run tags of one analysis: ``rmt.matrix.<m>`` (shape, kind, :math:`q = N/M`), ``rmt.method.<m>``,
    ``rmt.skipped.<m>`` and ``rmt.failed.<m>`` (which fits failed at this analysis and why, ``"none"`` when none
    did, so the tag always tells the latest analysis; the fit tables say it for every step)."""
    tags = {}
    for r in results:
        m, n = r.shape[-2:] if len(r.shape) >= 2 else (0, 0)
        ratio = f", q = N/M = {n / m:.4g}" if m > 0 else ""
        tags[tag_key("rmt.matrix.", r.name)] = f"{tuple(r.shape)} {r.source}{ratio}"
        if r.skipped is not None:
            tags[tag_key("rmt.skipped.", r.name)] = r.skipped
            continue
        if r.method is not None:
            tags[tag_key("rmt.method.", r.name)] = r.method
        reasons = "; ".join(f"{k}: {v}" for k, v in r.failures.items()) or "none"
        tags[tag_key("rmt.failed.", r.name)] = reasons[:5000]  # no step: sent again only when the reasons change
    return tags


def write_artifacts(
    run: Any,
    results: Sequence[MatrixResult],
    *,
    root: str,
    step: int,
    figures: Mapping[str, Any],
    tags: Mapping[str, str],
) -> None:
    """Spectra, the fit table, ``tags`` and the rendered ``figures`` of one analysis into ``run`` (an
    :class:`~rmt_callbacks.sinks.spool.MlflowWriter`), under the monitor's artifact folder ``root``."""
    stem = f"step_{step:08d}"
    done = [r for r in results if r.skipped is None]
    exact = {r.name: r.spectra["gram"].numpy() for r in done if "density" not in r.spectra}
    if exact:
        run.log_arrays(exact, artifact_path(root, "spectra", f"{stem}.npz"))
    symmetric = {r.name: r.spectra["symmetric"].numpy() for r in done if "symmetric" in r.spectra}
    if symmetric:
        run.log_arrays(symmetric, artifact_path(root, "spectra", "symmetric", f"{stem}.npz"))
    densities = {r.name: r for r in done if "density" in r.spectra}  # estimated (SLQ): a density on bin edges
    if densities:
        arrays = {f"{n}/density": r.spectra["density"].numpy() for n, r in densities.items()}
        arrays.update({f"{n}/edges": r.spectra["density_edges"].numpy() for n, r in densities.items()})
        run.log_arrays(arrays, artifact_path(root, "spectra", "density", f"{stem}.npz"))
    run.log_table([{"step": step, **row} for row in to_rows(results)], artifact_path(root, "fits", f"{stem}.json"))
    if tags:
        run.set_tags(dict(tags))
    for name, rendered in figures.items():
        run.log_image(rendered.png, artifact_path(root, "figures", name, f"{stem}.png"))


def summary_rows(last: Mapping[str, tuple[int, MatrixResult]]) -> list[dict[str, Any]]:
    """The run's summary: per matrix its last analysis (step, shape, every statistic), then the model means.

    Examples:
        >>> a = MatrixResult("a", (4, 4), "linear", {"skipped": 0.0, "lambda_max": 1.0, "mp_converged": 1.0})
        >>> b = MatrixResult("b", (4, 4), "linear", {"skipped": 0.0, "lambda_max": 3.0})
        >>> rows = summary_rows({"a": (5, a), "b": (5, b)})
        >>> rows[-1]["name"], rows[-1]["lambda_max"], "mp_converged" in rows[-1]
        ('(model mean)', 2.0, False)
    """
    rows = [{"step": step, **row} for step, r in last.values() for row in to_rows([r])]
    stats = dict.fromkeys(k for _, r in last.values() if r.skipped is None for k in r.metrics if is_stepwise(k))
    mean: dict[str, Any] = {"step": max((s for s, _ in last.values()), default=0), "name": MEAN_ROW}
    for stat in stats:
        values = [r.metrics[stat] for _, r in last.values() if stat in r.metrics and math.isfinite(r.metrics[stat])]
        if values:
            mean[stat] = sum(values) / len(values)
    return [*rows, mean] if rows else []


def write_closing(
    run: Any,
    *,
    root: str,
    step: int,
    drawn: Mapping[str, Any],
    figures: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
) -> None:
    """The end-of-training record under the monitor's artifact folder ``root``: the last step's figures if not
    drawn yet, each matrix's evolution figure and the summary table."""
    for name, rendered in drawn.items():
        run.log_image(rendered.png, artifact_path(root, "figures", name, f"step_{step:08d}.png"))
    for name, rendered in figures.items():
        run.log_image(rendered.png, artifact_path(root, "figures", name, "evolution.png"))
    if rows:
        run.log_table(list(rows), artifact_path(root, "summary", "matrices.json"))
