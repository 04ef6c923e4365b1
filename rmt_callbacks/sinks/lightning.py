r"""Scalars to every Lightning logger attached to the Trainer (MLflow, TensorBoard, CSV, …).

The callbacks never use ``pl_module.log``: like Lightning's ``LearningRateMonitor`` they call
``logger.log_metrics(metrics, step=step)`` on each entry of ``trainer.loggers``, from rank zero. MLflow accepts
at most 1000 metrics per ``log_batch`` request and Lightning's ``MLFlowLogger`` sends one request per call, so
for it the dict is split into chunks of at most :data:`MLFLOW_MAX_METRICS_PER_BATCH`:

.. math::

    \text{calls} = \lceil |\text{metrics}| / 1000 \rceil.

References: MLflow REST API, ``log-batch`` limits; Lightning ``callbacks/lr_monitor.py``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from itertools import islice

from lightning.pytorch.loggers import Logger, MLFlowLogger

__all__ = ["MLFLOW_MAX_METRICS_PER_BATCH", "chunked", "log_to_loggers", "mlflow_loggers"]

MLFLOW_MAX_METRICS_PER_BATCH: int = 1000


def chunked(metrics: Mapping[str, float], size: int) -> Iterator[dict[str, float]]:
    """Split ``metrics`` into dicts of at most ``size`` entries, preserving order.

    Raises:
        ValueError: ``size`` is not a positive int.

    Examples:
        >>> [len(c) for c in chunked({str(i): float(i) for i in range(2500)}, 1000)]
        [1000, 1000, 500]
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"chunked: size must be a positive int, got {size!r}")
    items = iter(metrics.items())
    while chunk := dict(islice(items, size)):
        yield chunk


def mlflow_loggers(loggers: Sequence[Logger]) -> list[MLFlowLogger]:
    """The ``MLFlowLogger`` instances among ``loggers`` (subclasses included).

    Examples:
        >>> mlflow_loggers([])
        []
    """
    return [logger for logger in loggers if isinstance(logger, MLFlowLogger)]


def log_to_loggers(loggers: Sequence[Logger], metrics: Mapping[str, float], *, step: int) -> None:
    """Send ``metrics`` to every logger at ``step``, chunking for MLflow; call from rank zero only.

    Args:
        loggers: usually ``trainer.loggers``.
        metrics: finished metric keys (see :func:`~rmt_callbacks.sinks.keys.metric_key`) to float values.
        step: the step every logger records, the callbacks pass ``trainer.global_step``.

    Raises:
        TypeError: ``step`` is not an int.

    References: Lightning ``LearningRateMonitor`` (``logger.log_metrics(..., step=trainer.global_step)``).

    Examples:
        >>> log_to_loggers([], {"rmt/w/lambda_max": 1.0}, step=0)
    """
    if isinstance(step, bool) or not isinstance(step, int):
        raise TypeError(f"log_to_loggers: step must be an int, got {step!r}")
    if not metrics:
        return
    for logger in loggers:
        if isinstance(logger, MLFlowLogger):
            for chunk in chunked(metrics, MLFLOW_MAX_METRICS_PER_BATCH):
                logger.log_metrics(chunk, step=step)
        else:
            logger.log_metrics(dict(metrics), step=step)
