"""The monitor's jobs and their delivery: a job computes on the worker, the training thread hands its result over.

A :class:`Recorder` holds what a run accumulates (each matrix's spectrum over time, its last results, the run tags
sent, the monitor's measured time). Its jobs, :meth:`Recorder.analyse` and :meth:`Recorder.close` (run on the
monitor's worker thread, or in the hook with ``background=False``), only compute: the analysis, the figures, and
each MLflow run's writes built ready to queue (``.npz`` and PNG bytes, tables, tags, metrics:
:meth:`~rmt_callbacks.sinks.spool.MlflowWriter.prepared`); each returns a :class:`Report` and hands nothing to a
sink (it only finds each run's writer, which may create the run on the server: kept off the training thread).
:meth:`Recorder.deliver`, called by the training thread for every report in step order, is the one place a result
reaches a sink: MLflow's writes are queued into each run's writer (which sends them from its own thread), then the
other loggers get the metrics, histograms and images.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from ..analysis import MatrixResult, analyze_views, is_stepwise
from ..eigensolver import Solver
from ..sinks.keys import metric_key
from ..sinks.lightning import log_to_loggers, mlflow_loggers
from ..sinks.tensorboard import log_histograms, log_images
from ..spectral import MatrixView
from ._artifacts import (
    record_levels,
    render_evolution,
    render_step,
    run_tags,
    summary_rows,
    write_artifacts,
    write_closing,
)
from ._history import LevelHistory
from ._identity import artifact_root, run_key
from ._messages import OnceMessages

__all__ = ["Clock", "Prepared", "Recorder", "Report"]


@dataclass
class Clock:
    """The monitor's time: copies in the hook and jobs on the worker, against the time since training started."""

    start: float | None = None
    hook: float = 0.0
    jobs: float = 0.0

    def overhead(self) -> float:
        """The monitor's seconds over the training seconds so far (0 before training starts)."""
        elapsed = 0.0 if self.start is None else time.perf_counter() - self.start
        return (self.hook + self.jobs) / elapsed if elapsed > 0 else 0.0


@dataclass(frozen=True)
class Prepared:
    """Writes built for one MLflow run's writer (:class:`~rmt_callbacks.sinks.spool.MlflowWriter`), not queued yet;
    with ``unless=(key, step)`` they are left out if the run already holds ``key`` at ``step``."""

    writer: Any
    ops: list[dict[str, Any]]
    unless: tuple[str, int] | None = None


@dataclass(frozen=True)
class Report:
    """One finished job: the step, results, metrics, wall time, eigenvalue histograms and figure pixels by tag, and
    the MLflow runs' prepared writes."""

    step: int
    results: list[MatrixResult]
    metrics: dict[str, float]
    seconds: float
    histograms: dict[str, np.ndarray] = field(default_factory=dict)
    images: dict[str, np.ndarray] = field(default_factory=dict)
    mlflow: list[Prepared] = field(default_factory=list)


class Recorder:
    """What one monitor records in a run, job by job (see the module docstring).

    Args:
        analyses: the analyses to run (:data:`~rmt_callbacks.analysis.ANALYSES`).
        dense_limit, solver: see :func:`~rmt_callbacks.analysis.analyze_views`.
        prefix: the metric-key prefix.
        label: the monitor's label (:mod:`._identity`): run-level keys ``<prefix><label>/<stat>``, artifacts under
            ``<prefix><label>/``; set again when the monitor is labelled at setup.
        said: where warnings go (emitted by the training thread).
    """

    def __init__(
        self,
        *,
        analyses: Sequence[str],
        dense_limit: int,
        prefix: str,
        label: str,
        said: OnceMessages,
        solver: Solver = "auto",
    ) -> None:
        self.analyses, self.dense_limit, self.prefix, self.label = tuple(analyses), dense_limit, prefix, label
        self.solver = solver
        self.said, self.clock = said, Clock()
        self.history = LevelHistory()
        self.last: dict[str, tuple[int, MatrixResult]] = {}  # each matrix's last good analysis: (step, result)
        self.drawn: int | None = None  # the last step whose figures were drawn
        self._tags: dict[str, str] = {}  # the run tags sent, so only changes are sent again

    def key(self, name: str, stat: str) -> str:
        """The metric key of ``stat`` of matrix (or section) ``name``."""
        return metric_key(self.prefix, name, stat)

    def run_key(self, stat: str) -> str:
        """The run-level metric key of ``stat``: ``<prefix><label>/<stat>``."""
        return run_key(self.prefix, self.label, stat)

    @property
    def root(self) -> str:
        """The folder of the monitor's MLflow artifacts: ``<prefix><label>``."""
        return artifact_root(self.prefix, self.label)

    def analyse(
        self, views: list[MatrixView], mlflow: list[Any], pixels: bool, *, step: int, interval: int, figures: bool
    ) -> Report:
        """Analyse a snapshot, draw it when ``figures``, and prepare MLflow's share: arrays, table, tags, figures,
        then the metrics (whose ``analysis_seconds`` count all of it); :meth:`deliver` hands it over."""
        start = time.perf_counter()
        results = analyze_views(views, analyses=self.analyses, dense_limit=self.dense_limit, solver=self.solver)
        levels = record_levels(self.history, results, step=step)
        self.last.update({r.name: (step, r) for r in results if r.skipped is None or r.name not in self.last})
        rendered = render_step(results, step=step) if figures and (mlflow or pixels) else {}
        self.drawn = step if figures else self.drawn
        tags = self._changed(run_tags(results))
        metrics = {self.key(r.name, k): v for r in results for k, v in r.metrics.items() if is_stepwise(k, r.shape)}
        # a resumed run that holds this step already (logged again after a crash) keeps its first record: the
        # writer thread leaves this step's writes out when the run holds one of its metrics there
        held = (self.run_key("analysis_interval"), step)  # a key of this monitor's own, logged at every analysis
        write = partial(write_artifacts, root=self.root, results=results, step=step, figures=rendered, tags=tags)
        prepared = [p for logger in mlflow for p in self._prepare(logger, write, unless=held)]
        seconds = time.perf_counter() - start
        self.clock.jobs += seconds
        metrics[self.run_key("analysis_seconds")] = seconds
        metrics[self.run_key("analysis_interval")] = float(interval)
        if step > 0:  # at step 0 no training has happened yet: its share would be 1 by construction
            metrics[self.run_key("overhead")] = self.clock.overhead()
        for logger in mlflow:
            prepared += self._prepare(logger, lambda run: run.log_metrics(metrics, step=step), unless=held)
        images = {self.key(n, "spectrum"): r.rgb for n, r in rendered.items()} if pixels else {}
        histograms = {self.key(n, "eigenvalues"): v for n, v in levels.items()}
        return Report(step, results, metrics, seconds, histograms, images, prepared)

    def close(self, mlflow: list[Any], pixels: bool, *, step: int, per_step: bool = True) -> Report:
        """The end of training: the last step's figures if its analysis drew none (and ``per_step``), each matrix's
        spectrum over the run, and the run's summary table."""
        start, drawn, rendered = time.perf_counter(), {}, {}
        final = [r for s, r in self.last.values() if s == step]
        if mlflow or pixels:
            drawn = render_step(final, step=step) if per_step and final and self.drawn != step else {}
            rendered = render_evolution(self.history, {n: r for n, (_, r) in self.last.items()})
        rows = summary_rows(self.last)
        write = partial(write_closing, root=self.root, step=step, drawn=drawn, figures=rendered, rows=rows)
        prepared = [p for logger in mlflow for p in self._prepare(logger, write)]
        images = {self.key(n, "spectrum"): r.rgb for n, r in drawn.items()} if pixels else {}
        images.update({self.key(n, "evolution"): r.rgb for n, r in rendered.items()} if pixels else {})
        return Report(step, [], {}, time.perf_counter() - start, {}, images, prepared)

    def deliver(self, report: Report, loggers: Sequence[Any]) -> None:
        """Hand ``report`` to every sink; called by the training thread, report by report in step order.

        Each MLflow run's prepared writes are queued into its writer (a lock and an append per write: the writer's
        thread sends them), under the same ``unless`` guard as when they were built; then every other logger gets
        the metrics, eigenvalue histograms and figure images.
        """
        for prepared in report.mlflow:
            writer = prepared.writer
            try:
                with writer.unless_logged(*prepared.unless) if prepared.unless else nullcontext():
                    writer.enqueue(prepared.ops)
            except Exception as exc:  # a defect here must not cost the other loggers' numbers or the training
                self._failed(exc)
        others = [lg for lg in loggers if lg not in mlflow_loggers(loggers)]
        log_to_loggers(others, report.metrics, step=report.step)
        log_histograms(others, report.histograms, step=report.step)
        log_images(others, report.images, step=report.step)

    def _changed(self, tags: dict[str, str]) -> dict[str, str]:
        changed = {k: v for k, v in tags.items() if self._tags.get(k) != v}
        self._tags.update(changed)
        return changed

    def _prepare(
        self, logger: Any, write: Callable[[Any], None], unless: tuple[str, int] | None = None
    ) -> list[Prepared]:
        """Build a write for the logger's run without queueing it (what was built before a failure is kept). The
        writer is found here, off the training thread: finding it may create the run on the server."""
        from ..sinks.spool import MlflowWriter  # imports mlflow: only with an MLFlowLogger

        try:
            writer = MlflowWriter.for_logger(logger)
        except Exception as exc:  # a defect here must not cost the other loggers' numbers or the training
            self._failed(exc)
            return []
        with writer.prepared() as ops:
            try:
                write(writer)
            except Exception as exc:
                self._failed(exc)
        return [Prepared(writer, ops, unless)]

    def _failed(self, exc: Exception) -> None:
        self.said.once(("mlflow", type(exc).__name__), f"SpectrumMonitor: writing to MLflow failed: {exc!r}")
