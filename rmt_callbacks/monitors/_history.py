"""The spectrum of each matrix at every analysed step, kept small: what the end-of-training figures draw.

Per matrix and step, the non-structural levels pooled over the batch are kept as at most ``points`` evenly spaced
order statistics (their empirical quantiles: each carries the same probability mass, so a histogram of them
estimates the density). Past ``max_steps`` steps every other kept step is dropped and from then on only every
second analysis is kept (the stride doubles, so kept steps stay evenly spaced); the first and the latest are always
there. Memory: at most ``points * (max_steps + 1)`` floats per matrix (about 256 KiB at the defaults).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["LevelHistory"]


class LevelHistory:
    """Order statistics of each matrix's levels at every analysed step.

    Args:
        points: order statistics kept per matrix and step.
        max_steps: steps kept per matrix before thinning.

    Examples:
        >>> h = LevelHistory(points=4, max_steps=3)
        >>> for step in range(5):
        ...     h.add("w", step, torch.arange(10.0) + step)
        >>> steps, samples = h.series("w")
        >>> steps, samples[-1].tolist()
        ([0, 2, 4], [5.125, 7.375, 9.625, 11.875])
    """

    def __init__(self, *, points: int = 256, max_steps: int = 256) -> None:
        self.points, self.max_steps = points, max_steps
        self._series: dict[str, list[tuple[int, np.ndarray]]] = {}  # on the stride
        self._latest: dict[str, tuple[int, np.ndarray] | None] = {}  # the newest, when off the stride
        self._seen: dict[str, int] = {}
        self._stride: dict[str, int] = {}

    def add(self, name: str, step: int, levels: torch.Tensor) -> None:
        """Keep the order statistics of ``levels`` (any shape) as ``name``'s spectrum at ``step``."""
        flat = np.sort(levels.detach().to("cpu", torch.float64).numpy().ravel())
        flat = flat[np.isfinite(flat)]
        if flat.size > self.points:
            flat = np.quantile(flat, (np.arange(self.points) + 0.5) / self.points)
        entry = (step, flat.astype(np.float32))
        seen, stride = self._seen.get(name, 0), self._stride.get(name, 1)
        self._seen[name] = seen + 1
        if seen % stride:
            self._latest[name] = entry
            return
        series = self._series.setdefault(name, [])
        series.append(entry)
        self._latest[name] = None
        if len(series) > self.max_steps:
            self._series[name], self._stride[name] = series[::2], 2 * stride

    def names(self) -> list[str]:
        """The matrices seen, in first-seen order."""
        return list(self._series)

    def series(self, name: str) -> tuple[list[int], list[np.ndarray]]:
        """``(steps, samples)`` of ``name``, ascending in step."""
        latest = self._latest.get(name)
        entries = self._series.get(name, []) + ([latest] if latest is not None else [])
        return [s for s, _ in entries], [v.astype(np.float64) for _, v in entries]
