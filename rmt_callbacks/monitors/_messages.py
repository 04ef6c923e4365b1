"""Once-only warnings from any thread, said by the training thread (where Lightning's rank-zero helpers belong)."""

from __future__ import annotations

import queue
import re
from collections.abc import Callable, Sequence
from typing import Any

from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

__all__ = ["OnceMessages", "deferred_message", "dyson_message", "late_message", "report_skips", "shape_of"]


def shape_of(reason: str) -> str:
    """A reason with its numbers blanked, so "3 of 100 entries are NaN" warns once, not at every count.

    Examples:
        >>> shape_of("3 of 100 entries are NaN")
        '# of # entries are NaN'
    """
    return re.sub(r"\d+", "#", reason)


class OnceMessages:
    """Messages said once per key: queued from any thread (:meth:`once`), emitted by the training thread (:meth:`emit`).

    Examples:
        >>> said = OnceMessages()
        >>> said.once(("budget",), "first"); said.once(("budget",), "second")
        >>> said.seen(("budget",))
        True
    """

    def __init__(self) -> None:
        self._seen: set[tuple[str, ...]] = set()
        self._queue: queue.SimpleQueue[tuple[bool, str]] = queue.SimpleQueue()

    def seen(self, key: tuple[str, ...]) -> bool:
        """Whether a message under ``key`` was queued already."""
        return key in self._seen

    def once(self, key: tuple[str, ...], message: str | Callable[[], str], *, info: bool = False) -> None:
        """Queue ``message`` (a ``RuntimeWarning``, or an info line) unless ``key`` was used before; a callable is
        called only then, so a hook that offers the same message at every step formats it once."""
        if key not in self._seen:
            self._seen.add(key)
            self._queue.put((info, message() if callable(message) else message))

    def emit(self) -> None:
        """Say every queued message (call from the training thread)."""
        while True:
            try:
                info, message = self._queue.get_nowait()
            except queue.Empty:
                return
            if info:
                rank_zero_info(message)
            else:
                rank_zero_warn(message, category=RuntimeWarning)


def report_skips(said: OnceMessages, results: Sequence[Any]) -> None:
    """Say once per (matrix, reason) that SpectrumMonitor skipped a matrix, or that one of its fits failed."""
    for r in results:  # MatrixResult
        if r.skipped is not None:
            said.once((r.name, shape_of(r.skipped)), f"SpectrumMonitor: skipping {r.name!r}: {r.skipped}")
        for analysis, reason in r.failures.items():
            why = f"SpectrumMonitor: {analysis} fit of {r.name!r} failed: {reason}"
            said.once((r.name, analysis, shape_of(reason)), why, info=True)


def late_message(cadence: str, *, cost: float, due: int, step: int, previous: int | None, keys: tuple[str, str]) -> str:
    """What a late analysis says: the requested and achieved cadence, the cost, where to look, what to change."""
    achieved = "" if previous is None else f" ({step - previous} steps after the previous one)"
    return (
        f"SpectrumMonitor: {cadence} was asked for, but an analysis takes {cost:.3g} s (analysis, figures and "
        f"artifacts) and two were still pending when step {due} was due; that analysis ran at step {step}{achieved}, "
        f"as soon as the worker could take it. Each analysis logs its interval as {keys[0]!r} and the monitor's share "
        f"of training time as {keys[1]!r}. To analyse every due step: background=False (training waits for each "
        "analysis), or make analyses cheaper: a longer cadence, fewer matrices (include=/exclude=), fewer analyses "
        "(analyses=[...]) or fewer figures (figure_every_n_analyses=None)."
    )


def deferred_message(
    why: str, *, fraction: float, step: int, key: str, explicit: bool = False, cadence: str = "every_n_train_steps"
) -> str:
    """What the overhead budget says when it defers a due step (of the default cadence, or of one asked for);
    ``cadence``: the argument that sets the cadence where the user configures the monitor."""
    epochs = " (or every_n_epochs)" if cadence == "every_n_train_steps" else ""
    if explicit:
        return (
            f"SpectrumMonitor: {why}; overhead_budget={fraction:g} was passed, so it paces the cadence you asked for "
            f"too: the analysis due at step {step} is deferred, and later ones while analyses cost more than "
            f"{fraction:g} of training time (each analysis logs the interval it ran at as {key!r}). Pass "
            "overhead_budget='auto' or None to analyse at every due step."
        )
    return (
        f"SpectrumMonitor: {why}; to keep analyses within overhead_budget={fraction:g} of training time the one due "
        f"at step {step} is deferred: the default cadence stretches, and each analysis logs the interval it ran at as "
        f"{key!r}. Pass {cadence}{epochs} to analyse on that cadence, or overhead_budget=None "
        "to analyse at every due step."
    )


def dyson_message(kind: str, **v: object) -> str:
    """What ``DysonMonitor`` says, once each: ``guess``, ``no_batch``, ``adaptive``, ``momentum``, ``jump``,
    ``short`` (the run ended before the window filled) and ``stride`` (the budget stretched the stride)."""
    texts = {
        "guess": "guessed a per-device batch size of {size} from the leading dimension of the first tensor of a batch "
        "(wrong for time-major, channel-first or per-sample-first batches); set it with {how}",
        "no_batch": "cannot tell the batch size |B| (none given, no DataLoader batch_size, hparams.batch_size or batch "
        "tensor); pass {how}; until then only raw widths and diffusion are logged",
        "adaptive": "{optimizer} is not plain SGD, so α/|B| is not its noise temperature (the Dyson picture and the "
        "linear scaling rule of arXiv:2412.20496 are for SGD; adaptive optimizers precondition the noise); only the "
        "raw fluctuation widths and diffusion are logged, no …_normalized and no noise_temperature",
        "momentum": "SGD with momentum μ={momentum:g}: the noise temperature is the effective α/((1 − μ)|B|), "
        "{lr:g}/({gap:g}·|B|), followed as μ changes (arXiv:1710.06451; docs/science.md, E31)",
        "jump": "the noise temperature jumped from {previous:.4g} to {temperature:.4g} at step {step} (lr={lr:g}, "
        "batch size={batch}); expected under a schedule (warm-up, decay), else note that the linear scaling rule keeps "
        "it fixed: at batch size {batch} that is lr={keep:g}",
        "short": "training ended at step {step} with {filled} snapshot(s) in the window, fewer than window={window}; "
        "{what}. Train longer, or pass a smaller {window_arg} or {stride_arg}",
        "old_state": "the checkpoint's window predates Langevin times; the window restarts",
        "no_logger": "the Trainer has no logger; nothing will be recorded",
        "stride": "a snapshot takes {cost:.3g} s, over overhead_budget={budget:g} of the {elapsed:.3g} s of training "
        "between snapshots; recording every {stride} steps from step {step} (logged as {key}; {budget_arg}=None "
        "keeps {stride_arg})",
    }
    style = str(v.pop("style", "{}"))  # how an argument is written where the user sets it
    names = {"window_arg": "window", "stride_arg": "every_n_train_steps", "budget_arg": "overhead_budget"}
    return "DysonMonitor: " + texts[kind].format(**{k: style.format(n) for k, n in names.items()}, **v)
