"""The delivery engine of :class:`~rmt_callbacks.sinks.spool.MlflowWriter`: a queue, a writer thread, a watchdog.

Operations (:data:`~rmt_callbacks.sinks._spooldir.Op`) queued by the caller are sent first in, first out, by a daemon
thread through a :class:`~rmt_callbacks.sinks._replay._Store`, each after a :func:`~rmt_callbacks.sinks._probe.probe`.
A failed probe or an outage (:func:`~rmt_callbacks.sinks._probe._is_outage`) marks the store down: that operation and
every later one go to the :class:`~rmt_callbacks.sinks._spooldir._Spool`, the thread probes the server every
``retry_interval_s`` and, once it answers, replays the spool in order (deduplicated) before sending anything new. A
request that hangs in MLflow's retry loop holds the writer thread; the watchdog thread then probes, and once the probe
fails it marks the store down and moves what is queued, the request in flight included, to the spool. The caller's
thread never sends; it blocks only in :meth:`_Delivery.flush`, :meth:`_Delivery.settle` and :meth:`_Delivery._stop`.

Locks: ``_spool_lock`` (one writer of the spool file at a time) is taken before ``_cond`` (the queue and the
counters), never while holding it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from ._probe import PROBE_TIMEOUT_S, _is_outage, probe
from ._replay import _Store
from ._spooldir import Op, _Spool


class _Delivery:
    """Delivers queued operations into one run from a background thread, spooling them while the store is down.

    A subclass builds the operations and queues them with :meth:`_put`; :meth:`_stop` ends the thread.

    Args:
        store: sends operations into the run (and creates the run when its ``run_id`` is ``None``).
        spool: the run's spool directory; operations already in it are replayed first.
        tracking_uri: the client's tracking URI (probed before requests when it is ``http(s)``).
        warn: called with each message for the user.
        retry_interval_s: seconds between probes while the store is down.
        name: the suffix of the threads' names.
    """

    def __init__(
        self,
        store: _Store,
        spool: _Spool,
        *,
        tracking_uri: str,
        warn: Callable[[str], None],
        retry_interval_s: float,
        name: str,
    ) -> None:
        self.tracking_uri = tracking_uri
        self._retry_interval_s = retry_interval_s
        self._warn = warn
        self._spool, self._store = spool, store
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
        self._thread = threading.Thread(target=self._run, name=f"mlflow-writer-{name}", daemon=True)
        self._thread.start()
        threading.Thread(target=self._watch, name=f"mlflow-watchdog-{name}", daemon=True).start()

    @property
    def spool_dir(self) -> Path:
        """The spool directory (it exists only once something was spooled)."""
        return self._spool.path

    @property
    def run_id(self) -> str | None:
        """The run written into; ``None`` until a run to create has been created."""
        return self._store.run_id

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

    def _stop(self, timeout_s: float | None) -> bool:
        """Flush, stop the writer thread, and put anything queued meanwhile on disk; ``True`` iff all was delivered."""
        delivered = self.flush(timeout_s)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=PROBE_TIMEOUT_S)
        return self.flush(0) and delivered  # anything queued meanwhile goes to disk

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
