"""A user's function as a logger: ``log(metrics, step)`` receives what the monitors would send any logger.

:func:`rmt_callbacks.watch` (``log=``) and the Hugging Face callback (to forward to the ``Trainer``'s other
reporters) hand the monitors a :class:`CallableLogger`; it is a Lightning ``Logger``, so it travels the same
delivery path as TensorBoard's or CSV's: metrics from the training thread, in step order, at the analysed step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from lightning.pytorch.loggers import Logger

__all__ = ["CallableLogger", "MetricsFn"]

MetricsFn = Callable[[dict[str, float], int], Any]
"""``fn(metrics, step)``: a dict of metric keys to floats, and the optimizer step they describe."""


class CallableLogger(Logger):
    """Send every ``log_metrics`` call to ``fn(metrics, step)``; hyperparameters are ignored.

    Example:
        >>> seen = []
        >>> CallableLogger(lambda m, s: seen.append((s, m))).log_metrics({"rmt/w/lambda_max": 2.0}, step=3)
        >>> seen
        [(3, {'rmt/w/lambda_max': 2.0})]
    """

    def __init__(self, fn: MetricsFn, name: str = "callable") -> None:
        super().__init__()
        if not callable(fn):
            raise TypeError(f"log must be callable as log(metrics, step), got {type(fn).__name__} ({fn!r})")
        self._fn, self._name = fn, name

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        return "0"

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._fn(dict(metrics), -1 if step is None else int(step))

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        return None
