r"""``rmt_callbacks.watch``: the monitors in a plain PyTorch loop, logging to MLflow or to a function.

.. code-block:: python

    with rmt_callbacks.watch(model, optimizer, every_n_steps=50, batch_size=32) as watcher:
        for x, y in loader:
            loss_fn(model(x), y).backward()
            optimizer.step()
            optimizer.zero_grad()
            watcher.step()          # after each optimizer step (before or after scheduler.step(): α is read
                                    # by a pre-hook on the optimizer, at the update itself)

The watcher runs the very :class:`~rmt_callbacks.SpectrumMonitor` and :class:`~rmt_callbacks.DysonMonitor` a
Lightning ``Trainer`` runs, driven through their hooks with a :class:`~._host.LoopHost` in place of the Trainer:
the same cadence, background analysis, pacing, keys, values and MLflow artifacts (``tests/integrations`` compares
the three stacks record for record). Where it logs (:func:`resolve_sinks`): the run ``run_id``; else the active
MLflow run (``mlflow.start_run()``), unless ``tracking_uri`` names another store or ``experiment`` is given; else a
new run in ``experiment`` on ``tracking_uri`` (or MLflow's current one, ``sqlite:///mlflow.db`` by default), which
:meth:`Watcher.close` ends; and ``log(metrics, step)`` too when given (with ``log`` alone and no active run, no
MLflow at all).

A watcher that is never closed is closed at interpreter exit: the final weights are analysed and every pending
analysis is logged, with a warning that says so; what cannot be delivered then is said to be lost.
"""

from __future__ import annotations

import atexit
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, cast

import torch
from torch import nn

from ..monitors.dyson import DysonMonitor
from ..sinks.callable import CallableLogger, MetricsFn
from ._build import build_monitors, check_selection, unwrap_model, unwrap_optimizer
from ._host import LoopHost, LoopStrategy, world

__all__ = ["Watcher", "build_monitors", "resolve_sinks", "watch"]

_OPEN: weakref.WeakSet[Watcher] = weakref.WeakSet()  # the watchers not closed yet, in this process


@contextmanager
def uri_kept() -> Iterator[None]:
    """Lightning's ``MLFlowLogger`` points mlflow's process-wide tracking URI at its store whenever it touches its
    run; put the user's back (their active run, their later ``mlflow`` calls)."""
    import mlflow

    current = mlflow.get_tracking_uri()
    try:
        yield
    finally:
        mlflow.set_tracking_uri(current)


def resolve_sinks(
    *,
    tracking_uri: str | None,
    run_id: str | None,
    experiment: str | None,
    log: MetricsFn | None,
    rank: int,
    create: bool = True,
) -> tuple[list[Any], Any, str]:
    """Where the records go (module docstring): ``(loggers, the logger of a run this watcher created or None, what
    was chosen in words)``; with ``create=False`` no run is created (no MLflow when none is active). Other ranks
    than zero get a no-op logger: only rank zero analyses."""
    from lightning.pytorch.loggers import MLFlowLogger
    from lightning.pytorch.loggers.logger import DummyLogger

    if rank != 0:
        return [DummyLogger()], None, ""
    loggers: list[Any] = [] if log is None else [CallableLogger(log)]
    import mlflow

    current = mlflow.get_tracking_uri()
    uri, active = tracking_uri or current, mlflow.active_run()
    if run_id is not None:
        return [MLFlowLogger(tracking_uri=uri, run_id=run_id), *loggers], None, f"MLflow run {run_id} on {uri}"
    if active is not None and uri == current and experiment is None:
        said = f"the active MLflow run {active.info.run_id} on {uri}"
        return [MLFlowLogger(tracking_uri=uri, run_id=active.info.run_id), *loggers], None, said
    if not create or (log is not None and tracking_uri is None and experiment is None):
        return loggers, None, "log(metrics, step) only (no active MLflow run, no tracking_uri)"
    created = MLFlowLogger(experiment_name=experiment or "Default", tracking_uri=uri)
    with uri_kept():
        made = created.run_id  # creates the run
    said = f"a new MLflow run {made} in experiment {experiment or 'Default'!r} on {uri}"
    return [created, *loggers], created, said


class Watcher:
    """The monitors of one model in a loop without Lightning; made by :func:`watch` (see there)."""

    def __init__(
        self,
        model: nn.Module,
        optimizers: Any,
        monitors: Sequence[Any],
        *,
        accumulation: int = 1,
        dataloader: Any = None,
        max_steps: int | None = None,
        replicas: int | None = None,
        start_step: int = 0,
        sinks: tuple[list[Any], Any, str] | None = None,
        tracking_uri: str | None = None,
        run_id: str | None = None,
        experiment: str | None = None,
        log: MetricsFn | None = None,
    ) -> None:
        self.model = unwrap_model(model)
        optimizers = [optimizers] if not isinstance(optimizers, (list, tuple)) else list(optimizers)
        self.optimizers = [unwrap_optimizer(o) for o in optimizers]
        rank, size = world()
        if isinstance(accumulation, bool) or not isinstance(accumulation, int) or accumulation < 1:
            raise ValueError(f"accumulation must be an int >= 1, got {accumulation!r}")
        self.monitors, self._closed = list(monitors), False
        self._handles: list[Any] = []
        check_selection(self.model, self.monitors)  # before a run is made for records there will not be
        if sinks is None:
            sinks = resolve_sinks(tracking_uri=tracking_uri, run_id=run_id, experiment=experiment, log=log, rank=rank)
        loggers, self._owned, self.destination = sinks
        strategy = LoopStrategy(replicas=size if replicas is None else replicas, model=self.model)
        self.host = LoopHost(
            self.optimizers, loggers, list(monitors), accumulation, dataloader, max_steps, rank, strategy, start_step
        )
        self._start, self._updates = start_step, 0  # updates: to tell a loop that never calls step()
        try:
            self._check_peers()
            self._begin()
        except BaseException:
            self._abandon()
            raise
        _OPEN.add(self)
        from ..sinks import spool  # noqa: F401  its exit hook (closing the run writers) must run after ours

        atexit.register(self._at_exit)
        self._step_fns = [m.on_train_batch_end for m in self.monitors]

    def _begin(self) -> None:
        trainer = cast(Any, self.host)
        for monitor in self.monitors:
            monitor.setup(trainer, self.model, "fit")
        for monitor in self.monitors:
            monitor.on_fit_start(trainer, self.model)
        for monitor in self.monitors:
            if isinstance(monitor, DysonMonitor):  # α of each update, read at the update (schedulers included)
                self._handles += [o.register_step_pre_hook(self._before_update(monitor)) for o in self.optimizers]
        self._handles += [o.register_step_post_hook(self._counted) for o in self.optimizers]
        for monitor in self.monitors:
            monitor.on_train_start(trainer, self.model)  # the initial spectrum

    def _abandon(self) -> None:
        """Undo a watcher that failed to start: no hooks left on the optimizers, no worker, no empty run."""
        self._closed = True
        for handle in self._handles:
            handle.remove()
        for monitor in self.monitors:
            try:
                monitor.teardown(cast(Any, self.host), self.model, "fit")
            except Exception:
                pass
        if self._owned is not None:
            try:
                with uri_kept():
                    self._owned.experiment.delete_run(self._owned.run_id)
            except Exception:
                pass

    def _check_peers(self) -> None:
        """Two open watchers writing one run under one key prefix would overwrite each other's records."""
        run, prefix = self.run_id, self.monitors[0].log_key_prefix
        for other in list(_OPEN):
            if run is not None and other.run_id == run and other.monitors[0].log_key_prefix == prefix:
                raise ValueError(
                    f"watch: another open watcher already logs into MLflow run {run} under log_key_prefix="
                    f"{prefix!r}; the two models' records would share keys and artifacts. Give each watcher its own "
                    f"prefix (e.g. log_key_prefix={prefix + 'b/'!r}), or its own run."
                )

    @property
    def global_step(self) -> int:
        """Optimizer steps counted so far (:meth:`step`)."""
        return self.host.global_step

    @property
    def run_id(self) -> str | None:
        """The MLflow run the records go to, if any."""
        from lightning.pytorch.loggers import MLFlowLogger

        # the id each logger was made with or made (reading .run_id would repoint mlflow's process-wide URI)
        return next((lg._run_id for lg in self.host.loggers if isinstance(lg, MLFlowLogger)), None)

    def _before_update(self, monitor: DysonMonitor) -> Callable[..., None]:
        def hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            if not self._closed:
                monitor.on_before_optimizer_step(cast(Any, self.host), cast(Any, self.model), optimizer)

        return hook

    def _counted(self, *args: Any) -> None:
        self._updates += 1

    def step(self, global_step: int | None = None) -> None:
        """Count one optimizer step (or set the count to ``global_step``), and analyse if one is due."""
        if self._closed:
            warnings.warn("watch: step() after close(); nothing more is recorded", RuntimeWarning, stacklevel=2)
            return
        self.host.global_step = self.host.global_step + 1 if global_step is None else int(global_step)
        for on_step in self._step_fns:
            on_step(cast(Any, self.host), self.model, None, None, 0)

    def close(self) -> None:
        """Analyse the final weights (unless that step was just analysed), log everything pending and wait (bounded)
        for MLflow to take it; end the run if this watcher created it. Idempotent."""
        self._end(None)

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> None:
        self._end(error)

    def _end(self, error: BaseException | None) -> None:
        if self._closed:
            return
        self._closed = True
        _OPEN.discard(self)
        atexit.unregister(self._at_exit)
        for handle in self._handles:
            handle.remove()
        if error is None and self._updates and self.host.global_step == self._start:
            warnings.warn(
                f"watch: the optimizer stepped {self._updates} times but watcher.step() was never called, so only the "
                f"weights at step {self._start} were analysed (the trained ones were not). Call watcher.step() after "
                "each optimizer.step().",
                RuntimeWarning,
                stacklevel=3,
            )
        trainer, failure = cast(Any, self.host), None
        ends = [partial(m.on_train_end, trainer, self.model) for m in self.monitors]
        if error is not None:  # what was analysed before the error is still logged
            ends = [partial(m.on_exception, trainer, self.model, error) for m in self.monitors]
        ends += [partial(m.teardown, trainer, self.model, "fit") for m in self.monitors]  # stops the worker threads
        for end in ends:  # each runs, whatever the one before did: a worker left running aborts the interpreter
            try:
                end()
            except Exception as exc:
                failure = failure or exc
        if self._owned is not None:
            with uri_kept():
                self._owned.finalize("success" if error is None and failure is None else "failed")
        if failure is not None:
            raise failure

    def _at_exit(self) -> None:
        step = self.host.global_step
        warnings.warn(
            f"watch: the watcher logging to {self.destination or 'its sinks'} was never closed; at exit, analysing "
            f"the final weights (step {step}) and logging every pending analysis. Call watcher.close() after "
            "training, or use `with rmt_callbacks.watch(...) as watcher:`.",
            RuntimeWarning,
            stacklevel=1,
        )
        try:
            self.close()
        except Exception as exc:  # at exit nothing can be retried: say what is lost
            warnings.warn(
                f"watch: the analyses pending at exit (up to step {step}) are lost: {exc!r}",
                RuntimeWarning,
                stacklevel=1,
            )


def watch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
    every_n_steps: int | None = None,
    *,
    dyson: bool | dict[str, Any] = True,
    batch_size: int | None = None,
    accumulation: int = 1,
    dataloader: Any = None,
    max_steps: int | None = None,
    tracking_uri: str | None = None,
    run_id: str | None = None,
    experiment: str | None = None,
    log: MetricsFn | None = None,
    **options: Any,
) -> Watcher:
    r"""Watch ``model``'s weight matrices in a plain training loop: spectra, fits and Dyson Brownian motion.

    Call :meth:`Watcher.step` after each optimizer step and :meth:`Watcher.close` at the end (or use the watcher as
    a context manager). The records are those of :class:`~rmt_callbacks.SpectrumMonitor` (analysed at the start,
    every ``every_n_steps`` steps and on the final weights) and :class:`~rmt_callbacks.DysonMonitor`, under the same
    keys, at ``step`` = optimizer steps counted.

    Args:
        model: the module trained (``DistributedDataParallel`` is unwrapped; only rank zero analyses).
        optimizer: its optimizer, or several (each matrix's :math:`\alpha` is that of the group that trains it).
        every_n_steps: analyse every this many optimizer steps; ``None``: every 50, within
            ``overhead_budget`` (SpectrumMonitor's ``every_n_train_steps``).
        dyson: also run a DysonMonitor (``True``), or not (``False``), or one with these arguments (a dict).
        batch_size: the per-device batch size, a factor of the noise temperature :math:`\alpha/|B|`;
            or ``dataloader`` (its ``batch_size`` is read). :math:`|B|` = batch × ``accumulation`` × world size.
        accumulation: micro-batches per optimizer step (gradient accumulation).
        max_steps: the run's length, if known (spaces the per-step figures, about 5 a run).
        tracking_uri, run_id, experiment: where in MLflow (module docstring); ``log``: ``log(metrics, step)``.
        options: any other SpectrumMonitor argument (``include``, ``exclude``, ``param_filter``, ``analyses``,
            ``log_key_prefix``, ``solver``, …); the selection, prefix and solver apply to the DysonMonitor too.

    Returns:
        The :class:`Watcher`; it has analysed the initial weights (step 0) already.

    Raises:
        ValueError, TypeError: a bad argument, a sharded model, or a selection that matches no matrix.

    Example:
        >>> net, seen = torch.nn.Linear(64, 32), []
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
        >>> with watch(net, opt, every_n_steps=2, batch_size=8, log=lambda m, s: seen.append(s)) as w:
        ...     for _ in range(4):
        ...         net(torch.randn(8, 64)).square().mean().backward(); opt.step(); opt.zero_grad(); w.step()
        >>> sorted(set(seen))
        [0, 2, 4]
    """
    monitors = build_monitors(every_n_steps, dyson, batch_size, **options)
    return Watcher(
        model,
        optimizer,
        monitors,
        accumulation=accumulation,
        dataloader=dataloader,
        max_steps=max_steps,
        tracking_uri=tracking_uri,
        run_id=run_id,
        experiment=experiment,
        log=log,
    )
