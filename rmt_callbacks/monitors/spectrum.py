r"""``SpectrumMonitor``: spectra, spacings and random-matrix fits of the weights, logged while training.

A drop-in Lightning callback. On its cadence it copies the selected weights (detached, float64, no grads, no
random numbers drawn), analyses them with :func:`rmt_callbacks.analysis.analyze_views` (the code path of
:func:`rmt_callbacks.analyze`) and sends the scalars to every logger; with an ``MLFlowLogger`` it also writes raw
spectra, a fit table, figures and a run summary into that logger's run, with a ``TensorBoardLogger`` eigenvalue
histograms and figures into its event file.

.. math::

    \text{key} = \texttt{log\_key\_prefix} \,\Vert\, \text{matrix} \,\Vert\, \texttt{/} \,\Vert\, \text{statistic},
    \qquad \text{step} = \texttt{trainer.global\_step}.

References: arXiv:2412.20496, arXiv:2407.16427; Lightning ``LearningRateMonitor`` / ``DeviceStatsMonitor``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from ..analysis import DEFAULT_ANALYSES, Analysis, resolve_views, validate_analyses
from ..eigensolver import Solver, validate_solver
from ..sinks.lightning import flush_loggers, mlflow_loggers
from ..sinks.tensorboard import tensorboard_loggers
from ..spectral import DENSE_LIMIT, MatrixView
from . import _schedule as schedule
from ._gather import is_sharded, snapshot_module, snapshot_views, strategy_root
from ._identity import Labelled
from ._messages import OnceMessages, deferred_message, late_message, report_skips
from ._recorder import Clock, Recorder, Report
from ._schedule import DEFAULT_OVERHEAD_BUDGET
from ._selection import has_lazy_parameters, parameter_names, validate_filter, validate_patterns
from ._worker import AnalysisWorker, Finished, OverheadBudget, one_intra_op_thread

__all__ = ["DEFAULT_OVERHEAD_BUDGET", "SpectrumMonitor"]


class SpectrumMonitor(Labelled, Callback):
    r"""Log the spectra of weight matrices, their level spacings and random-matrix fits during training.

    Each selected parameter is viewed as matrices ``(..., M, N)`` (``nn.Linear`` as is, ``nn.ConvNd`` one
    matrix per kernel position, ``nn.MultiheadAttention`` in-projection split into ``.q/.k/.v``, a parameter
    ``(E, M, N)`` an ensemble of :math:`E` matrices). Per matrix, with :math:`X = W^\top W / M`, summary
    statistics are averaged over the batch and fits use the eigenvalues pooled over it
    (:mod:`rmt_callbacks.analysis`).

    **When.** Once when training starts (the initial spectrum), then at every due step of the cadence, and once
    more at the end of training on the final weights (unless that step was just analysed), never twice at one
    ``global_step``. An explicit ``every_n_train_steps`` / ``every_n_epochs`` is honoured: every due step is
    copied and analysed; a copy waits while the previous analysis runs, and if one is already waiting (never more
    than one copy of the weights pending), the due step is taken as soon as the worker takes that one, with one
    warning that gives the requested and achieved cadence, the seconds per analysis and what to change. The
    ``overhead_budget`` :math:`f` paces only the default cadence (every 50 steps) unless passed explicitly: an
    analysis then starts only if the previous one is done and took at most :math:`f` of the wall time since it
    started (the first analysis, which pays one-time costs, does not count), else the due step is deferred (said
    once). Every analysis logs the monitor's measured share of training time.

    **Training is not kept waiting.** At an analysis the hook copies the selected weights (on CUDA on a side stream)
    and returns; a background thread analyses the copy, draws the figures and builds MLflow's writes (arrays,
    tables, PNGs), and hands nothing to any sink. Every sink gets its share from the training thread, at its next
    hook, in step order: MLflow's queued into the run's writer (which sends it from its own thread), every other
    logger's logged. Everything pending is delivered before training ends, when a checkpoint is saved and when
    training raises. ``background=False`` analyses in the hook and delivers the same way. Only rank zero analyses
    and logs (under FSDP every rank enters the gather); ``pl_module.log`` is never used; with no logger at all the
    monitor warns once and analyses nothing. A matrix that cannot be analysed (NaN/Inf, fewer than 2 rows or
    columns, not a real float) is skipped, said once per (matrix, reason).
    Matrices with :math:`\min(M, N) \ge` ``dense_limit`` get a stochastic-Lanczos density estimate.

    Logged metrics, at ``step = trainer.global_step`` (``{log_key_prefix}{matrix}/{statistic}``, one chart
    section per matrix):
        * ``lambda_min``, ``lambda_max``, ``lambda_mean``: extreme and mean eigenvalues of :math:`X`;
          ``spectral_norm`` :math:`\sqrt{M \lambda_{\max}}`; ``stable_rank`` :math:`\sum_i \lambda_i/\lambda_{\max}`.
        * ``mean_spacing_ratio``: :math:`\langle r \rangle` of the non-structural levels (GOE 0.5307, Poisson
          0.3863); absent below 16 ratios (pooled over a batch), and for levels below the numerical-rank cut or
          finer than the weights' rounding.
        * ``mp_sigma2``, ``mp_sigma2_std``, ``mp_lambda_minus``, ``mp_lambda_plus``, ``mp_num_spikes``, ``mp_ks``:
          the Marchenko–Pastur fit; ``surmise_beta``, ``surmise_beta_std``, ``surmise_ks``: the Wigner-surmise fit
          of the spacings;
          ``semicircle_center``, ``semicircle_radius``, ``semicircle_ks``: the semicircle fit of
          :math:`(W + W^\top)/2`, square matrices, only with ``"semicircle"`` in ``analyses``.
        * ``rank``, ``rank_loss``, ``spectral_entropy``: numerical rank, :math:`\min(M, N) -` rank, normalised
          entropy of the levels. ``pl_alpha``, ``pl_alpha_std``, ``pl_x_min``, ``pl_n_tail``, ``pl_ks``: the
          power-law fit of the spectrum's tail (heavy-tailed self-regularisation); ``log_norm``,
          ``log_spectral_norm``, ``log_alpha_norm``, ``pl_alpha_weighted``: WeightWatcher's norms
          (:mod:`rmt_callbacks.analysis`). With ``"randomize"`` in ``analyses``: ``rand_traps``, ``rand_ks``,
          ``rand_lambda_max``, from an element-shuffled copy of each matrix.
        * ``{log_key_prefix}{label}/analysis_seconds`` (``rmt/monitor/…`` by default): the wall time of the analysis,
          its figures and artifacts; ``…/analysis_interval``: optimizer steps since the previous analysis (0 for the
          first); ``…/overhead``: the monitor's time (copies in the hook and the analyses) over the training time.

        A failed fit logs nothing; it shows in the fit table and in the run tag ``rmt.failed.<matrix>`` (the
        latest analysis's failures, ``"none"`` when there were none).

    MLflow run (with an ``MLFlowLogger``): tags ``rmt.matrix.<matrix>`` (shape, kind, :math:`q = N/M`),
    ``rmt.method.<matrix>`` (``eigvalsh`` or ``slq``), ``rmt.skipped.<matrix>``, ``rmt.failed.<matrix>``;
    artifacts under ``{log_key_prefix}{label}/`` (``rmt/monitor/`` by default): ``spectra/step_{step:08d}.npz``
    (Gram eigenvalues per matrix; ``spectra/symmetric/…``, ``spectra/density/…`` for symmetric parts and estimated
    densities), ``fits/step_{step:08d}.json`` (one row per matrix), ``figures/{matrix}/step_{step:08d}.png``
    (spectrum with the fitted law, :math:`\lambda_+` and spikes marked, its log-log view, spacings), and at the end
    ``figures/{matrix}/evolution.png`` (the spectrum over training) and ``summary/matrices.json`` (each matrix's last
    values and the model means). TensorBoard: the eigenvalues as a histogram ``{log_key_prefix}{matrix}/eigenvalues``
    per analysis, the figures as images.

    **Several monitors.** Any number can share a Trainer if they differ in an argument that changes what they
    analyse or log (cadence, ``include``, ``exclude``, ``param_filter``, ``analyses``, ``log_key_prefix``,
    ``dense_limit``, ``figure_every_n_analyses``): all of these are in :attr:`state_key`, so each restores its own
    state from a checkpoint. Two that differ in none (in ``background``, ``overhead_budget`` or ``solver`` only:
    the same records, up to rounding) would log the same records twice; Lightning refuses them. The label
    is ``monitor``, ``monitor-2``, … for the first, second, … with the same ``log_key_prefix`` in the callbacks
    (said at setup); per-matrix keys do not carry it: monitors sharing a prefix should not share matrices (warned).

    Args:
        every_n_train_steps: analyse every this many optimizer steps (``trainer.global_step``).
        every_n_epochs: analyse at the end of every this many epochs; exclusive with ``every_n_train_steps``.
            Neither given: every 50 optimizer steps, paced by the overhead budget.
        include: fnmatch patterns on dotted parameter names; ``None``: the default rule of
            :mod:`rmt_callbacks.spectral.selection` (Linear, ConvNd, Embedding, attention q/k/v, each gate of
            RNN/LSTM/GRU layers and cells, parametrized weights as applied, any ``weight`` with 3+ dimensions).
        exclude: fnmatch patterns to leave out.
        param_filter: ``(name, param) -> bool`` selecting parameters, alone or on top of ``include``.
        analyses: a subset of ``["summary", "marchenko_pastur", "semicircle", "spacings", "power_law",
            "randomize"]``; ``None``: all but ``"semicircle"`` and ``"randomize"`` (each a second decomposition).
        log_key_prefix: the metric-key prefix.
        figure_every_n_analyses: per-step figures on analyses number 0, k, 2k, … and the last; ``"auto"``
            (default) chooses k for about 5 figures over the run; ``None`` or 0: none (the end-of-training
            evolution figures are still drawn).
        overhead_budget: the largest fraction of training wall time analyses may take, in ``(0, 1]``;
            ``"auto"`` (default): 0.02 on the default cadence, none on an explicit one; ``None``: none.
        background: analyse on a background thread (default); ``False`` analyses in the hook.
        dense_limit: matrices with :math:`\min(M, N)` at least this are estimated (SLQ), not diagonalised.
        solver: ``"auto"``, ``"torch"`` or ``"scipy"``: the CPU eigensolver (:mod:`rmt_callbacks.eigensolver`).

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

    SECTION, RUN_STATS = "monitor", ("analysis_seconds", "analysis_interval", "overhead")
    cadence_arg = "every_n_train_steps"  # its name where the user sets it (rmt_callbacks.watch: every_n_steps)
    ARTIFACTS = "spectra/, fits/, figures/, summary/"
    IDENTITY: ClassVar[tuple[str, ...]] = ("every_n_train_steps", "every_n_epochs", "include", "exclude")
    IDENTITY += ("param_filter", "analyses", "log_key_prefix", "dense_limit", "figure_every_n_analyses")

    def __init__(
        self,
        every_n_train_steps: int | None = None,
        every_n_epochs: int | None = None,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        param_filter: Callable[[str, torch.Tensor], bool] | None = None,
        analyses: list[Analysis] | None = None,
        log_key_prefix: str = "rmt/",
        figure_every_n_analyses: int | Literal["auto"] | None = "auto",
        overhead_budget: float | Literal["auto"] | None = "auto",
        background: bool = True,
        dense_limit: int = DENSE_LIMIT,
        solver: Solver = "auto",
    ) -> None:
        self._explicit = explicit = every_n_train_steps is not None or every_n_epochs is not None
        self.every_n_train_steps, self.every_n_epochs = schedule.resolve_cadence(every_n_train_steps, every_n_epochs)
        self.include = validate_patterns("include", include, allow_none=True)
        self.exclude = validate_patterns("exclude", [] if exclude is None else exclude, allow_none=False) or ()
        self.param_filter = validate_filter(param_filter)
        self.analyses = DEFAULT_ANALYSES if analyses is None else validate_analyses(analyses)
        if not isinstance(log_key_prefix, str):
            raise TypeError(f"log_key_prefix must be a str, got {type(log_key_prefix).__name__} ({log_key_prefix!r})")
        self.log_key_prefix = log_key_prefix
        self._figure_interval = schedule.figure_interval(figure_every_n_analyses, math.inf)  # validates it
        self.figure_every_n_analyses = figure_every_n_analyses
        self.overhead_budget = overhead_budget
        self._budget = OverheadBudget(schedule.resolve_budget(overhead_budget, explicit_cadence=explicit))
        if not isinstance(background, bool):
            raise TypeError(f"background must be a bool, got {type(background).__name__} ({background!r})")
        self.background, self._num_analyses = background, 0
        schedule.check_count("dense_limit", dense_limit)
        self.dense_limit, self.solver = dense_limit, validate_solver(solver)
        self._last_step: int | None = None
        self._owed: int | None = None  # a due step not analysed yet: two were pending
        self._fresh()
        self._sharded = False  # FSDP / FSDP2 parameters: set at fit start, the same on every rank
        self._names: list[str] | None = None  # under sharding, the selected parameters (read on rank zero)

    def state_dict(self) -> dict[str, Any]:
        """The schedule; pending analyses are finished and logged first, so a checkpoint never loses one (and a
        server that answers holds them, waiting at most ``FLUSH_TIMEOUT_S``, and not at all for one that is away)."""
        if self._trainer is not None:
            self._finish(self._trainer, probe_now=False)
        return {"last_step": self._last_step, "num_analyses": self._num_analyses}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._last_step, self._num_analyses = state_dict["last_step"], int(state_dict["num_analyses"])

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (``ddp_spawn`` sends callbacks to new processes): threads and queues are made afresh there."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_said", "_recorder", "_worker", "_trainer")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._fresh()

    def _fresh(self) -> None:
        """What each process makes afresh: the messages, the recorder, the worker thread; no trainer yet."""
        self._said = OnceMessages()
        analyses, limit, prefix = self.analyses, self.dense_limit, self.log_key_prefix
        self._recorder = Recorder(analyses=analyses, dense_limit=limit, prefix=prefix, label=self.label,
                                  said=self._said, solver=self.solver)  # fmt: skip
        self._worker: AnalysisWorker[Report] = AnalysisWorker("rmt-SpectrumMonitor", initializer=one_intra_op_thread)
        self._trainer: pl.Trainer | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)  # the label, among trainer.callbacks (._identity)
        self._trainer, self._recorder.label = trainer, self.label

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
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
            self._said.once(("no logger",), "SpectrumMonitor: the Trainer has no logger; nothing will be analysed")
        self._said.emit()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._recorder.clock = Clock(start=time.perf_counter())
        self._figure_interval = schedule.figure_interval(self.figure_every_n_analyses, self._expected_analyses(trainer))
        self._maybe_analyse("train_start", trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._maybe_analyse("train_batch_end", trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._maybe_analyse("train_epoch_end", trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._collect(trainer, wait=True)
        if self._owed not in (None, trainer.global_step):  # a due step not taken before training ended: said
            self._warn_late(self._owed, trainer.global_step, self._last_step)
        self._owed = None
        if trainer.loggers and trainer.global_step != self._last_step:  # the final weights, always
            self._analyse(trainer, pl_module, final=True)
        if trainer.is_global_zero and trainer.loggers:
            sinks = mlflow_loggers(trainer.loggers), bool(tensorboard_loggers(trainer.loggers))
            close = partial(self._recorder.close, step=trainer.global_step, per_step=self._figure_interval is not None)
            self._dispatch(trainer, partial(close, *sinks))
        self._finish(trainer)  # every pending analysis is logged before the loggers finalise

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._finish(trainer)  # what was analysed before the crash is still logged

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._finish(trainer)
        self._worker.close()
        self._trainer = None

    def _finish(self, trainer: pl.Trainer, *, probe_now: bool = True) -> None:
        """Log every pending analysis, then wait (bounded) for the MLflow runs to take what was queued."""
        self._collect(trainer, wait=True)
        if trainer.is_global_zero:
            flush_loggers(trainer.loggers, probe_now=probe_now)

    def _expected_analyses(self, trainer: pl.Trainer) -> float:
        try:  # Lightning's estimate from max_steps / max_epochs; only sizes the figure interval
            total = float(trainer.estimated_stepping_batches)
        except Exception:  # an odd set-up must not break training over an estimate
            total = math.inf
        cadence = {"every_n_train_steps": self.every_n_train_steps, "every_n_epochs": self.every_n_epochs}
        return schedule.expected_analyses(total_steps=total, max_epochs=trainer.max_epochs, **cadence)

    def _maybe_analyse(
        self, event: Literal["train_start", "train_batch_end", "train_epoch_end"], trainer: pl.Trainer, pl_module: Any
    ) -> None:
        self._collect(trainer, wait=False)
        step, last = trainer.global_step, self._last_step
        cadence = {"every_n_train_steps": self.every_n_train_steps, "every_n_epochs": self.every_n_epochs}
        due = schedule.is_due(event, global_step=step, epoch=trainer.current_epoch, last_step=last, **cadence)
        if trainer.sanity_checking or not (due or (self._owed is not None and step != last)):
            return
        paced = self._budget.fraction is not None  # paced: one analysis at a time, within budget
        defer = self.background and (self._worker.busy if paced else self._worker.waiting)  # rank zero's view
        if paced:
            defer = defer or not self._budget.allows()
        if self._sharded:  # the other ranks must enter the gather, or skip it, with rank zero
            defer = bool(trainer.strategy.broadcast(defer, src=0))
        if defer and paced:
            self._note_deferred(step)
        elif defer:
            self._owed = step if self._owed is None else self._owed
        else:
            late, self._owed = self._owed, None
            if late is not None and trainer.is_global_zero:
                self._warn_late(late, step, last)
            self._analyse(trainer, pl_module)

    def _analyse(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *, final: bool = False) -> None:
        step, every = trainer.global_step, self._figure_interval  # figures on the interval and, unless off, at the end
        figures = every is not None and (final or schedule.figure_due(self._num_analyses, every))
        interval = 0 if self._last_step is None else step - self._last_step
        self._last_step, self._num_analyses = step, self._num_analyses + 1
        if not trainer.loggers:
            return
        start = time.perf_counter()
        if self._sharded:  # FSDP / FSDP2: gathering is a collective every rank enters; rank zero gets CPU copies
            model = snapshot_module(trainer, pl_module, self._names)
            if model is None:
                return
            snapshot = self._views(model, strict=False)
        elif not trainer.is_global_zero:
            return
        else:
            snapshot = snapshot_views(self._views(pl_module, strict=False))
        sinks = mlflow_loggers(trainer.loggers), bool(tensorboard_loggers(trainer.loggers))
        self._budget.started()
        self._recorder.clock.hook += time.perf_counter() - start
        job = partial(self._run_analysis, snapshot, *sinks, step=step, interval=interval, figures=figures)
        self._dispatch(trainer, job)

    def _dispatch(self, trainer: pl.Trainer, job: Callable[[], Report]) -> None:
        if self.background:
            self._worker.submit(job)
            return
        start = time.perf_counter()
        try:
            report, error = job(), None
        except Exception as exc:  # the same contract as the worker: never into training
            report, error = None, exc
        self._deliver(trainer, Finished(report, error, time.perf_counter() - start))

    def _run_analysis(self, views: list[MatrixView], mlflow: list[Any], pixels: bool, **kwargs: Any) -> Report:
        return self._recorder.analyse(views, mlflow, pixels, **kwargs)  # on the worker (see Recorder.analyse)

    def _collect(self, trainer: pl.Trainer, *, wait: bool) -> None:
        """Log the analyses that finished (all pending ones when ``wait``), in order, from the training thread."""
        for finished in self._worker.drain() if wait else self._worker.finished():
            self._deliver(trainer, finished)
        self._said.emit()

    def _deliver(self, trainer: pl.Trainer, finished: Finished[Report]) -> None:
        report = finished.value
        if report is None:
            why = f"SpectrumMonitor: an analysis failed and was dropped: {finished.error!r}"
            self._said.once(("analysis", type(finished.error).__name__), why)
            self._said.emit()
            return
        self._budget.finished(finished.seconds)  # analysis, figures and artifacts: the whole job
        report_skips(self._said, report.results)
        self._recorder.deliver(report, trainer.loggers)  # every sink, MLflow's writer queue included
        self._said.emit()

    def _warn_late(self, due: int, step: int, previous: int | None) -> None:
        keys = self.run_key("analysis_interval"), self.run_key("overhead")
        asked = f"{self.cadence_arg}={self.every_n_train_steps}"
        asked = f"every_n_epochs={self.every_n_epochs}" if self.every_n_epochs else asked
        said = late_message(asked, cost=self._budget.last_cost, due=due, step=step, previous=previous, keys=keys)
        self._said.once(("late",), said)

    def _note_deferred(self, step: int) -> None:
        why = f"an analysis takes {self._budget.last_cost:.3g} s"
        why = "the previous analysis is still running" if self._worker.busy else why
        key, fraction, explicit = self.run_key("analysis_interval"), self._budget.fraction or 0.0, self._explicit
        said = deferred_message(why, fraction=fraction, step=step, key=key, explicit=explicit, cadence=self.cadence_arg)
        self._said.once(("budget",), said, info=not self._explicit)  # a cadence asked for and not kept: a warning

    def _views(self, model: torch.nn.Module, *, strict: bool) -> list[MatrixView]:
        """The selected matrix views; an empty selection raises when ``strict``, else warns and gives []."""
        try:
            return resolve_views(model, include=self.include, exclude=self.exclude, param_filter=self.param_filter)
        except ValueError as exc:
            if strict:
                raise ValueError(f"SpectrumMonitor: {exc}") from exc
            self._said.once(("selection",), f"SpectrumMonitor: nothing analysed: {exc}")
            return []
