"""The linear scaling rule advisor: closed forms and validation."""

from __future__ import annotations

import math

import pytest

from rmt_callbacks.scaling import equivalent_batch_size, equivalent_lr, fluctuation_ratio, noise_temperature


@pytest.mark.parametrize(("lr", "bs", "new_bs"), [(0.1, 16, 8), (0.01, 32, 256), (3e-4, 7, 13)])
def test_equivalent_lr_keeps_the_temperature(lr: float, bs: int, new_bs: int) -> None:
    new_lr = equivalent_lr(lr, bs, new_bs)
    assert noise_temperature(new_lr, new_bs) == pytest.approx(noise_temperature(lr, bs))
    assert equivalent_batch_size(lr, bs, new_lr) == pytest.approx(new_bs)
    assert fluctuation_ratio(lr, bs, new_lr, new_bs) == pytest.approx(1.0)


def test_fluctuations_scale_as_sqrt_temperature() -> None:
    assert fluctuation_ratio(0.1, 16, 0.4, 16) == pytest.approx(2.0)
    assert fluctuation_ratio(0.1, 4, 0.1, 8) == pytest.approx(1 / math.sqrt(2))


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True])
def test_bad_arguments_name_themselves(bad: float) -> None:
    with pytest.raises(ValueError, match="new_batch_size"):
        equivalent_lr(0.1, 16, bad)
