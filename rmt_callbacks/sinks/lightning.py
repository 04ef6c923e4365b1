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

from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import islice

from lightning.pytorch.loggers import Logger, MLFlowLogger

__all__ = ["MLFLOW_MAX_METRICS_PER_BATCH", "StepLedger", "chunked", "log_to_loggers", "mlflow_loggers"]

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


class StepLedger:
    """The steps a resumed run already holds, so that a replayed step is not logged into it twice.

    A run resumed from a checkpoint older than its crash replays the steps in between; their metrics are already
    in the MLflow run. On its first use in a fit the ledger reads, once per ``MLFlowLogger``, the steps at which
    one of the callback's keys was logged (one ``get_metric_history`` request); :meth:`loggers` then leaves a
    logger out at a step it already holds (the first record wins). Other loggers are always kept.

    Args:
        warn: called once with a message the first time a step is left out.

    References: MLflow ``MlflowClient.get_metric_history``; Lightning ``MLFlowLogger(run_id=...)``.

    Examples:
        >>> StepLedger(print).loggers([], step=3, key="rmt/w/skipped")
        []
    """

    def __init__(self, warn: Callable[[str], None]) -> None:
        self._warn = warn
        self._held: dict[int, frozenset[int]] | None = None

    def reset(self) -> None:
        """Forget what was read (call at fit start: the run may have changed)."""
        self._held = None

    def loggers(self, loggers: Sequence[Logger], *, step: int, key: str) -> list[Logger]:
        """``loggers`` without the MLflow loggers whose run already holds ``key`` at ``step``."""
        if self._held is None:
            self._held = {id(lg): _logged_steps(lg, key) for lg in mlflow_loggers(loggers)}
        kept = [lg for lg in loggers if step not in self._held.get(id(lg), frozenset())]
        if len(kept) < len(loggers):
            self._warn(f"step {step} is already in the resumed MLflow run; replayed steps are not logged again")
        return kept


def _logged_steps(logger: MLFlowLogger, key: str) -> frozenset[int]:
    from mlflow.exceptions import MlflowException  # only with an MLFlowLogger attached

    try:
        return frozenset(m.step for m in logger.experiment.get_metric_history(logger.run_id, key))
    except (MlflowException, OSError):  # an unreachable store: nothing known, log as usual
        return frozenset()
