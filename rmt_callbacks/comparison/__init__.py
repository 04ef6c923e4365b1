r"""``rmt_callbacks.compare``: the spectra and fluctuations of several MLflow runs side by side, as a run of its own.

MLflow charts one scalar across runs; it cannot overlay distributions. :func:`compare` reads the monitors' stored
spectra, fit tables and Dyson metrics of each run back from any store (sqlite, a server), and draws per matrix the
spectra on common bins with each run's fitted Marchenko–Pastur law, the bulk spacings with the surmise, and the
Dyson width against each run's noise temperature :math:`T = \alpha/|B|` with the linear-scaling-rule prediction
:math:`w = c\sqrt T` (:mod:`rmt_callbacks.figures.comparison`). The result is logged as a new run in the
experiment of the first run, tagged ``rmt.compare_of`` (the source run ids, comma-separated), holding
``compare/figures/<matrix>.png`` and the table ``compare/table.json`` / ``compare/table.csv``; and written to
``out`` when given.

The table has one row per (matrix, run). Its numbers from the stored arrays (``n_levels``, ``lambda_min``,
``lambda_max``, ``lambda_mean``, ``mean_spacing_ratio``, over the non-structural levels pooled over a batch) are
computed here; the fitted values (``mp_sigma2``, ``mp_converged``, ``surmise_beta``, ``surmise_converged``) are the
run's own fit table at that step; ``noise_temperature`` and the ``dyson_*`` values are the run's metrics as last
logged at or before that step.

A run without spectra at the asked step, or without a matrix the others hold, is named in a warning and the rest
is compared; runs of different models compare on the matrices at least two of them hold.

Example (a CLI does the same: ``rmt-compare RUN [RUN ...]``)::

    result = rmt_callbacks.compare(["lr-0.1", "lr-0.05"], tracking_uri="sqlite:///mlflow.db")
    result.run_id, result.table[0]
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import math
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..laws import MarchenkoPastur
from ..spectral import mean_spacing_ratio, unfolded_spacings
from ..spectral.summary import MIN_RATIOS
from ._store import Records, StoredRun, UnknownRun, load, resolve_runs

__all__ = ["Comparison", "UnknownRun", "compare"]

MIN_SPACING_LEVELS = 12  # fewer bulk levels than this: no unfolding (its polynomial needs several per degree)


@dataclass
class Comparison:
    """What :func:`compare` made: the runs and steps compared, the matrices, the table, the figures, the warnings."""

    runs: list[StoredRun]
    steps: dict[str, int]
    matrices: list[str]
    table: list[dict[str, Any]]
    figures: dict[str, bytes] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    run_id: str | None = None


def compare(
    runs: Sequence[str],
    *,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    matrices: Sequence[str] | None = None,
    step: int | Literal["last"] = "last",
    out: str | Path | None = None,
    log: bool = True,
    root: str = "rmt/monitor",
) -> Comparison:
    r"""Compare the monitors' records of ``runs`` (module docstring).

    Args:
        runs: run ids or run names (two or more).
        tracking_uri: the store (``None``: MLflow's current one).
        experiment: look run names up in this experiment only.
        matrices: fnmatch patterns on matrix names (``None``: every matrix two or more runs hold).
        step: ``"last"`` (each run's last analysed step) or an optimizer step every run should hold.
        out: also write the figures and the table into this folder.
        log: log the comparison as a new MLflow run (``False``: only return it, and write ``out``).
        root: the monitor's artifact folder, ``<log_key_prefix><label>``.

    Returns:
        The :class:`Comparison` (``run_id``: the new run's).

    Raises:
        UnknownRun: a run id or name the store does not hold (the message lists its runs).
        ValueError: fewer than two runs, or fewer than two with spectra at ``step``, or no matrix two runs share.
    """
    from mlflow import MlflowClient

    if isinstance(runs, str) or len(runs) < 2:
        raise ValueError(f"compare needs two or more runs, got {runs!r}")
    if step != "last" and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
        raise ValueError(f"step must be 'last' or an optimizer step (an int >= 0), got {step!r}")
    client = MlflowClient(tracking_uri)
    stored = resolve_runs(client, list(runs), experiment=experiment, root=root)
    said: list[str] = []
    prefix = root.rsplit("/", 1)[0] + "/" if "/" in root else ""
    records = []
    for run in stored:
        at = (run.steps[-1] if run.steps else None) if step == "last" else (step if step in run.steps else None)
        if at is None and not run.steps:
            said.append(
                f"run {run.name!r} ({run.run_id}) holds no spectra under {root}/: only a SpectrumMonitor (or "
                "rmt_callbacks.watch) stores them; its Dyson metrics alone are not compared"
            )
            continue
        if at is None:
            held = ", ".join(map(str, run.steps[-8:]))
            said.append(f"run {run.name!r} ({run.run_id}) has no spectra at step {step} (its steps: {held})")
            continue
        records.append(load(client, run, at, prefix=prefix))
    if len(records) < 2:
        raise ValueError("compare: fewer than two runs have spectra to compare: " + "; ".join(said))
    names = _matrices(records, matrices, said)
    comparison = Comparison(stored, {r.run.run_id: r.step for r in records}, names, [], warnings=said)
    comparison.table = [_row(name, r) for name in names for r in records if name in r.levels]
    comparison.figures = {name: _figure(name, records, step) for name in names}
    for message in said:
        warnings.warn(f"compare: {message}", RuntimeWarning, stacklevel=2)
    if out is not None:
        _write(Path(out), comparison)
    if log:
        comparison.run_id = _log(client, comparison, step)
    return comparison


def _matrices(records: Sequence[Records], patterns: Sequence[str] | None, said: list[str]) -> list[str]:
    held: dict[str, list[str]] = {}
    for r in records:
        for name in r.levels:
            held.setdefault(name, []).append(r.run.run_id)
    every = sorted(held)
    if patterns is not None:
        held = {n: ids for n, ids in held.items() if any(fnmatch.fnmatchcase(n, p) for p in patterns)}
    shared = [n for n, ids in held.items() if len(ids) >= 2]
    for name in sorted(held):
        lacking = [r.run.name for r in records if name not in r.levels]
        if lacking and name in shared:
            runs = ", ".join(map(repr, lacking))
            said.append(f"matrix {name!r} is not in run(s) {runs}; compared among the others")
        elif name not in shared:
            holder = next(r.run.name for r in records if name in r.levels)
            said.append(f"matrix {name!r} is held by run {holder!r} only; not compared")
    if not shared:
        asked = f" matching {list(patterns)}" if patterns is not None else ""
        raise ValueError(f"compare: no matrix{asked} is held by two or more of the runs; they hold: {every}")
    return sorted(shared)


def _row(name: str, r: Records) -> dict[str, Any]:
    levels = r.levels[name]
    fit = r.fits.get(name, {})
    # as the monitor: no ⟨r⟩ from fewer than MIN_RATIOS ratios (n levels give n - 2)
    ratio = float(mean_spacing_ratio(torch.from_numpy(levels))) if levels.size - 2 >= MIN_RATIOS else math.nan
    row: dict[str, Any] = {
        "matrix": name, "run": r.run.name, "run_id": r.run.run_id, "step": r.step, "n_levels": int(levels.size),
        "lambda_min": float(levels.min()), "lambda_max": float(levels.max()), "lambda_mean": float(levels.mean()),
        "mean_spacing_ratio": ratio,
    }  # fmt: skip
    for key in ("mp_sigma2", "mp_converged", "surmise_beta", "surmise_converged"):
        row[key] = _number(fit.get(key))
    dyson = r.dyson.get(name, {})
    for key in ("noise_temperature", "dyson_width", "dyson_width_normalized", "dyson_diffusion"):
        row[key] = _number(dyson.get(key))
    return row


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def _law(fit: dict[str, Any]) -> MarchenkoPastur | None:
    sigma2, ratio = _number(fit.get("mp_sigma2")), _number(fit.get("mp_ratio"))
    if _number(fit.get("mp_converged")) != 1.0 or not (sigma2 > 0 and ratio > 0):
        return None
    return MarchenkoPastur(sigma2=sigma2, ratio=ratio)


def _bulk_spacings(levels: np.ndarray, fit: dict[str, Any]) -> np.ndarray:
    edge = _number(fit.get("mp_lambda_plus"))
    bulk = levels[levels <= edge] if math.isfinite(edge) else levels
    if np.unique(bulk).size < MIN_SPACING_LEVELS:
        return np.empty(0)
    return unfolded_spacings(torch.from_numpy(bulk)).numpy()


def _figure(name: str, records: Sequence[Records], step: int | str) -> bytes:
    from ..figures.canvas import render
    from ..figures.comparison import RunCurves, comparison_figure

    curves = []
    for r in records:
        if name not in r.levels:
            continue
        fit, dyson = r.fits.get(name, {}), r.dyson.get(name, {})
        t = _number(dyson.get("noise_temperature"))
        label = f"{r.run.name} (T = {t:.3g})" if math.isfinite(t) else r.run.name
        beta = _number(fit.get("surmise_beta")) if _number(fit.get("surmise_converged")) == 1.0 else None
        curves.append(
            RunCurves(label, r.levels[name], _law(fit), _bulk_spacings(r.levels[name], fit), beta, t,
                      _number(dyson.get("dyson_width")))
        )  # fmt: skip
    title = "each run's last analysed step" if step == "last" else f"step {step}"
    return render(comparison_figure(name, curves, step=title)).png


def _csv(table: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(table[0]) if table else [])
    writer.writeheader()
    writer.writerows(table)
    return buffer.getvalue()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def _write(folder: Path, comparison: Comparison) -> None:
    (folder / "figures").mkdir(parents=True, exist_ok=True)
    for name, png in comparison.figures.items():
        (folder / "figures" / f"{_safe(name)}.png").write_bytes(png)
    (folder / "table.json").write_text(json.dumps(comparison.table, indent=1, allow_nan=True))
    (folder / "table.csv").write_text(_csv(comparison.table))


def _log(client: Any, comparison: Comparison, step: int | str) -> str:
    first = comparison.runs[0]
    ids = [r.run_id for r in comparison.runs if r.run_id in comparison.steps]
    names = " vs ".join(r.name for r in comparison.runs if r.run_id in comparison.steps)
    tags = {"rmt.compare_of": ",".join(ids), "rmt.compare.step": str(step), "mlflow.note.content": _note(comparison)}
    run = client.create_run(first.experiment_id, run_name=f"compare: {names}"[:250], tags=tags)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            _write(Path(tmp), comparison)
            client.log_artifacts(run.info.run_id, tmp, "compare")
        client.set_terminated(run.info.run_id, "FINISHED")
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    return str(run.info.run_id)


def _note(comparison: Comparison) -> str:
    steps = ", ".join(
        f"{r.name} at step {comparison.steps[r.run_id]}" for r in comparison.runs if r.run_id in comparison.steps
    )
    lines = [f"Comparison of {steps}; matrices: {', '.join(comparison.matrices)}."]
    lines += [f"Warning: {w}" for w in comparison.warnings]
    return "\n\n".join(lines)[:5000]
