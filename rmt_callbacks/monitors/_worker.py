r"""Work off the training thread: one daemon thread running jobs in order, and the budget that paces them.

A monitor snapshots the weights in the training hook (a copy on their device: microseconds to milliseconds) and
hands the analysis to an :class:`AnalysisWorker`; the hook returns at once. Finished results are collected by
the training thread at its next hook (:meth:`AnalysisWorker.finished`), so loggers and warnings are only ever
called from the training thread, and :meth:`AnalysisWorker.drain` waits for everything pending before training
ends: nothing is lost.

The :class:`OverheadBudget` keeps the analysis cost at a fraction :math:`f` of training time. With :math:`c` the
wall time of the last analysis and :math:`t` the time since it was started, a new analysis may start when

.. math::

    c \le f\, t ,

so analyses are at least :math:`c/f` apart and their total time is at most :math:`f` of the elapsed time (plus
one analysis). Wall time is counted as if the analysis ran on the training thread, so the bound holds whether
the worker runs beside training on a free core or competes with it for the same one.

References: Lightning ``AsyncCheckpointIO`` (a single worker thread, errors re-raised at the next call); PyTorch
``torch.cuda.Stream`` semantics for work beside the training stream.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch

__all__ = ["AnalysisWorker", "Finished", "OverheadBudget", "StrideBudget", "stride_factor"]

T = TypeVar("T")


def stride_factor(cost: float, elapsed: float, fraction: float, *, limit: int = 1024) -> int:
    r"""The smallest power of two :math:`k \le` ``limit`` with :math:`c \le f\, k\, t`: how much to stretch a
    cadence that must stay regular, when a record costing ``cost`` came ``elapsed`` seconds of training after the
    previous one (:math:`k` records' worth of training then pays for each record).

    Examples:
        >>> stride_factor(0.01, 1.0, 0.02)  # 1 % of the time: keep the stride
        1
        >>> stride_factor(0.1, 1.0, 0.02)  # 10 %: five times the stride, rounded up to a power of two
        8
    """
    if elapsed <= 0.0 or cost <= fraction * elapsed:
        return 1
    return min(limit, 1 << math.ceil(math.log2(cost / (fraction * elapsed))))


class StrideBudget:
    """How much must a regular stride stretch to keep records within ``fraction`` of training time?

    :meth:`record` takes each record's start and cost and gives ``(factor, typical cost, training seconds since
    the previous record)``, ``factor`` from :func:`stride_factor` on the cheaper of the last two records (1: keep).
    The first record of a fit pays one-time costs (imports, allocations, library start-up) and does not count.
    """

    def __init__(self, fraction: float | None) -> None:
        self.fraction = fraction
        self.reset()

    def reset(self) -> None:
        """Forget the previous records (a new fit)."""
        self._last_end: float | None = None
        self._last_cost: float | None = None
        self._warm = False

    def record(self, start: float, cost: float) -> tuple[int, float, float]:
        factor, typical, elapsed = 1, cost, 0.0
        if not self._warm:  # the warm-up record: only its end counts, as the start of the training time
            self._warm, self._last_end = True, time.perf_counter()
            return factor, typical, elapsed
        if self.fraction is not None and self._last_end is not None:
            typical = cost if self._last_cost is None else min(cost, self._last_cost)
            elapsed = start - self._last_end
            factor = stride_factor(typical, elapsed, self.fraction)
        self._last_cost, self._last_end = cost, time.perf_counter()
        return factor, typical, elapsed


class OverheadBudget:
    r"""May an analysis start now? At most a fraction ``fraction`` of the elapsed time goes to analyses.

    The first analysis of a run pays one-time costs (imports, font caches, LAPACK start-up) and does not
    count; from the second on, :math:`c` is the cheaper of the last two analyses, so one slow outlier does not
    stretch the cadence.

    Args:
        fraction: :math:`f`; ``None`` allows every analysis.
        clock: seconds, monotone (``time.perf_counter``).

    Examples:
        >>> now = [0.0]
        >>> budget = OverheadBudget(0.1, clock=lambda: now[0])
        >>> budget.started(); now[0] = 3.0; budget.finished(3.0)  # the first analysis, cold: 3 s
        >>> now[0] = 4.0; budget.allows()  # it does not count
        True
        >>> budget.started(); now[0] = 4.5; budget.finished(0.5)  # an analysis of 0.5 s
        >>> now[0] = 8.0; budget.allows()  # 0.5 > 0.1 * 4
        False
        >>> now[0] = 9.0; budget.allows()
        True
    """

    def __init__(self, fraction: float | None, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self.fraction = fraction
        self._clock = clock
        self._last_start: float | None = None
        self._costs: list[float] = []  # the last two analyses' wall seconds

    def allows(self) -> bool:
        """``True`` when :math:`c \\le f t` (always without a fraction, or before a second measurement)."""
        if self.fraction is None or self._last_start is None or len(self._costs) < 2:
            return True
        return min(self._costs) <= self.fraction * (self._clock() - self._last_start)

    def started(self) -> None:
        """An analysis starts now."""
        self._last_start = self._clock()

    def finished(self, seconds: float) -> None:
        """The last analysis took ``seconds`` of wall time."""
        self._costs = [*self._costs, float(seconds)][-2:]

    @property
    def last_cost(self) -> float:
        """Wall seconds of the last finished analysis (0 before any)."""
        return self._costs[-1] if self._costs else 0.0


@dataclass(frozen=True)
class Finished(Generic[T]):
    """A finished job: its value, or the exception it raised (never re-raised into training), and its wall time."""

    value: T | None
    error: BaseException | None
    seconds: float


class AnalysisWorker(Generic[T]):
    """One daemon thread that runs submitted jobs in order; results are picked up by the submitting thread.

    At most one job waits while another runs: a third :meth:`submit` blocks until the first is done
    (back-pressure instead of unbounded memory). The thread starts on the first job and ends with :meth:`close`
    or the process.

    Args:
        name: the thread's name (shown by debuggers and ``py-spy``).
        initializer: called once on the thread when it starts (e.g. to set its intra-op thread count).

    Examples:
        >>> worker = AnalysisWorker("doc")
        >>> worker.submit(lambda: 6 * 7)
        >>> [f.value for f in worker.drain()]
        [42]
        >>> worker.submit(lambda: 1 / 0)
        >>> type(worker.drain()[0].error).__name__
        'ZeroDivisionError'
        >>> worker.close()
    """

    def __init__(self, name: str, initializer: Callable[[], None] | None = None) -> None:
        self.name = name
        self.initializer = initializer
        self._jobs: queue.Queue[Callable[[], T] | None] = queue.Queue(maxsize=1)
        self._done: queue.SimpleQueue[Finished[T]] = queue.SimpleQueue()
        self._pending = 0  # submitted and not yet picked up; touched by the submitting thread only
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        """Whether a submitted job has not been picked up yet (running, waiting or finished but unread)."""
        return self._pending > 0

    @property
    def waiting(self) -> bool:
        """Whether a submitted job waits for the thread (not started yet): a new one would block :meth:`submit`."""
        return self._jobs.qsize() > 0

    def submit(self, job: Callable[[], T]) -> None:
        """Queue ``job`` (blocks only while another job is already waiting)."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        self._pending += 1
        self._jobs.put(job)

    def finished(self) -> list[Finished[T]]:
        """Jobs finished since the last call, in submission order; never blocks."""
        out: list[Finished[T]] = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                break
        self._pending -= len(out)
        return out

    def drain(self, timeout_s: float | None = None) -> list[Finished[T]]:
        """Wait for every submitted job (at most ``timeout_s`` in all) and return the finished ones in order."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        out: list[Finished[T]] = []
        while self._pending > len(out):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                out.append(self._done.get(timeout=left))
            except queue.Empty:
                break
        self._pending -= len(out)
        return out

    def close(self) -> None:
        """Stop the thread after the jobs already queued (does not wait for it)."""
        if self._thread is not None and self._thread.is_alive():
            self._jobs.put(None)
        self._thread = None

    def _run(self) -> None:
        if self.initializer is not None:
            self.initializer()
        while (job := self._jobs.get()) is not None:
            start = time.perf_counter()
            try:
                value: Any = job()
                error = None
            except BaseException as exc:  # handed back to the training thread as data, never raised
                value, error = None, exc
            self._done.put(Finished(value, error, time.perf_counter() - start))


def one_intra_op_thread() -> None:
    """The worker's torch ops use one intra-op thread; training's setting, and every other thread's, is untouched.

    The analysis then never oversubscribes the cores training uses, and on CPUs LAPACK's ``eigvalsh`` is often
    faster with one thread than with several anyway (measured on 2 cores: 1500 × 1500 float64, 1.1 s vs 5.2 s).
    ``torch.set_num_threads`` sets the calling thread's count, and also the count that threads starting later
    take when they first run a parallel op; a short-lived thread puts that default back.
    """
    default = torch.get_num_threads()  # this thread has not set its own yet: what a new thread gets
    torch.set_num_threads(1)
    restore = threading.Thread(target=torch.set_num_threads, args=(default,), name="rmt-thread-default")
    restore.start()
    restore.join()
