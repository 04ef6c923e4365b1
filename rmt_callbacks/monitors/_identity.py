r"""Who a monitor is in a Trainer: the key of its checkpointed state, and the label its run-level records go under.

The one rule for every monitor (:class:`~rmt_callbacks.SpectrumMonitor`, :class:`~rmt_callbacks.DysonMonitor`):

* **State key.** The class name and every constructor argument that changes what the monitor analyses or logs
  (:attr:`Labelled.IDENTITY`), each as :func:`describe` gives it: the same text in every process, so a checkpoint
  written by one process restores each monitor's own state in another. Monitors of one class that differ in any of
  those arguments can share a Trainer; two that do not would log the same records twice, and Lightning refuses them
  (two stateful callbacks with one ``state_key`` raise ``RuntimeError`` when the Trainer is made).
* **Label.** The class's section (``monitor``, ``dyson``), suffixed ``-2``, ``-3``, … for the second, third, …
  monitor of the class with the same ``log_key_prefix`` in ``trainer.callbacks`` (in the order Lightning keeps), set
  at every ``setup``: a run resumed with the same callbacks gets the same labels. Run-level metrics are
  ``<prefix><label>/<stat>`` (:func:`run_key`) and all MLflow artifacts sit under ``<prefix><label>/``
  (:func:`artifact_root`). Per-matrix metrics stay ``<prefix><matrix>/<stat>``, one chart section per matrix, so two
  monitors of a class that share a prefix and select a common matrix log it under the same keys (warned at setup).

.. math::

    \text{label}_k = \text{section} \,\Vert\, (\text{"-"} k \text{ if } k \ge 2), \qquad
    k = 1 + \#\{\text{earlier monitors of the class with the same prefix}\}.

References: Lightning ``Callback.state_key`` (unique among stateful callbacks); :mod:`rmt_callbacks.sinks.keys`.
"""

from __future__ import annotations

import functools
import hashlib
import numbers
import os
import re
import types
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar

from ..sinks.keys import artifact_path, metric_key
from ._selection import has_lazy_parameters, select_names

if TYPE_CHECKING:
    from ._messages import OnceMessages

__all__ = ["MAX_DESCRIPTION", "Labelled", "artifact_root", "describe", "run_key"]

MAX_DESCRIPTION: int = 300  # longer descriptions keep their head and a digest of all of it
_DEPTH = 3  # how deep objects held by a callable (closure cells, attributes, partial arguments) are described
_ADDRESS = re.compile(r" at 0x[0-9A-Fa-f]+|0x[0-9A-Fa-f]{6,}")  # memory addresses differ between processes


def describe(value: object) -> str:
    """A text for ``value`` that is the same in every process that builds the same value from the same source.

    Plain values (``None``, numbers, strings, lists, tuples, sets, mappings) are written as literals; a function is
    ``module.qualname``, and a lambda or local function adds ``@file-basename:first-line`` and what it captured (its
    defaults and closure cells); a ``functools.partial`` is ``functools.partial(func, args…, key=value…)``; a bound
    method is its object's description ``.`` its name; any other callable object is its class (``@file:line`` of
    its ``__call__`` for a local class) with its attributes, or its ``repr`` without memory addresses. Never
    ``repr`` of a function (a memory address). Held objects are described 3 levels deep, then by class; a text over
    :data:`MAX_DESCRIPTION` characters keeps its head and a digest of all of it.

    Examples:
        >>> describe(None), describe(("a.*",)), describe({"b": 1.5, "a": None})
        ('None', "['a.*']", "{'a': None, 'b': 1.5}")
        >>> describe(len), describe(functools.partial(max, 3, key=abs))
        ('builtins.len', 'functools.partial(builtins.max, 3, key=builtins.abs)')
        >>> f = lambda name, p: name.startswith("fc")  # noqa: E731
        >>> describe(f).split("@")[0]
        'rmt_callbacks.monitors._identity.<lambda>'
    """
    text = _describe(value, _DEPTH)
    if len(text) <= MAX_DESCRIPTION:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{text[: MAX_DESCRIPTION - 14]}…#{digest}"


def _describe(value: object, depth: int) -> str:
    if value is None or isinstance(value, (bool, str, bytes)) or type(value) in (int, float, complex):
        return repr(value)
    if isinstance(value, Enum):
        return f"{_qualified(type(value))}.{value.name}"
    if isinstance(value, numbers.Number) and hasattr(value, "item"):  # numpy and torch scalars
        return repr(value.item())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_describe(v, depth - 1) for v in value) + "]"
    if isinstance(value, (set, frozenset)):
        return "{" + ", ".join(sorted(_describe(v, depth - 1) for v in value)) + "}"
    if isinstance(value, Mapping):
        items = sorted(f"{_describe(k, depth - 1)}: {_describe(v, depth - 1)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, type):
        return _qualified(value) + _where(value)
    if depth <= 0:  # deep enough: a function by its name, anything else by its class
        return _function(value, 0) if isinstance(value, types.FunctionType) else f"<{_qualified(type(value))}>"
    if isinstance(value, functools.partial):
        parts = [_describe(value.func, depth - 1), *(_describe(a, depth - 1) for a in value.args)]
        parts += [f"{k}={_describe(v, depth - 1)}" for k, v in sorted(value.keywords.items())]
        return f"functools.partial({', '.join(parts)})"
    if isinstance(value, types.MethodType):  # bound: which object's method it is matters
        return f"{_describe(value.__self__, depth - 1)}.{value.__func__.__name__}"
    if isinstance(value, types.FunctionType):
        return _function(value, depth)
    if isinstance(value, _BUILTINS):  # len, str.startswith, or one bound to an object such as "fc".__eq__
        owner = getattr(value, "__self__", None)
        if owner is None or isinstance(owner, types.ModuleType):
            where = getattr(value, "__objclass__", None)  # str.startswith: a method of a class
            return f"{_qualified(where)}.{value.__name__}" if where else _qualified(value)
        return f"{_describe(owner, depth - 1)}.{value.__name__}"
    return _object(value, depth)


_BUILTINS = (
    types.BuiltinFunctionType,
    types.MethodWrapperType,
    types.MethodDescriptorType,
    types.WrapperDescriptorType,
    types.ClassMethodDescriptorType,
)


def _qualified(obj: Any) -> str:
    return f"{getattr(obj, '__module__', None) or '?'}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def _where(cls: type) -> str:
    """``@file:line`` of a local class's ``__call__`` (two local classes of one name are told apart), else ``""``."""
    call = getattr(cls, "__call__", None)  # noqa: B004  (the function, not whether it is callable)
    code = getattr(call, "__code__", None)
    return _place(code) if "<locals>" in cls.__qualname__ and code is not None else ""


def _place(code: types.CodeType) -> str:
    return f"@{os.path.basename(code.co_filename)}:{code.co_firstlineno}"


def _function(fn: types.FunctionType, depth: int) -> str:
    """``module.qualname``; a lambda or local function adds where it is written and what it captured."""
    name = _qualified(fn)
    if "<lambda>" not in fn.__qualname__ and "<locals>" not in fn.__qualname__:
        return name  # a module-level function: its name says which
    name += _place(fn.__code__)
    if depth <= 0:
        return name
    held = [f"{k}={_describe(v, depth - 1)}" for k, v in zip(_positional(fn), fn.__defaults__ or (), strict=False)]
    held += [f"{k}={_describe(v, depth - 1)}" for k, v in sorted((fn.__kwdefaults__ or {}).items())]
    for free, cell in zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=True):
        try:
            held.append(f"{free}={_describe(cell.cell_contents, depth - 1)}")
        except ValueError:  # a cell not filled yet
            held.append(f"{free}=<empty>")
    return f"{name}[{', '.join(held)}]" if held else name


def _positional(fn: types.FunctionType) -> list[str]:
    """The names of the positional parameters that have defaults, in order."""
    code = fn.__code__
    names = code.co_varnames[: code.co_argcount]
    return list(names[len(names) - len(fn.__defaults__ or ()) :])


def _object(value: object, depth: int) -> str:
    """A callable object (or one it holds): its class with its attributes, else its address-free ``repr``."""
    cls = type(value)
    name = _qualified(cls) + _where(cls)
    state = getattr(value, "__dict__", None)
    if not state and hasattr(cls, "__slots__"):
        slots = [s for c in cls.__mro__ for s in getattr(c, "__slots__", ()) if isinstance(s, str)]
        state = {s: getattr(value, s) for s in slots if s not in ("__dict__", "__weakref__") and hasattr(value, s)}
    if state:
        return f"{name}({', '.join(f'{k}={_describe(v, depth - 1)}' for k, v in sorted(state.items()))})"
    if cls.__repr__ is not object.__repr__:
        return f"{name}[{_ADDRESS.sub('', repr(value))}]"
    return name


def run_key(prefix: str, label: str, stat: str) -> str:
    """A run-level metric key: ``<prefix><label>/<stat>``, cleaned (:func:`~rmt_callbacks.sinks.keys.metric_key`).

    Examples:
        >>> run_key("rmt/", "monitor-2", "overhead")
        'rmt/monitor-2/overhead'
    """
    return metric_key(prefix, label, stat)


def artifact_root(prefix: str, label: str) -> str:
    """The folder of a monitor's MLflow artifacts: ``<prefix><label>``, cleaned as an artifact path.

    Examples:
        >>> artifact_root("rmt/", "monitor"), artifact_root("", "dyson-2")
        ('rmt/monitor', 'dyson-2')
    """
    return artifact_path(f"{prefix}{label}")


class Labelled:
    """The identity of a monitor class (mixed in before ``Callback``): its state key, label and run-level keys.

    A class sets :attr:`SECTION` (its label's stem), :attr:`IDENTITY` (the attributes, named as the constructor
    arguments, that enter the state key), :attr:`RUN_STATS` (its run-level statistics, named in the message a suffix
    brings) and :attr:`ARTIFACTS` (what it writes under its artifact root, ``""`` for nothing). :meth:`setup` sets the
    label; a subclass that overrides it calls ``super().setup(...)``.
    """

    SECTION: ClassVar[str]
    IDENTITY: ClassVar[tuple[str, ...]]
    RUN_STATS: ClassVar[tuple[str, ...]]
    ARTIFACTS: ClassVar[str] = ""
    _label: str | None = None  # set at setup; the section until then
    log_key_prefix: str
    include: tuple[str, ...] | None
    exclude: tuple[str, ...]
    param_filter: Any
    _said: OnceMessages

    @property
    def label(self) -> str:
        """The section, suffixed ``-k`` for the k-th monitor of the class with this prefix in the Trainer (k ≥ 2)."""
        return self._label or self.SECTION

    @property
    def state_key(self) -> str:
        """``Class{'arg': value, …}`` over :attr:`IDENTITY` (the layout of Lightning's own state keys), each value
        described once (:func:`describe`) while the attribute holds the same object, so a callable that changes its
        own attributes keeps its key during a run."""
        cache: dict[str, tuple[object, str]] = self.__dict__.setdefault("_descriptions", {})
        parts = []
        for arg in self.IDENTITY:
            value = getattr(self, arg)
            if arg not in cache or cache[arg][0] is not value:
                cache[arg] = (value, describe(value))
            parts.append(f"{arg!r}: {cache[arg][1]}")
        return f"{type(self).__qualname__}{{{', '.join(parts)}}}"

    def run_key(self, stat: str) -> str:
        """This monitor's run-level metric key of ``stat``: ``<prefix><label>/<stat>``."""
        return run_key(self.log_key_prefix, self.label, stat)

    @property
    def artifact_root(self) -> str:
        """The folder of this monitor's MLflow artifacts: ``<prefix><label>``."""
        return artifact_root(self.log_key_prefix, self.label)

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Label this monitor among ``trainer.callbacks``; say once what a suffix names and what overlaps."""
        peers = [
            cb
            for cb in getattr(trainer, "callbacks", [])
            if isinstance(cb, Labelled) and cb.SECTION == self.SECTION and cb.log_key_prefix == self.log_key_prefix
        ]
        index = next((i for i, cb in enumerate(peers) if cb is self), 0)
        self._label = self.SECTION if index == 0 else f"{self.SECTION}-{index + 1}"
        if index > 0:
            self._say_label(peers[:index], pl_module)
        self._said.emit()

    def _selected(self, model: Any) -> set[str] | None:
        """The parameters this monitor selects in ``model``; ``None`` when that cannot be told yet."""
        try:
            if has_lazy_parameters(model):  # their names are known, their shapes (what selects them) not yet
                return None
            kwargs = {"include": self.include, "exclude": self.exclude, "param_filter": self.param_filter}
            return set(select_names(model, **kwargs)) or None  # empty: built in configure_model
        except Exception:  # a filter that fails on some parameter: the fit start reports the selection
            return None

    def _say_label(self, earlier: Sequence[Labelled], pl_module: Any) -> None:
        cls, prefix, label = type(self).__name__, self.log_key_prefix, self.label
        keys = ", ".join(repr(self.run_key(s)) for s in self.RUN_STATS)
        where = f" and writes its MLflow artifacts ({self.ARTIFACTS}) under {self.artifact_root + '/'!r}"
        mine, unknown, shared = self._selected(pl_module), [], set()
        for other in earlier:
            theirs = other._selected(pl_module)
            if mine is None or theirs is None:
                unknown.append(other.label)
            else:
                shared |= mine & theirs
        caveat = ""
        if unknown:
            caveat = (
                f" Whether it selects a matrix that {', '.join(map(repr, unknown))} also selects cannot be told before "
                f"training (lazy parameters, or a model built in configure_model); if it does, that matrix's "
                f"per-matrix metrics {prefix + '<matrix>/<stat>'!r} coincide."
            )
        others = f"another {cls} with log_key_prefix={prefix!r} comes" if len(earlier) == 1 else ""
        others = others or f"{len(earlier)} other {cls}s with log_key_prefix={prefix!r} come"
        said = (
            f"{cls}: {others} before this one in the Trainer's callbacks, so this one is labelled {label!r}: it "
            f"logs its run-level metrics as {keys}"
            f"{where if self.ARTIFACTS else ''}.{caveat} Pass each monitor a log_key_prefix of its own (e.g. "
            f"log_key_prefix={prefix + 'fast/'!r}) to choose these names."
        )
        self._said.once(("label", label), said, info=True)
        if shared:
            names = sorted(shared)
            listed = ", ".join(map(repr, names[:5])) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            self._said.once(
                ("overlap", label),
                f"{cls} {label!r} and an earlier {cls} share log_key_prefix={prefix!r} and both select {listed}: "
                f"their per-matrix metrics ({prefix + names[0] + '/<stat>'!r}, …) coincide, two values at one step. "
                "Give one of them another log_key_prefix, or select disjoint matrices (include=, exclude=, "
                "param_filter=).",
            )
