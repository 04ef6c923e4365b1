"""How large is a mini-batch? The pure helper the Dyson monitor uses to read |B| without a Trainer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["batch_size_of"]


def batch_size_of(batch: Any) -> int | None:
    """The leading dimension of the first tensor found in ``batch`` (tensor, sequence or mapping), else ``None``.

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
