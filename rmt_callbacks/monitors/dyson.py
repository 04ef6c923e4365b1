r"""``DysonMonitor``: the noise temperature :math:`\alpha/|B|` of SGD and the eigenvalue fluctuations it drives.

SGD moves eigenvalues like Dyson Brownian motion with diffusion coefficient :math:`D \propto \alpha/|B|`; widths
scale as :math:`\sqrt{\alpha/|B|}` (arXiv:2412.20496; docs/science.md, E4, E10). The monitor logs the temperature
and, per selected matrix, the fluctuation and diffusion estimates raw and divided by the temperature (the
*normalised* curves), so two runs that differ only in :math:`(\alpha, |B|)` at equal :math:`\alpha/|B|` show the
same curves in the MLflow UI, and a run whose temperature jumped is flagged.

Estimators: :mod:`rmt_callbacks.dynamics.estimators`; Langevin time advances by :math:`\alpha` per step.

References: arXiv:2412.20496, arXiv:2407.16427.
"""

from __future__ import annotations

import re
import time
from collections import deque
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from ..analysis import _skip_reason, resolve_views
from ..dynamics import diffusion_coefficient, fluctuation_width, noise_temperature
from ..scaling import equivalent_lr
from ..sinks.keys import metric_key, sanitize
from ..sinks.lightning import StepLedger, flush_loggers, log_to_loggers
from ..spectral.stacks import stacked_levels
from ._batch import batch_size_of
from ._gather import is_sharded, snapshot_module, strategy_root
from ._schedule import check_budget, check_count
from ._selection import validate_patterns
from ._worker import stride_factor

__all__ = ["DysonMonitor"]


class DysonMonitor(Callback):
    r"""Log the SGD noise temperature :math:`T = \alpha/|B|` and eigenvalue fluctuations normalised by it.

    Every ``every_n_train_steps`` optimizer steps (the *stride*) the monitor records the Gram eigenvalues
    (:func:`~rmt_callbacks.spectral.stacks.stacked_levels`, the conventions of :func:`~rmt_callbacks.spectral.esd`)
    of each selected matrix into a window of the last ``window`` snapshots; every ``log_every_n_steps`` steps it
    logs, at ``step = trainer.global_step``:

    Logged metrics:
        * ``{prefix}noise_temperature``: :math:`T = \alpha/|B|`; ``{prefix}lr``, ``{prefix}batch_size``.
        * ``{prefix}{matrix}/dyson_width``: std over the window of each eigenvalue, averaged over modes (and
          ensemble members); ``…/dyson_width_normalized`` :math:`= \text{width}/\sqrt{T}`.
        * ``{prefix}{matrix}/dyson_diffusion``: :math:`D = \mathrm{Var}(\Delta\lambda)/(2\,\delta t)` from the
          window's increments, :math:`\delta t = \alpha \cdot` ``every_n_train_steps`` (Langevin time), averaged
          over modes; ``…/dyson_diffusion_normalized`` :math:`= D/T`.
        * ``{prefix}{matrix}/dyson_ensemble_width`` and ``…_normalized``: for a parameter ``(E, M, N)``, the std
          across the :math:`E` networks of each eigenvalue at this step, averaged over modes: the stationary width
          the papers measure.
        * ``{prefix}dyson/stride``: optimizer steps between snapshots, ``every_n_train_steps`` unless the budget
          stretched it.

    The estimators need snapshots at a regular stride, so the ``overhead_budget`` :math:`f` does not skip a due
    snapshot: when a snapshot's wall time :math:`c` (the eigendecompositions, in the hook) exceeds :math:`f` times
    the training time since the previous one, the stride is doubled (as often as needed, to the smallest power of
    two that fits; the cheaper of the last two snapshots is what counts, so one slow one does not decide) and the
    window thinned to the snapshots on the new stride. It never shrinks; each change is reported once, and
    logged. A longer stride lengthens :math:`\delta t`; the diffusion estimate assumes :math:`\delta t` well below
    the relaxation time of the levels (docs/science.md#semicircle, E10), which the stride metric lets you check.

    :math:`\alpha` is read from the first parameter group of the first optimizer (schedulers included);
    :math:`|B|` from the first batch of each epoch (the leading dimension of its first tensor), else
    ``pl_module.hparams.batch_size``; both can be fixed with ``lr`` / ``batch_size``. A jump of :math:`T` by more
    than ``jump_tolerance`` (relative) between steps is warned about once, with the learning rate the linear
    scaling rule suggests. The window is in ``state_dict``, so a resumed run continues its estimates; steps replayed
    after resuming from an older checkpoint are not logged again into an MLflow run that holds them. A matrix that
    cannot be analysed (see :class:`~rmt_callbacks.SpectrumMonitor`) is skipped with one warning per reason and its
    window dropped; parameters are looked up afresh at every snapshot (replaced, reshaped or removed ones follow).

    Args:
        every_n_train_steps: record a snapshot every this many optimizer steps.
        log_every_n_steps: log the estimates every this many optimizer steps (needs 2+ snapshots), and at the last
            step of training (the final weights), unless that step was just logged.
        window: number of snapshots kept (the estimates' time window).
        include: fnmatch patterns of parameter names (``None``: the default selection of
            :class:`~rmt_callbacks.SpectrumMonitor`).
        lr: fixed learning rate :math:`\alpha` (``None``: read from the optimizer).
        batch_size: fixed :math:`|B|` (``None``: read from the batch).
        log_key_prefix: metric-key prefix.
        jump_tolerance: relative change of :math:`T` that counts as a jump.
        overhead_budget: the largest fraction of training wall time snapshots may take, in ``(0, 1]`` (default
            0.02); ``None``: a snapshot every ``every_n_train_steps`` steps, however long it takes (reproducible
            cadence).

    Raises:
        ValueError, TypeError: a bad argument, naming it; at fit start, a selection matching no matrix.

    Example:
        >>> DysonMonitor(window=1)
        Traceback (most recent call last):
        ...
        ValueError: window must be an int >= 2, got 1
    """

    def __init__(
        self,
        every_n_train_steps: int = 1,
        log_every_n_steps: int = 50,
        window: int = 100,
        include: list[str] | None = None,
        lr: float | None = None,
        batch_size: int | None = None,
        log_key_prefix: str = "rmt/",
        jump_tolerance: float = 0.01,
        overhead_budget: float | None = 0.02,
    ) -> None:
        check_count("every_n_train_steps", every_n_train_steps)
        check_count("log_every_n_steps", log_every_n_steps)
        if isinstance(window, bool) or not isinstance(window, int) or window < 2:
            raise ValueError(f"window must be an int >= 2, got {window!r}")
        for arg, value in (("lr", lr), ("batch_size", batch_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise ValueError(f"{arg} must be None or a positive number, got {value!r}")
        if not isinstance(log_key_prefix, str):
            raise TypeError(f"log_key_prefix must be a str, got {type(log_key_prefix).__name__}")
        if isinstance(jump_tolerance, bool) or not isinstance(jump_tolerance, (int, float)) or jump_tolerance <= 0:
            raise ValueError(f"jump_tolerance must be a positive number, got {jump_tolerance!r}")
        self.every_n_train_steps, self.log_every_n_steps, self.window = every_n_train_steps, log_every_n_steps, window
        self.include = validate_patterns("include", include, allow_none=True)
        self.lr, self.batch_size, self.log_key_prefix = lr, batch_size, log_key_prefix
        self.jump_tolerance = float(jump_tolerance)
        self.overhead_budget = check_budget(overhead_budget)
        self._stride = every_n_train_steps
        self._last_end: float | None = None  # clock at the end of the previous snapshot (this fit)
        self._last_cost: float | None = None
        self._snapshots: dict[str, deque[torch.Tensor]] = {}
        self._temperature: float | None = None
        self._previous_bs: int = 1
        self._epoch_batch_size: int | None = None
        self._warned: set[str] = set()
        self._ledger = StepLedger(self._warn_replay)
        self._sharded = False  # FSDP / FSDP2 parameters: set at fit start, the same on every rank
        self._logged_step: int | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(include=self.include, log_key_prefix=self.log_key_prefix, window=self.window)

    def state_dict(self) -> dict[str, Any]:
        return {
            "snapshots": {k: list(v) for k, v in self._snapshots.items()},
            "temperature": self._temperature,
            "epoch_batch_size": self._epoch_batch_size,
            "stride": self._stride,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._snapshots = {k: deque(v, maxlen=self.window) for k, v in state_dict["snapshots"].items()}
        self._temperature = state_dict["temperature"]
        self._epoch_batch_size = state_dict["epoch_batch_size"]
        self._stride = int(state_dict.get("stride", self.every_n_train_steps))

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._ledger.reset()
        self._last_end = self._last_cost = None
        self._sharded = is_sharded(pl_module, strategy_root(trainer))
        model = snapshot_module(trainer, pl_module) if self._sharded else pl_module  # a collective when sharded
        error = None
        if model is not None:
            try:
                resolve_views(model, include=self.include)
            except ValueError as exc:
                error = f"DysonMonitor: {exc}"
        if self._sharded:  # rank zero's verdict, raised on every rank alike
            error = trainer.strategy.broadcast(error, src=0)
        if error is not None:
            raise ValueError(error)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self._log_final(trainer, pl_module)
            flush_loggers(trainer.loggers)  # the MLflow runs hold every logged step when training returns

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if trainer.is_global_zero:
            flush_loggers(trainer.loggers)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_batch_size = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, *args: Any) -> None:
        if self._epoch_batch_size is None:
            self._epoch_batch_size = batch_size_of(batch)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if trainer.sanity_checking or step == 0:
            return
        due = step % self._stride == 0
        source: torch.nn.Module | None = pl_module
        if due and self._sharded:  # every rank enters the gather
            source = snapshot_module(trainer, pl_module)
        if trainer.is_global_zero and source is not None:
            self._observe(trainer, pl_module, source, due)
        if due and self._sharded:  # rank zero's stride, on every rank: they gather on the same steps
            self._stride = trainer.strategy.broadcast(self._stride, src=0)

    def _observe(self, trainer: pl.Trainer, pl_module: pl.LightningModule, source: torch.nn.Module, due: bool) -> None:
        step = trainer.global_step
        temperature = self._current_temperature(trainer, pl_module)
        if due:
            start = time.perf_counter()
            self._record(source)
            self._pace(step, start)
        if step % self.log_every_n_steps == 0 and temperature is not None:
            self._log(trainer, pl_module, temperature)

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule, temperature: float) -> None:
        step, self._logged_step = trainer.global_step, trainer.global_step
        key = sanitize(f"{self.log_key_prefix}noise_temperature")  # replayed steps of a resumed MLflow run: once
        loggers = self._ledger.loggers(trainer.loggers, step=step, key=key)
        log_to_loggers(loggers, self._metrics(trainer, pl_module, temperature), step=step)

    def _log_final(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The estimates of the window at the last step, unless that step was logged (or nothing was recorded)."""
        if trainer.global_step in (0, self._logged_step) or not any(len(b) >= 2 for b in self._snapshots.values()):
            return
        temperature = self._current_temperature(trainer, pl_module)
        if temperature is not None:
            self._log(trainer, pl_module, temperature)

    def _current_lr(self, trainer: pl.Trainer) -> float | None:
        if self.lr is not None:
            return float(self.lr)
        optimizers = trainer.optimizers
        return float(optimizers[0].param_groups[0]["lr"]) if optimizers else None

    def _current_batch_size(self, pl_module: pl.LightningModule) -> int | None:
        if self.batch_size is not None:
            return int(self.batch_size)
        if self._epoch_batch_size is not None:
            return self._epoch_batch_size
        size = getattr(getattr(pl_module, "hparams", {}), "get", lambda *_: None)("batch_size")
        return int(size) if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None

    def _current_temperature(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> float | None:
        lr, bs = self._current_lr(trainer), self._current_batch_size(pl_module)
        if lr is None or bs is None or lr <= 0:
            self._warn_once(
                "temperature", f"DysonMonitor: cannot tell α/|B| (lr={lr}, batch size={bs}); set lr/batch_size"
            )
            return None
        temperature = noise_temperature(lr, bs)
        previous, self._temperature = self._temperature, temperature
        previous_bs, self._previous_bs = self._previous_bs, bs
        if previous is not None and abs(temperature / previous - 1.0) > self.jump_tolerance:
            self._warn_once(
                "jump",
                f"DysonMonitor: the noise temperature α/|B| jumped from {previous:.4g} to {temperature:.4g} at step "
                f"{trainer.global_step} (lr={lr:g}, batch size={bs}); the linear scaling rule keeps α/|B| fixed: "
                f"at batch size {bs} that is lr={equivalent_lr(previous * previous_bs, previous_bs, bs):g}",
            )
        return temperature

    def _pace(self, step: int, start: float) -> None:
        """Stretch the stride when the snapshot that started at ``start`` exceeded the budget (class docstring)."""
        cost = time.perf_counter() - start
        if self.overhead_budget is not None and self._last_end is not None:
            typical = cost if self._last_cost is None else min(cost, self._last_cost)
            factor = stride_factor(typical, start - self._last_end, self.overhead_budget)
            if factor > 1:
                self._stretch(step, factor)
                rank_zero_info(
                    f"DysonMonitor: a snapshot takes {typical:.3g} s, over overhead_budget={self.overhead_budget:g} "
                    f"of the {start - self._last_end:.3g} s of training between snapshots; recording every "
                    f"{self._stride} steps from step {step} (logged as {self.log_key_prefix}dyson/stride; "
                    "overhead_budget=None keeps every_n_train_steps)"
                )
        self._last_cost, self._last_end = cost, time.perf_counter()

    def _stretch(self, step: int, factor: int) -> None:
        """Multiply the stride by ``factor``, keeping the window's snapshots that fall on the new stride."""
        old, self._stride = self._stride, self._stride * factor
        for name, buffer in self._snapshots.items():  # the newest snapshot is this step's; they are ``old`` apart
            kept = [e for i, e in enumerate(reversed(buffer)) if (step - i * old) % self._stride == 0]
            self._snapshots[name] = deque(reversed(kept), maxlen=self.window)

    def _record(self, pl_module: torch.nn.Module) -> None:
        """Snapshot the spectra of the current views (re-resolved: parameters may be replaced, reshaped, removed)."""
        views = self._current_views(pl_module)
        for name in set(self._snapshots) - {v.name for v in views}:
            del self._snapshots[name]  # the parameter disappeared: its window ends
        for view in views:
            reason = _skip_reason(view.matrix)
            if reason is None:  # the analysis' Gram spectra: normalised, ascending, float64, or why they failed
                m, n = view.matrix.shape[-2:]
                (levels,) = stacked_levels([view.matrix.detach().reshape(-1, m, n)], "gram")
                if isinstance(levels, str):
                    reason = levels
                else:
                    eigs = levels.reshape(*view.matrix.shape[:-2], n).cpu()  # (..., N)
            if reason is not None:
                self._snapshots.pop(view.name, None)  # no stale window is logged as if current
                key = f"skip:{view.name}:{re.sub(r'[0-9]+', '#', reason)}"
                self._warn_once(key, f"DysonMonitor: skipping {view.name!r}: {reason}")
                continue
            buffer = self._snapshots.setdefault(view.name, deque(maxlen=self.window))
            if buffer and buffer[-1].shape != eigs.shape:
                buffer.clear()  # the parameter changed shape: start a new window
            buffer.append(eigs)

    def _current_views(self, pl_module: torch.nn.Module) -> list[Any]:
        try:
            return resolve_views(pl_module, include=self.include)
        except ValueError as exc:  # every selected parameter is gone: warn once, record nothing
            self._warn_once("selection", f"DysonMonitor: nothing recorded: {exc}")
            return []

    def _metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule, temperature: float) -> dict[str, float]:
        lr, bs = self._current_lr(trainer), self._current_batch_size(pl_module)
        p = self.log_key_prefix
        out = {sanitize(f"{p}noise_temperature"): temperature, sanitize(f"{p}lr"): float(lr)}
        out[sanitize(f"{p}batch_size")] = float(bs)
        out[sanitize(f"{p}dyson/stride")] = float(self._stride)
        dt = float(lr) * self._stride
        for name, buffer in self._snapshots.items():
            if not buffer:  # emptied by a stretched stride: nothing on the new stride yet
                continue
            stats = _window_statistics(torch.stack(tuple(buffer)), dt=dt)
            for stat, value in stats.items():
                out[metric_key(p, name, f"dyson_{stat}")] = value
                out[metric_key(p, name, f"dyson_{stat}_normalized")] = value / (
                    temperature if stat == "diffusion" else temperature**0.5
                )
        return out

    def _warn_replay(self, message: str) -> None:
        self._warn_once("replay", f"DysonMonitor: {message}")

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message, category=RuntimeWarning)


def _window_statistics(trajectory: torch.Tensor, *, dt: float) -> dict[str, float]:
    """Width, diffusion (and, for ensembles, the width across networks) of a ``(T, ..., N)`` window."""
    out: dict[str, float] = {}
    if trajectory.ndim >= 3:
        out["ensemble_width"] = float(trajectory[-1].std(dim=0).mean())
    if trajectory.shape[0] >= 2:
        out["width"] = float(fluctuation_width(trajectory).mean())
    if trajectory.shape[0] >= 3:
        out["diffusion"] = float(diffusion_coefficient(trajectory, dt=dt).mean())
    return out
