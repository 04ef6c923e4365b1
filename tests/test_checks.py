"""The argument checks every module shares (``rmt_callbacks._checks``): types, values, messages."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from rmt_callbacks._checks import ArgumentTypeError, at_least, finite, non_negative, one_of, positive

NOT_NUMBERS = [True, False, np.bool_(True), "1.0", None, torch.tensor(1.0), [1.0], 1 + 0j]


@pytest.mark.parametrize("value", NOT_NUMBERS)
def test_non_numbers_are_type_errors_that_are_also_value_errors(value: object) -> None:
    for check in (finite, positive, non_negative):
        with pytest.raises(ArgumentTypeError, match=f"^x must be a real number, got {re.escape(repr(value))}$"):
            check("x", value)
    assert issubclass(ArgumentTypeError, TypeError) and issubclass(ArgumentTypeError, ValueError)


@pytest.mark.parametrize("value", [*NOT_NUMBERS, 2.0, np.float64(2.0), "2"])
def test_ints_refuse_bools_floats_and_strings(value: object) -> None:
    with pytest.raises(ArgumentTypeError, match=f"^rows must be a positive int, got {re.escape(repr(value))}$"):
        positive("rows", value, integer=True)
    with pytest.raises(ArgumentTypeError, match=f"^f: n must be an int >= 2, got {re.escape(repr(value))}$"):
        at_least("n", value, 2, owner="f")


@pytest.mark.parametrize("value", [0, 0.0, -1, -0.5, math.nan, math.inf, -math.inf, np.float32("nan")])
def test_positive_refuses_zero_negatives_nan_and_inf(value: float) -> None:
    with pytest.raises(ValueError, match=r"^Law: sigma must be a positive finite number, got ") as caught:
        positive("sigma", value, owner="Law")
    assert not isinstance(caught.value, TypeError)


@pytest.mark.parametrize("value", [1e-300, 2, 0.5, np.float32(0.25), np.int64(3), np.float64(7.0)])
def test_positive_accepts_numbers_and_numpy_scalars_as_python_floats(value: float) -> None:
    got = positive("x", value)
    assert type(got) is float and got == float(value)


def test_int_checks_accept_numpy_ints_and_return_python_ints() -> None:
    assert positive("n", np.int32(5), integer=True) == 5 and type(positive("n", np.int32(5), integer=True)) is int
    assert at_least("n", np.int64(2), 2) == 2 and type(at_least("n", np.int64(2), 2)) is int
    assert at_least("n", 0, 0) == 0
    with pytest.raises(ValueError, match=r"^n must be a positive int, got 0$"):
        positive("n", 0, integer=True)
    with pytest.raises(ValueError, match=r"^g: n must be an int >= 3, got 2$"):
        at_least("n", 2, 3, owner="g")


def test_finite_and_non_negative() -> None:
    assert finite("c", -3) == -3.0 and non_negative("m", 0) == 0.0 and non_negative("m", np.float32(0.5)) == 0.5
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match=r"^c must be finite, got "):
            finite("c", bad)
        with pytest.raises(ValueError, match=r"^m must be a finite number >= 0, got "):
            non_negative("m", bad)
    with pytest.raises(ValueError, match=r"^m must be a finite number >= 0, got -1e-12$"):
        non_negative("m", -1e-12)


def test_one_of_returns_the_value_or_lists_the_choices() -> None:
    assert one_of("kind", "gram", ("gram", "singular")) == "gram"
    with pytest.raises(ValueError, match=r"^esd: kind must be one of \('gram', 'singular'\), got 'svd'$"):
        one_of("kind", "svd", ("gram", "singular"), owner="esd")
    with pytest.raises(ValueError, match=r"got None$"):
        one_of("kind", None, ("gram",))


def test_the_base_layer_imports_only_the_standard_library() -> None:
    code = "import sys, rmt_callbacks._checks; print([m for m in ('torch', 'numpy') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
