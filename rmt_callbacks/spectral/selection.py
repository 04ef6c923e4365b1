r"""Which weights of a model are analysed: the one default rule, ``include`` / ``exclude`` patterns, a filter.

:func:`analyze`, both monitors and :func:`~rmt_callbacks.spectral.iter_matrices` select through this module.
A model is first read as *candidates* (:func:`candidates`): every parameter under its user-visible dotted name,
with the kind of the module that owns it (:func:`~rmt_callbacks.spectral.matrices.module_kind`):

* wrappers (``torch.compile``'s ``_orig_mod``, FSDP1's, activation checkpointing's) never appear in a name:
  ``torch.compile(model)`` and a compiled submodule keep their original names;
* a parametrized weight (``torch.nn.utils.parametrize``: ``parametrizations.weight_norm``, ``spectral_norm``,
  ``orthogonal``, user parametrizations) is the weight the module *applies*, ``module.weight``, named
  ``layer.weight``; its raw ``parametrizations.weight.original*`` are not candidates of their own. The applied
  weight is computed under ``no_grad`` with the parametrizations in eval mode (spectral norm uses its stored
  power-iteration vectors and does not advance them), so reading a model never changes it;
* so is the weight of an old-style, hook-based ``torch.nn.utils.weight_norm`` / ``spectral_norm``
  (:func:`~rmt_callbacks.spectral.matrices.legacy_norms`): ``layer.weight``, computed from ``weight_g`` /
  ``weight_v`` or ``weight_orig`` and the stored ``weight_u`` / ``weight_v``, which are not candidates of their own;
* a parameter shared by modules (tied weights) is one candidate, under its first name, the others its ``aliases``;
* scripted and traced modules (``torch.jit``) are read through ``_modules`` / ``named_parameters`` and their
  ``original_name``; their parametrizations are no longer modules that apply a weight, so their stored originals
  are read like a state_dict's (:func:`applied_from_originals`).

The default rule selects

* the ``weight`` of Linear, ConvNd, ConvTransposeNd, Embedding, EmbeddingBag, Hugging Face's ``Conv1D`` (GPT-2's
  Linear, read transposed: ``(out, in)``); MultiheadAttention's ``in_proj_weight`` (or ``q/k/v_proj_weight``);
* every ``weight_ih_l*``, ``weight_hh_l*`` (``_reverse`` included) and ``weight_hr_l*`` of RNN/LSTM/GRU, and the
  ``weight_ih``, ``weight_hh`` of their cells (each gate block becomes its own matrix);
* every parameter named ``weight`` with three or more dimensions (an ensemble ``(E, M, N)``).

With ``include`` or ``param_filter`` the candidates are instead all those with ``ndim >= 2``:

.. math::

    S = \{c : \operatorname{ndim}(c) \ge 2,\ \text{include}(c) \wedge \text{filter}(c)\} \setminus \text{exclude},

where a pattern list matches the dotted name through :func:`fnmatch.fnmatchcase`.
References: Lightning ``ModelSummary`` naming (dotted names); ``torch.nn.utils.parametrize``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from typing import Any, Literal, cast

import torch
from torch import nn
from torch.nn.utils import parametrize

from . import matrices
from .matrices import GATED, GATES, PROJECTION, MatrixView, applied_from_originals, module_kind, views_of

__all__ = [
    "WRAPPER_ATTRS",
    "Candidate",
    "ParamFilter",
    "Skip",
    "available_names",
    "candidates",
    "is_default",
    "resolve",
    "select",
    "select_names",
    "select_views",
    "unwrap",
    "user_name",
    "validate_filter",
    "validate_patterns",
]

ParamFilter = Callable[[str, torch.Tensor], bool]
WRAPPER_ATTRS: tuple[str, ...] = ("_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod")
"""Child names under which wrappers (FSDP1, activation checkpointing, ``torch.compile``) hold the wrapped module."""
_ATTENTION_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")
_WEIGHT_KINDS = ("linear", "linear_t", "conv", "conv_transpose", "embedding")


@dataclass(frozen=True)
class Candidate:
    """One weight a model offers for analysis.

    ``name``: user-visible (``layer.weight`` for a parametrized weight), ``attr`` its last part; ``tensor``: what is
    analysed (the parameter, or a parametrization's applied weight); ``kind``: the owner's
    (:func:`~rmt_callbacks.spectral.matrices.module_kind`; ``"recurrent"``, ``"attention"``, ``"tensor"`` from a
    state_dict); ``parameters``: the names and tensors behind it (a parametrization's originals: what an optimizer
    holds, what a gather copies); ``gates``: gate blocks (``None``: from ``kind``); ``skipped``: why it cannot be
    analysed, or ``None``; ``aliases``: the other names of the same tensor (tied weights: analysed once, under
    ``name``, the first); ``groups``: a convolution's groups (``None``: unknown).
    """

    name: str
    attr: str
    tensor: torch.Tensor
    kind: str | None
    parameters: tuple[tuple[str, torch.Tensor], ...]
    gates: int | None = None
    skipped: str | None = None
    aliases: tuple[str, ...] = ()
    groups: int | None = None


@dataclass(frozen=True)
class Skip:
    """A selected weight that cannot be analysed: name, shape, reason, and the source its views would have."""

    name: str
    shape: tuple[int, ...]
    reason: str
    source: str = "matrix"
    aliases: tuple[str, ...] = ()


def validate_patterns(arg: str, value: object, *, allow_none: bool) -> tuple[str, ...] | None:
    """Check a list of fnmatch patterns; a bare string (a common slip for a one-item list) or an empty list where
    ``None`` means "default" is refused (``TypeError``, ``ValueError``).

    Examples:
        >>> validate_patterns("include", ["encoder.*"], allow_none=True)
        ('encoder.*',)
    """
    if value is None and allow_none:
        return None
    if isinstance(value, str):
        raise TypeError(f"{arg} must be a list of fnmatch patterns, got the str {value!r}; write [{value!r}]")
    if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{arg} must be a list of str (fnmatch patterns), got {value!r}")
    if allow_none and not value:
        raise ValueError(f"{arg} must not be empty (it would select nothing); use None for the default selection")
    return tuple(value)


def validate_filter(value: object) -> ParamFilter | None:
    """Check that ``param_filter`` is ``None`` or a callable ``(name, param) -> bool`` (else ``TypeError``)."""
    if value is not None and not callable(value):
        raise TypeError(f"param_filter must be None or a callable (name, param) -> bool, got {value!r}")
    return value


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside any stack of wrappers (FSDP1, checkpoint, ``torch.compile``); ``module`` if unwrapped.

    Examples:
        >>> type(unwrap(torch.compile(nn.Linear(2, 2)))).__name__
        'Linear'
    """
    while True:
        children = module._modules if not isinstance(module, torch.jit.ScriptModule) else {}
        inner = next((children[a] for a in WRAPPER_ATTRS if children.get(a) is not None), None)
        if inner is None:
            return module
        module = inner


def user_name(name: str) -> str:
    """A dotted parameter name with the wrapper levels removed.

    Examples:
        >>> user_name("_fsdp_wrapped_module.fc._fsdp_wrapped_module._checkpoint_wrapped_module.weight")
        'fc.weight'
    """
    return ".".join(p for p in name.split(".") if p not in WRAPPER_ATTRS)


def _applied(module: nn.Module, attr: str) -> torch.Tensor:
    """``getattr(module, attr)`` of a parametrized module, under no_grad, its parametrizations in eval mode."""
    modes = [(m, m.training) for m in cast(nn.ModuleDict, module.parametrizations)[attr].modules()]
    try:
        for m, _ in modes:
            m.training = False  # spectral norm: no power iteration, its buffers are not advanced
        with torch.no_grad():
            return getattr(module, attr).detach()
    finally:
        for m, mode in modes:
            m.training = mode


def _holds_parametrizations(module: nn.Module, children: dict[str, nn.Module | None]) -> bool:
    """Whether ``module``'s child ``parametrizations`` is torch's (eager, or its scripted / traced copy)."""
    plists = children.get("parametrizations")
    if plists is None or parametrize.is_parametrized(module):
        return plists is not None
    lists = [c for _, c in plists.named_children()]
    return bool(lists) and all(getattr(c, "original_name", "") == "ParametrizationList" for c in lists)


def _is_lazy(p: torch.Tensor) -> bool:
    return isinstance(p, nn.parameter.UninitializedParameter)


def candidates(model: nn.Module, *, values: bool = True) -> list[Candidate]:
    """Every parameter of ``model`` as a :class:`Candidate`, in ``named_parameters()`` order, shared ones once.

    Args:
        model: any module: eager, scripted or traced (``torch.jit``), compiled, wrapped, parametrized.
        values: compute the applied weight of parametrized modules (``False``: an original stands in).

    Examples:
        >>> from torch.nn.utils import parametrizations
        >>> net = nn.Sequential(parametrizations.weight_norm(nn.Linear(3, 2)), nn.LSTMCell(2, 4))
        >>> [(c.name, c.kind) for c in candidates(net)]  # doctest: +NORMALIZE_WHITESPACE
        [('0.bias', 'linear'), ('0.weight', 'linear'), ('1.weight_ih', 'lstm_cell'), ('1.weight_hh', 'lstm_cell'),
         ('1.bias_ih', 'lstm_cell'), ('1.bias_hh', 'lstm_cell')]
    """
    seen_modules: set[int] = set()
    seen: dict[int, str] = {}  # id of a parameter -> the name it is analysed under
    aliases: dict[str, list[str]] = {}

    def once(name: str, p: torch.Tensor) -> bool:
        if id(p) in seen:
            names = aliases.setdefault(seen[id(p)], [])
            names += [] if name in names or name == seen[id(p)] else [name]
            return False
        seen[id(p)] = name
        return True

    def walk(module: nn.Module, prefix: str) -> Iterator[Candidate]:
        module = unwrap(module)
        if id(module) in seen_modules:  # reached again under another parent: its weights' other names
            for rel, p in module.named_parameters():  # a parametrization's originals: the weight they apply
                once(prefix + re.sub(r"parametrizations\.(\w+)\.original\d*$", r"\1", rel), p)
            return
        seen_modules.add(id(module))
        kind = module_kind(module)
        groups = getattr(module, "groups", None) if kind in ("conv", "conv_transpose") else None
        groups, children = (groups if isinstance(groups, int) else None), dict(module._modules)
        params = dict(module.named_parameters(recurse=False))
        eager = None if isinstance(module, torch.jit.ScriptModule) else module
        legacy = matrices.legacy_norms(params, dict(module.named_buffers(recurse=False)), eager)
        behind = {a: x for x, (attrs, _) in legacy.items() for a in attrs}
        for attr, p in params.items():
            x = behind.pop(attr, None)
            if x is not None and x in legacy:  # old-style weight_norm / spectral_norm: the weight it applies
                attrs, compute = legacy.pop(x)
                raw = tuple((prefix + a, params[a]) for a in attrs)
                seen.update((id(t), prefix + x) for _, t in raw)
                applied = matrices.guarded(compute) if values else max((t for _, t in raw), key=lambda t: t.ndim)
                yield _of(prefix + x, x, applied, kind, raw, groups)
            elif x is None and not _is_lazy(p) and once(prefix + attr, p):
                yield Candidate(prefix + attr, attr, p, kind, ((prefix + attr, p),), groups=groups)
        plists = children.pop("parametrizations") if _holds_parametrizations(module, children) else None
        for attr, plist in [] if plists is None else plists.named_children():
            raw = tuple((f"{prefix}parametrizations.{attr}.{n}", p) for n, p in plist.named_parameters(recurse=False))
            seen.update((id(p), prefix + attr) for _, p in raw)
            if not raw:  # a stand-in holding none of its originals (not selected for a gather): nothing to read
                continue
            if parametrize.is_parametrized(module, attr):
                largest = max((p for _, p in raw), key=lambda t: t.ndim)
                tensor = matrices.guarded(lambda m=module, a=attr: _applied(m, a)) if values else largest
                yield _of(prefix + attr, attr, tensor, kind, raw, groups)
            else:  # scripted / traced: the stored originals only
                state = dict(plist.named_buffers())
                applied = applied_from_originals({n.rpartition(".")[2]: p for n, p in raw}, state)
                yield _of(prefix + attr, attr, applied, kind, raw, groups)
        for child_name, child in children.items():
            if child is not None:  # a shared child is walked under each of its names (its aliases)
                yield from walk(child, f"{prefix}{child_name}.")

    found = list(walk(model, ""))
    return [replace(c, aliases=tuple(aliases[c.name])) if c.name in aliases else c for c in found]


def _of(name: str, attr: str, applied: torch.Tensor | str, kind: str | None, raw: Any, groups: Any) -> Candidate:
    """The candidate of a weight computed from ``raw`` tensors, or a skipped one (``applied``: why)."""
    if isinstance(applied, str):
        shape_of = max((p for _, p in raw), key=lambda t: t.ndim)
        return Candidate(name, attr, shape_of, kind, raw, skipped=applied, groups=groups)
    return Candidate(name, attr, applied, kind, raw, groups=groups)


def is_default(c: Candidate) -> bool:
    """Whether the default rule (module docstring) selects ``c``."""
    if c.kind == "attention":
        return c.attr in _ATTENTION_WEIGHTS
    if c.kind in _WEIGHT_KINDS or c.kind == "tensor":
        return c.attr == "weight" and c.tensor.ndim >= 2
    if c.kind in GATES or c.kind == "recurrent":
        if GATED.fullmatch(c.attr) or PROJECTION.fullmatch(c.attr):
            return c.tensor.ndim == 2
    return c.attr == "weight" and c.tensor.ndim >= 3


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatchcase(name, p) for p in patterns)


def select(
    cands: Sequence[Candidate],
    *,
    include: Sequence[str] | None,
    exclude: Sequence[str],
    param_filter: ParamFilter | None,
) -> list[Candidate]:
    """The selected candidates, in order (possibly none: the caller decides whether that is an error)."""
    custom = include is not None or param_filter is not None
    out = []
    for c in cands:
        if c.tensor.ndim < 2 or _matches(c.name, exclude):
            continue
        if not custom and not is_default(c):
            continue
        if include is not None and not _matches(c.name, include):
            continue
        if param_filter is not None and not param_filter(c.name, c.tensor):
            continue
        out.append(c)
    return out


def select_names(
    model: nn.Module,
    *,
    include: Sequence[str] | None,
    exclude: Sequence[str],
    param_filter: ParamFilter | None,
) -> list[str]:
    """The user-visible names of the selected weights of ``model``, in ``named_parameters()`` order.

    Examples:
        >>> select_names(nn.Sequential(nn.Linear(4, 3), nn.ReLU()), include=None, exclude=(), param_filter=None)
        ['0.weight']
    """
    chosen = select(candidates(model, values=param_filter is not None), **_kw(include, exclude, param_filter))
    return [c.name for c in chosen]


def _kw(include: Any, exclude: Any, param_filter: Any) -> dict[str, Any]:
    return {"include": include, "exclude": exclude, "param_filter": param_filter}


def available_names(source: nn.Module | Sequence[Candidate], *, limit: int = 50) -> str:
    """The names and shapes of the candidates with ``ndim >= 2``, for error messages (at most ``limit``).

    Examples:
        >>> available_names(nn.Linear(3, 2))
        "['weight' (2, 3)]"
    """
    cands = candidates(source, values=False) if isinstance(source, nn.Module) else source
    rows = [f"{c.name!r} {tuple(c.tensor.shape)}" for c in cands if c.tensor.ndim >= 2]
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return "[" + ", ".join(rows[:limit]) + "]" + more


def resolve(
    cands: Sequence[Candidate],
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    param_filter: ParamFilter | None = None,
    conv: Literal["slices", "flatten"] = "slices",
    what: str = "the model",
) -> list[MatrixView | Skip]:
    """The views of the selected candidates, and a :class:`Skip` for each selected one that cannot be analysed.

    Raises:
        TypeError, ValueError: bad ``include`` / ``exclude`` / ``param_filter`` / ``conv``.
        ValueError: the selection matches nothing; the message lists the candidates with ``ndim >= 2`` and
            suggests ``include=[...]``.
    """
    inc = validate_patterns("include", include, allow_none=True)
    exc = validate_patterns("exclude", exclude, allow_none=False)
    chosen = select(cands, include=inc, exclude=exc or (), param_filter=validate_filter(param_filter))
    out: list[MatrixView | Skip] = []
    for c in chosen:
        if c.skipped is not None:
            source = views_of(c.kind, c.name, c.tensor, gates=1)[0].source
            out.append(Skip(c.name, tuple(c.tensor.shape), c.skipped, source, c.aliases))
        else:
            views = views_of(c.kind, c.name, c.tensor, conv=conv, gates=c.gates, groups=c.groups)
            out.extend(replace(v, aliases=c.aliases) if c.aliases else v for v in views)
    if not out:
        matrices = [c.name for c in cands if c.tensor.ndim >= 2 and c.tensor.shape[0] > 1 < c.tensor[0:1].numel()]
        names = (matrices or [c.name for c in cands if c.tensor.ndim >= 2])[:2]  # vectors only if nothing better
        hint = f"; select some with include={names!r} (fnmatch patterns, e.g. ['*'] for all)" if names else ""
        raise ValueError(
            f"the parameter selection include={include!r}, exclude={list(exclude)!r}, param_filter={param_filter!r} "
            f"matches no matrix of {what}; parameters with ndim >= 2: {available_names(cands)}{hint}"
        )
    return out


def select_views(
    model: nn.Module,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    param_filter: ParamFilter | None = None,
    conv: Literal["slices", "flatten"] = "slices",
) -> list[MatrixView]:
    """The matrix views of the selected weights of ``model`` (what a monitor analyses; skips are left out).

    Raises: ``TypeError``, ``ValueError`` as :func:`resolve`.
    """
    what = type(unwrap(model)).__name__
    items = resolve(candidates(model), **_kw(include, exclude, param_filter), conv=conv, what=what)
    views = [v for v in items if isinstance(v, MatrixView)]
    if not views:
        raise ValueError(f"no selected weight of {what} can be analysed: {[str(s) for s in items]}")
    return views
