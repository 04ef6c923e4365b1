"""Independent training runs in worker processes: what ``rmt-reproduce --jobs N`` runs concurrently.

The unit of work is a plain call (:class:`Call`): ``run_rbm(...)``, ``run_ts2x2(...)``, ``run_hidden(...)``, each of
which trains, records its MLflow run and returns its result. :func:`run_calls` runs a list of them and returns
their results in the order of the list, so that what is computed from them (``summary.json``, figures, the parent
run's fits) does not depend on the scheduling:

* ``jobs == 1`` (or a single call): in this process, one after another, in the order given;
* otherwise in ``min(jobs, len(calls))`` worker processes started with ``"spawn"`` (a fresh interpreter: no torch
  threads or MLflow connections copied by ``fork``), the costliest call first (:attr:`Call.cost`), so that the
  longest run does not start last.

A worker sets torch's intra-op threads (and ``OMP_NUM_THREADS``) to ``threads``, ignores SIGINT (Ctrl-C reaches
the whole process group; the main process stops the workers), lowers Lightning's and MLflow's chatter as
:func:`~.console.console` does, and hands the log records of ``rmt_callbacks.reproduce`` to the main process, which
prints them as they come: one line per finished run. A worker draws no progress bar (:func:`in_worker`): bars of
several processes on one terminal would overwrite each other.

A call that raises fails the command: the other workers are killed, not waited for, and the exception is raised
in the main process with the worker's traceback as its cause. Ctrl-C, or a worker that dies, ends them the same way.
The MLflow runs that were training are left ``RUNNING``; :func:`~.runs.end_children` marks them.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass, field
from logging.handlers import QueueHandler, QueueListener
from typing import Any

__all__ = ["STEP_COST", "Call", "available_cpus", "estimated_seconds", "in_worker", "run_calls"]

#: Seconds per run (analysis, MLflow, the monitor's last analysis), per optimizer step (Lightning's loop, the
#: monitor) and per network-step of each reference model on one CPU thread, from the runs of
#: ``rmt-reproduce all --quick --jobs 1`` (RBM 4 000 to 20 000 steps; hidden-layer 1 000 and 3 000): they only order
#: the queue of runs, longest first.
STEP_COST = {"rbm": (15.0, 3.5e-3, 2.0e-6), "hidden": (10.0, 4.9e-3, 4.2e-6), "ts2x2": (5.0, 3.0e-3, 1.0e-7)}
POLL_S = 0.5
"""The longest the main process waits on its workers at a time: a Ctrl-C is handled at the latest then (a signal
that another of its threads received does not interrupt a wait without a timeout)."""
_IN_WORKER = False
_WORKER_CONSOLE = ExitStack()  # a worker's console(): entered once, kept for the worker's life


@dataclass(frozen=True)
class Call:
    """``fn(*args, **kwargs)``, with an estimate of its cost that orders the queue (costliest first).

    ``fn`` is a module-level function and its arguments and result can be pickled: a worker receives the call and
    sends the result back.

    Example:
        >>> Call(divmod, (7, 2))()
        (3, 1)
    """

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    cost: float = 1.0

    def __call__(self) -> Any:
        return self.fn(*self.args, **self.kwargs)


def estimated_seconds(model: str, networks: int, steps: int) -> float:
    """A run's cost for :attr:`Call.cost`: per run + ``steps`` × (per step + ``networks`` × per network-step).

    The three numbers per model are :data:`STEP_COST`'s.

    Example:
        >>> round(estimated_seconds("rbm", 128, 20_000)), round(estimated_seconds("rbm", 128, 4000))
        (90, 30)
    """
    per_run, per_step, per_network_step = STEP_COST[model]
    return per_run + steps * (per_step + networks * per_network_step)


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the platform has one, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def in_worker() -> bool:
    """Whether this process is one of :func:`run_calls`'s workers."""
    return _IN_WORKER


def run_calls(calls: Sequence[Call], *, jobs: int, threads: int = 1) -> list[Any]:
    """Run ``calls`` (in this process if ``jobs == 1``, else in worker processes); their results, in order.

    Args:
        calls: the independent units of work.
        jobs: worker processes at most.
        threads: torch intra-op threads of each worker.

    Raises:
        Exception: the first exception a call raised (in the order they finished), with the worker's traceback
            as its ``__cause__``; ``BrokenProcessPool`` if a worker died.
    """
    calls = list(calls)
    if jobs <= 1 or len(calls) <= 1:
        return [call() for call in calls]
    order = sorted(range(len(calls)), key=lambda i: -calls[i].cost)  # stable: equal costs keep their order
    context = multiprocessing.get_context("spawn")
    records: Any = context.Queue()
    listener = QueueListener(records, _Relay())
    pool = ProcessPoolExecutor(
        max_workers=min(jobs, len(calls)), mp_context=context, initializer=_start_worker, initargs=(threads, records)
    )
    listener.start()
    results: list[Any] = [None] * len(calls)
    try:
        futures: dict[Future[Any], int] = {pool.submit(_run, calls[i], threads): i for i in order}
        pending = set(futures)
        while pending:  # never an untimed wait: Ctrl-C caught by another thread only wakes this one at a timeout
            done, pending = wait(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
            for future in done:
                results[futures[future]] = future.result()
    except BaseException:
        _kill_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        listener.stop()
        records.close()
    return results


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """SIGKILL the pool's workers: a SIGTERM would only ask Lightning's handler to stop at the next step."""
    kill = getattr(pool, "kill_workers", None)  # Python >= 3.14
    if kill is not None:
        kill()
        return
    processes = getattr(pool, "_processes", None) or {}  # the executor's own table of its workers before 3.14
    for process in list(processes.values()):
        if process.is_alive():
            process.kill()


class _Relay(logging.Handler):
    """In the main process: a worker's record, handled by the logger of the same name (and so printed by console())."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger(record.name).handle(record)


def _start_worker(threads: int, records: Any) -> None:
    """Initializer of a worker process (see the module docstring); it loads neither torch nor Lightning."""
    global _IN_WORKER
    from .console import console

    _IN_WORKER = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # torch's and the BLAS libraries' threads, when they load
    _WORKER_CONSOLE.enter_context(console(handler=QueueHandler(records)))


def _run(call: Call, threads: int) -> Any:
    """A call in a worker, with torch's intra-op threads set to ``threads`` if its module loaded torch."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    return call()
