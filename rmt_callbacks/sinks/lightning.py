r"""Scalars to every Lightning logger attached to the Trainer (MLflow, TensorBoard, CSV, …).

The callbacks never use ``pl_module.log``: like Lightning's ``LearningRateMonitor`` they send metrics to each
entry of ``trainer.loggers``, from rank zero, with an explicit step. Loggers other than MLflow get
``logger.log_metrics(metrics, step=step)``. An ``MLFlowLogger``'s run gets them through its
:class:`~rmt_callbacks.sinks.spool.MlflowWriter`: a background thread that sends them in requests of at most
:data:`MLFLOW_MAX_METRICS_PER_BATCH` (MLflow's limit), so that

.. math::

    \text{requests} = \lceil |\text{metrics}| / 1000 \rceil,

and spools them to disk while the tracking server is unreachable; :func:`flush_loggers` waits for delivery.

References: MLflow REST API, ``log-batch`` limits; Lightning ``callbacks/lr_monitor.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from lightning.pytorch.loggers import Logger, MLFlowLogger

__all__ = [
    "FLUSH_TIMEOUT_S",
    "MLFLOW_MAX_METRICS_PER_BATCH",
    "StepLedger",
    "flush_loggers",
    "log_to_loggers",
    "mlflow_loggers",
]

MLFLOW_MAX_METRICS_PER_BATCH: int = 1000
FLUSH_TIMEOUT_S: float = 30.0
"""How long the monitors wait at the end of training for an MLflow store to take what was queued."""


def mlflow_loggers(loggers: Sequence[Logger]) -> list[MLFlowLogger]:
    """The ``MLFlowLogger`` instances among ``loggers`` (subclasses included).

    Examples:
        >>> mlflow_loggers([])
        []
    """
    return [logger for logger in loggers if isinstance(logger, MLFlowLogger)]


def log_to_loggers(loggers: Sequence[Logger], metrics: Mapping[str, float], *, step: int) -> None:
    """Send ``metrics`` to every logger at ``step``; call from rank zero only.

    Lightning loggers are called directly; an ``MLFlowLogger`` gets its metrics through the run's
    :class:`~rmt_callbacks.sinks.spool.MlflowWriter` instead (queued, sent off the calling thread in requests of at
    most 1000, spooled to disk while the server is down), so the caller never waits for the network. Call
    :func:`flush_loggers` before reading them back.

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
            from .spool import MlflowWriter  # imports mlflow: only with an MLFlowLogger attached

            MlflowWriter.for_logger(logger).log_metrics(metrics, step=step)
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

    from .spool import probe

    if not probe(logger._tracking_uri):  # a server that does not answer: no multi-minute retry loop here
        return frozenset()
    try:
        return frozenset(m.step for m in logger.experiment.get_metric_history(logger.run_id, key))
    except (MlflowException, OSError):  # an unreachable store: nothing known, log as usual
        return frozenset()
