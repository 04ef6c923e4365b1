"""Monitor-side helpers around the one selection rule of :mod:`rmt_callbacks.spectral.selection`.

The rule itself (default selection, ``include`` / ``exclude`` patterns, ``param_filter``) lives in the pure layer,
shared with :func:`rmt_callbacks.analyze` and :func:`rmt_callbacks.spectral.iter_matrices`; it is re-exported here
for the monitors. What is monitor-specific: which parameters a sharded gather must copy for the selected views
(:func:`parameter_names`) and whether lazy parameters still wait for a first forward.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..spectral import MatrixView
from ..spectral.selection import (
    ParamFilter,
    available_names,
    candidates,
    select_names,
    validate_filter,
    validate_patterns,
)

__all__ = [
    "ParamFilter",
    "available_names",
    "has_lazy_parameters",
    "parameter_names",
    "parameters_behind",
    "select_names",
    "validate_filter",
    "validate_patterns",
]


def parameters_behind(model: nn.Module) -> dict[str, list[torch.Tensor]]:
    """User-visible weight name to the parameters an optimizer updates for it (a parametrization's originals).

    Examples:
        >>> from torch.nn.utils import parametrizations
        >>> net = nn.Sequential(parametrizations.weight_norm(nn.Linear(3, 2)))
        >>> [tuple(p.shape) for p in parameters_behind(net)["0.weight"]]
        [(2, 1), (2, 3)]
    """
    return {c.name: [p for _, p in c.parameters] for c in candidates(model, values=False)}


def _behind(view_name: str, behind: dict[str, list[str]]) -> list[str]:
    """The parameter names behind a view (a view is a weight, or a block of one: ``w.q``, ``w.i``)."""
    return behind.get(view_name) or behind.get(view_name.rpartition(".")[0]) or []


def parameter_names(model: nn.Module, views: Sequence[MatrixView]) -> list[str]:
    """The user-visible parameters behind ``views``, in ``named_parameters()`` order: what a gather must copy.

    Examples:
        >>> from rmt_callbacks.spectral import iter_matrices
        >>> net = nn.Sequential(nn.Linear(3, 2), nn.LSTM(2, 2))
        >>> parameter_names(net, iter_matrices(net))
        ['0.weight', '1.weight_ih_l0', '1.weight_hh_l0']
    """
    behind = {c.name: [n for n, _ in c.parameters] for c in candidates(model, values=False)}
    wanted = {n for v in views for n in _behind(v.name, behind)}
    return [n for c in behind.values() for n in c if n in wanted]


def has_lazy_parameters(module: nn.Module) -> bool:
    """Whether ``module`` still has lazy parameters (their shapes are known only after a first forward)."""
    return any(isinstance(p, nn.parameter.UninitializedParameter) for p in module.parameters())
