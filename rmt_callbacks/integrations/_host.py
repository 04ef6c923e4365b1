r"""The training loop as the monitors see it: what a plain PyTorch loop or Hugging Face ``Trainer`` must tell them.

:class:`~rmt_callbacks.SpectrumMonitor` and :class:`~rmt_callbacks.DysonMonitor` hold all the logic (when to
analyse, copying, the background worker, pacing, delivery to sinks). Their hooks read a handful of facts about the
run from the object Lightning passes as ``trainer``; :class:`LoopHost` holds exactly those facts for a loop that
has no Lightning ``Trainer``, so one code path serves every stack and the same weights give the same records.

The facts (``tests/integrations/test_host.py`` checks that the monitors read no others):

* ``global_step``: optimizer steps taken; ``current_epoch``; ``sanity_checking`` (always ``False`` here);
* ``loggers``: the sinks (Lightning ``Logger`` objects: an ``MLFlowLogger`` bound to a run, a callable's adapter);
* ``callbacks``: the monitors (their labels, ``monitor``, ``monitor-2``, …, count within one host);
* ``optimizers``, ``accumulate_grad_batches``, ``train_dataloader``: what the noise temperature
  :math:`\alpha/|B|` is made of (:mod:`rmt_callbacks.monitors._batch`);
* ``is_global_zero``, ``strategy`` (``broadcast``, ``distributed_sampler_kwargs``, ``model``): one process
  analyses; the data-parallel world size is a factor of :math:`|B|`;
* ``estimated_stepping_batches``, ``max_epochs``: the run's expected length, which only spaces the figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["LoopHost", "LoopStrategy", "world"]


def world() -> tuple[int, int]:
    """``(rank, world size)`` of ``torch.distributed`` when it is initialised, else ``(0, 1)``.

    Example:
        >>> world()
        (0, 1)
    """
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@dataclass
class LoopStrategy:
    """What the monitors ask of a Lightning strategy: the data-parallel replicas and a broadcast.

    Only a sharded model (FSDP) makes the monitors broadcast, and :func:`rmt_callbacks.watch` refuses those, so
    the broadcast returns its argument (every rank of a data-parallel loop decides alike).
    """

    replicas: int = 1
    model: torch.nn.Module | None = None

    @property
    def distributed_sampler_kwargs(self) -> dict[str, int]:
        return {"num_replicas": self.replicas}

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return obj


@dataclass
class LoopHost:
    """The facts of a loop without a Lightning ``Trainer`` (module docstring), kept by the watcher.

    Example:
        >>> host = LoopHost(optimizers=[], max_steps=100)
        >>> host.global_step, host.is_global_zero, host.estimated_stepping_batches
        (0, True, 100.0)
    """

    optimizers: Sequence[torch.optim.Optimizer]
    loggers: list[Any] = field(default_factory=list)
    callbacks: list[Any] = field(default_factory=list)
    accumulate_grad_batches: int = 1
    train_dataloader: Any = None
    max_steps: int | None = None
    rank: int = 0
    strategy: LoopStrategy = field(default_factory=LoopStrategy)
    global_step: int = 0
    current_epoch: int = 0
    sanity_checking: bool = False
    max_epochs: int | None = None

    @property
    def is_global_zero(self) -> bool:
        return self.rank == 0

    @property
    def estimated_stepping_batches(self) -> float:
        return math.inf if self.max_steps is None else float(self.max_steps)
