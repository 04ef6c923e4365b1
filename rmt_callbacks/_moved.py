"""Names that moved or went away: a module ``__getattr__`` that says where, instead of a bare ``AttributeError``.

A base module (standard library only), like ``_checks``: any package may use it for its public names that moved.

Example:
    >>> lookup = moved_names("pkg.mod", {"old": "moved to pkg.new"})
    >>> lookup("old")
    Traceback (most recent call last):
    ...
    AttributeError: pkg.mod.old moved to pkg.new
    >>> lookup("other")
    Traceback (most recent call last):
    ...
    AttributeError: module 'pkg.mod' has no attribute 'other'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

__all__ = ["moved_names"]


def moved_names(module: str, where: Mapping[str, str]) -> Callable[[str], object]:
    """A ``__getattr__`` for ``module`` that raises, for each name in ``where``, ``"<module>.<name> <where it
    went>"``, and Python's own message for any other name."""

    def __getattr__(name: str) -> object:
        if name in where:
            raise AttributeError(f"{module}.{name} {where[name]}")
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
