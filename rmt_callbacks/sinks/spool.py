r"""Outage-proof writes into one MLflow run: a background thread delivers, a disk spool keeps what it cannot.

:class:`MlflowWriter` queues metrics, arrays, tables, figures and tags in memory and sends them, in order, from a
daemon thread, so training never waits for the network and never sees an exception from the store. When the store
fails, the writer warns once (``MLflow tracking server <uri> unreachable; spooling to <dir>``), appends every later
operation to an append-only spool on disk, probes the server every ``retry_interval_s`` and, once it answers,
replays the spool in order and warns once more (``caught up: N operations replayed``). Replays are deduplicated:
a metric whose ``(key, step)`` the run already holds (``get_metric_history``) is not written again, an artifact is
re-uploaded to the same path, a table that already exists is not appended to a second time, a parameter the run
already holds is not sent again (MLflow parameters cannot change: the first value stays), tags are overwritten with
the same value. A spool left behind (the process ended while the server was down) is replayed with
:func:`replay` or ``python -m rmt_callbacks.sinks.spool replay DIR``.

For an ``http(s)`` tracking URI every request is preceded by ``GET <uri>/health`` with a short timeout
(:data:`PROBE_TIMEOUT_S`), because a request to a server that refuses connections would otherwise sit in MLflow's
own retry loop: ``MLFLOW_HTTP_REQUEST_MAX_RETRIES = 7`` retries with urllib3's exponential backoff
(``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR = 2``, at most 120 s a wait, up to 1 s jitter) sleep

.. math::

    \sum_{n=2}^{7} \min(2 \cdot 2^{\,n-1}, 120)\,\mathrm{s} = 4 + 8 + 16 + 32 + 64 + 120 = 244\ \mathrm{s}

before the error surfaces (measured here: 246 s for one ``get_experiment_by_name``). A server that dies during a
request still holds the writer thread in that loop (until it answers again or the retries run out); a watchdog
thread then probes every ``retry_interval_s``, and once the probe fails it warns and moves what is queued, the
request in flight included, to the spool, so the outage is reported and nothing waits only in memory. The training
thread never waits for any of it.

A run that could not be created because the server was unreachable from the start (``run_id=None``) is created by
the writer on first contact, in ``experiment_name``, or by :func:`replay`; the run id is recorded in the spool's
``manifest.json``. Closing such a writer queues a ``terminate`` operation (unless :meth:`MlflowWriter.terminate`
queued one, or nothing was ever written: no empty run is created), so the run is marked finished once everything
before it has arrived, by the writer or by a later replay.

Spool layout (one writer per directory): ``manifest.json`` (tracking URI, run id, experiment name), ``ops.jsonl``
(one JSON operation a line: ``{"kind": "metrics", "step", "timestamp", "metrics"}``, ``{"kind": "tags", "tags"}``,
``{"kind": "params", "params"}``,
``{"kind": "table", "artifact_file", "columns"}``, ``{"kind": "artifact", "artifact_file", "file"}``,
``{"kind": "terminate", "status"}``),
``ops.offset`` (bytes of ``ops.jsonl`` already delivered) and ``files/`` (artifact payloads).

References: MLflow REST API (``log-batch`` limits: 1000 metrics, 100 tags a request); ``mlflow.environment_variables``
(``MLFLOW_HTTP_REQUEST_*``); urllib3 ``Retry.get_backoff_time``.
"""

from __future__ import annotations

import argparse
import atexit
import io
import json
import os
import shutil
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from .keys import artifact_path, sanitize
from .mlflow import MLFLOW_MAX_TAGS_PER_BATCH, checked_path, rows_to_columns

if TYPE_CHECKING:
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow import MlflowClient

__all__ = ["PROBE_TIMEOUT_S", "MlflowWriter", "ReplayReport", "probe", "replay"]

PROBE_TIMEOUT_S: float = 2.0
_MAX_METRICS_PER_BATCH = 1000  # MLflow's log-batch limit (the same limit as sinks.lightning)
_MAX_PARAMS_PER_BATCH = 100  # MLflow's log-batch limit for parameters
_MAX_PARAM_VALUE = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH
_LOGGED_ARTIFACTS_TAG = "mlflow.loggedArtifacts"  # how the UI knows a JSON artifact is a table
_EXIT_TIMEOUT_S = 10.0
Op = dict[str, Any]


def probe(tracking_uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the tracking server answers ``GET <uri>/health``; ``True`` for stores that are not ``http(s)``.

    Any answer below 500 counts (the server is there; a proxy's 502/503 does not). Honours
    ``MLFLOW_TRACKING_INSECURE_TLS`` and ``MLFLOW_TRACKING_SERVER_CERT_PATH`` as MLflow's client does.

    Args:
        tracking_uri: the MLflow tracking URI.
        timeout_s: connect and read timeout of the probe.

    Returns:
        ``True`` if the store can be talked to now.

    Examples:
        >>> probe("sqlite:///mlflow.db")
        True
        >>> probe("http://127.0.0.1:9", timeout_s=0.5)  # the discard port: nothing listens on loopback
        False
    """
    if not _is_http(tracking_uri):
        return True
    try:
        with urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=timeout_s, context=_tls()) as r:
            return r.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (urllib.error.URLError, OSError, ValueError):
        return False


class MlflowWriter:
    """Writes into one MLflow run from a background (daemon) thread: callers never block on the network and never
    get an exception from the store.

    Operations are delivered first in, first out. Bad arguments raise at the call (``ValueError``/``TypeError``);
    an operation the store rejects (HTTP 4xx) is dropped with a warning, once per kind of error; an outage sends
    it, and everything after it, to the spool (see the module docstring).

    Args:
        client: the ``MlflowClient`` to write with (``MLFlowLogger.experiment``).
        run_id: the run to write into; ``None`` to create one in ``experiment_name`` on first contact.
        tracking_uri: the client's tracking URI (probed before requests when it is ``http(s)``).
        spool_dir: where to spool; default ``./mlflow-spool/<run id>`` (``new-<experiment>-<time>-<pid>-<random>`` for a
            run not yet created). Created only when something is spooled.
        warn: called with each message for the user; default :func:`warnings.warn`.
        retry_interval_s: seconds between probes while the store is down.
        experiment_name: the experiment of the run to create when ``run_id`` is ``None``.
        artifact_location: artifact root of that experiment, if the writer has to create it.

    Raises:
        ValueError: ``run_id`` and ``experiment_name`` both missing, ``retry_interval_s`` not positive, or
            ``spool_dir`` holds another run's spool.

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
        if isinstance(retry_interval_s, bool) or not isinstance(retry_interval_s, int | float) or retry_interval_s <= 0:
            raise ValueError(f"MlflowWriter: retry_interval_s must be a positive number, got {retry_interval_s!r}")
        self.tracking_uri = tracking_uri
        self._retry_interval_s = float(retry_interval_s)
        self._warn = warn or _warn
        path = Path(spool_dir) if spool_dir else _default_spool_dir(run_id, experiment_name)
        self._spool = _Spool(path, {"tracking_uri": tracking_uri, "experiment_name": experiment_name})
        self._spool.check_owner(run_id)
        self._store = _Store(client, run_id or self._spool.manifest().get("run_id"), experiment_name, artifact_location)
        self._owns_run = run_id is None  # a run the writer creates is also finished by it (a "terminate" operation)
        self._terminated = False  # terminate() was called: close() adds no "terminate" of its own
        self._used = False  # anything was queued (a writer that never was creates no run just to finish it)
        self._cond = threading.Condition()
        self._spool_lock = threading.Lock()  # taken before _cond, never while holding it
        self._pending: deque[Op] = deque()
        self._inflight: Op | None = None
        self._inflight_spooled = False
        self._spooled = self._spool.count()
        self._down = False
        self._dropped = 0  # operations refused by the store or not spoolable, since the last flush
        self._replayed = 0
        self._closed = False
        self._warned: set[str] = set()
        self._busy_since: float | None = None  # when the writer thread entered its current store request
        self._thread = threading.Thread(target=self._run, name=f"mlflow-writer-{run_id or 'new'}", daemon=True)
        self._thread.start()
        threading.Thread(target=self._watch, name=f"mlflow-watchdog-{run_id or 'new'}", daemon=True).start()
        _live.add(self)

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

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (later writes go straight to the spool)."""
        return self._closed

    @property
    def spool_dir(self) -> Path:
        """The spool directory (it exists only once something was spooled)."""
        return self._spool.path

    @property
    def run_id(self) -> str | None:
        """The run written into; ``None`` until a run to create has been created."""
        return self._store.run_id

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        """Queue ``metrics`` at ``step`` (keys cleaned by ``sanitize``; at most 1000 per ``log_batch``).

        Raises:
            TypeError: ``step`` is not an int.
        """
        if isinstance(step, bool) or not isinstance(step, int | np.integer):
            raise TypeError(f"log_metrics: step must be an int, got {step!r}")
        stamp = int(time.time() * 1000)
        items = iter({sanitize(k): float(v) for k, v in metrics.items()}.items())
        while chunk := dict(islice(items, _MAX_METRICS_PER_BATCH)):
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
        np.savez(buffer, **values)
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
        items = iter({sanitize(k): str(v)[:_MAX_PARAM_VALUE] for k, v in params.items()}.items())
        while chunk := dict(islice(items, _MAX_PARAMS_PER_BATCH)):
            self._put({"kind": "params", "params": chunk})

    def terminate(self, status: str = "FINISHED") -> None:
        """Queue ending the run with ``status`` (after everything queued before it); :meth:`close` then adds none.

        Args:
            status: an MLflow run status, ``"FINISHED"``, ``"FAILED"`` or ``"KILLED"``.

        Raises:
            ValueError: ``status`` is not one of those.
        """
        if status not in ("FINISHED", "FAILED", "KILLED"):
            raise ValueError(f"terminate: status must be 'FINISHED', 'FAILED' or 'KILLED', got {status!r}")
        self._terminated = True
        self._put({"kind": "terminate", "status": status})

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Queue run tags, at most 100 per request; keys cleaned by ``sanitize``, values cut to 5000 characters."""
        items = iter({sanitize(k): str(v)[:5000] for k, v in tags.items()}.items())
        while chunk := dict(islice(items, MLFLOW_MAX_TAGS_PER_BATCH)):
            self._put({"kind": "tags", "tags": chunk})

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything queued reached the store, or is on disk because the store is down.

        Args:
            timeout_s: the longest wait; ``None`` waits as long as the store keeps answering.

        Returns:
            ``True`` iff everything queued since the last flush reached the store; otherwise what is left is in
            :attr:`spool_dir` (and what the store refused was dropped with a warning).
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while not self._settled():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(left)
            delivered = self._delivered() and not self._down and not self._dropped
            self._dropped = 0
        if not delivered:
            self._spool_leftovers()
        return delivered

    def settle(self, timeout_s: float) -> bool:
        """:meth:`flush`, and while the writer is still behind a server that answers again (it probes every
        ``retry_interval_s``), wait for its catch-up, up to ``timeout_s`` in all; a server that does not answer
        ends the wait at once (what is left is on disk).

        Returns:
            ``True`` iff everything reached the store.
        """
        deadline = time.monotonic() + timeout_s
        while not self.flush(timeout_s=max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline or not probe(self.tracking_uri):
                return False
            time.sleep(0.2)
        return True

    def close(self, timeout_s: float | None = None) -> bool:
        """Flush (see :meth:`flush`), stop the thread, and warn where the spool is if anything is left.

        Returns:
            ``True`` iff everything was delivered.
        """
        if self._closed:
            return self.flush(0)
        if self._owns_run and self._used and not self._terminated:
            self._put({"kind": "terminate", "status": "FINISHED"})
        delivered = self.flush(timeout_s)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=PROBE_TIMEOUT_S)
        delivered = self.flush(0) and delivered  # anything queued meanwhile goes to disk
        _live.discard(self)
        if self._spooled:
            self._warn(
                f"MLflow tracking server {self.tracking_uri}: {self._spooled} operations not delivered; they are "
                f"spooled in {self.spool_dir} (replay: python -m rmt_callbacks.sinks.spool replay {self.spool_dir})"
            )
        return delivered

    # -- caller side ---------------------------------------------------------------------------------------------

    def _put(self, op: Op) -> None:
        self._used = True
        with self._cond:
            if not self._closed:
                self._pending.append(op)
                self._cond.notify_all()
                return
        self._warn_once("closed", f"MlflowWriter for {self.tracking_uri} is closed; spooling to {self.spool_dir}")
        with self._spool_lock:
            self._add_to_spool([op])

    def _settled(self) -> bool:
        """Delivered, or down with everything on disk (a request stuck in MLflow's retry loop already spooled)."""
        if self._down:
            return not self._pending and (self._inflight is None or self._inflight_spooled)
        return self._delivered()

    def _delivered(self) -> bool:
        return not self._pending and self._inflight is None and not self._spooled

    def _spool_leftovers(self) -> None:
        """Put what is queued (and an operation stuck in a request) on disk, from the caller's thread."""
        with self._spool_lock:
            with self._cond:
                ops = list(self._pending)
                self._pending.clear()
                if self._inflight is not None and not self._inflight_spooled:
                    ops.insert(0, self._inflight)
                    self._inflight_spooled = True
            self._add_to_spool(ops)

    # -- writer thread -------------------------------------------------------------------------------------------

    def _run(self) -> None:
        next_probe = 0.0
        while True:
            with self._cond:
                while not self._pending and not self._closed and not self._retry_due(next_probe):
                    self._cond.wait(self._wait_s(next_probe))
                if self._closed:
                    return  # close() flushed: what was not delivered is on disk
                down, spooled = self._down, self._spooled
            if down or spooled:
                if self._retry_due(next_probe):
                    caught_up = self._reachable() and self._catch_up()
                    next_probe = time.monotonic() + (0.0 if caught_up else self._retry_interval_s)
                if self._down:
                    self._spool_pending()
                continue
            if not self._send_next():
                next_probe = time.monotonic() + self._retry_interval_s

    def _retry_due(self, next_probe: float) -> bool:
        return (self._down or self._spooled > 0) and time.monotonic() >= next_probe

    def _wait_s(self, next_probe: float) -> float | None:
        return max(0.0, next_probe - time.monotonic()) if (self._down or self._spooled) else None

    def _reachable(self) -> bool:
        return probe(self.tracking_uri)

    def _send_next(self) -> bool:
        """Send the oldest queued operation; on an outage spool it and everything after it. False when down."""
        with self._cond:
            op = self._inflight = self._pending.popleft()
            self._inflight_spooled = False
        error = None if self._reachable() else ConnectionError(f"{self.tracking_uri}/health does not answer")
        if error is None:
            error = self._attempt(op, replaying=False)
        if error is None or not _is_outage(error):
            self._done(op, error)
            return True
        self._go_down()
        with self._spool_lock:
            with self._cond:
                ops = [] if self._inflight_spooled else [op]
                self._inflight = None
                ops.extend(self._pending)
                self._pending.clear()
                self._cond.notify_all()
            self._add_to_spool(ops)
        return False

    def _attempt(self, op: Op, *, replaying: bool) -> BaseException | None:
        self._busy_since = time.monotonic()
        try:
            if self._store.run_id is None:
                self._store.create_run()
                with self._spool_lock:
                    self._spool.set_run_id(self._store.run_id)
            self._store.send(op, replaying=replaying)
        except Exception as exc:  # the thread must survive anything the store raises; classified by the caller
            return exc
        finally:
            self._busy_since = None
        return None

    def _watch(self) -> None:
        """While the writer thread is stuck in a request (MLflow's retry loop) and the server is gone: spool."""
        while not self._closed:
            with self._cond:
                self._cond.wait(self._retry_interval_s)
            since = self._busy_since
            if since is not None and time.monotonic() - since > self._retry_interval_s and not self._reachable():
                self._go_down()
                self._spool_leftovers()

    def _done(self, op: Op, error: BaseException | None) -> None:
        if error is not None:
            self._reject(op, error)
        with self._cond:
            self._inflight = None
            self._cond.notify_all()

    def _reject(self, op: Op, error: BaseException) -> None:
        with self._cond:
            self._dropped += 1
        what = op.get("artifact_file") or f"{op['kind']} at step {op.get('step', '-')}"
        self._warn_once(
            f"{op['kind']}:{type(error).__name__}",
            f"MLflow rejected {what} ({type(error).__name__}: {error}); it is dropped (later ones alike, silently)",
        )

    def _go_down(self) -> None:
        with self._cond:
            was_down, self._down = self._down, True
        if not was_down:
            self._warn(f"MLflow tracking server {self.tracking_uri} unreachable; spooling to {self.spool_dir}")

    def _spool_pending(self) -> None:
        with self._spool_lock:
            with self._cond:
                ops = list(self._pending)
                self._pending.clear()
            self._add_to_spool(ops)

    def _add_to_spool(self, ops: list[Op]) -> None:
        if not ops:
            return
        try:
            added = self._spool.append(ops, self._store.run_id)
        except OSError as exc:  # a full or read-only disk: nowhere left to keep them
            self._warn_once("spool", f"cannot spool to {self.spool_dir} ({exc}); operations are being dropped")
            added = None
        with self._cond:
            self._dropped += len(ops) if added is None else 0
            self._spooled = self._spool.count() if added is None else self._spooled + added  # after an error: recount
            self._cond.notify_all()

    def _catch_up(self) -> bool:
        """Replay the spool in order, deduplicated; False at the first outage or while operations are left."""
        self._store.forget_history()
        for end, op in self._spool.pending():
            error = self._attempt(op, replaying=True)
            if error is not None and _is_outage(error):
                self._go_down()
                return False
            if error is not None:
                self._reject(op, error)
            with self._spool_lock:
                self._spool.advance(end)
                with self._cond:
                    self._spooled -= 1
                    self._replayed += 1
        with self._spool_lock, self._cond:
            self._spooled = self._spool.count()  # the file is the truth; at the end of a pass it is short
            if self._spooled:
                return False  # appended while this pass read the file: another pass
            self._spool.clear()
            was_down, self._down = self._down, False
            replayed, self._replayed = self._replayed, 0
            self._cond.notify_all()
        if was_down:
            self._warn(f"MLflow tracking server {self.tracking_uri} caught up: {replayed} operations replayed")
        return True

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self._warn(message)


class _Store:
    """Sends operations through one client into one run; on replay, skips metrics and tables the run holds."""

    def __init__(self, client: MlflowClient, run_id: str | None, experiment: str | None, location: str | None):
        self.client, self.run_id = client, run_id
        self._experiment, self._location = experiment, location
        self._steps: dict[str, set[int]] = {}
        self._fresh = False  # a run created here holds only what this store wrote since
        self.skipped = 0

    def create_run(self) -> None:
        found = self.client.get_experiment_by_name(self._experiment)
        if found is not None and found.lifecycle_stage != "deleted":
            experiment_id = found.experiment_id
        else:
            experiment_id = self.client.create_experiment(self._experiment, artifact_location=self._location)
        self.run_id = self.client.create_run(experiment_id).info.run_id
        self._fresh = True

    def forget_history(self) -> None:
        self._steps.clear()
        self._fresh = False

    def send(self, op: Op, *, replaying: bool) -> None:
        getattr(self, f"_send_{op['kind']}")(op, replaying)

    def _send_metrics(self, op: Op, replaying: bool) -> None:
        step, stamp = op["step"], op["timestamp"]
        metrics = {k: v for k, v in op["metrics"].items() if not (replaying and step in self._held(k))}
        self.skipped += len(op["metrics"]) - len(metrics)
        if metrics:
            self.client.log_batch(self.run_id, metrics=[Metric(k, v, stamp, step) for k, v in metrics.items()])
        for key in metrics if replaying else ():
            self._steps[key].add(step)

    def _held(self, key: str) -> set[int]:
        if key not in self._steps:
            held = () if self._fresh else self.client.get_metric_history(self.run_id, key)
            self._steps[key] = {m.step for m in held}
        return self._steps[key]

    def _send_tags(self, op: Op, replaying: bool) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in op["tags"].items()])

    def _send_table(self, op: Op, replaying: bool) -> None:
        path = op["artifact_file"]
        if replaying and _exists(self.client, self.run_id, path):  # log_table would append the rows again
            self.skipped += 1
            tags = json.loads(self.client.get_run(self.run_id).data.tags.get(_LOGGED_ARTIFACTS_TAG, "[]"))
            if {"path": path, "type": "table"} not in tags:
                tags.append({"path": path, "type": "table"})
                self.client.set_tag(self.run_id, _LOGGED_ARTIFACTS_TAG, json.dumps(tags))
            return
        self.client.log_table(self.run_id, data=op["columns"], artifact_file=path)

    def _send_params(self, op: Op, replaying: bool) -> None:
        held = self.client.get_run(self.run_id).data.params if replaying and not self._fresh else {}
        params = [Param(k, v) for k, v in op["params"].items() if k not in held]
        self.skipped += len(op["params"]) - len(params)
        if params:
            self.client.log_batch(self.run_id, params=params)

    def _send_terminate(self, op: Op, replaying: bool) -> None:
        self.client.set_terminated(self.run_id, op["status"])

    def _send_artifact(self, op: Op, replaying: bool) -> None:
        head, _, name = op["artifact_file"].rpartition("/")
        if "file" in op:
            self.client.log_artifact(self.run_id, str(op["file"]), artifact_path=head or None)
            return
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / name).write_bytes(op["data"])
            self.client.log_artifact(self.run_id, str(Path(tmp) / name), artifact_path=head or None)


class _Spool:
    """The append-only spool directory of one run (see the module docstring for its layout)."""

    def __init__(self, path: Path, defaults: Mapping[str, Any] | None = None) -> None:
        self.path, self._defaults = path, dict(defaults or {})
        self._ops, self._offset = path / "ops.jsonl", path / "ops.offset"

    def manifest(self) -> dict[str, Any]:
        file = self.path / "manifest.json"
        return json.loads(file.read_text()) if file.exists() else {}

    def check_owner(self, run_id: str | None) -> None:
        held = self.manifest().get("run_id")
        if run_id and held and held != run_id:
            raise ValueError(f"MlflowWriter: spool_dir {self.path} holds the spool of run {held}, not {run_id}")

    def set_run_id(self, run_id: str | None) -> None:
        if (self.path / "manifest.json").exists():
            self._write_manifest({**self.manifest(), "run_id": run_id})

    def _write_manifest(self, manifest: Mapping[str, Any]) -> None:
        tmp = self.path / "manifest.json.tmp"
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, self.path / "manifest.json")

    def ensure(self, manifest: Mapping[str, Any]) -> None:
        if not (self.path / "manifest.json").exists():
            (self.path / "files").mkdir(parents=True, exist_ok=True)
            self._write_manifest(manifest)

    def append(self, ops: Sequence[Op], run_id: str | None) -> int:
        """Write ``ops`` at the end of the spool (payloads as files first); returns how many."""
        if not ops:
            return 0
        self.ensure({"format": 1, **self._defaults, "run_id": run_id})
        with open(self._ops, "a+b") as out:
            if out.seek(0, os.SEEK_END):
                out.seek(-1, os.SEEK_END)
                if out.read(1) != b"\n":
                    out.write(b"\n")  # end a line cut by a crash, so that it stays one unreadable line
            for op in ops:
                out.write(json.dumps(self._stored(op)).encode() + b"\n")
            out.flush()
            os.fsync(out.fileno())
        return len(ops)

    def _stored(self, op: Op) -> Op:
        if "data" not in op:
            return op
        name = op["artifact_file"].rpartition("/")[2]
        folder = self.path / "files" / uuid.uuid4().hex
        folder.mkdir(parents=True)
        (folder / name).write_bytes(op["data"])
        return {k: v for k, v in op.items() if k != "data"} | {"file": str((folder / name).relative_to(self.path))}

    def pending(self) -> Iterator[tuple[int, Op]]:
        """``(end offset, operation)`` for each operation not yet delivered, oldest first."""
        if not self._ops.exists():
            return
        with open(self._ops, "rb") as f:
            f.seek(self._start())
            for line in iter(f.readline, b""):
                if not line.endswith(b"\n"):
                    return  # being written, or cut by a crash mid-write
                try:
                    op = json.loads(line)
                except ValueError:
                    continue  # cut by a crash mid-write and ended by a later append
                if "file" in op:
                    op["file"] = str(self.path / op["file"])
                yield f.tell(), op

    def count(self) -> int:
        return sum(1 for _ in self.pending())

    def _start(self) -> int:
        return int(self._offset.read_text()) if self._offset.exists() else 0

    def advance(self, offset: int) -> None:
        tmp = self.path / "ops.offset.tmp"
        tmp.write_text(str(offset))
        os.replace(tmp, self._offset)

    def clear(self) -> None:
        """Drop delivered operations and their payloads (the manifest stays)."""
        for file in (self._ops, self._offset):
            file.unlink(missing_ok=True)
        shutil.rmtree(self.path / "files", ignore_errors=True)


@dataclass(frozen=True)
class ReplayReport:
    """What :func:`replay` did.

    Attributes:
        run_id: the run written into (created by the replay if the spool had none).
        replayed: operations taken from the spool and sent (duplicates included).
        skipped: metric values and tables left out because the run already held them.
        rejected: operations the store refused (HTTP 4xx); dropped.
        remaining: operations still in the spool (the store failed again); 0 when done.
    """

    run_id: str | None
    replayed: int
    skipped: int
    rejected: int
    remaining: int


def replay(spool_dir: str | Path, *, tracking_uri: str | None = None) -> ReplayReport:
    """Send a spool left behind into its run, in order and deduplicated; stop at the first outage.

    Args:
        spool_dir: the directory a writer reported.
        tracking_uri: where to send it; default the URI in the spool's manifest.

    Returns:
        A :class:`ReplayReport`.

    Raises:
        FileNotFoundError: ``spool_dir`` has no ``manifest.json``.

    Examples:
        >>> replay("no-such-spool")
        Traceback (most recent call last):
        ...
        FileNotFoundError: replay: no-such-spool holds no spool (no manifest.json)
    """
    from mlflow import MlflowClient

    spool = _Spool(Path(spool_dir))
    manifest = spool.manifest()
    if not manifest:
        raise FileNotFoundError(f"replay: {spool_dir} holds no spool (no manifest.json)")
    uri = tracking_uri or manifest["tracking_uri"]
    store = _Store(MlflowClient(uri), manifest.get("run_id"), manifest.get("experiment_name"), None)
    replayed, rejected, remaining = 0, 0, spool.count()
    try:
        if remaining and probe(uri) and store.run_id is None:
            store.create_run()
            spool.set_run_id(store.run_id)
        for end, op in spool.pending() if store.run_id else ():
            try:
                store.send(op, replaying=True)
            except MlflowException as exc:
                if _is_outage(exc):
                    raise
                rejected += 1
            spool.advance(end)
            replayed, remaining = replayed + 1, remaining - 1
    except (MlflowException, OSError):
        pass  # the store failed again: the rest stays in the spool for the next replay
    if remaining == 0:
        spool.clear()
    return ReplayReport(store.run_id, replayed, store.skipped, rejected, remaining)


def _is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _tls() -> ssl.SSLContext | None:
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("true", "1"):
        return ssl._create_unverified_context()  # the user asked MLflow to skip verification too
    cert = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH")
    return ssl.create_default_context(cafile=cert) if cert else None


def _is_outage(error: BaseException) -> bool:
    """A failure worth retrying later (a server away, a full disk), as opposed to an operation the store refuses."""
    if isinstance(error, MlflowException):
        status = error.get_http_status_code()
        return not 400 <= status < 500 or status == 429
    return isinstance(error, OSError)


def _exists(client: MlflowClient, run_id: str, path: str) -> bool:
    head = path.rpartition("/")[0] or None
    return any(f.path == path for f in client.list_artifacts(run_id, head))


def _json_scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"log_table: {type(value).__name__} value {value!r} is not JSON-serialisable")


def _default_spool_dir(run_id: str | None, experiment_name: str | None) -> Path:
    stamp = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:6]}"  # two in one second: two dirs
    name = run_id or f"new-{experiment_name}-{stamp}"
    return Path.cwd() / "mlflow-spool" / artifact_path(name)


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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rmt_callbacks.sinks.spool replay DIR [--tracking-uri URI]``; exit status 1 if anything is left."""
    parser = argparse.ArgumentParser(prog="python -m rmt_callbacks.sinks.spool")
    commands = parser.add_subparsers(dest="command", required=True)
    replay_cmd = commands.add_parser("replay", help="send a spooled MLflow run to its tracking server")
    replay_cmd.add_argument("spool_dir")
    replay_cmd.add_argument("--tracking-uri", default=None)
    args = parser.parse_args(argv)
    report = replay(args.spool_dir, tracking_uri=args.tracking_uri)
    print(f"run {report.run_id}: {report.replayed} replayed, {report.skipped} skipped, {report.remaining} left")
    return 1 if report.remaining else 0


if __name__ == "__main__":
    raise SystemExit(main())
