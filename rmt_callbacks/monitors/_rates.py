r"""Which learning rate drives each matrix, and is it a temperature? Parameter groups, momentum, Langevin clocks.

Every matrix is updated by one parameter group of one optimizer. For that group, at each of its updates (read
just before the step, so a per-step scheduler's rate is the one of the update taken):

* plain SGD: the Langevin time advances by :math:`\alpha` and the noise temperature is :math:`\alpha/|B|` (E4);
* SGD with momentum :math:`\mu` (dampening :math:`d`, Nesterov or not): the effective step is
  :math:`\alpha(1-d)/(1-\mu)`, so time advances by that and the temperature is :math:`\alpha(1-d)/((1-\mu)|B|)`
  (E31; Smith & Le, arXiv:1710.06451, the noise scale :math:`\epsilon N/(B(1-m))`);
* any other optimizer (Adam, AdamW, RMSprop, …): preconditioned steps have no such temperature; time advances by
  :math:`\alpha` and no temperature is given.

References: arXiv:2412.20496 (E4), arXiv:1710.06451 (momentum).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import torch

from ..dynamics import noise_temperature
from ._messages import dyson_message

__all__ = ["Clocks", "GroupKey", "Rate", "Snapshot", "group_index", "rate_of", "sole_group", "temperature_notes"]

GroupKey = tuple[int, int]
"""(index of the optimizer in ``trainer.optimizers``, index of the parameter group)."""


class Snapshot(NamedTuple):
    """One matrix's levels after an optimizer step, stamped with the Langevin time of the group that trains it."""

    step: int  # trainer.global_step
    time: float  # the group's clock: the sum of its effective learning rates so far
    levels: torch.Tensor  # (..., n) ascending non-structural Gram levels, float64, CPU


@dataclass(frozen=True)
class Rate:
    """The rate of one parameter group's last update.

    Example:
        >>> Rate(lr=0.1, momentum=0.9).step, round(Rate(lr=0.1, momentum=0.9).temperature(32), 6)
        (1.0000000000000002, 0.03125)
        >>> Rate(lr=1e-3, optimizer="Adam", covered=False).temperature(32) is None
        True
    """

    lr: float
    momentum: float = 0.0
    dampening: float = 0.0
    optimizer: str = "SGD"
    covered: bool = True

    @property
    def step(self) -> float:
        """Langevin time per update: the effective learning rate (the raw one where not covered)."""
        return self.lr * (1.0 - self.dampening) / (1.0 - self.momentum) if self.covered else self.lr

    def temperature(self, batch_size: int) -> float | None:
        """:math:`\\alpha_{\\rm eff}/|B|`, or ``None`` (an optimizer the theory does not cover; no finite step > 0)."""
        ok = self.covered and math.isfinite(self.step) and self.step > 0  # noise_temperature refuses the rest
        return noise_temperature(self.step, batch_size) if ok else None


def rate_of(optimizer: torch.optim.Optimizer, group: dict[str, Any], lr: float | None = None) -> Rate:
    """The :class:`Rate` of one parameter group (``lr`` overrides the group's learning rate).

    Example:
        >>> opt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1, momentum=0.5)
        >>> rate_of(opt, opt.param_groups[0])
        Rate(lr=0.1, momentum=0.5, dampening=0.0, optimizer='SGD', covered=True)
    """
    alpha = float(group.get("lr", math.nan)) if lr is None else float(lr)
    name = type(optimizer).__name__
    if not isinstance(optimizer, torch.optim.SGD):
        return Rate(alpha, optimizer=name, covered=False)
    momentum = float(group.get("momentum", 0.0))
    dampening = float(group.get("dampening", 0.0)) if momentum > 0 else 0.0  # torch ignores it without momentum
    covered = 0.0 <= momentum < 1.0 and 0.0 <= dampening < 1.0 and alpha > 0
    return Rate(alpha, momentum if covered else 0.0, dampening if covered else 0.0, name, covered)


@dataclass
class _Clock:
    rate: Rate
    time: float = 0.0
    updates: int = 0


@dataclass
class Clocks:
    """Per parameter group: the rate of its last update and its Langevin clock (the sum of its update times)."""

    groups: dict[GroupKey, _Clock] = field(default_factory=dict)
    last: dict[int, int] = field(default_factory=dict)  # optimizer -> the global_step of its last update

    def stepped(self, index: int, optimizer: torch.optim.Optimizer, step: int, lr: float | None = None) -> None:
        """Record one update of every group of ``optimizer`` (number ``index`` in ``trainer.optimizers``) at
        ``global_step`` ``step``; a second call at the same step (LBFGS evaluates its closure several times per
        step) is not another update."""
        if self.last.get(index) == step:
            return
        self.last[index] = step
        for g, group in enumerate(optimizer.param_groups):
            rate = rate_of(optimizer, group, lr)
            clock = self.groups.setdefault((index, g), _Clock(rate))
            clock.rate, clock.updates = rate, clock.updates + 1
            clock.time += rate.step if math.isfinite(rate.step) else 0.0

    def rate(self, key: GroupKey) -> Rate | None:
        clock = self.groups.get(key)
        return None if clock is None else clock.rate

    def time(self, key: GroupKey) -> float:
        clock = self.groups.get(key)
        return 0.0 if clock is None else clock.time

    def state_dict(self) -> dict[str, Any]:
        return {f"{o}:{g}": (c.time, c.updates) for (o, g), c in self.groups.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the clocks' times (the rates are read again at the next update)."""
        for key, (time, updates) in state.items():
            o, g = (int(k) for k in key.split(":"))
            self.groups[(o, g)] = _Clock(Rate(math.nan), float(time), int(updates))


def group_index(optimizers: Sequence[torch.optim.Optimizer]) -> dict[int, GroupKey]:
    """``id(parameter) -> (optimizer, group)`` over every optimizer's parameter groups."""
    return {
        id(p): (o, g)
        for o, opt in enumerate(optimizers)
        for g, grp in enumerate(opt.param_groups)
        for p in grp["params"]
    }


def sole_group(optimizers: Iterable[torch.optim.Optimizer]) -> GroupKey | None:
    """The one parameter group of the run, if there is exactly one (sharded parameters are matched to it)."""
    keys = [(o, g) for o, opt in enumerate(optimizers) for g in range(len(opt.param_groups))]
    return keys[0] if len(keys) == 1 else None


Note = tuple[tuple[str, ...], str | Callable[[], str], bool]
"""A message for :class:`~._messages.OnceMessages`: its key, the text (or what formats it), whether it is info."""


def temperature_notes(
    clocks: Clocks, last: dict[GroupKey, tuple[float, float, int]], batch: int | None, *, tolerance: float, step: int
) -> Iterator[Note]:
    """What to say (once each) about each group's temperature: the optimizer has none (adaptive), momentum makes it
    effective, or it jumped by more than ``tolerance`` (relative) since ``last`` (updated here) at global ``batch``."""
    for key, clock in clocks.groups.items():
        rate = clock.rate
        if not rate.covered and not math.isnan(rate.lr):
            yield ("adaptive", rate.optimizer), partial(dyson_message, "adaptive", optimizer=rate.optimizer), False
        elif rate.momentum > 0:
            said = partial(dyson_message, "momentum", momentum=rate.momentum, lr=rate.lr, gap=1 - rate.momentum)
            yield ("momentum",), said, True
        temperature = None if batch is None else rate.temperature(batch)
        if temperature is None or batch is None:
            continue
        previous, last[key] = last.get(key), (temperature, rate.lr, batch)
        if previous is not None and abs(temperature / previous[0] - 1.0) > tolerance:
            keep = previous[0] * batch * rate.lr / rate.step  # the lr giving the previous T now
            values = {"previous": previous[0], "temperature": temperature, "lr": rate.lr, "batch": batch}
            yield ("jump",), dyson_message("jump", step=step, keep=keep, **values), False
