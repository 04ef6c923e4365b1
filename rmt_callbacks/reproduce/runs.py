"""Training a reference model under the project's monitor and recording one experiment as an MLflow run.

Each experiment trains with a Lightning ``Trainer`` whose ``MLFlowLogger`` writes into the tracking store
(default: the embedded ``sqlite:///mlflow.db``), with :class:`rmt_callbacks.SpectrumMonitor` watching the
ensemble's weights. :func:`record` then puts into the same run, and into the experiment's folder under ``--out``,
what a reader looks for:

* artifacts ``figures/<name>.png`` (every figure it draws), ``summary.json`` (its part of the command's
  ``summary.json``) and ``arrays.npz`` (the final spectra);
* metrics ``summary/<name>``, one value each: the measured numbers, in a chart section of their own in the
  MLflow UI (which groups metrics by the key up to its last ``/``), apart from the monitor's per-step metrics;
* params: the model's hyper-parameters, ``max_steps``, and numbers fixed by construction (targets, predictions).

With several processes per run (``--devices``, ``--num-nodes``: every rank executes the whole command) only global
rank zero records: :func:`parent_run`, :func:`record` and the experiment's creation do nothing elsewhere, while
every rank trains with the same logger and callbacks. :func:`run_concurrently` runs independent experiments in
worker processes (``--jobs``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .pool import Call

log = logging.getLogger(__name__)

__all__ = [
    "SUMMARY_PREFIX",
    "Outcome",
    "Run",
    "Settings",
    "end_children",
    "parent_run",
    "record",
    "run_concurrently",
    "summary_metrics",
    "train",
    "write_summary",
]

#: The largest share of a run's training time the monitor's analyses may take.
MONITOR_BUDGET = 0.25
#: Prefix of the one-value summary metrics of a run (its own chart section in the MLflow UI).
SUMMARY_PREFIX = "summary/"


@dataclass(frozen=True)
class Settings:
    """What every experiment shares: where results go, the seed, the tracking store, whether to draw a bar, and how
    to spread the work: ``jobs`` worker processes of ``threads`` torch threads each for independent runs
    (:mod:`~rmt_callbacks.reproduce.pool`), and each run over ``devices`` × ``num_nodes`` with Lightning's ``strategy``.

    ``rank`` is this process's global rank (:func:`~rmt_callbacks.reproduce.launch.global_rank`): every rank of a
    multi-process run executes the whole command and trains, and only rank zero records (MLflow runs, files under
    ``out``, the printed lines).
    """

    out: Path
    seed: int = 0
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "rmt-reproduce"
    progress: bool = True
    monitor: bool = True
    accelerator: str = "auto"
    parent_run_id: str | None = None
    jobs: int = 1
    threads: int = 1
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    rank: int = 0


@dataclass(frozen=True)
class Run:
    """One experiment's MLflow run: its ``MLFlowLogger``, name, optimizer steps (0 for a parent run), start time,
    and the global rank of the process that holds it (only rank zero records; a parent run elsewhere has no logger).
    """

    logger: Any
    name: str
    steps: int = 0
    started: float = field(default_factory=time.perf_counter)
    rank: int = 0

    @property
    def run_id(self) -> str:
        """The MLflow run id (``""`` where this rank has no run)."""
        return (self.logger.run_id or "") if self.logger is not None and self.rank == 0 else ""


@dataclass(frozen=True)
class Outcome:
    """What a command gives its parent run: its part of ``summary.json`` and the figures and fits over several runs."""

    summary: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


def train(
    module: Any,
    steps: int,
    settings: Settings,
    *,
    run_name: str,
    tags: Mapping[str, str] | None = None,
    extra_callbacks: Sequence[Any] = (),
) -> Run:
    """Train ``module`` for ``steps`` optimizer steps under the monitor, in a new MLflow run named ``run_name``.

    The monitor aims at ten analyses per run but is paced to a quarter of the training time (``overhead_budget``),
    so a short run on a slow machine gets fewer rather than a warning. With ``settings.progress`` a
    :class:`~rmt_callbacks.reproduce.bars.StepBar` shows one bar over all steps. The ``Trainer`` is
    :func:`reference_models.fit_reference`'s, on ``settings.devices`` × ``settings.num_nodes`` with
    ``settings.strategy``. Every rank builds the same logger and callbacks (Lightning's convention: they are
    rank-aware); the returned run carries the rank the ``Trainer`` gave this process (or the environment's, where
    the ``Trainer`` has one process: :func:`~rmt_callbacks.reproduce.launch.global_rank`).
    """
    from reference_models import fit_reference

    from ..monitors import SpectrumMonitor
    from .bars import QuietSpawned, StepBar
    from .pool import in_worker

    run = Run(_mlflow_logger(settings, run_name, tags), run_name, steps, rank=settings.rank)
    if run.rank == 0:
        run.logger.log_hyperparams({"max_steps": steps})
    callbacks = list(extra_callbacks)
    if settings.monitor:
        callbacks.append(SpectrumMonitor(every_n_train_steps=max(1, steps // 10), overhead_budget=MONITOR_BUDGET))
    if settings.progress and settings.rank == 0 and not in_worker():
        callbacks.append(StepBar(run_name))
    if "spawn" in str(settings.strategy):
        callbacks.append(QuietSpawned())
    trainer = fit_reference(
        module,
        steps,
        callbacks=callbacks,
        logger=run.logger,
        accelerator=settings.accelerator,
        devices=settings.devices,
        num_nodes=settings.num_nodes,
        strategy=settings.strategy,
    )
    for callback in callbacks:  # what a spawned rank zero sent back (equilibration.MidRunSnapshot)
        if hasattr(callback, "recover"):
            callback.recover(trainer)
    return replace(run, rank=trainer.global_rank or settings.rank)  # records only where both say rank zero


def parent_run(settings: Settings, run_name: str, *, tags: Mapping[str, str] | None = None) -> Run:
    """A new run to nest others under: pass its ``run_id`` as ``Settings.parent_run_id``.

    Created now, in this process, before any worker or ``Trainer`` starts: the experiment and the sqlite store's
    tables then exist before several processes write to them. Off rank zero there is none (``run_id`` is ``""``).
    """
    if settings.rank != 0:
        return Run(None, run_name, rank=settings.rank)
    run = Run(_mlflow_logger(settings, run_name, tags), run_name)
    _ = run.logger.experiment  # creates the run now, so children can point at it
    return run


def end_children(settings: Settings, parent_run_id: str, status: str = "KILLED") -> list[str]:
    """Mark the runs nested under ``parent_run_id`` that are still ``RUNNING`` as ``status``; their ids.

    After a failed command: a worker killed mid-run (:mod:`~rmt_callbacks.reproduce.pool`) could not end its run.
    """
    from mlflow.tracking import MlflowClient

    if settings.rank != 0 or not parent_run_id:
        return []
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    experiment = client.get_experiment_by_name(settings.experiment)
    if experiment is None:
        return []
    query = f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'"
    running = [r.info.run_id for r in client.search_runs([experiment.experiment_id], query)]
    for run_id in running:
        client.set_terminated(run_id, status)
    return running


def run_concurrently(calls: Sequence[Call], settings: Settings) -> list[Any]:
    """The results of ``calls``, in their order, run as ``settings.jobs`` and ``settings.threads`` say.

    The tracking store and the experiment are made here first: worker processes that each found a new sqlite store
    would each create its tables, and collide ("duplicate column name"; MLflow's ``busy_timeout`` covers writes to
    tables that exist, not their creation).
    """
    from .pool import run_calls

    if settings.jobs > 1 and len(calls) > 1:
        _ensure_experiment(settings)
    return run_calls(calls, jobs=settings.jobs, threads=settings.threads)


def _ensure_experiment(settings: Settings) -> None:
    """Create the experiment (and with it a new store's tables) unless it exists; only on rank zero."""
    from mlflow.tracking import MlflowClient

    if settings.rank == 0:  # elsewhere the logger exists (every rank builds the same Trainer) and records nothing
        client = MlflowClient(tracking_uri=settings.tracking_uri)
        if client.get_experiment_by_name(settings.experiment) is None:
            client.create_experiment(settings.experiment)


def _mlflow_logger(settings: Settings, run_name: str, tags: Mapping[str, str] | None) -> Any:
    """An ``MLFlowLogger`` for a new run; the experiment is created first, so Lightning has nothing to announce."""
    from lightning.pytorch.loggers import MLFlowLogger

    _ensure_experiment(settings)
    return MLFlowLogger(
        experiment_name=settings.experiment,
        run_name=run_name,
        tracking_uri=settings.tracking_uri,
        tags={"rmt.reproduce": run_name, **_parent_tag(settings), **(tags or {})},
    )


def _parent_tag(settings: Settings) -> dict[str, str]:
    """MLflow nests a run under the run named by this tag (its UI groups children under the parent)."""
    return {"mlflow.parentRunId": settings.parent_run_id} if settings.parent_run_id else {}


def record(
    run: Run,
    out: Path,
    *,
    summary: Mapping[str, Any],
    metrics: Mapping[str, float] | None = None,
    params: Mapping[str, Any] | None = None,
    figures: Mapping[str, Any] | None = None,
    arrays: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write an experiment's results into ``out`` and its run, end the run, and log its one line.

    Args:
        run: the experiment's run, from :func:`train` or :func:`parent_run`.
        out: its folder; receives ``summary.json``, ``<name>.png`` per figure and ``arrays.npz``.
        summary: its part of ``summary.json``; also the run's ``summary.json`` artifact.
        metrics: measured numbers, logged once as ``summary/<name>`` (names without ``/``; non-finite ones
            are left out of MLflow and appear as ``null`` in ``summary.json``).
        params: numbers fixed by construction (targets, predictions), logged as params.
        figures: matplotlib figures, written as PNG and logged as ``figures/<name>.png``; released once written.
        arrays: arrays for ``arrays.npz``, also an artifact.

    Returns:
        The path of the ``summary.json`` written; off rank zero (``run.rank``) nothing is written or logged, and
        the path is where rank zero writes it.
    """
    from ..figures.canvas import save_figure

    if run.rank != 0:
        return out / "summary.json"
    out.mkdir(parents=True, exist_ok=True)
    client, run_id = run.logger.experiment, run.run_id
    if params:
        run.logger.log_hyperparams(dict(params))
    if values := summary_metrics(metrics or {}):
        run.logger.log_metrics(values, step=None)
    for name, fig in (figures or {}).items():
        save_figure(fig, out / f"{name}.png", dpi=120)
        client.log_artifact(run_id, str(out / f"{name}.png"), "figures")
    if arrays:
        np.savez_compressed(out / "arrays.npz", allow_pickle=True, **arrays)  # numpy's default, spelled out for mypy
        client.log_artifact(run_id, str(out / "arrays.npz"))
    path = write_summary(out, summary)
    client.log_artifact(run_id, str(path))
    run.logger.finalize("success")
    seconds = time.perf_counter() - run.started
    done = f"{run.steps} steps in {seconds:.0f} s" if run.steps else f"{seconds:.0f} s"
    log.info("%s: %s -> %s (MLflow run %s)", run.name, done, out, run_id)
    return path


def summary_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """The finite ``metrics`` under :data:`SUMMARY_PREFIX`, the keys of a run's one-value summary numbers.

    Example:
        >>> summary_metrics({"mean_s2": 1.27, "surmise_beta": float("nan")})
        {'summary/mean_s2': 1.27}

    Raises:
        ValueError: a name contains ``/`` (it would open a chart section of its own in the MLflow UI).
    """
    nested = sorted(name for name in metrics if "/" in name)
    if nested:
        raise ValueError(f"summary metric names must not contain '/', got {nested}")
    return {f"{SUMMARY_PREFIX}{k}": float(v) for k, v in metrics.items() if math.isfinite(float(v))}


def write_summary(out: Path, summary: Mapping[str, Any]) -> Path:
    """Write ``summary.json`` (every fitted number) into ``out`` and return its path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "summary.json"
    path.write_text(json.dumps(_plain(summary), indent=2, sort_keys=True) + "\n")
    log.debug("wrote %s", path)
    return path


def _plain(value: Any) -> Any:
    """JSON-ready copy: tensors and arrays become lists, numpy scalars floats, NaN becomes null."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
