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

from typing import Literal

__all__ = ["DEFAULT_EVERY_N_TRAIN_STEPS", "EVENTS", "check_count", "figure_due", "is_due", "resolve_cadence"]

DEFAULT_EVERY_N_TRAIN_STEPS: int = 50
EVENTS = ("train_start", "train_batch_end", "train_epoch_end")
Event = Literal["train_start", "train_batch_end", "train_epoch_end"]


def check_count(arg: str, value: object, *, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is ``None`` or an int >= 1 (>= 0 with ``allow_zero``)."""
    low = 0 if allow_zero else 1
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{arg} must be None or an int >= {low}, got {value!r}")


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
    if event not in EVENTS:
        raise ValueError(f"event must be one of {EVENTS}, got {event!r}")
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

    References: style.md (figures at a lower cadence than scalars).

    Examples:
        >>> [i for i in range(7) if figure_due(i, 3)]
        [0, 3, 6]
        >>> figure_due(0, None)
        False
    """
    if not every_n_analyses:
        return False
    return num_analyses % every_n_analyses == 0
