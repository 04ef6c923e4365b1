r"""Which parameters a monitor analyses: include / exclude name patterns or a filter callable.

The default selection is every weight of ``nn.Linear``, ``nn.ConvNd`` (transposed included), ``nn.Embedding``
and ``nn.MultiheadAttention`` (``in_proj_weight``, or ``q/k/v_proj_weight``), plus every parameter named
``weight`` with three or more dimensions, which is how an ensemble of networks presents itself (the
reference models keep theirs in one ``weight`` of shape ``(E, M, N)``). With ``include`` or ``param_filter``
the candidates are instead all parameters with ``ndim >= 2``:

.. math::

    S = \{p : \operatorname{ndim}(p) \ge 2,\ \text{include}(p) \wedge \text{filter}(p)\} \setminus \text{exclude},

where a pattern list matches a dotted parameter name (``named_parameters()``) through :func:`fnmatch.fnmatchcase`.

References: Lightning ``ModelSummary`` naming (dotted ``named_parameters()`` names).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase

import torch
from torch import nn

from ..spectral import MatrixView

__all__ = ["ParamFilter", "available_names", "select_names", "validate_filter", "validate_patterns"]

ParamFilter = Callable[[str, torch.Tensor], bool]
_WEIGHT_MODULES = (nn.Linear, nn.modules.conv._ConvNd, nn.Embedding)
_ATTENTION_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


def validate_patterns(arg: str, value: object, *, allow_none: bool) -> tuple[str, ...] | None:
    """Check a list of fnmatch patterns; a bare string is refused (it is a common slip for a one-item list).

    Args:
        arg: the argument's name, for the messages.
        value: the value given.
        allow_none: whether ``None`` is allowed.

    Returns:
        The patterns as a tuple, or ``None``.

    Raises:
        TypeError: not a sequence of ``str``.
        ValueError: an empty list where ``None`` means "default".

    References: :mod:`fnmatch`.

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
    """Check that ``param_filter`` is ``None`` or a callable ``(name, param) -> bool``.

    Raises:
        TypeError: ``value`` is neither ``None`` nor callable.

    Examples:
        >>> validate_filter(None) is None
        True
    """
    if value is not None and not callable(value):
        raise TypeError(f"param_filter must be None or a callable (name, param) -> bool, got {value!r}")
    return value


def _named_parameters(model: nn.Module) -> list[tuple[str, nn.Module, str, torch.Tensor]]:
    """``(dotted name, owner, attribute, parameter)`` in ``named_parameters()`` order, shared ones once."""
    rows = []
    for name, param in model.named_parameters():
        if isinstance(param, nn.parameter.UninitializedParameter):
            continue  # a lazy module before its first forward: no shape yet
        owner_name, _, attr = name.rpartition(".")
        rows.append((name, model.get_submodule(owner_name), attr, param))
    return rows


def _is_default(owner: nn.Module, attr: str, param: torch.Tensor) -> bool:
    if isinstance(owner, nn.MultiheadAttention):
        return attr in _ATTENTION_WEIGHTS
    return attr == "weight" and (isinstance(owner, _WEIGHT_MODULES) or param.ndim >= 3)


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatchcase(name, p) for p in patterns)


def select_names(
    model: nn.Module,
    *,
    include: tuple[str, ...] | None,
    exclude: tuple[str, ...],
    param_filter: ParamFilter | None,
) -> list[str]:
    """The dotted names of the selected parameters, in ``named_parameters()`` order.

    Args:
        model: the module whose parameters are selected.
        include: fnmatch patterns, or ``None`` (default selection unless ``param_filter`` is given).
        exclude: fnmatch patterns removed from the selection.
        param_filter: ``(name, param) -> bool``, or ``None``.

    Returns:
        The selected names; possibly empty (the caller decides whether that is an error).

    References: :func:`fnmatch.fnmatchcase`.

    Examples:
        >>> model = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.Linear(3, 2))
        >>> select_names(model, include=None, exclude=("2.*",), param_filter=None)
        ['0.weight']
    """
    custom = include is not None or param_filter is not None
    names = []
    for name, owner, attr, param in _named_parameters(model):
        if param.ndim < 2 or _matches(name, exclude):
            continue
        if not custom and not _is_default(owner, attr, param):
            continue
        if include is not None and not _matches(name, include):
            continue
        if param_filter is not None and not param_filter(name, param):
            continue
        names.append(name)
    return names


def available_names(model: nn.Module, *, limit: int = 50) -> str:
    """The names and shapes of the parameters with ``ndim >= 2``, for error messages (at most ``limit``).

    Examples:
        >>> available_names(nn.Linear(3, 2))
        "['weight' (2, 3)]"
    """
    rows = [f"{name!r} {tuple(p.shape)}" for name, _, _, p in _named_parameters(model) if p.ndim >= 2]
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return "[" + ", ".join(rows[:limit]) + "]" + more


def parameter_names(model: nn.Module, views: Sequence[MatrixView]) -> list[str]:
    """The parameters behind ``views`` (a view is a parameter, or a block of one such as ``in_proj_weight.q``)."""
    names = {v.name for v in views}
    return [n for n, _ in model.named_parameters() if n in names or any(v.startswith(n + ".") for v in names)]


def has_lazy_parameters(module: nn.Module) -> bool:
    """Whether ``module`` still has lazy parameters (their shapes are known only after a first forward)."""
    return any(isinstance(p, nn.parameter.UninitializedParameter) for p in module.parameters())
