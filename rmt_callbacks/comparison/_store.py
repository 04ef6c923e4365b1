r"""Reading the monitors' records back from MLflow, any store: which runs, which steps, their spectra, fits and
Dyson observables.

A run written by :class:`~rmt_callbacks.SpectrumMonitor` (or ``rmt_callbacks.watch``) holds, under its artifact
folder ``<prefix><label>/`` (``rmt/monitor/`` by default), ``spectra/step_XXXXXXXX.npz`` (each matrix's Gram
levels) and ``fits/step_XXXXXXXX.json`` (one row per matrix: shape, fitted laws, …); a
:class:`~rmt_callbacks.DysonMonitor` adds the metrics ``<prefix><matrix>/dyson_width`` and the temperature
``<prefix>dyson/noise_temperature`` (or ``<prefix><matrix>/dyson_temperature`` when groups differ).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..sinks.keys import metric_key
from ..spectral import nonstructural_levels

__all__ = ["Records", "StoredRun", "UnknownRun", "load", "resolve_runs"]

STEP_FILE = re.compile(r"step_(\d{8})\.npz$")
DYSON_STATS = ("dyson_width", "dyson_width_normalized", "dyson_diffusion", "dyson_diffusion_normalized")


class UnknownRun(ValueError):
    """A run id or name that the store does not hold; the message lists the runs it does hold."""


@dataclass(frozen=True)
class StoredRun:
    """A run as found: its id, name, experiment, and the steps whose spectra it holds under ``root``."""

    run_id: str
    name: str
    experiment_id: str
    steps: tuple[int, ...]
    root: str
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class Records:
    """One run at one step: per matrix its non-structural levels (pooled), its fit-table row and Dyson values."""

    run: StoredRun
    step: int
    levels: dict[str, np.ndarray]
    fits: dict[str, dict[str, Any]]
    dyson: dict[str, dict[str, float]]


def _runs_listing(client: Any, experiment_ids: Sequence[str], limit: int = 30) -> str:
    runs = client.search_runs(list(experiment_ids), max_results=limit, order_by=["attributes.start_time DESC"])
    if not runs:
        return "it holds no runs"
    lines = [f"{r.info.run_name or '(no name)'} ({r.info.run_id})" for r in runs]
    more = f", … (the {limit} newest shown)" if len(runs) == limit else ""
    return "its runs: " + ", ".join(lines) + more


def resolve_runs(client: Any, items: Sequence[str], *, experiment: str | None, root: str) -> list[StoredRun]:
    """Each of ``items`` (a run id, or a run name in ``experiment`` or, without one, in any experiment) as a
    :class:`StoredRun`; raises :class:`UnknownRun` naming the item and listing the runs there are."""
    from mlflow.exceptions import MlflowException

    if experiment is not None:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = ", ".join(e.name for e in client.search_experiments())
            raise UnknownRun(f"no experiment named {experiment!r} in this store; its experiments: {names}")
        experiment_ids = [found.experiment_id]
    else:
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
    out = []
    for item in items:
        run = None
        if re.fullmatch(r"[0-9a-f]{32}", item):
            try:
                run = client.get_run(item)
            except MlflowException:
                run = None
        if run is None:
            named = client.search_runs(experiment_ids, filter_string=f"attributes.run_name = '{_quoted(item)}'")
            if len(named) > 1:
                ids = ", ".join(r.info.run_id for r in named)
                raise UnknownRun(f"run name {item!r} is ambiguous ({len(named)} runs: {ids}); pass a run id")
            run = named[0] if named else None
        if run is None:
            where = f"experiment {experiment!r}" if experiment else "this store"
            raise UnknownRun(f"no run {item!r} (id or name) in {where}; {_runs_listing(client, experiment_ids)}")
        out.append(_stored(client, run, root))
    return out


def _quoted(name: str) -> str:
    return name.replace("'", "\\'")


def _stored(client: Any, run: Any, root: str) -> StoredRun:
    steps = sorted(
        int(m.group(1))
        for f in client.list_artifacts(run.info.run_id, f"{root}/spectra")
        if (m := STEP_FILE.search(f.path))
    )
    name = run.info.run_name or run.info.run_id[:8]
    metrics = dict(run.data.metrics)
    return StoredRun(run.info.run_id, name, run.info.experiment_id, tuple(steps), root, metrics)


def load(client: Any, run: StoredRun, step: int, *, prefix: str) -> Records:
    """The records of ``run`` at ``step`` (which must be one of ``run.steps``)."""
    stem = f"step_{step:08d}"
    with tempfile.TemporaryDirectory() as tmp, _quiet_downloads():
        arrays = np.load(
            client.download_artifacts(run.run_id, f"{run.root}/spectra/{stem}.npz", tmp), allow_pickle=False
        )
        raw = {name: np.asarray(arrays[name], dtype=np.float64) for name in arrays.files}
        try:
            table = json.loads(
                Path(client.download_artifacts(run.run_id, f"{run.root}/fits/{stem}.json", tmp)).read_text()
            )
        except Exception:  # a run cut off between its arrays and its table: the levels are still compared
            table = {"columns": [], "data": []}
    fits = {row["name"]: row for row in (dict(zip(table["columns"], r, strict=False)) for r in table["data"])}
    levels = {name: nonstructural(values, fits.get(name)) for name, values in raw.items()}
    dyson = {name: _dyson(client, run, name, step, prefix) for name in levels}
    return Records(run, step, levels, fits, {k: v for k, v in dyson.items() if v})


@contextmanager
def _quiet_downloads() -> Iterator[None]:
    """No MLflow progress bar per downloaded file (two per run)."""
    name, before = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def rows_of(row: dict[str, Any] | None) -> int | None:
    """:math:`M`, the rows of a matrix, from its fit-table row's ``shape`` (``"(M, N)"`` or ``"(E, M, N)"``)."""
    if row is None or not isinstance(row.get("shape"), str):
        return None
    dims = [int(d) for d in re.findall(r"\d+", row["shape"])]
    return dims[-2] if len(dims) >= 2 else None


def nonstructural(values: np.ndarray, row: dict[str, Any] | None) -> np.ndarray:
    """The stored Gram levels without the :math:`N - M` structural zeros of a wide matrix, pooled over a batch."""
    m = rows_of(row)
    keep = values if m is None else nonstructural_levels(torch.from_numpy(values), rows=m).numpy()
    return np.sort(keep.reshape(-1))


def _dyson(client: Any, run: StoredRun, name: str, step: int, prefix: str) -> dict[str, float]:
    """The Dyson statistics of matrix ``name`` and its temperature, as last logged at or before ``step``."""
    keys = {stat: metric_key(prefix, name, stat) for stat in DYSON_STATS}
    keys["noise_temperature"] = metric_key(prefix, name, "dyson_temperature")
    out = {}
    for stat, key in keys.items():
        if key not in run.metrics:
            continue
        value = _at(client, run.run_id, key, step)
        if value is not None:
            out[stat] = value
    if out and "noise_temperature" not in out:  # one parameter group trains every matrix: the run-wide key
        shared = metric_key(prefix, "dyson", "noise_temperature")
        value = _at(client, run.run_id, shared, step) if shared in run.metrics else None
        if value is not None:
            out["noise_temperature"] = value
    return out


def _at(client: Any, run_id: str, key: str, step: int) -> float | None:
    history = [m for m in client.get_metric_history(run_id, key) if m.step <= step and math.isfinite(m.value)]
    return max(history, key=lambda m: (m.step, m.timestamp)).value if history else None
