"""The delivery engine of :class:`~rmt_callbacks.sinks.spool.MlflowWriter`: a queue, a writer thread, a watchdog.

Operations (:data:`~rmt_callbacks.sinks._spooldir.Op`) queued by the caller are sent first in, first out, by a daemon
thread through a :class:`~rmt_callbacks.sinks._replay._Store`, each after a :func:`~rmt_callbacks.sinks._probe.probe`
(unless the store answered a request within the last second: a server that dies in between is the watchdog's).
A failed probe or an outage (:func:`~rmt_callbacks.sinks._probe._is_outage`) marks the store down: that operation and
every later one go to the :class:`~rmt_callbacks.sinks._spooldir._Spool` (created then, at the first location that
can be written; with none, they are dropped and counted in :attr:`_Delivery.lost`), the thread probes the server every
``retry_interval_s`` and, once it answers, replays the spool in order (deduplicated) before sending anything new.

A request that hangs in MLflow's retry loop holds the writer thread; the watchdog then probes, and once the probe fails
it marks the store down and spools what is queued, the request in flight included. Since urllib3 may sleep up to 120 s
between MLflow's retries, when the watchdog sees the server answer again while that request still hangs it starts a
new writer thread (with a fresh store) that sends the spool at once, and leaves the old one to end alone (what it may
still send is a duplicate that deduplication, or MLflow's own, absorbs). The caller's thread never sends; it blocks
only in :meth:`_Delivery.flush`, :meth:`_Delivery.settle` and :meth:`_Delivery._stop`.

Locks: ``_spool_lock`` (one writer of the spool file at a time) is taken before ``_cond`` (the queue and the
counters), never while holding it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from pathlib import Path

from ._probe import PROBE_TIMEOUT_S, _is_outage, probe
from ._replay import _Store
from ._spooldir import Op, _Spool

_FRESH_S = 1.0  # a store that answered within this many seconds is not probed again before the next request


class _Delivery:
    """Delivers queued operations into one run from a background thread, spooling them while the store is down.

    A subclass builds the operations and queues them with :meth:`_put`; :meth:`_stop` ends the thread.

    Args:
        store: sends operations into the run (and creates the run when its ``run_id`` is ``None``).
        spool: the writer's own spool (new: nothing in it yet).
        tracking_uri: the client's tracking URI (probed before requests when it is ``http(s)``).
        warn: called with each message for the user.
        retry_interval_s: seconds between probes while the store is down.
        name: the suffix of the threads' names.
    """

    def __init__(
        self, store: _Store, spool: _Spool, *, tracking_uri: str, warn: Callable[[str], None], retry_interval_s: float,
        name: str,
    ) -> None:  # fmt: skip
        self.tracking_uri = tracking_uri
        self._retry_interval_s = retry_interval_s
        self._warn = warn
        self._spool, self._store, self._name = spool, store, name
        store.notice = partial(self._warn_once, "held")
        self._used = False  # anything was queued (a writer that never was creates no run just to finish it)
        self._cond = threading.Condition()
        self._spool_lock = threading.Lock()  # taken before _cond, never while holding it
        self._pending: deque[Op] = deque()
        self._inflight: Op | None = None
        self._inflight_spooled = False
        self._spooled = 0  # a writer's spool is its own and new
        self._down = False
        self._answers: bool | None = None  # what the writer's latest probe said (None: none yet)
        self._answered_at = -_FRESH_S  # when the store last answered a request (time.monotonic)
        self._dropped = 0  # operations refused by the store or not spoolable, since the last flush
        self.lost = 0  # operations neither delivered nor spooled (no writable spool location), in all
        self._replayed = 0
        self._closed = False
        self._warned: set[str] = set()
        self._unless = threading.local()  # the caller thread's unless_logged guard
        self._busy_since: float | None = None  # when the writer thread entered its current store request
        self._stranded: float | None = None  # that request's _busy_since, once the server was seen gone during it
        self._generation = 0  # the writer thread that counts; an older one left in a hung request just ends
        self._thread = self._start_writer()
        threading.Thread(target=self._watch, name=f"mlflow-watchdog-{name}", daemon=True).start()

    def _start_writer(self) -> threading.Thread:
        with self._cond:
            self._generation += 1
            if self._generation > 1:  # the old thread keeps its store; nothing it learns reaches this one
                self._store = self._store.fork()
            self._busy_since = self._stranded = None
            thread = threading.Thread(
                target=self._run, args=(self._generation,), name=f"mlflow-writer-{self._name}", daemon=True
            )
        thread.start()
        return thread

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

    def settle(self, timeout_s: float, *, probe_now: bool = True) -> bool:
        """:meth:`flush`, and while the writer is still behind a server that answers again, wait for its catch-up,
        up to ``timeout_s`` in all; a server that does not answer ends the wait at once (what is left is on disk).

        Args:
            timeout_s: the longest wait.
            probe_now: ask the server from this thread whether it answers (2 s at most); ``False`` trusts the
                writer's own latest probe instead, so that this thread never waits for the network unless the
                writer is catching up with a server that answers.

        Returns:
            ``True`` iff everything reached the store.
        """
        deadline = time.monotonic() + timeout_s
        while not self.flush(timeout_s=max(0.0, deadline - time.monotonic())):
            answers = probe(self.tracking_uri) if probe_now else self._answers
            if time.monotonic() >= deadline or not answers:
                return False
            time.sleep(0.2)
        return True

    @property
    def answers(self) -> bool | None:
        """Whether the server answered the writer's latest probe (``None`` before its first); reads no network."""
        return self._answers

    def prepare_spool(self) -> Path | None:
        """Create the spool now (at the first writable location, said once if not the first) and return where it
        is; ``None`` when no location can be written."""
        with self._spool_lock:
            return self._locate()

    def _stop(self, timeout_s: float | None) -> bool:
        """Flush, stop the writer thread, and put anything queued meanwhile on disk; ``True`` iff all was delivered."""
        delivered = self.flush(timeout_s)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=PROBE_TIMEOUT_S)
        delivered = self.flush(0) and delivered  # anything queued meanwhile goes to disk
        self._spool.release()
        return delivered

    # -- caller side ---------------------------------------------------------------------------------------------

    def _put(self, op: Op) -> None:
        self._used = True
        unless = getattr(self._unless, "value", None)
        if unless is not None:
            op["unless"] = list(unless)
        with self._cond:
            if not self._closed:
                self._pending.append(op)
                self._cond.notify_all()
                return
        with self._spool_lock:
            path = self._locate()
            self._add_to_spool([op])
            self._spool.release()  # written and let go: replay may take it
        where = f"spooling to {path}" if path else "dropping what is written (no spool location can be written)"
        self._warn_once("closed", f"MlflowWriter for {self.tracking_uri} is closed; {where}")

    def _settled(self) -> bool:
        """Delivered, or down with everything on disk (a request stuck in MLflow's retry loop already spooled)."""
        if self._down:
            return not self._pending and (self._inflight is None or self._inflight_spooled)
        return self._delivered()

    def _delivered(self) -> bool:
        return not self._pending and self._inflight is None and not self._spooled

    def _spool_leftovers(self) -> None:
        """Put what is queued (and an operation stuck in a request) on disk."""
        with self._spool_lock:
            with self._cond:
                ops = list(self._pending)
                self._pending.clear()
                if self._inflight is not None and not self._inflight_spooled:
                    ops.insert(0, self._inflight)
                    self._inflight_spooled = True
            self._add_to_spool(ops)

    # -- writer thread -------------------------------------------------------------------------------------------

    def _run(self, generation: int) -> None:
        next_probe = 0.0
        while True:
            with self._cond:
                while not (self._pending or self._closed or self._retry_due(next_probe) or self._stale(generation)):
                    self._cond.wait(self._wait_s(next_probe))
                if self._closed or self._stale(generation):
                    return  # close() flushed: what was not delivered is on disk; or a newer thread took over
                down, spooled = self._down, self._spooled
            if down or spooled:
                if self._retry_due(next_probe):
                    caught_up = self._reachable() and self._catch_up(generation)
                    next_probe = time.monotonic() + (0.0 if caught_up else self._retry_interval_s)
                if self._down:
                    self._spool_leftovers()
                continue
            if not self._send_next(generation):
                next_probe = time.monotonic() + self._retry_interval_s

    def _stale(self, generation: int) -> bool:
        return generation != self._generation

    def _retry_due(self, next_probe: float) -> bool:
        return (self._down or self._spooled > 0) and time.monotonic() >= next_probe

    def _wait_s(self, next_probe: float) -> float | None:
        return max(0.0, next_probe - time.monotonic()) if (self._down or self._spooled) else None

    def _reachable(self) -> bool:
        self._answers = probe(self.tracking_uri)
        return self._answers

    def _send_next(self, generation: int) -> bool:
        """Send the oldest queued operation; on an outage spool it and everything after it. False when down."""
        with self._cond:
            op = self._inflight = self._pending.popleft()
            self._inflight_spooled = False
        fresh = time.monotonic() - self._answered_at < _FRESH_S  # it answered a request a moment ago: no probe
        if fresh or self._reachable():
            error = self._attempt(op, replaying=False, generation=generation)
        else:
            error = ConnectionError(f"{self.tracking_uri}/health does not answer")
        if self._stale(generation):
            return False  # a newer thread took over while this request hung; the spool holds the operation
        if error is None or not _is_outage(error):
            self._answered_at = time.monotonic()
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

    def _attempt(self, op: Op, *, replaying: bool, generation: int) -> BaseException | None:
        store = self._store
        self._busy_since = time.monotonic()
        try:
            if store.run_id is None:
                store.create_run()
                if not self._stale(generation):
                    with self._spool_lock:
                        self._spool.set_run_id(store.run_id)
            store.send(op, replaying=replaying)
        except Exception as exc:  # the thread must survive anything the store raises; classified by the caller
            return exc
        finally:
            if not self._stale(generation):
                self._busy_since = None
        return None

    def _watch(self) -> None:
        """While the writer thread hangs in a request (MLflow's retry loop): spool once the server is gone, and
        start a new writer thread once it answers again (see the module docstring)."""
        while not self._closed:
            with self._cond:
                self._cond.wait(self._retry_interval_s)
            since = self._busy_since
            if since is None or time.monotonic() - since <= self._retry_interval_s or self._closed:
                continue
            if not self._reachable():
                self._stranded = since
                self._go_down()
                self._spool_leftovers()
            elif self._stranded == since == self._busy_since:  # the server is back, the request still hangs
                with self._cond:
                    self._inflight = None  # already in the spool
                self._thread = self._start_writer()

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
            with self._spool_lock:
                path = self._locate()
            where = f"spooling to {path}" if path else "nothing can be spooled; undelivered operations are dropped"
            self._warn(f"MLflow tracking server {self.tracking_uri} unreachable; {where}")

    def _locate(self) -> Path | None:
        """Create the spool at the first writable location (caller holds ``_spool_lock``); say once where it went
        instead of the first choice, or that no location can be written."""
        path, tried = self._spool.locate(self._store.run_id), self._spool.tried
        if path is not None and tried:
            self._warn_once("fallback", f"cannot write the spool to {tried[0]}; spooling to {path} instead")
        elif path is None:
            self._warn_once(
                "nowhere",
                f"no spool location can be written (tried {'; '.join(tried)}): operations that cannot be delivered "
                "are dropped (how many is said at the end); pass spool_dir= a writable directory",
            )
        return path

    def _add_to_spool(self, ops: list[Op]) -> None:
        """Append ``ops`` to the spool (caller holds ``_spool_lock``), or count them lost when it cannot be written."""
        if not ops:
            return
        path = self._locate()
        try:
            added = None if path is None else self._spool.append(ops)
        except OSError as exc:  # a disk that filled up or went read-only after the spool was made
            self._warn_once("spool", f"cannot write the spool {path} any more ({exc}); operations are being dropped")
            added = None
        with self._cond:
            if added is None:
                self._dropped += len(ops)
                self.lost += len(ops)
                self._spooled = self._spool.count() if path else 0  # after an error: recount
            else:
                self._spooled += added
            self._cond.notify_all()

    def _catch_up(self, generation: int) -> bool:
        """Replay the spool in order, deduplicated; False at the first outage or while operations are left."""
        self._store.forget_history()
        for entry in self._spool.entries():
            error = None
            if entry.op is None:
                self._warn_once("unreadable", f"spool {self.spool_dir} line {entry.line}: {entry.problem}; skipped")
            else:
                error = self._attempt(entry.op, replaying=True, generation=generation)
            if self._stale(generation):
                return False  # a newer thread took over; it replays from the same offset
            if error is not None and _is_outage(error):
                self._go_down()
                return False
            if error is not None and entry.op is not None:  # (an error comes only from sending an operation)
                self._reject(entry.op, error)
            with self._spool_lock:
                self._spool.advance(entry.end)
                with self._cond:
                    self._spooled -= 1
                    self._replayed += 1
        with self._spool_lock, self._cond:
            self._spooled = self._spool.count()  # the file is the truth; at the end of a pass it is short
            if self._spooled or self._stale(generation):
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
