r"""Scalars to every Lightning logger attached to the Trainer (MLflow, TensorBoard, CSV, …).

The callbacks never use ``pl_module.log``: like Lightning's ``LearningRateMonitor`` they send metrics to each
entry of ``trainer.loggers``, from rank zero, with an explicit step. Loggers other than MLflow get
``logger.log_metrics(metrics, step=step)``. An ``MLFlowLogger``'s run gets them through its
:class:`~rmt_callbacks.sinks.spool.MlflowWriter`: a background thread that sends them in requests of at most
:data:`~rmt_callbacks.sinks.mlflow.MLFLOW_MAX_METRICS_PER_BATCH` (MLflow's limit, also importable from here), so that

.. math::

    \text{requests} = \lceil |\text{metrics}| / 1000 \rceil,

and spools them to disk while the tracking server is unreachable; :func:`flush_loggers` waits for delivery.

References: MLflow REST API, ``log-batch`` limits; Lightning ``callbacks/lr_monitor.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

from lightning.pytorch.loggers import Logger, MLFlowLogger

__all__ = [
    "FLUSH_TIMEOUT_S",
    "flush_loggers",
    "log_to_loggers",
    "mlflow_loggers",
]

FLUSH_TIMEOUT_S: float = 30.0
"""How long the monitors wait at the end of training for an MLflow store to take what was queued."""


def __getattr__(name: str) -> Any:
    """``MLFLOW_MAX_METRICS_PER_BATCH`` from :mod:`~rmt_callbacks.sinks.mlflow`, loaded only when asked for (a
    run without an MLflow logger loads none of the MLflow sinks)."""
    if name == "MLFLOW_MAX_METRICS_PER_BATCH":
        from .mlflow import MLFLOW_MAX_METRICS_PER_BATCH

        return MLFLOW_MAX_METRICS_PER_BATCH
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def mlflow_loggers(loggers: Sequence[Logger]) -> list[MLFlowLogger]:
    """The ``MLFlowLogger`` instances among ``loggers`` (subclasses included).

    Examples:
        >>> mlflow_loggers([])
        []
    """
    return [logger for logger in loggers if isinstance(logger, MLFlowLogger)]


def log_to_loggers(
    loggers: Sequence[Logger], metrics: Mapping[str, float], *, step: int, unless_logged: str | None = None
) -> None:
    """Send ``metrics`` to every logger at ``step``; call from rank zero only.

    Lightning loggers are called directly; an ``MLFlowLogger`` gets its metrics through the run's
    :class:`~rmt_callbacks.sinks.spool.MlflowWriter` instead (queued, sent off the calling thread in requests of at
    most 1000, spooled to disk while the server is down), so the caller never waits for the network. Call
    :func:`flush_loggers` before reading them back.

    Args:
        loggers: usually ``trainer.loggers``.
        metrics: finished metric keys (see :func:`~rmt_callbacks.sinks.keys.metric_key`) to float values.
        step: the step every logger records, the callbacks pass ``trainer.global_step``.
        unless_logged: a key of ``metrics``; an MLflow run that holds it at ``step`` already (a run resumed from a
            checkpoint older than its crash logs the steps in between again) keeps its first record, decided by
            the writer thread (:meth:`~rmt_callbacks.sinks.spool.MlflowWriter.unless_logged`). Other loggers get
            every step.

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
            from .spool import MlflowWriter  # imports mlflow: only with an MLFlowLogger attached

            writer = MlflowWriter.for_logger(logger)
            with writer.unless_logged(unless_logged, step) if unless_logged else nullcontext():
                writer.log_metrics(metrics, step=step)
        else:
            logger.log_metrics(dict(metrics), step=step)


def flush_loggers(loggers: Sequence[Logger], *, timeout_s: float = FLUSH_TIMEOUT_S, probe_now: bool = True) -> bool:
    """Wait until what :func:`log_to_loggers` queued for the ``MLFlowLogger`` runs reached their stores (a server
    that has just come back gets the writer's catch-up; one that does not answer ends the wait at once).

    Args:
        loggers: usually ``trainer.loggers``; loggers other than MLflow write synchronously and are left alone.
        timeout_s: the longest wait per run; what is still undelivered then stays spooled on disk (the writer
            says where), and nothing is lost.
        probe_now: ask each server whether it answers from this thread (at the end of training); ``False`` (at a
            checkpoint, mid-training) trusts the writer's latest probe, so a server that is away costs no wait.

    Returns:
        ``True`` iff everything reached the stores.

    Examples:
        >>> flush_loggers([])
        True
    """
    delivered = True
    for logger in mlflow_loggers(loggers):
        from .spool import MlflowWriter

        delivered = MlflowWriter.for_logger(logger).settle(timeout_s, probe_now=probe_now) and delivered
    return delivered
