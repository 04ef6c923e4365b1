"""Argument checks: one home and one message shape for "a positive number", "an int >= 2", "one of …".

The base layer: it imports only the standard library, so every other module may use it. Each check returns the
value it accepted, so a caller writes ``lr = positive("lr", lr)``. Messages share one shape,

    ``"{owner}: {name} must be {requirement}, got {value!r}"``

(``owner``, the function or class that was called, is optional). The rules:

* A number is a :class:`numbers.Real` (numpy's scalars too) that is not a ``bool``: ``True`` is not a positive
  number, nor a positive int. Strings, ``None`` and torch tensors are not numbers here.
* An int is a :class:`numbers.Integral` that is not a ``bool`` (numpy's ints too); ``2.0`` is not an int.
* A value of the wrong type raises :class:`ArgumentTypeError`, which is both a ``TypeError`` and a
  ``ValueError`` (so callers that catch either keep working); a number with the wrong value raises
  ``ValueError``.
* Real checks return a Python ``float``, int checks a Python ``int``.

Examples:
    >>> positive("lr", 0.1), positive("batch_size", 16, integer=True), at_least("window", 3, 2)
    (0.1, 16, 3)
    >>> positive("sigma", 0.0, owner="WignerSemicircle")
    Traceback (most recent call last):
    ...
    ValueError: WignerSemicircle: sigma must be a positive finite number, got 0.0
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Literal, TypeVar, overload

__all__ = ["ArgumentTypeError", "at_least", "finite", "non_negative", "one_of", "positive"]

T = TypeVar("T")


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (a ``bool``, a ``str``, ``None``, ``2.0`` for an int, …).

    A ``TypeError`` by kind, and a ``ValueError`` too, since several of the checks this module replaced raised
    ``ValueError`` for any bad argument.
    """


def _fail(owner: str | None, name: str, requirement: str, value: object, error: type[Exception]) -> Exception:
    where = f"{owner}: " if owner else ""
    return error(f"{where}{name} must be {requirement}, got {value!r}")


def _real(name: str, value: object, owner: str | None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail(owner, name, "a real number", value, ArgumentTypeError)
    return float(value)


def _int(name: str, value: object, owner: str | None, requirement: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _fail(owner, name, requirement, value, ArgumentTypeError)
    return int(value)


def finite(name: str, value: object, *, owner: str | None = None) -> float:
    """``value`` as a float if it is a finite real number (not NaN, not ±inf).

    Examples:
        >>> finite("center", -1)
        -1.0
        >>> finite("center", float("nan"), owner="WignerSemicircle")
        Traceback (most recent call last):
        ...
        ValueError: WignerSemicircle: center must be finite, got nan
    """
    x = _real(name, value, owner)
    if not math.isfinite(x):
        raise _fail(owner, name, "finite", value, ValueError)
    return x


@overload
def positive(name: str, value: object, *, owner: str | None = None, integer: Literal[False] = False) -> float: ...
@overload
def positive(name: str, value: object, *, owner: str | None = None, integer: Literal[True]) -> int: ...
def positive(name: str, value: object, *, owner: str | None = None, integer: bool = False) -> float | int:
    """``value`` if it is a positive finite real number (a float), or with ``integer=True`` a positive int.

    Examples:
        >>> positive("lr", 1), positive("rows", 4, integer=True)
        (1.0, 4)
        >>> positive("retry_interval_s", float("inf"))
        Traceback (most recent call last):
        ...
        ValueError: retry_interval_s must be a positive finite number, got inf
        >>> positive("rows", True, integer=True)
        Traceback (most recent call last):
        ...
        rmt_callbacks._checks.ArgumentTypeError: rows must be a positive int, got True
    """
    if integer:
        n = _int(name, value, owner, "a positive int")
        if n < 1:
            raise _fail(owner, name, "a positive int", value, ValueError)
        return n
    x = _real(name, value, owner)
    if not (math.isfinite(x) and x > 0):
        raise _fail(owner, name, "a positive finite number", value, ValueError)
    return x


def non_negative(name: str, value: object, *, owner: str | None = None) -> float:
    """``value`` as a float if it is a finite real number >= 0.

    Examples:
        >>> non_negative("margin", 0)
        0.0
        >>> non_negative("margin", -1.0)
        Traceback (most recent call last):
        ...
        ValueError: margin must be a finite number >= 0, got -1.0
    """
    x = _real(name, value, owner)
    if not (math.isfinite(x) and x >= 0):
        raise _fail(owner, name, "a finite number >= 0", value, ValueError)
    return x


def at_least(name: str, value: object, low: int, *, owner: str | None = None) -> int:
    """``value`` as an int if it is an int >= ``low`` (``positive(..., integer=True)`` is ``low = 1`` worded as
    "a positive int").

    Examples:
        >>> at_least("num_steps", 2, 2)
        2
        >>> at_least("num_steps", 2.0, 2, owner="estimate_density")
        Traceback (most recent call last):
        ...
        rmt_callbacks._checks.ArgumentTypeError: estimate_density: num_steps must be an int >= 2, got 2.0
    """
    requirement = f"an int >= {low}"
    n = _int(name, value, owner, requirement)
    if n < low:
        raise _fail(owner, name, requirement, value, ValueError)
    return n


def one_of(name: str, value: T, choices: Sequence[object], *, owner: str | None = None) -> T:
    """``value`` if it is one of ``choices`` (compared with ``==``), else a ``ValueError`` listing them.

    Examples:
        >>> one_of("method", "slq", ("slq", "kpm"))
        'slq'
        >>> one_of("method", "lanczos", ("slq", "kpm"), owner="estimate_density")
        Traceback (most recent call last):
        ...
        ValueError: estimate_density: method must be one of ('slq', 'kpm'), got 'lanczos'
    """
    if value not in choices:
        raise _fail(owner, name, f"one of {tuple(choices)}", value, ValueError)
    return value
