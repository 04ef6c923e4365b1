r"""Outage-proof writes into one MLflow run: a background thread delivers, a disk spool keeps what it cannot.

:class:`MlflowWriter` queues metrics, arrays, tables, figures and tags in memory and sends them, in order, from a
daemon thread, so training never waits for the network and never sees an exception from the store. When the store
fails, the writer warns once (``MLflow tracking server <uri> unreachable; spooling to <dir>``), appends every later
operation to an append-only spool on disk, probes the server every ``retry_interval_s`` and, once it answers,
replays the spool in order and warns once more (``caught up: N operations replayed``). Replays are deduplicated:
a metric whose ``(key, step)`` the run already holds (``get_metric_history``) is not written again, an artifact is
re-uploaded to the same path, a table is uploaded whole over its earlier copy (never appended to), a parameter the run
already holds is not sent again (MLflow parameters cannot change: the first value stays), tags are overwritten with
the same value.

A spool belongs to one writer: its directory is keyed by run and process
(``<spool_dir>/<run id>/<host>-<pid>-<time>-<random>``, see :mod:`~rmt_callbacks.sinks._spooldir`, which also says
where it goes when ``spool_dir`` cannot be written). A writer replays only its own spool; one left behind by an
earlier process (which ended while the server was down) is named in a warning when a writer of the same run starts,
and is sent with :func:`replay` or ``python -m rmt_callbacks.sinks.spool replay DIR``, into its own run unless
``--run-id`` says otherwise. Replay reports every line it cannot read (line number and reason), sends the rest, and
exits non-zero when anything was not sent.

For an ``http(s)`` tracking URI every request is preceded by ``GET <uri>/health`` with a short timeout
(:data:`PROBE_TIMEOUT_S`, :func:`probe`), because a request to a server that refuses connections would otherwise sit
in MLflow's own retry loop for 244 s of backoff before the error surfaces (the sum is in
:mod:`~rmt_callbacks.sinks._probe`). A server that dies during a request still holds the writer thread in that loop;
a watchdog thread then spools what is queued, and once the server answers again starts a new writer thread that
sends the spool (:mod:`~rmt_callbacks.sinks._delivery`). The training thread never waits for any of it; it waits only
when asked to, in :meth:`MlflowWriter.settle` at the end of training and at checkpoints, for at most the time given.

A run that could not be created because the server was unreachable from the start (``run_id=None``) is created by
the writer on first contact, in ``experiment_name``, or by :func:`replay`; the run id is recorded in the spool's
``manifest.json``. Closing such a writer queues a ``terminate`` operation (unless :meth:`MlflowWriter.terminate`
queued one, or nothing was ever written: no empty run is created), so the run is marked finished once everything
before it has arrived, by the writer or by a later replay.

The parts: this module holds the writer's API (checks, operations, one writer per run, closing at exit) and the
command line; :mod:`~rmt_callbacks.sinks._delivery` the queue, writer thread and watchdog;
:mod:`~rmt_callbacks.sinks._spooldir` the spool directory and its layout; :mod:`~rmt_callbacks.sinks._replay`
sending into the run, deduplicated, and :func:`replay`; :mod:`~rmt_callbacks.sinks._probe` the ``/health`` probe and
which failures are outages.

References: MLflow REST API (``log-batch`` limits: 1000 metrics, 100 tags a request).
"""

from __future__ import annotations

import atexit
import io
import json
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from mlflow.exceptions import MlflowException

from .._checks import positive
from ._delivery import _Delivery
from ._probe import PROBE_TIMEOUT_S, probe
from ._probe import _is_outage as _is_outage  # re-exported: the logger classifies its own errors with it
from ._replay import ReplayReport, _Store, main, replay
from ._spooldir import STATUSES, Op, _Spool, spool_locations, spool_roots, spools_under
from .keys import artifact_path, sanitize
from .mlflow import (
    MLFLOW_MAX_METRICS_PER_BATCH,
    MLFLOW_MAX_PARAM_VALUE_LENGTH,
    MLFLOW_MAX_PARAMS_PER_BATCH,
    MLFLOW_MAX_TAG_VALUE_LENGTH,
    MLFLOW_MAX_TAGS_PER_BATCH,
    checked_path,
    rows_to_columns,
)

if TYPE_CHECKING:
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow import MlflowClient

__all__ = ["PROBE_TIMEOUT_S", "MlflowWriter", "ReplayReport", "probe", "replay"]

_EXIT_TIMEOUT_S = 10.0


class MlflowWriter(_Delivery):
    """Writes into one MLflow run from a background (daemon) thread: callers never block on the network and never
    get an exception from the store.

    Operations are delivered first in, first out. Bad arguments raise at the call (``ValueError``/``TypeError``);
    an operation the store rejects (HTTP 4xx) is dropped with a warning, once per kind of error; an outage sends
    it, and everything after it, to the spool (see the module docstring).

    Args:
        client: the ``MlflowClient`` to write with (``MLFlowLogger.experiment``).
        run_id: the run to write into; ``None`` to create one in ``experiment_name`` on first contact.
        tracking_uri: the client's tracking URI (probed before requests when it is ``http(s)``).
        spool_dir: the root to spool under; default ``./mlflow-spool``. The spool itself is a new directory below it,
            keyed by run and process (:attr:`spool_dir`), created only when something is spooled; when the root
            cannot be written, the per-user cache and then the temporary directory are used (said once).
        warn: called with each message for the user; default :func:`warnings.warn`.
        retry_interval_s: seconds between probes while the store is down.
        experiment_name: the experiment of the run to create when ``run_id`` is ``None``.
        artifact_location: artifact root of that experiment, if the writer has to create it.

    Raises:
        ValueError: ``run_id`` and ``experiment_name`` both missing, or ``retry_interval_s`` not positive.

    Examples:
        >>> MlflowWriter(None, None, tracking_uri="sqlite:///mlflow.db")
        Traceback (most recent call last):
        ...
        ValueError: MlflowWriter: pass run_id, or experiment_name for a run to create; got neither
    """

    def __init__(
        self,
        client: MlflowClient,
        run_id: str | None,
        *,
        tracking_uri: str,
        spool_dir: str | Path | None = None,
        warn: Callable[[str], None] | None = None,
        retry_interval_s: float = 5.0,
        experiment_name: str | None = None,
        artifact_location: str | None = None,
    ) -> None:
        if not run_id and not experiment_name:
            raise ValueError("MlflowWriter: pass run_id, or experiment_name for a run to create; got neither")
        positive("retry_interval_s", retry_interval_s, owner="MlflowWriter")
        locations = spool_locations(spool_dir, run_id, experiment_name)
        spool = _Spool(locations, {"tracking_uri": tracking_uri, "experiment_name": experiment_name})
        store = _Store(client, run_id, experiment_name, artifact_location)
        self._preparing = threading.local()  # the caller thread's prepared() list: operations built, not queued
        self._owns_run = run_id is None  # a run the writer creates is also finished by it (a "terminate" operation)
        self._terminated = False  # terminate() was called: close() adds no "terminate" of its own
        super().__init__(
            store,
            spool,
            tracking_uri=tracking_uri,
            warn=warn or _warn,
            retry_interval_s=float(retry_interval_s),
            name=run_id or "new",
        )
        _live.add(self)
        if run_id:
            self._name_left_behind(spool_dir, run_id)

    def _name_left_behind(self, spool_dir: str | Path | None, run_id: str) -> None:
        """Say once where earlier processes left spools of this run (a writer replays only its own)."""
        roots = [root / artifact_path(run_id) for root in spool_roots(spool_dir)]
        spools = [_Spool.existing(path) for root in roots if root.is_dir() for path in spools_under(root)]
        found = [spool.path for spool in spools if spool.count(complete=True) and not spool.in_use()]
        if found:
            dirs = " ".join(str(p) for p in found)
            self._warn(
                f"MLflow run {run_id}: {len(found)} spool(s) left by an earlier writer hold operations not yet sent; "
                f"they are not sent automatically (replay: python -m rmt_callbacks.sinks.spool replay {dirs})"
            )

    @classmethod
    def for_logger(cls, logger: MLFlowLogger, **kwargs: Any) -> MlflowWriter:
        """The writer of ``logger``'s run, one per ``(tracking URI, run id)`` in the process.

        When the logger has no run yet and its server does not answer, the writer is made with ``run_id=None``
        and the logger's experiment name: it creates a run of its own on first contact (the logger, if it ever
        reaches the server, makes another).

        Args:
            logger: a Lightning ``MLFlowLogger``.
            kwargs: passed to the constructor (``spool_dir``, ``warn``, ``retry_interval_s``) for a new writer.

        Returns:
            The shared writer.
        """
        uri = logger._tracking_uri  # Lightning keeps these private; reading them does not touch the server
        with _registry_lock:
            writer = _creating.get(logger)  # a writer that creates its own run stays this logger's writer
        if writer is not None and not writer._closed:
            return writer
        run_id = logger._run_id
        if run_id is None and probe(uri):
            try:
                run_id = logger.run_id  # creates the run as the logger does
            except (MlflowException, OSError):
                run_id = None
        with _registry_lock:
            writer = _registry.get((uri, run_id)) if run_id else _creating.get(logger)
            if writer is None or writer._closed:
                kwargs.setdefault("experiment_name", logger._experiment_name)
                kwargs.setdefault("artifact_location", logger._artifact_location)
                writer = cls(logger._mlflow_client, run_id, tracking_uri=uri, **kwargs)
                if run_id:
                    _registry[(uri, run_id)] = writer
                else:
                    _creating[logger] = writer
            return writer

    @classmethod
    def run_creator(cls, logger: MLFlowLogger) -> MlflowWriter | None:
        """The open writer that :meth:`for_logger` made to create ``logger``'s run, or ``None``.

        Such a writer creates the run on first contact with the server (its :attr:`run_id` is ``None`` until then);
        the logger should adopt that run instead of creating another. Reads no network.

        Args:
            logger: a Lightning ``MLFlowLogger``.

        Returns:
            The writer, or ``None`` when the logger's run was known (or the writer closed) when it was asked for.
        """
        with _registry_lock:
            writer = _creating.get(logger)
        return None if writer is None or writer._closed else writer

    @contextmanager
    def unless_logged(self, key: str, step: int) -> Iterator[None]:
        """Within this block, operations queued by this thread are left out when the run already holds metric
        ``key`` at ``step`` (checked by the writer thread: the caller never waits for the server).

        A run resumed from a checkpoint older than its crash logs the steps in between again; their records are
        already in the run, and the first one stays (said once).

        Args:
            key: a metric key the block logs at ``step`` (cleaned by ``sanitize``).
            step: the step.
        """
        previous, self._unless.value = getattr(self._unless, "value", None), (sanitize(key), int(step))
        try:
            yield
        finally:
            self._unless.value = previous

    @contextmanager
    def prepared(self) -> Iterator[list[Op]]:
        """Within this block, operations made by this thread are built (checked, serialised: ``.npz`` and PNG bytes,
        table columns) into the list it yields instead of being queued; :meth:`enqueue` queues them later.

        So one thread (a monitor's worker) does the work of a write and another (training) hands it over.
        """
        previous, self._preparing.ops = getattr(self._preparing, "ops", None), []
        try:
            yield self._preparing.ops
        finally:
            self._preparing.ops = previous

    def enqueue(self, ops: Sequence[Op]) -> None:
        """Queue operations built under :meth:`prepared`, in order (under :meth:`unless_logged` when in one); takes
        microseconds: a lock and an append each, no serialising, no network."""
        for op in ops:
            self._put(dict(op))

    def _put(self, op: Op) -> None:
        held = getattr(self._preparing, "ops", None)
        if held is None:
            super()._put(op)
        else:
            held.append(op)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (later writes go straight to the spool)."""
        return self._closed

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        """Queue ``metrics`` at ``step`` (keys cleaned by ``sanitize``; at most 1000 per ``log_batch``).

        Raises:
            TypeError: ``step`` is not an int.
        """
        if isinstance(step, bool) or not isinstance(step, int | np.integer):
            raise TypeError(f"log_metrics: step must be an int, got {step!r}")
        stamp = int(time.time() * 1000)
        items = iter({sanitize(k): float(v) for k, v in metrics.items()}.items())
        while chunk := dict(islice(items, MLFLOW_MAX_METRICS_PER_BATCH)):
            self._put({"kind": "metrics", "step": int(step), "timestamp": stamp, "metrics": chunk})

    def log_arrays(self, arrays: Mapping[str, np.ndarray], artifact_file: str) -> None:
        """Queue ``arrays`` as one ``.npz`` (serialised now; loadable with ``allow_pickle=False``).

        Raises:
            ValueError: ``artifact_file`` does not end in ``.npz``, or an array has object dtype.
        """
        path = checked_path(artifact_file, ".npz")
        values = {name: np.asarray(value) for name, value in arrays.items()}
        for name, value in values.items():
            if value.dtype == object:
                raise ValueError(f"log_arrays: array {name!r} has object dtype; only numeric arrays are stored")
        buffer = io.BytesIO()
        np.savez(buffer, allow_pickle=False, **values)  # (object arrays were refused above)
        self._put({"kind": "artifact", "artifact_file": path, "data": buffer.getvalue()})

    def log_table(self, rows: Sequence[Mapping[str, Any]], artifact_file: str) -> None:
        """Queue rows for ``client.log_table`` (the UI shows them as a table).

        Raises:
            ValueError: ``artifact_file`` does not end in ``.json``.
            TypeError: a value is not JSON-serialisable (numpy scalars are converted).
        """
        path = checked_path(artifact_file, ".json")
        columns = json.loads(json.dumps(rows_to_columns(rows), default=_json_scalar))
        self._put({"kind": "table", "artifact_file": path, "columns": columns})

    def log_image(self, png: bytes, artifact_file: str) -> None:
        """Queue a rendered PNG (e.g. ``"figures/fc1.weight/step_00000100.png"``).

        Raises:
            ValueError: ``artifact_file`` does not end in ``.png`` or ``png`` is not PNG data.
        """
        path = checked_path(artifact_file, ".png")
        if not isinstance(png, bytes | bytearray) or not png.startswith(b"\x89PNG"):
            raise ValueError(f"log_image: png must be the bytes of a PNG file for {artifact_file!r}")
        self._put({"kind": "artifact", "artifact_file": path, "data": bytes(png)})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Queue run parameters, at most 100 per request; keys cleaned by ``sanitize``, values ``str``-ed and cut to
        6000 characters. On replay a key the run already holds is left out (MLflow parameters cannot change)."""
        items = iter({sanitize(k): str(v)[:MLFLOW_MAX_PARAM_VALUE_LENGTH] for k, v in params.items()}.items())
        while chunk := dict(islice(items, MLFLOW_MAX_PARAMS_PER_BATCH)):
            self._put({"kind": "params", "params": chunk})

    def terminate(self, status: str = "FINISHED") -> None:
        """Queue ending the run with ``status`` (after everything queued before it); :meth:`close` then adds none.

        Args:
            status: an MLflow run status, ``"FINISHED"``, ``"FAILED"`` or ``"KILLED"``.

        Raises:
            ValueError: ``status`` is not one of those.
        """
        if status not in STATUSES:
            raise ValueError(f"terminate: status must be 'FINISHED', 'FAILED' or 'KILLED', got {status!r}")
        self._terminated = True
        self._put({"kind": "terminate", "status": status})

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Queue run tags, at most 100 per request; keys cleaned by ``sanitize``, values cut to 5000 characters."""
        items = iter({sanitize(k): str(v)[:MLFLOW_MAX_TAG_VALUE_LENGTH] for k, v in tags.items()}.items())
        while chunk := dict(islice(items, MLFLOW_MAX_TAGS_PER_BATCH)):
            self._put({"kind": "tags", "tags": chunk})

    def close(self, timeout_s: float | None = None) -> bool:
        """Flush (see :meth:`flush`), stop the thread, and warn where the spool is if anything is left.

        Returns:
            ``True`` iff everything was delivered.
        """
        if self._closed:
            return self.flush(0)
        if self._owns_run and self._used and not self._terminated:
            self._put({"kind": "terminate", "status": "FINISHED"})
        delivered = self._stop(timeout_s)
        _live.discard(self)
        if self._spooled:
            self._warn(
                f"MLflow tracking server {self.tracking_uri}: {self._spooled} operations not delivered; they are "
                f"spooled in {self.spool_dir} (replay: python -m rmt_callbacks.sinks.spool replay {self.spool_dir})"
            )
        if self.lost:
            self._warn(f"MLflow tracking server {self.tracking_uri}: {self.lost} operations were dropped (no spool)")
        return delivered


def _json_scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"log_table: {type(value).__name__} value {value!r} is not JSON-serialisable")


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=2)


_registry: dict[tuple[str, str], MlflowWriter] = {}
_creating: weakref.WeakKeyDictionary[Any, MlflowWriter] = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()
_live: weakref.WeakSet[MlflowWriter] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """At exit, give each open writer a short flush; what is left goes to its spool (with a warning)."""
    for writer in list(_live):
        writer.close(timeout_s=_EXIT_TIMEOUT_S)


if __name__ == "__main__":
    raise SystemExit(main())
