r"""How large is a mini-batch? The global effective :math:`|B|` of the noise temperature :math:`\alpha/|B|`.

One optimizer step of data-parallel training with gradient accumulation averages the gradient over

.. math::

    |B| = b \times \texttt{accumulate\_grad\_batches} \times R,

:math:`b` the per-device batch and :math:`R` the number of data-parallel processes (the replicas a distributed
sampler splits the data over). :math:`b` comes, in this order, from an explicit argument, the training
DataLoader's ``batch_size`` (or its batch sampler's), the model's ``hparams.batch_size``, and only as a last resort
from the leading dimension of the first tensor in a batch, which is wrong for time-major, per-sample-first or
channel-first batches (:func:`batch_size_of`).

References: Lightning ``Trainer.accumulate_grad_batches``, ``Strategy.distributed_sampler_kwargs``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ._schedule import check_int

__all__ = [
    "GlobalBatch",
    "batch_size_of",
    "global_batch",
    "hparams_batch_size",
    "loader_batch_size",
    "replicas",
]


def batch_size_of(batch: Any) -> int | None:
    """The leading dimension of the first tensor found in ``batch`` (tensor, sequence or mapping), else ``None``.

    A guess: right for ``(inputs, targets)`` of shape ``(B, ...)``, wrong for time-major or channel-first tensors.

    Examples:
        >>> batch_size_of((torch.zeros(8, 3), torch.zeros(8)))
        8
        >>> batch_size_of({"x": torch.zeros(4, 2)})
        4
        >>> batch_size_of(17) is None  # a step index, as the reference models use
        True
    """
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim >= 1 else None
    items: Any = batch.values() if isinstance(batch, Mapping) else batch
    if isinstance(items, (Sequence, type({}.values()))) and not isinstance(items, (str, bytes)):
        for item in items:
            size = batch_size_of(item)
            if size is not None:
                return size
    return None


def _positive_int(value: object) -> int | None:
    """``value`` as an int if :func:`~._schedule.check_int` accepts it (numpy's ints too), else ``None``."""
    try:
        return check_int("batch_size", value)
    except ValueError:
        return None


def loader_batch_size(loader: object) -> int | None:
    """The ``batch_size`` of a training DataLoader, or of its batch sampler; ``None`` for anything else.

    Examples:
        >>> from torch.utils.data import DataLoader
        >>> loader_batch_size(DataLoader(range(10), batch_size=4))
        4
        >>> loader_batch_size(DataLoader(range(10), batch_size=None)) is None  # yields items as they are
        True
    """
    size = _positive_int(getattr(loader, "batch_size", None))
    if size is None and hasattr(loader, "batch_sampler"):
        size = _positive_int(getattr(loader.batch_sampler, "batch_size", None))
    return size


def hparams_batch_size(module: object) -> int | None:
    """``module.hparams.batch_size`` (Lightning's saved hyperparameters), if a positive int."""
    hparams = getattr(module, "hparams", None)
    return _positive_int(hparams.get("batch_size")) if isinstance(hparams, Mapping) else None


def replicas(strategy: object) -> int:
    """The number of data-parallel processes: the ``num_replicas`` a distributed sampler would use, else 1."""
    try:
        kwargs = getattr(strategy, "distributed_sampler_kwargs", None)
    except Exception:  # a strategy not yet set up
        kwargs = None
    if not isinstance(kwargs, Mapping):
        return 1
    return _positive_int(kwargs.get("num_replicas")) or 1


@dataclass(frozen=True)
class GlobalBatch:
    """The global effective batch :math:`|B|` and where its factors came from.

    Example:
        >>> batch = GlobalBatch(per_device=8, source="the DataLoader's batch_size", accumulation=4, replicas=2)
        >>> batch.size
        64
        >>> batch.describe()
        "|B| = 8 (the DataLoader's batch_size) × 4 (accumulate_grad_batches) × 2 (data-parallel processes) = 64"
    """

    per_device: int
    source: str
    accumulation: int = 1
    replicas: int = 1
    accumulation_name: str = "accumulate_grad_batches"  # what the user's stack calls it

    @property
    def size(self) -> int:
        return self.per_device * self.accumulation * self.replicas

    def describe(self) -> str:
        return (
            f"|B| = {self.per_device} ({self.source}) × {self.accumulation} ({self.accumulation_name}) × "
            f"{self.replicas} (data-parallel processes) = {self.size}"
        )


def global_batch(
    trainer: Any,
    module: object,
    *,
    explicit: int | None,
    guess: int | None,
    words: tuple[str, str] = ("batch_size=", "accumulate_grad_batches"),
) -> GlobalBatch | None:
    """The run's :class:`GlobalBatch`, its per-device factor from the first source that has one (module doc).

    ``guess`` is :func:`batch_size_of` of a batch; a batch made from it has ``source == "guessed"``. ``words``: the
    names of the explicit batch size and of the accumulation in the user's stack (for :meth:`GlobalBatch.describe`).
    """
    sources: tuple[tuple[str, Callable[[], int | None]], ...] = (  # read lazily: this runs at every step
        (words[0], lambda: explicit),
        ("the training DataLoader's batch_size", lambda: loader_batch_size(trainer.train_dataloader)),
        ("hparams.batch_size", lambda: hparams_batch_size(module)),
        ("guessed", lambda: guess),
    )
    for source, read in sources:
        if (size := read()) is not None:
            accumulation, processes = int(trainer.accumulate_grad_batches), replicas(trainer.strategy)
            return GlobalBatch(size, source, accumulation, processes, accumulation_name=words[1])
    return None
