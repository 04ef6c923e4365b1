r"""``DysonMonitor``: the noise temperature :math:`\alpha/|B|` of SGD and the eigenvalue fluctuations it drives.

SGD moves eigenvalues like Dyson Brownian motion with diffusion coefficient :math:`D \propto \alpha/|B|`; widths
scale as :math:`\sqrt{\alpha/|B|}` (arXiv:2412.20496; docs/science.md, E4, E10). The monitor logs, per selected
matrix, the fluctuation width and diffusion of its levels in units of their spacing, raw and divided by the
temperature of the parameter group that trains it (the *normalised* curves: equal at equal :math:`\alpha/|B|`).
Statistics: :mod:`rmt_callbacks.dynamics.window`; rates and Langevin clocks: :mod:`._rates`; |B|: :mod:`._batch`.

References: arXiv:2412.20496, arXiv:2407.16427, arXiv:1710.06451.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from ..analysis import resolve_views, skip_reason
from ..dynamics import normalized, window_statistics
from ..eigensolver import Solver, validate_solver
from ..sinks.keys import metric_key
from ..sinks.lightning import flush_loggers, log_to_loggers
from ..spectral import nonstructural_levels
from ..spectral.stacks import stacked_levels
from . import _batch as batches
from . import _schedule as schedule
from ._gather import is_sharded, snapshot_module, strategy_root
from ._identity import Labelled
from ._messages import OnceMessages, dyson_message, shape_of
from ._rates import Clocks, GroupKey, Snapshot, group_index, sole_group, temperature_notes
from ._selection import has_lazy_parameters, parameters_behind, validate_filter, validate_patterns
from ._worker import StrideBudget

__all__ = ["DysonMonitor"]

RUN_WIDE = {"lr": "lr", "temperature": "noise_temperature"}  # run-level rate keys when one group trains all


class DysonMonitor(Labelled, Callback):
    r"""Log eigenvalue fluctuations of the weights and the SGD noise temperature :math:`T = \alpha/|B|` behind them.

    **Snapshots.** After every ``every_n_train_steps``-th optimizer step (never twice at one ``global_step``: under
    gradient accumulation several batches end at one step) the monitor records, per selected matrix, the ascending
    Gram levels of :math:`W^\top W/M` without the :math:`N-M` structural zeros of a wide matrix, stamped with the
    *Langevin time* of the parameter group that trains it: the sum of its effective learning rates so far. The
    last ``window`` snapshots form the window; every ``log_every_n_steps`` steps, and at the end of training, it
    logs at ``step = trainer.global_step``:

    Logged metrics (``{p}`` is ``log_key_prefix``, ``{m}`` the matrix; definitions in
    :mod:`rmt_callbacks.dynamics.window`, all averaged over levels):
        * ``{p}{m}/dyson_width``: std over the window (3+ snapshots) of each level about its straight-line drift, in
          units of the mean level spacing :math:`\bar\Delta` (range of the time-averaged levels over :math:`n-1`);
          ``{p}{m}/dyson_level_spacing``: :math:`\bar\Delta` itself (width × spacing is the width in eigenvalue units).
        * ``{p}{m}/dyson_diffusion``: :math:`D = \mathrm{Var}(\Delta\lambda/\sqrt{\delta t})/(2\bar\Delta^2)`, the
          diffusion coefficient per unit Langevin time, in squared spacings (from 3 snapshots).
        * ``{p}{m}/dyson_ensemble_width``: for an ensemble parameter ``(E, M, N)`` (the reference models), the std
          across the :math:`E` networks at the last snapshot, in spacings: the stationary width the papers measure.
          Convolution kernels are not ensembles and get none.
        * ``…_normalized``: widths divided by :math:`\sqrt{T}`, the diffusion by :math:`T`, :math:`T` that of the
          matrix's parameter group; equal across runs at equal :math:`\alpha/|B|` (widths: over windows of equal
          Langevin time, ``every_n_train_steps`` :math:`\propto 1/\alpha`).
        * ``{p}dyson/lr``, ``{p}dyson/noise_temperature``: :math:`\alpha` of the update just taken and :math:`T`,
          when one parameter group trains every selected matrix; otherwise per matrix, ``{p}{m}/dyson_lr`` and
          ``{p}{m}/dyson_temperature``. ``{p}dyson/batch_size``: the global :math:`|B|`; ``{p}dyson/stride``;
          ``{p}dyson/window``: snapshots in the window (below ``window`` while it fills, estimates are rougher).
          ``dyson`` is the monitor's label: ``dyson-2``, ``dyson-3``, … for the second, third, … DysonMonitor with
          the same ``log_key_prefix`` in the Trainer (said at setup).

    **Temperature.** :math:`\alpha` is the learning rate of the parameter group holding the matrix (any number of
    optimizers and groups), read just before each update (schedulers included); ``lr`` overrides it. :math:`|B|`
    is global: the per-device batch (``batch_size``, else the training DataLoader's ``batch_size``, else
    ``hparams.batch_size``, else, warned once, the leading dimension of a batch's first tensor) × the Trainer's
    ``accumulate_grad_batches`` × the data-parallel world size; how it was made up is said once. Plain SGD:
    :math:`T = \alpha/|B|`. SGD with momentum :math:`\mu` (and dampening :math:`d`): :math:`T =
    \alpha(1-d)/((1-\mu)|B|)` and time advances by :math:`\alpha(1-d)/(1-\mu)` per update (arXiv:1710.06451;
    docs/science.md, E31). Other optimizers (Adam, RMSprop, …) have no such temperature: said once, and only the
    raw widths and diffusion are logged (time advances by :math:`\alpha`). A jump of :math:`T` by more than
    ``jump_tolerance`` (relative) is warned about once, with the learning rate the linear scaling rule suggests.

    **Cost.** Snapshots decompose in the hook. When one costs more than ``overhead_budget`` :math:`f` of the
    training time since the previous one, the stride doubles (to the smallest power of two that fits, the cheaper
    of the last two snapshots counting) and the window is thinned; ``"auto"`` paces the default every-step stride
    only, never a stride you chose; each change is said once and logged.

    Conventions shared with :class:`~rmt_callbacks.SpectrumMonitor`: ``include`` / ``exclude`` / ``param_filter``;
    a selection matching nothing raises at fit start (lazy parameters wait for their first forward); no logger:
    warned once, nothing computed; only rank zero logs; a matrix that cannot be analysed, or that no optimizer
    updates, is skipped with one message per reason; the window is in ``state_dict`` (a resumed run continues, and
    replayed steps are not logged twice into an MLflow run); a run that ends before its window filled says so. Any
    number of DysonMonitors can share a Trainer if they differ in cadence, ``window``, selection, ``lr``,
    ``batch_size`` or ``log_key_prefix`` (all in :attr:`state_key`); two with identical ones are refused by
    Lightning, as they would log the same records twice.

    Args:
        every_n_train_steps: a snapshot every this many optimizer steps (an int >= 1).
        log_every_n_steps: log the estimates every this many optimizer steps, and at the end of training.
        window: number of snapshots kept (an int >= 3).
        include, exclude, param_filter: the parameter selection of :class:`~rmt_callbacks.SpectrumMonitor`.
        lr: fixed learning rate :math:`\alpha` for every matrix (``None``: read from the optimizers).
        batch_size: fixed per-device batch size (``None``: read as above). If you accumulate gradients by hand in
            manual optimization, pass the per-device batch times your accumulation.
        log_key_prefix: metric-key prefix.
        jump_tolerance: relative change of :math:`T` that counts as a jump.
        overhead_budget: ``"auto"``, ``None`` or the largest fraction of training time snapshots may take, in
            ``(0, 1]``; ``"auto"`` is 0.02 with ``every_n_train_steps=1`` and no pacing otherwise.
        solver: ``"auto"``, ``"torch"`` or ``"scipy"``: the CPU eigensolver (:mod:`rmt_callbacks.eigensolver`). Not
            in :attr:`state_key`, like ``overhead_budget``: it moves the levels only by rounding.

    Raises:
        ValueError, TypeError: a bad argument (in ``__init__``); at fit start, a selection matching no matrix.

    Example:
        >>> try:
        ...     DysonMonitor(every_n_train_steps=None)
        ... except ValueError as err:  # a TypeError too: None is not an int
        ...     print(err)
        every_n_train_steps must be an int >= 1, got None
    """

    SECTION, RUN_STATS = "dyson", ("stride", "window", "batch_size", "lr", "noise_temperature")
    batch_hint = "DysonMonitor(batch_size=...)"  # how to give |B|, in the words of the stack that runs the monitor
    batch_words = ("batch_size=", "accumulate_grad_batches")  # and what it calls the batch size and accumulation
    arg_style = "{}"  # how its own arguments are written where the user sets them (watch(): "dyson={{'{}': ...}}")
    IDENTITY: ClassVar[tuple[str, ...]] = ("every_n_train_steps", "log_every_n_steps", "window", "include")
    IDENTITY += ("exclude", "param_filter", "lr", "batch_size", "log_key_prefix")

    def __init__(
        self,
        every_n_train_steps: int = 1,
        log_every_n_steps: int = 50,
        window: int = 100,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        param_filter: Callable[[str, torch.Tensor], bool] | None = None,
        lr: float | None = None,
        batch_size: int | None = None,
        log_key_prefix: str = "rmt/",
        jump_tolerance: float = 0.01,
        overhead_budget: float | Literal["auto"] | None = "auto",
        solver: Solver = "auto",
    ) -> None:
        self.every_n_train_steps = schedule.check_int("every_n_train_steps", every_n_train_steps)
        self.log_every_n_steps = schedule.check_int("log_every_n_steps", log_every_n_steps)
        self.window = schedule.check_int("window", window, low=3)  # a width about a straight line needs 3 points
        self.lr = schedule.check_positive("lr", lr, allow_none=True)
        self.batch_size = None if batch_size is None else schedule.check_int("batch_size", batch_size)
        if not isinstance(log_key_prefix, str):
            raise TypeError(f"log_key_prefix must be a str, got {type(log_key_prefix).__name__}")
        schedule.check_positive("jump_tolerance", jump_tolerance)
        # "auto": the budget may stretch the default every-step stride, never a stride chosen by the user
        budget = schedule.resolve_budget(overhead_budget, explicit_cadence=every_n_train_steps != 1)
        self.include = validate_patterns("include", include, allow_none=True)
        self.exclude = validate_patterns("exclude", [] if exclude is None else exclude, allow_none=False) or ()
        self.param_filter = validate_filter(param_filter)
        self.log_key_prefix, self.solver = log_key_prefix, validate_solver(solver)
        self.jump_tolerance, self.overhead_budget = float(jump_tolerance), overhead_budget
        self._budget, self._explicit_budget = StrideBudget(budget), overhead_budget != "auto"
        self._stride = self.every_n_train_steps
        self._snapshots: dict[str, deque[Snapshot]] = {}
        self._groups: dict[str, GroupKey] = {}  # matrix -> the parameter group that trains it
        self._ensembles: set[str] = set()
        self._clocks = Clocks()
        self._temperatures: dict[GroupKey, tuple[float, float, int]] = {}  # last (T, lr, |B|) per group
        self._guess: int | None = None  # |B| from a batch's shape, the last resort
        self._said = OnceMessages()
        self._sharded = self._active = False
        self._seen_step: int | None = None  # the last global_step handled (accumulation ends batches at one step)
        self._logged_step: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": 2,
            "snapshots": {k: [tuple(s) for s in v] for k, v in self._snapshots.items()},
            "groups": dict(self._groups),
            "clocks": self._clocks.state_dict(),
            "stride": self._stride,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("version") != 2:  # a window without Langevin times: start afresh
            self._said.once(("old state",), dyson_message("old_state"))
            return
        self._snapshots = {
            k: deque((Snapshot(*s) for s in v), maxlen=self.window) for k, v in state_dict["snapshots"].items()
        }
        self._groups = {k: tuple(v) for k, v in state_dict["groups"].items()}
        self._clocks.load_state_dict(state_dict["clocks"])
        self._stride = int(state_dict["stride"])

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_said"}  # ddp_spawn pickles callbacks

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._said = OnceMessages()

    # -- hooks ---------------------------------------------------------------------------------------------------

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._budget.reset()
        self._logged_step = self._guess = None  # the last fit's batches say nothing of this one's
        self._active = bool(trainer.loggers)
        self._sharded = is_sharded(pl_module, strategy_root(trainer))
        model = snapshot_module(trainer, pl_module) if self._sharded else pl_module  # a collective when sharded
        error = None
        if model is not None and not has_lazy_parameters(model):
            try:
                self._resolve(model)
            except ValueError as exc:
                error = f"DysonMonitor: {exc}"
        if self._sharded:  # rank zero's verdict, raised on every rank alike
            error = trainer.strategy.broadcast(error, src=0)
        if error is not None:
            raise ValueError(error)
        if not self._active:
            self._said.once(("no logger",), dyson_message("no_logger"))
        self._said.emit()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step = self._seen_step = trainer.global_step
        self._temperatures.clear()  # a new fit: no jump from the last one
        if step == 0 or any(s.step > step for b in self._snapshots.values() for s in b):  # not this run's window
            self._snapshots, self._groups, self._clocks, self._stride = {}, {}, Clocks(), self.every_n_train_steps

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, *args: Any) -> None:
        if self._active and self._guess is None and self.batch_size is None:
            self._guess = batches.batch_size_of(batch)  # kept only for the last resort, warned when used

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self._active and not trainer.sanity_checking:
            index = next((i for i, o in enumerate(trainer.optimizers) if o is optimizer), 0)
            self._clocks.stepped(index, optimizer, trainer.global_step, self.lr)  # the update about to be taken

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        step, previous = trainer.global_step, self._seen_step
        if not self._active or trainer.sanity_checking or previous is None or step == previous:
            return  # no optimizer step since the last call: one snapshot, one log per step
        self._seen_step = step
        due = step // self._stride > previous // self._stride
        source: torch.nn.Module | None = pl_module
        if due and self._sharded:  # every rank enters the gather
            source = snapshot_module(trainer, pl_module)
        if trainer.is_global_zero and source is not None:
            batch = self._global_batch(trainer, pl_module)
            self._check_jumps(trainer, batch)
            if due:
                start = time.perf_counter()
                self._record(source, pl_module, trainer)
                self._pace(step, start)
            if step // self.log_every_n_steps > previous // self.log_every_n_steps:
                self._log(trainer, batch)
        if due and self._sharded:  # rank zero's stride, on every rank: they gather on the same steps
            self._stride = trainer.strategy.broadcast(self._stride, src=0)
        self._said.emit()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not (self._active and trainer.is_global_zero):
            return
        filled = max((len(b) for b in self._snapshots.values()), default=0)
        if trainer.global_step not in (0, self._logged_step) and filled >= 2:  # the final window (and its spacing)
            self._log(trainer, self._global_batch(trainer, pl_module))
        if filled < self.window:
            what = "the estimates use those" if filled >= 3 else "no width nor diffusion was logged (they need 3)"
            step, style = trainer.global_step, self.arg_style
            said = dyson_message("short", step=step, filled=filled, window=self.window, what=what, style=style)
            self._said.once(("short",), said)
        self._said.emit()
        flush_loggers(trainer.loggers)  # the MLflow runs hold every logged step when training returns

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: Any) -> None:
        if self._active and trainer.is_global_zero:  # the run holds what was logged (bounded; no wait if away)
            flush_loggers(trainer.loggers, probe_now=False)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if trainer.is_global_zero:
            flush_loggers(trainer.loggers)

    # -- what is recorded ----------------------------------------------------------------------------------------

    def _resolve(self, model: torch.nn.Module) -> list[Any]:
        return resolve_views(model, include=self.include, exclude=self.exclude, param_filter=self.param_filter)

    def _record(self, source: torch.nn.Module, pl_module: torch.nn.Module, trainer: pl.Trainer) -> None:
        """Snapshot the levels of the current views (re-resolved: parameters may be replaced, reshaped, removed)."""
        try:
            views = self._resolve(source)
        except ValueError as exc:  # every selected parameter is gone: say so once, record nothing
            self._said.once(("selection",), f"DysonMonitor: nothing recorded: {exc}")
            views = []
        for name in set(self._snapshots) - {v.name for v in views}:
            del self._snapshots[name]  # the parameter disappeared: its window ends
        owners = group_index(trainer.optimizers)  # sharded parameters are not the optimizer's: its one group
        sole = sole_group(trainer.optimizers) if self._sharded else None
        behind = parameters_behind(pl_module)  # user-visible names; a parametrization: its originals
        for view in views:
            params = behind.get(view.name) or behind.get(view.name.rpartition(".")[0]) or []  # a block: its weight
            trained = [p for p in params if p.requires_grad]
            group = next((owners[id(p)] for p in trained if id(p) in owners), sole) if trained else sole
            reason = skip_reason(view.matrix) or (None if group else "no optimizer updates it (in no parameter group)")
            if reason is None:
                m, n = view.matrix.shape[-2:]
                (levels,) = stacked_levels([view.matrix.detach().reshape(-1, m, n)], "gram", self.solver)
                reason = levels if isinstance(levels, str) else None
            if reason is not None:
                self._snapshots.pop(view.name, None)  # no stale window is logged as if current
                said = f"DysonMonitor: skipping {view.name!r}: {reason}"
                self._said.once(("skip", view.name, shape_of(reason)), said)
                continue
            assert group is not None and not isinstance(levels, str)
            eigs = nonstructural_levels(levels, rows=m).reshape(*view.matrix.shape[:-2], min(m, n)).cpu()
            snap = Snapshot(trainer.global_step, self._clocks.time(group), eigs)
            buffer = self._snapshots.setdefault(view.name, deque(maxlen=self.window))
            if buffer and (buffer[-1].levels.shape != eigs.shape or self._groups.get(view.name) != group):
                buffer.clear()  # reshaped, or moved to another group: a new window
            if buffer and not snap.time > buffer[-1].time:
                continue  # its group has not stepped since the last snapshot: nothing new
            self._groups[view.name] = group
            if view.source == "ensemble":
                self._ensembles.add(view.name)
            buffer.append(snap)

    def _global_batch(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> batches.GlobalBatch | None:
        explicit, guess, words = self.batch_size, self._guess, self.batch_words
        batch = batches.global_batch(trainer, pl_module, explicit=explicit, guess=guess, words=words)
        if batch is None:
            self._said.once(("no batch",), dyson_message("no_batch", how=self.batch_hint))
            return None
        if batch.source == "guessed":
            self._said.once(("guess",), partial(dyson_message, "guess", size=batch.per_device, how=self.batch_hint))
        self._said.once(("batch", str(batch.size)), lambda: f"DysonMonitor: {batch.describe()}", info=True)
        return batch

    def _check_jumps(self, trainer: pl.Trainer, batch: batches.GlobalBatch | None) -> None:
        """Say once what temperature each group's optimizer has, and when a temperature jumps."""
        size, step = None if batch is None else batch.size, trainer.global_step
        notes = temperature_notes(self._clocks, self._temperatures, size, tolerance=self.jump_tolerance, step=step)
        for key, said, info in notes:
            self._said.once(key, said, info=info)

    # -- what is logged ------------------------------------------------------------------------------------------

    def _log(self, trainer: pl.Trainer, batch: batches.GlobalBatch | None) -> None:
        step, self._logged_step = trainer.global_step, trainer.global_step
        key = self.run_key("stride")  # a step a resumed MLflow run holds already keeps its first record
        log_to_loggers(trainer.loggers, self._metrics(batch), step=step, unless_logged=key)

    def _metrics(self, batch: batches.GlobalBatch | None) -> dict[str, float]:
        p = self.log_key_prefix
        filled = max((len(b) for b in self._snapshots.values()), default=0)  # a filling window's estimates: rough
        out = {self.run_key("stride"): float(self._stride), self.run_key("window"): float(filled)}
        if batch is not None:
            out[self.run_key("batch_size")] = float(batch.size)
        groups = {self._groups[n] for n, b in self._snapshots.items() if b}
        shared = len(groups) == 1
        for name, buffer in self._snapshots.items():
            if not buffer:  # emptied by a stretched stride: nothing on the new stride yet
                continue
            levels = torch.stack([s.levels for s in buffer])
            times = torch.tensor([s.time for s in buffer], dtype=torch.float64)
            stats = window_statistics(levels, times, ensemble=name in self._ensembles)
            rate = self._clocks.rate(self._groups[name])
            temperature = None if rate is None or batch is None else rate.temperature(batch.size)
            if temperature is not None:
                stats |= normalized(stats, temperature)
            rates = {"lr": math.nan if rate is None else rate.lr, "temperature": temperature or math.nan}
            if shared:  # one group trains them all: run-wide keys
                out |= {self.run_key(RUN_WIDE[k]): v for k, v in rates.items() if math.isfinite(v)}
            else:
                stats |= rates
            out |= {metric_key(p, name, f"dyson_{stat}"): float(v) for stat, v in stats.items() if math.isfinite(v)}
        return out

    # -- cost ----------------------------------------------------------------------------------------------------

    def _pace(self, step: int, start: float) -> None:
        """Stretch the stride when the snapshot that started at ``start`` exceeded the budget (class docstring)."""
        factor, cost, elapsed = self._budget.record(start, time.perf_counter() - start)
        if factor > 1:
            self._stretch(factor)
            key, values = self.run_key("stride"), {"stride": self._stride, "elapsed": elapsed, "style": self.arg_style}
            said = dyson_message("stride", step=step, key=key, cost=cost, budget=self._budget.fraction, **values)
            self._said.once(("stride", str(self._stride)), said, info=not self._explicit_budget)

    def _stretch(self, factor: int) -> None:
        """Multiply the stride by ``factor``, keeping every ``factor``-th snapshot counting back from the newest."""
        self._stride *= factor
        for name, buffer in self._snapshots.items():
            self._snapshots[name] = deque(list(buffer)[::-1][::factor][::-1], maxlen=self.window)
