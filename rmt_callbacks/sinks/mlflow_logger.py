"""Lightning's ``MLFlowLogger``, made to train through a tracking server that does not answer.

Lightning's :class:`~lightning.pytorch.loggers.MLFlowLogger` talks to the server from the training thread. With the
server down, every request waits out MLflow's retry loop (244 s of backoff, see :mod:`~rmt_callbacks.sinks.spool`)
and then raises: ``Trainer.fit`` stalls in its setup hook (which reads ``logger.experiment``) and fails before the
first step; ``self.log`` and ``finalize`` do the same mid-run. :class:`SpoolingMLFlowLogger` takes the same arguments
and, while the server answers, writes the same run, keys and parameters; what differs is how it gets there:

* ``experiment`` asks ``<uri>/health`` first (:func:`~rmt_callbacks.sinks.spool.probe`, 2 s at most). Without an
  answer it returns the client without creating the experiment or the run, so ``run_id`` and ``experiment_id`` are
  ``None`` instead of a four-minute wait (``name`` and ``version``, from which ``ModelCheckpoint`` builds its default
  directory, are then the experiment name and the spool directory's name), and it warns once with the spool
  directory. From then on it asks no more itself (a training step never waits for the server): it tries again, at
  most every ``retry_interval_s``, once the writer's own probe finds the server answering.
* ``log_metrics`` and ``log_hyperparams`` go through the run's :class:`~rmt_callbacks.sinks.spool.MlflowWriter` (the
  one the monitors use): queued, sent from a background thread, spooled to disk while the server is down.
* A run that could not be created at the start is created by that writer when it first reaches the server (or by
  ``python -m rmt_callbacks.sinks.spool replay DIR`` after the process ended), with the tags and run name Lightning
  would have given it; the logger then takes its id, so the logger and the monitors write one run.
* ``finalize`` ends the run through the writer (after everything queued before it) and closes the writer, waiting
  at most :data:`FINALIZE_TIMEOUT_S`; what is left stays in the spool, whose location is reported.

Limits: checkpoints (``log_model``) are uploaded only while the server answers (otherwise a warning; they stay on
disk, and the next upload takes them); calls made directly on ``logger.experiment`` bypass the spool; a server that
dies between the probe and Lightning's own first request, or a checkpoint upload, still holds that request in MLflow's
retry loop (the run creation then falls back to the spool).

References: Lightning ``loggers/mlflow.py`` (2.6), ``trainer/call.py`` (setup hook), ``loggers/utilities.py``
(``_log_hyperparams``, ``_version`` read by the progress bar), ``callbacks/model_checkpoint.py`` (checkpoint directory
from ``save_dir``/``name``/``version``).
"""

from __future__ import annotations

import os
import re
import time
import warnings
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lightning.fabric.utilities.logger import _add_prefix, _convert_params, _flatten_dict
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from mlflow.exceptions import MlflowException

from .._checks import positive
from .spool import MlflowWriter, _is_outage, probe

if TYPE_CHECKING:
    from lightning.pytorch.callbacks import ModelCheckpoint
    from mlflow import MlflowClient

__all__ = ["FINALIZE_TIMEOUT_S", "SpoolingMLFlowLogger"]

FINALIZE_TIMEOUT_S: float = 30.0
"""How long ``finalize`` waits for the server to take what is queued before leaving it in the spool."""
_STATUS = {"success": "FINISHED", "failed": "FAILED", "finished": "FINISHED"}  # as Lightning's finalize maps them
_PARAM_VALUE_CHARS = 250  # Lightning's cut


class SpoolingMLFlowLogger(MLFlowLogger):
    """``MLFlowLogger`` whose writes go through the run's spooling writer; training never waits for the server.

    Args:
        experiment_name, run_name, tracking_uri, tags, save_dir, log_model, prefix, artifact_location, run_id,
            synchronous: as Lightning's ``MLFlowLogger`` (``synchronous`` only affects checkpoint uploads here: the
            writer always sends from its own thread).
        spool_dir: the root the writer spools under; default ``./mlflow-spool`` (its spool is a new directory below,
            ``<run id>/<host>-<pid>-<time>-<random>``, or ``new-<experiment>/…`` for a run not created yet; see
            :class:`~rmt_callbacks.sinks.spool.MlflowWriter`).
        retry_interval_s: seconds between probes of an unreachable server (by the logger and its writer).

    Raises:
        ValueError: ``retry_interval_s`` is not a positive number.

    Examples:
        >>> import json, tempfile, warnings
        >>> root = Path(tempfile.mkdtemp()) / "spool"
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     logger = SpoolingMLFlowLogger("demo", tracking_uri="http://127.0.0.1:9", spool_dir=root)  # no server
        ...     print(logger.run_id, logger.experiment_id, logger.name)  # at once, not after MLflow's retries
        ...     logger.finalize("success")  # the run's tags and its end wait in the spool
        None None demo
        >>> str(caught[0].message).startswith("SpoolingMLFlowLogger: tracking server http://127.0.0.1:9 unreachable")
        True
        >>> logger.spool_dir.parent == root / "new-demo"
        True
        >>> [json.loads(line)["kind"] for line in (logger.spool_dir / "ops.jsonl").read_text().splitlines()]
        ['tags', 'terminate']
    """

    def __init__(
        self,
        experiment_name: str = "lightning_logs",
        run_name: str | None = None,
        tracking_uri: str | None = None,
        tags: dict[str, Any] | None = None,
        save_dir: str | None = "./mlruns",
        log_model: Literal[True, False, "all"] = False,
        prefix: str = "",
        artifact_location: str | None = None,
        run_id: str | None = None,
        synchronous: bool | None = None,
        *,
        spool_dir: str | Path | None = None,
        retry_interval_s: float = 5.0,
    ) -> None:
        positive("retry_interval_s", retry_interval_s, owner="SpoolingMLFlowLogger")
        super().__init__(
            experiment_name, run_name, tracking_uri or os.getenv("MLFLOW_TRACKING_URI"), tags, save_dir, log_model,
            prefix, artifact_location, run_id, synchronous,
        )  # fmt: skip
        self._spool_dir, self._retry_interval_s = spool_dir, float(retry_interval_s)
        self._retry_at = 0.0  # no probe before this (time.monotonic) after one failed
        self._writer_: MlflowWriter | None = None
        self._opening = False  # inside MlflowWriter.for_logger, which may read run_id
        self._warned: set[str] = set()

    @property
    @rank_zero_experiment
    def experiment(self) -> MlflowClient:
        """The ``MlflowClient``; creates the experiment and run as Lightning does, but only if the server answers."""
        if self._initialized or self._opening:
            return self._mlflow_client
        creator = MlflowWriter.run_creator(self)
        if creator is not None:  # the writer creates the run on first contact: take it, never make a second one
            if creator.run_id is None:
                return self._mlflow_client
            self._run_id = creator.run_id
        # once there is a writer, its latest probe (a training step never waits here); before, ask (at setup)
        due, writer = time.monotonic() >= self._retry_at, self._writer_
        if due and (writer.answers if writer is not None else probe(self._tracking_uri)):
            try:
                return super().experiment
            except (MlflowException, OSError) as exc:  # went down after the probe (and after MLflow's retries)
                if not _is_outage(exc):
                    raise
        self._retry_at = time.monotonic() + self._retry_interval_s
        if self._writer_ is None:  # the first time: open the writer now, to say where it spools
            writer = self._open_writer()
            if writer.run_id is None:  # the run it creates gets the tags (and name) Lightning would have given it
                writer.set_tags(self._run_tags())
            spool = writer.prepare_spool()  # created now, at the first location that can be written
            where = (
                f"spooled to {spool} until it answers (after the process ended: python -m rmt_callbacks.sinks.spool "
                f"replay {spool})"
                if spool
                else "dropped while it does not answer: no spool location can be written (pass spool_dir=)"
            )
            self._warn_once(
                "down",
                f"SpoolingMLFlowLogger: tracking server {self._tracking_uri} unreachable; training goes on, and the "
                f"run's metrics, parameters and artifacts are {where}",
            )
        return self._mlflow_client

    @property
    def name(self) -> str | None:
        """The experiment id; the experiment name while the server has not been reached (``ModelCheckpoint``'s
        default directory is ``<default_root_dir>/<name>/<version>/checkpoints``)."""
        return self.experiment_id or self._experiment_name

    @property
    def version(self) -> str | None:
        """The run id; while the run does not exist, the name of the spool directory (one per run, so that two
        runs started with the server down do not share a checkpoint directory)."""
        run_id = self.run_id
        return self._writer_.spool_dir.name if run_id is None and self._writer_ is not None else run_id

    @property
    def spool_dir(self) -> Path | None:
        """The writer's spool directory (it exists once something was spooled); ``None`` before the first write."""
        return None if self._writer_ is None else self._writer_.spool_dir

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace) -> None:
        """Queue the flattened parameters (values ``str``-ed and cut to 250 characters, as Lightning does)."""
        params = _flatten_dict(_convert_params(params))
        if params:
            self._writer().log_params({k: str(v)[:_PARAM_VALUE_CHARS] for k, v in params.items()})

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Queue ``metrics`` at ``step`` (default 0), prefixed and cleaned as Lightning does; strings are dropped."""
        clean = {}
        for key, value in _add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR).items():
            if isinstance(value, str):
                self._warn_once(f"str:{key}", f"SpoolingMLFlowLogger: discarding metric with string value {key}")
                continue
            new = re.sub("[^a-zA-Z0-9_/. -]+", "", key)
            if new != key:
                self._warn_once(f"key:{key}", f"SpoolingMLFlowLogger: MLflow metric name {key!r} logged as {new!r}")
            clean[new] = float(value)
        if clean:
            self._writer().log_metrics(clean, step=int(step or 0))

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        """Upload checkpoints if due and the server answers, end the run through the writer, close it (bounded)."""
        writer = self._writer_
        if writer is None or writer.closed:
            if not self._initialized:
                return  # nothing was written since the last finalize: no run to end
            writer = self._open_writer()
        deadline = time.monotonic() + FINALIZE_TIMEOUT_S
        if self._checkpoint_callback:
            writer.settle(
                max(0.0, deadline - time.monotonic())
            )  # the writer may create the run meanwhile: upload into that one
            _ = self.experiment
            self._scan_and_log_checkpoints(self._checkpoint_callback)
        writer.terminate(_STATUS.get(status, status))
        writer.settle(max(0.0, deadline - time.monotonic()))
        writer.close(timeout_s=max(0.0, deadline - time.monotonic()))
        self._run_id = self._run_id or writer.run_id  # created by the writer during the wait

    def _scan_and_log_checkpoints(self, checkpoint_callback: ModelCheckpoint) -> None:
        if self._initialized and probe(self._tracking_uri):
            super()._scan_and_log_checkpoints(checkpoint_callback)
            return
        self._warn_once(
            "checkpoints",
            f"SpoolingMLFlowLogger: tracking server {self._tracking_uri} unreachable; checkpoints are not uploaded "
            f"now (they stay in {checkpoint_callback.dirpath}; the next upload while it answers takes them)",
        )

    def _run_tags(self) -> dict[str, str]:
        from lightning.pytorch.loggers.mlflow import _get_resolve_tags
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

        tags = dict(self.tags or {})
        if self._run_name is not None:
            tags[MLFLOW_RUN_NAME] = self._run_name
        return _get_resolve_tags()(tags)

    def _writer(self) -> MlflowWriter:
        _ = self.experiment  # creates the run as Lightning does while the server answers; never waits when it does not
        return self._open_writer()

    def _open_writer(self) -> MlflowWriter:
        self._opening = True
        try:
            self._writer_ = MlflowWriter.for_logger(
                self, spool_dir=self._spool_dir, retry_interval_s=self._retry_interval_s
            )
        finally:
            self._opening = False
        return self._writer_

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, UserWarning, stacklevel=3)
