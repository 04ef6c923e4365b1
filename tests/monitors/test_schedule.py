"""The "run now?" decision, without a Trainer: a direct simulation of Lightning's hook order is the reference."""

from __future__ import annotations

import pytest

from rmt_callbacks.monitors._schedule import figure_due, is_due, resolve_cadence


def _simulate(*, batches: int, epochs: int, accumulate: int, steps: int | None, every_epochs: int | None) -> list[int]:
    """Replay on_train_start / on_train_batch_end / on_train_epoch_end as the Trainer fires them."""
    analysed: list[int] = []
    last: int | None = None
    global_step = 0

    def fire(event: str, epoch: int) -> None:
        nonlocal last
        if is_due(
            event,
            global_step=global_step,
            epoch=epoch,
            every_n_train_steps=steps,
            every_n_epochs=every_epochs,
            last_step=last,
        ):
            analysed.append(global_step)
            last = global_step

    fire("train_start", 0)
    for epoch in range(epochs):
        for batch in range(batches):
            if (batch + 1) % accumulate == 0:
                global_step += 1  # the optimizer steps before on_train_batch_end
            fire("train_batch_end", epoch)
        fire("train_epoch_end", epoch)
    return analysed


def test_step_cadence_counts_optimizer_steps_even_with_accumulation() -> None:
    # 2 epochs x 12 batches, accumulate 2: 12 optimizer steps; every 4 -> steps 0 (start), 4, 8, 12, each once.
    assert _simulate(batches=12, epochs=2, accumulate=2, steps=4, every_epochs=None) == [0, 4, 8, 12]


def test_epoch_cadence() -> None:
    # 5 epochs x 3 batches; every 2 epochs -> after epochs 2 and 4 (global steps 6 and 12), plus the start.
    assert _simulate(batches=3, epochs=5, accumulate=1, steps=None, every_epochs=2) == [0, 6, 12]


def test_resumed_run_does_not_repeat_the_last_step() -> None:
    kwargs = {"epoch": 0, "every_n_train_steps": 5, "every_n_epochs": None}
    assert not is_due("train_start", global_step=10, last_step=10, **kwargs)
    assert is_due("train_start", global_step=10, last_step=5, **kwargs)
    assert is_due("train_batch_end", global_step=15, last_step=10, **kwargs)
    assert not is_due("train_batch_end", global_step=14, last_step=10, **kwargs)


def test_default_and_exclusive_cadences() -> None:
    assert resolve_cadence(None, None) == (50, None)
    assert resolve_cadence(7, None) == (7, None)
    assert resolve_cadence(None, 3) == (None, 3)


@pytest.mark.parametrize(
    ("steps", "epochs", "match"),
    [
        (10, 1, "mutually exclusive, got every_n_train_steps=10 and every_n_epochs=1"),
        (0, None, "every_n_train_steps must be None or an int >= 1, got 0"),
        (None, -2, "every_n_epochs must be None or an int >= 1, got -2"),
        (2.5, None, "every_n_train_steps must be None or an int >= 1, got 2.5"),
        (True, None, "every_n_train_steps must be None or an int >= 1, got True"),
    ],
)
def test_bad_cadences_raise(steps: object, epochs: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        resolve_cadence(steps, epochs)  # type: ignore[arg-type]


def test_unknown_event_raises() -> None:
    with pytest.raises(ValueError, match=r"event must be one of .*'on_validation_end'"):
        is_due("on_validation_end", global_step=1, epoch=0, every_n_train_steps=1, every_n_epochs=None, last_step=None)  # type: ignore[arg-type]


def test_figure_cadence() -> None:
    assert [i for i in range(10) if figure_due(i, 4)] == [0, 4, 8]
    assert [i for i in range(3) if figure_due(i, 1)] == [0, 1, 2]
    assert not any(figure_due(i, 0) or figure_due(i, None) for i in range(5))


def test_cadences_take_numpy_integers_in_both_monitors() -> None:
    import numpy as np

    from rmt_callbacks import DysonMonitor, SpectrumMonitor

    assert SpectrumMonitor(every_n_train_steps=np.int64(10)).every_n_train_steps == 10
    assert DysonMonitor(log_every_n_steps=np.int64(10)).log_every_n_steps == 10
    with pytest.raises(ValueError, match="every_n_train_steps must be None or an int >= 1, got True"):
        SpectrumMonitor(every_n_train_steps=True)
