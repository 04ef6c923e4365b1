r"""``SpectrumMonitor``: spectra, spacings and random-matrix fits of the weights, logged while training.

A drop-in Lightning callback. On its cadence it copies the selected weights (detached, float64, no grads, no
random numbers drawn), analyses them with :func:`rmt_callbacks.analysis.analyze_views` (the code path of
:func:`rmt_callbacks.analyze`) and sends the scalars to every logger; with an ``MLFlowLogger`` it also writes
raw spectra, a fit table and figures into that logger's run.

.. math::

    \text{key} = \texttt{log\_key\_prefix} \,\Vert\, \text{matrix} \,\Vert\, \texttt{/} \,\Vert\, \text{statistic},
    \qquad \text{step} = \texttt{trainer.global\_step}.

References: arXiv:2412.20496, arXiv:2407.16427; Lightning ``LearningRateMonitor`` / ``DeviceStatsMonitor``.
"""

from __future__ import annotations

import logging
import queue
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from ..analysis import DEFAULT_ANALYSES, Analysis, MatrixResult, analyze_views, resolve_views, validate_analyses
from ..sinks.keys import metric_key
from ..sinks.lightning import StepLedger, flush_loggers, log_to_loggers, mlflow_loggers
from ..spectral import DENSE_LIMIT, MatrixView
from ._artifacts import write_artifacts
from ._gather import is_sharded, snapshot_module, snapshot_views, strategy_root
from ._schedule import check_count, figure_due, is_due, resolve_cadence
from ._selection import has_lazy_parameters, parameter_names, validate_filter, validate_patterns
from ._worker import AnalysisWorker, Finished, OverheadBudget, check_budget, one_intra_op_thread

__all__ = ["DEFAULT_OVERHEAD_BUDGET", "SpectrumMonitor"]

DEFAULT_OVERHEAD_BUDGET: float = 0.02

log = logging.getLogger(__name__)


class SpectrumMonitor(Callback):
    r"""Log the spectra of weight matrices, their level spacings and random-matrix fits during training.

    Each selected parameter is viewed as matrices ``(..., M, N)`` (``nn.Linear`` as is, ``nn.ConvNd`` one
    matrix per kernel position, ``nn.MultiheadAttention`` in-projection split into ``.q/.k/.v``, a parameter
    ``(E, M, N)`` an ensemble of :math:`E` matrices). Per matrix, with :math:`X = W^\top W / M`, summary
    statistics are averaged over the batch and fits use the eigenvalues pooled over it
    (:mod:`rmt_callbacks.analysis`).

    The monitor analyses once when training starts (the initial spectrum) and then on its cadence, never twice
    at one ``global_step``. Metrics go to every logger in ``trainer.loggers`` through
    ``logger.log_metrics(metrics, step=trainer.global_step)``: the step is the number of optimizer steps taken
    when the weights were copied (0 for the initial copy). A run resumed from a checkpoint older than its last
    logged step replays steps: an MLflow run that already holds a step is not written again (warned once). Only
    rank zero analyses and logs; ``pl_module.log`` is never used; with no logger at all the monitor warns once and
    analyses nothing. A matrix with NaN/Inf entries, fewer than 2 rows or columns or a non-float dtype (integer,
    complex) is skipped: ``skipped = 1`` is logged, a warning is issued once per (matrix, reason) and the reason
    goes to the fit table (and, with MLflow, a run tag ``rmt.skipped.<matrix>``). Nothing in the hooks raises on
    bad weights. A matrix with :math:`\min(M, N) \ge` ``DENSE_LIMIT`` (8192: embeddings, LM heads) is not
    diagonalised but its density estimated by stochastic Lanczos quadrature (:mod:`rmt_callbacks.analysis`); the
    method that produced each spectrum is the fit table's ``method`` column and the run tag
    ``rmt.method.<matrix>`` (``eigvalsh`` or ``slq``).

    **Training is not kept waiting.** When an analysis is due the hook copies the selected weights (on CUDA on a
    side stream) and returns; a background thread analyses the copy and writes MLflow's share (network included).
    Finished analyses are sent to the other loggers at the next hook, from the training thread, and every pending
    one is finished and logged before training ends (``on_train_end``), when a checkpoint is saved (so a resumed
    run never misses one) and when training raises. The ``overhead_budget`` :math:`f` paces the analyses: one
    starts only if the previous one is done and took at most :math:`f` times the wall time since it started, so
    on any machine the analyses cost at most about :math:`f` of training time; a due step that would exceed it is
    deferred to the next due step (said once, at info level), and each analysis logs the interval it ran at.
    ``overhead_budget=None`` analyses at every due step (with ``background=False``, synchronously in the hook).

    Logged metrics (``{log_key_prefix}{matrix}/{statistic}``):
        * ``skipped``: 1 if the matrix was skipped (then nothing else is logged for it), else 0.
        * ``lambda_min``, ``lambda_max``, ``lambda_mean``: extreme and mean eigenvalues of :math:`X`.
        * ``spectral_norm``: :math:`\|W\|_2 = \sqrt{M \lambda_{\max}}`.
        * ``stable_rank``: :math:`\sum_i \lambda_i / \lambda_{\max} = \|W\|_F^2 / \|W\|_2^2`.
        * ``mean_spacing_ratio``: :math:`\langle r \rangle` of the non-structural levels (GOE 0.5307, Poisson
          0.3863); absent for matrices with fewer than 3 of them (e.g. 2×2).
        * ``mp/converged``, ``mp/sigma2``, ``mp/ratio``, ``mp/lambda_minus``, ``mp/lambda_plus``,
          ``mp/num_spikes``, ``mp/ks``: the Marchenko–Pastur fit (``"marchenko_pastur"``).
        * ``semicircle/converged``, ``semicircle/center``, ``semicircle/radius``, ``semicircle/ks``: the
          semicircle fit of :math:`(W + W^\top)/2`, square matrices only (``"semicircle"``, not a default: a second
          eigendecomposition per square matrix).
        * ``surmise/converged``, ``surmise/beta``, ``surmise/ks``: the Wigner-surmise fit of the normalised
          spacings (``"spacings"``).

        * ``estimated``: 1 when the spectrum is an SLQ density estimate (``min(M, N) >= dense_limit``); then
          only ``lambda_min``, ``lambda_max``, ``lambda_mean``, ``spectral_norm`` and ``stable_rank`` are logged.

        A failed fit logs only its ``…/converged = 0``. Per analysis the monitor also logs
        ``{log_key_prefix}monitor/analysis_seconds`` (its compute time) and
        ``{log_key_prefix}monitor/analysis_interval`` (optimizer steps since the previous analysis; 0 for the first).

    MLflow artifacts (with an ``MLFlowLogger``, written into its run):
        * ``spectra/step_{step:08d}.npz``: the Gram eigenvalues, one array ``(..., N)`` per matrix name;
          ``spectra/symmetric/step_{step:08d}.npz``: the symmetric-part eigenvalues of square matrices.
          ``spectra/density/step_{step:08d}.npz``: estimated densities, ``<matrix>/density`` on ``<matrix>/edges``.
        * ``fits/step_{step:08d}.json``: an MLflow table, one row per matrix (shape, skip reason, failures,
          every statistic).
        * ``figures/{matrix}/step_{step:08d}.png``: histograms with the fitted laws, every
          ``figure_every_n_analyses``-th analysis.

    Args:
        every_n_train_steps: analyse every this many optimizer steps (``trainer.global_step``).
        every_n_epochs: analyse at the end of every this many epochs; exclusive with ``every_n_train_steps``.
            Neither given: every 50 optimizer steps.
        include: fnmatch patterns on dotted parameter names (``named_parameters()``); ``None``: every weight of
            Linear, ConvNd, Embedding and MultiheadAttention modules, and any ``weight`` with 3+ dimensions.
        exclude: fnmatch patterns to leave out.
        param_filter: ``(name, param) -> bool`` selecting parameters, alone or on top of ``include``.
        analyses: a subset of ``["summary", "marchenko_pastur", "semicircle", "spacings"]``; ``None``: all but
            ``"semicircle"`` (:data:`~rmt_callbacks.analysis.DEFAULT_ANALYSES`).
        log_key_prefix: the metric-key prefix.
        figure_every_n_analyses: draw figures (MLflow only) on analyses number 0, k, 2k, …; ``None`` or 0: never.
        overhead_budget: the largest fraction of training wall time analyses may take, in ``(0, 1]`` (default
            0.02); ``None``: analyse at every due step, however long it takes.
        background: analyse on a background thread (default); ``False`` analyses synchronously in the hook.
        dense_limit: matrices with :math:`\min(M, N)` at least this are estimated (SLQ), not diagonalised.

    Raises:
        ValueError, TypeError: a bad argument (in ``__init__``), naming it, its value and what is allowed; at fit
            start, a selection that matches no matrix (listing the parameters available).

    References: arXiv:2412.20496, arXiv:2407.16427.

    Example:
        >>> monitor = SpectrumMonitor(every_n_train_steps=10, include=["encoder.*"])
        >>> monitor.state_key.startswith("SpectrumMonitor")
        True
        >>> SpectrumMonitor(every_n_train_steps=10, every_n_epochs=1)
        Traceback (most recent call last):
        ...
        ValueError: every_n_train_steps and every_n_epochs are mutually exclusive, got every_n_train_steps=10 and every_n_epochs=1; set one of them
    """  # noqa: E501

    def __init__(
        self,
        every_n_train_steps: int | None = None,
        every_n_epochs: int | None = None,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        param_filter: Callable[[str, torch.Tensor], bool] | None = None,
        analyses: list[Analysis] | None = None,
        log_key_prefix: str = "rmt/",
        figure_every_n_analyses: int | None = 10,
        overhead_budget: float | None = DEFAULT_OVERHEAD_BUDGET,
        background: bool = True,
        dense_limit: int = DENSE_LIMIT,
    ) -> None:
        self.every_n_train_steps, self.every_n_epochs = resolve_cadence(every_n_train_steps, every_n_epochs)
        self.include = validate_patterns("include", include, allow_none=True)
        self.exclude = validate_patterns("exclude", [] if exclude is None else exclude, allow_none=False)
        self.param_filter = validate_filter(param_filter)
        self.analyses = DEFAULT_ANALYSES if analyses is None else validate_analyses(analyses)
        if not isinstance(log_key_prefix, str):
            raise TypeError(f"log_key_prefix must be a str, got {type(log_key_prefix).__name__} ({log_key_prefix!r})")
        self.log_key_prefix = log_key_prefix
        check_count("figure_every_n_analyses", figure_every_n_analyses, allow_zero=True)
        self.figure_every_n_analyses = figure_every_n_analyses
        self.overhead_budget = check_budget(overhead_budget)
        if not isinstance(background, bool):
            raise TypeError(f"background must be a bool, got {type(background).__name__} ({background!r})")
        self.background = background
        check_count("dense_limit", dense_limit)
        self.dense_limit = dense_limit
        self._last_step: int | None = None
        self._num_analyses = 0
        self._warned: set[tuple[str, ...]] = set()
        self._messages: queue.SimpleQueue[str] = queue.SimpleQueue()  # warnings raised off the training thread
        self._ledger = StepLedger(self._warn_replay)
        self._budget = OverheadBudget(self.overhead_budget)
        self._worker: AnalysisWorker[_Report] = AnalysisWorker("rmt-SpectrumMonitor", initializer=one_intra_op_thread)
        self._trainer: pl.Trainer | None = None
        self._sharded = False  # FSDP / FSDP2 parameters: set at fit start, the same on every rank
        self._names: list[str] | None = None  # under sharding, the selected parameters (read on rank zero)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            every_n_train_steps=self.every_n_train_steps,
            every_n_epochs=self.every_n_epochs,
            include=self.include,
            exclude=self.exclude,
            analyses=self.analyses,
            log_key_prefix=self.log_key_prefix,
        )

    def state_dict(self) -> dict[str, Any]:
        """The schedule; pending analyses are finished and logged first, so a checkpoint never loses one."""
        if self._trainer is not None:
            self._finish(self._trainer)
        return {"last_step": self._last_step, "num_analyses": self._num_analyses}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._last_step = state_dict["last_step"]
        self._num_analyses = int(state_dict["num_analyses"])

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (``ddp_spawn`` sends callbacks to new processes): threads and queues are made afresh there."""
        state = dict(self.__dict__)
        for key in ("_messages", "_worker", "_trainer"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._messages = queue.SimpleQueue()
        self._worker = AnalysisWorker("rmt-SpectrumMonitor", initializer=one_intra_op_thread)
        self._trainer = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._ledger.reset()
        self._sharded = is_sharded(pl_module, strategy_root(trainer))
        strict = not has_lazy_parameters(pl_module)
        if self._sharded:  # the selection is checked on a gathered stand-in; every rank raises alike
            model, error = snapshot_module(trainer, pl_module), None  # a collective: every rank enters it
            if model is not None:
                try:
                    self._names = parameter_names(model, self._views(model, strict=strict))
                except ValueError as exc:
                    error = str(exc)
            error = trainer.strategy.broadcast(error, src=0)
            if error is not None:
                raise ValueError(error)
        else:
            self._views(pl_module, strict=strict)
        if not trainer.loggers:
            self._warn_once(("no logger",), "SpectrumMonitor: the Trainer has no logger; nothing will be analysed")
        self._emit_warnings()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._maybe_analyse("train_start", trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._maybe_analyse("train_batch_end", trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._maybe_analyse("train_epoch_end", trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(trainer)  # every pending analysis is logged before the loggers finalise

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._finish(trainer)  # what was analysed before the crash is still logged

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._finish(trainer)
        self._worker.close()
        self._trainer = None

    def _finish(self, trainer: pl.Trainer) -> None:
        """Log every pending analysis, then wait (bounded) for the MLflow runs to take what was queued."""
        self._collect(trainer, wait=True)
        if trainer.is_global_zero:
            flush_loggers(trainer.loggers)

    def _maybe_analyse(
        self,
        event: Literal["train_start", "train_batch_end", "train_epoch_end"],
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
    ) -> None:
        self._collect(trainer, wait=False)
        due = is_due(
            event,
            global_step=trainer.global_step,
            epoch=trainer.current_epoch,
            every_n_train_steps=self.every_n_train_steps,
            every_n_epochs=self.every_n_epochs,
            last_step=self._last_step,
        )
        if not due or trainer.sanity_checking:
            return
        if self.overhead_budget is not None:
            defer = self._worker.busy or not self._budget.allows()  # measured on rank zero only
            if self._sharded:  # the other ranks must enter the gather, or skip it, with rank zero
                defer = bool(trainer.strategy.broadcast(defer, src=0))
            if defer:
                self._note_deferred(trainer.global_step)
                return
        self._analyse(trainer, pl_module)

    def _analyse(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step, figures = trainer.global_step, figure_due(self._num_analyses, self.figure_every_n_analyses)
        interval = 0 if self._last_step is None else step - self._last_step
        self._last_step, self._num_analyses = step, self._num_analyses + 1
        if not trainer.loggers:
            return
        if self._sharded:  # FSDP / FSDP2: gathering is a collective every rank enters; rank zero gets CPU copies
            model = snapshot_module(trainer, pl_module, self._names)
            if model is None:
                return
            snapshot = self._views(model, strict=False)
        elif not trainer.is_global_zero:
            return
        else:
            snapshot = snapshot_views(self._views(pl_module, strict=False))
        mlflow = mlflow_loggers(trainer.loggers)
        self._budget.started()

        def job() -> _Report:
            return self._run_analysis(snapshot, mlflow, step=step, interval=interval, figures=figures)

        if self.background:
            self._worker.submit(job)
        else:
            start = time.perf_counter()
            try:
                report, error = job(), None
            except Exception as exc:  # the same contract as the worker: never into training
                report, error = None, exc
            self._deliver(trainer, Finished(report, error, time.perf_counter() - start))

    def _run_analysis(
        self, views: list[MatrixView], mlflow: list[Any], *, step: int, interval: int, figures: bool
    ) -> _Report:
        """The worker's job: analyse the snapshot, then write MLflow's share (network) off the training thread."""
        start = time.perf_counter()
        results = analyze_views(views, analyses=self.analyses, dense_limit=self.dense_limit)
        seconds = time.perf_counter() - start
        metrics = self._metrics(results)
        metrics[metric_key(self.log_key_prefix, "monitor", "analysis_seconds")] = seconds
        metrics[metric_key(self.log_key_prefix, "monitor", "analysis_interval")] = float(interval)
        if mlflow and results:  # a resumed MLflow run that already holds this step (replayed after a crash) is left out
            key = metric_key(self.log_key_prefix, results[0].name, "skipped")
            mlflow = self._ledger.loggers(mlflow, step=step, key=key)
        for logger in mlflow:
            self._write_mlflow(logger, results, metrics, step=step, figures=figures)
        return _Report(step, results, metrics, seconds)

    def _collect(self, trainer: pl.Trainer, *, wait: bool) -> None:
        """Log the analyses that finished (all pending ones when ``wait``), in order, from the training thread."""
        for finished in self._worker.drain() if wait else self._worker.finished():
            self._deliver(trainer, finished)
        self._emit_warnings()

    def _deliver(self, trainer: pl.Trainer, finished: Finished[_Report]) -> None:
        report = finished.value
        if report is None:
            self._warn_once(
                ("analysis", type(finished.error).__name__),
                f"SpectrumMonitor: an analysis failed and was dropped: {finished.error!r}",
            )
            self._emit_warnings()
            return
        self._budget.finished(report.seconds)
        self._report_skips(report.results)
        others = [lg for lg in trainer.loggers if lg not in mlflow_loggers(trainer.loggers)]
        log_to_loggers(others, report.metrics, step=report.step)
        self._emit_warnings()

    def _note_deferred(self, step: int) -> None:
        why = (
            "the previous analysis is still running"
            if self._worker.busy
            else f"an analysis takes {self._budget.last_cost:.3g} s"
        )
        key = metric_key(self.log_key_prefix, "monitor", "analysis_interval")
        self._warn_once(
            ("budget",),
            f"SpectrumMonitor: {why}; to keep analyses within overhead_budget={self.overhead_budget:g} of training "
            f"time the one due at step {step} is deferred: the cadence stretches, and each analysis logs the "
            f"interval it ran at as {key!r} (overhead_budget=None analyses on every due step)",
            info=True,
        )

    def _views(self, pl_module: pl.LightningModule, *, strict: bool) -> list[Any]:
        """The selected matrix views; an empty selection raises when ``strict``, else warns and gives []."""
        try:
            return resolve_views(pl_module, include=self.include, exclude=self.exclude, param_filter=self.param_filter)
        except ValueError as exc:
            if strict:
                raise ValueError(f"SpectrumMonitor: {exc}") from exc
            self._warn_once(("selection",), f"SpectrumMonitor: nothing analysed: {exc}")
            return []

    def _metrics(self, results: Sequence[MatrixResult]) -> dict[str, float]:
        return {metric_key(self.log_key_prefix, r.name, k): v for r in results for k, v in r.metrics.items()}

    def _report_skips(self, results: Sequence[MatrixResult]) -> None:
        for r in results:
            if r.skipped is not None:
                self._warn_once((r.name, _shape_of(r.skipped)), f"SpectrumMonitor: skipping {r.name!r}: {r.skipped}")
            for analysis, reason in r.failures.items():
                key = (r.name, analysis, _shape_of(reason))
                if key not in self._warned:
                    self._warned.add(key)
                    log.info("SpectrumMonitor: %s fit of %r failed: %s", analysis, r.name, reason)

    def _warn_replay(self, message: str) -> None:
        self._warn_once(("replay",), f"SpectrumMonitor: {message}")

    def _warn_once(self, key: tuple[str, ...], message: str, *, info: bool = False) -> None:
        """Queue ``message`` once per ``key`` (from any thread); the training thread emits it."""
        if key not in self._warned:
            self._warned.add(key)
            self._messages.put(("i" if info else "w") + message)

    def _emit_warnings(self) -> None:
        while True:
            try:
                message = self._messages.get_nowait()
            except queue.Empty:
                return
            if message[0] == "i":
                rank_zero_info(message[1:])
            else:
                rank_zero_warn(message[1:], category=RuntimeWarning)

    def _write_mlflow(
        self, logger: Any, results: Sequence[MatrixResult], metrics: dict[str, float], *, step: int, figures: bool
    ) -> None:
        """Queue one analysis into the logger's run (its writer sends it, or spools it while the server is down)."""
        from ..sinks.spool import MlflowWriter  # imports mlflow: only with an MLFlowLogger

        try:
            writer = MlflowWriter.for_logger(logger)
            writer.log_metrics(metrics, step=step)
            write_artifacts(writer, results, step=step, figures=figures)
        except Exception as exc:  # a defect here must not cost the other loggers' numbers or the training
            self._warn_once(("mlflow", type(exc).__name__), f"SpectrumMonitor: writing to MLflow failed: {exc!r}")


@dataclass(frozen=True)
class _Report:
    """One finished analysis: the step it describes, its results and metrics, and its compute time."""

    step: int
    results: list[MatrixResult]
    metrics: dict[str, float]
    seconds: float


def _shape_of(reason: str) -> str:
    """A reason with its numbers blanked, so "3 of 100 entries are NaN" warns once, not at every count."""
    return re.sub(r"\d+", "#", reason)
