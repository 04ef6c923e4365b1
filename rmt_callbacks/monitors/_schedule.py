r"""When does a monitor analyse? The pure "run now?" decision, tested without a Trainer.

A monitor analyses at the start of training (the initial spectrum: a baseline for every fit) and then

.. math::

    \text{every\_n\_train\_steps}:\ \ g \bmod n = 0 \quad\text{at the end of a batch},\qquad
    \text{every\_n\_epochs}:\ \ (e + 1) \bmod n = 0 \quad\text{at the end of an epoch},

where :math:`g` is ``trainer.global_step`` (optimizer steps) and :math:`e` the zero-based epoch; never twice at
the same :math:`g` (gradient accumulation ends several batches at one step; a resumed run restarts at a step
already analysed). Figures follow at a lower cadence: on analyses number :math:`0, k, 2k, \dots`.

References: Lightning ``ModelCheckpoint`` (``every_n_train_steps`` / ``every_n_epochs`` semantics).
"""

from __future__ import annotations

import math
from typing import Literal

from .._checks import at_least, one_of, positive

__all__ = [
    "DEFAULT_EVERY_N_TRAIN_STEPS",
    "DEFAULT_FIGURE_INTERVAL",
    "DEFAULT_OVERHEAD_BUDGET",
    "EVENTS",
    "FIGURES_PER_RUN",
    "check_budget",
    "check_count",
    "check_int",
    "check_positive",
    "expected_analyses",
    "figure_due",
    "figure_interval",
    "is_due",
    "resolve_budget",
    "resolve_cadence",
]

DEFAULT_EVERY_N_TRAIN_STEPS: int = 50
DEFAULT_OVERHEAD_BUDGET: float = 0.02
"""The fraction of training time the *default* cadence may take (``overhead_budget="auto"``)."""
FIGURES_PER_RUN: int = 5
"""``figure_every_n_analyses="auto"`` draws at most about this many per-step figures in a run (the first, evenly
spaced ones and always the last); the end-of-training evolution figure shows every analysed step."""
DEFAULT_FIGURE_INTERVAL: int = 10
"""``figure_every_n_analyses="auto"`` when the run's length is unknown (no ``max_steps`` nor ``max_epochs``)."""
EVENTS = ("train_start", "train_batch_end", "train_epoch_end")
Event = Literal["train_start", "train_batch_end", "train_epoch_end"]


def check_count(arg: str, value: object, *, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is ``None`` or an int >= 1 (>= 0 with ``allow_zero``)."""
    low = 0 if allow_zero else 1
    if value is None:
        return
    try:
        at_least(arg, value, low)  # numpy's integers too, like the other monitor arguments
    except ValueError:
        raise ValueError(f"{arg} must be None or an int >= {low}, got {value!r}") from None


def check_int(arg: str, value: object, *, low: int = 1) -> int:
    """Return ``value`` as an int if it is an integer >= ``low`` (numpy's too; ``None`` refused: the argument has
    no "unset" meaning); :func:`rmt_callbacks._checks.at_least`.

    Examples:
        >>> check_int("window", 1, low=2)
        Traceback (most recent call last):
        ...
        ValueError: window must be an int >= 2, got 1
    """
    return at_least(arg, value, low)


def check_positive(arg: str, value: object, *, allow_none: bool = False) -> float | None:
    """Return ``value`` as a float if it is a positive finite number (or ``None`` where allowed).

    Examples:
        >>> check_positive("lr", 0.1), check_positive("lr", None, allow_none=True)
        (0.1, None)
    """
    return None if value is None and allow_none else positive(arg, value)


def resolve_cadence(every_n_train_steps: int | None, every_n_epochs: int | None) -> tuple[int | None, int | None]:
    """Validate the two mutually exclusive cadences; neither given means every 50 optimizer steps.

    Args:
        every_n_train_steps: analyse every this many optimizer steps, or ``None``.
        every_n_epochs: analyse every this many epochs, or ``None``.

    Returns:
        ``(every_n_train_steps, every_n_epochs)`` with exactly one of them set.

    Raises:
        ValueError: a value that is not ``None`` or an int >= 1, or both given.

    References: Lightning ``ModelCheckpoint.__init_triggers``.

    Examples:
        >>> resolve_cadence(None, None)
        (50, None)
        >>> resolve_cadence(None, 2)
        (None, 2)
    """
    check_count("every_n_train_steps", every_n_train_steps)
    check_count("every_n_epochs", every_n_epochs)
    if every_n_train_steps is not None and every_n_epochs is not None:
        raise ValueError(
            "every_n_train_steps and every_n_epochs are mutually exclusive, got "
            f"every_n_train_steps={every_n_train_steps!r} and every_n_epochs={every_n_epochs!r}; set one of them"
        )
    if every_n_train_steps is None and every_n_epochs is None:
        return DEFAULT_EVERY_N_TRAIN_STEPS, None
    return every_n_train_steps, every_n_epochs


def is_due(
    event: Event,
    *,
    global_step: int,
    epoch: int,
    every_n_train_steps: int | None,
    every_n_epochs: int | None,
    last_step: int | None,
) -> bool:
    """Whether to analyse now.

    Args:
        event: the hook asking, one of :data:`EVENTS`.
        global_step: ``trainer.global_step``, the number of optimizer steps taken so far.
        epoch: ``trainer.current_epoch`` (zero-based).
        every_n_train_steps: the step cadence, or ``None``.
        every_n_epochs: the epoch cadence, or ``None``.
        last_step: the ``global_step`` of the last analysis, ``None`` if none yet.

    Returns:
        ``True`` when the event matches the cadence and this step has not been analysed yet.

    Raises:
        ValueError: ``event`` is not one of :data:`EVENTS`.

    References: Lightning ``ModelCheckpoint._should_skip_saving_checkpoint``.

    Examples:
        >>> [g for g in range(7) if is_due("train_batch_end", global_step=g, epoch=0,
        ...  every_n_train_steps=3, every_n_epochs=None, last_step=0)]
        [3, 6]
    """
    one_of("event", event, EVENTS)
    if last_step is not None and global_step == last_step:
        return False
    if event == "train_start":
        return True
    if event == "train_batch_end":
        return every_n_train_steps is not None and global_step % every_n_train_steps == 0
    return every_n_epochs is not None and (epoch + 1) % every_n_epochs == 0


def figure_due(num_analyses: int, every_n_analyses: int | None) -> bool:
    """Whether the analysis number ``num_analyses`` (zero-based) also draws figures.

    Args:
        num_analyses: how many analyses ran before this one.
        every_n_analyses: draw on analyses ``0, k, 2k, ...``; ``None`` or ``0`` never draws.

    Returns:
        ``True`` when figures are due.

    References: docs/mlflow.md (per-step figures on an interval; the evolution figure shows every step).

    Examples:
        >>> [i for i in range(7) if figure_due(i, 3)]
        [0, 3, 6]
        >>> figure_due(0, None)
        False
    """
    if not every_n_analyses:
        return False
    return num_analyses % every_n_analyses == 0


def check_budget(value: object) -> float | None:
    """Validate ``overhead_budget``: ``None`` (no pacing) or a float in ``(0, 1]``.

    Examples:
        >>> check_budget(0.02), check_budget(None)
        (0.02, None)
        >>> check_budget(0)
        Traceback (most recent call last):
        ...
        ValueError: overhead_budget must be None or a number in (0, 1], got 0
    """
    if value is None:
        return None
    number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    if not (math.isfinite(number) and 0.0 < number <= 1.0):
        raise ValueError(f"overhead_budget must be None or a number in (0, 1], got {value!r}")
    return number


def resolve_budget(value: object, *, explicit_cadence: bool) -> float | None:
    """The overhead budget in force: ``"auto"`` paces the default cadence only; a number paces any cadence.

    An explicit ``every_n_train_steps`` / ``every_n_epochs`` is what the user asked for, so ``"auto"`` leaves it
    unpaced; a budget passed explicitly is honoured on any cadence.

    Raises:
        ValueError: not ``"auto"``, ``None`` or a number in ``(0, 1]``.

    Examples:
        >>> resolve_budget("auto", explicit_cadence=False), resolve_budget("auto", explicit_cadence=True)
        (0.02, None)
        >>> resolve_budget(0.1, explicit_cadence=True)
        0.1
    """
    if isinstance(value, str) and value == "auto":
        return None if explicit_cadence else DEFAULT_OVERHEAD_BUDGET
    try:
        return check_budget(value)
    except ValueError:
        raise ValueError(f"overhead_budget must be 'auto', None or a number in (0, 1], got {value!r}") from None


def expected_analyses(
    *, total_steps: float, max_epochs: int | None, every_n_train_steps: int | None, every_n_epochs: int | None
) -> float:
    """How many analyses a run will make (the initial one and the final one included); ``inf`` if unbounded.

    Examples:
        >>> expected_analyses(total_steps=300, max_epochs=None, every_n_train_steps=50, every_n_epochs=None)
        7.0
        >>> expected_analyses(total_steps=30, max_epochs=10, every_n_train_steps=None, every_n_epochs=2)
        6.0
    """
    if every_n_train_steps is not None:
        return math.floor(total_steps / every_n_train_steps) + 1.0 if math.isfinite(total_steps) else math.inf
    if max_epochs is None or max_epochs < 0 or every_n_epochs is None:
        return math.inf
    return math.floor(max_epochs / every_n_epochs) + 1.0


def figure_interval(value: int | Literal["auto"] | None, expected: float) -> int | None:
    """Draw per-step figures on every this many analyses (``None``: never); ``"auto"`` keeps first, middle and last.

    ``"auto"`` aims at :data:`FIGURES_PER_RUN` figures spread evenly over the run (every analysis in a short run); the
    final analysis always draws, so a run shows its first, middle and last spectra.

    Raises:
        ValueError: not ``"auto"``, ``None`` or an int >= 0.

    Examples:
        >>> figure_interval("auto", 3.0), figure_interval("auto", 7.0), figure_interval("auto", 101.0)
        (1, 2, 25)
        >>> figure_interval("auto", math.inf)  # length unknown
        10
        >>> figure_interval(0, 5.0), figure_interval(3, 5.0)
        (None, 3)
    """
    if value == "auto":
        if not math.isfinite(expected):
            return DEFAULT_FIGURE_INTERVAL
        return max(1, math.ceil((expected - 1) / (FIGURES_PER_RUN - 1)))  # analyses 0, k, ..., <= the last
    if isinstance(value, str):
        raise ValueError(f"figure_every_n_analyses must be 'auto', None or an int >= 0, got {value!r}")
    check_count("figure_every_n_analyses", value, allow_zero=True)
    return value or None
