"""Parameter selection on real modules: default types, ensembles, include/exclude patterns, filters, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rmt_callbacks.analysis import resolve_views
from rmt_callbacks.monitors._selection import select_names, validate_filter, validate_patterns


class Ensemble(nn.Module):
    """How the reference models present themselves: one ``weight`` of shape (E, M, N)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(4, 3, 5))
        self.scale = nn.Parameter(torch.zeros(3, 3, 3))  # 3-D but not named weight: not a default


class Zoo(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 8)
        self.conv = nn.Conv1d(8, 6, 3)
        self.deconv = nn.ConvTranspose1d(6, 4, 3)
        self.attn = nn.MultiheadAttention(8, 2)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 2)
        self.ens = Ensemble()
        self.raw = nn.Parameter(torch.zeros(5, 5))  # a 2-D parameter of no known module: not a default


def _select(model: nn.Module, include=None, exclude=(), param_filter=None) -> list[str]:
    return select_names(model, include=include, exclude=tuple(exclude), param_filter=param_filter)


def test_default_selection() -> None:
    assert _select(Zoo()) == [
        "embed.weight",
        "conv.weight",
        "deconv.weight",
        "attn.in_proj_weight",
        "attn.out_proj.weight",
        "head.weight",
        "ens.weight",
    ]


def test_include_exclude_and_filter() -> None:
    zoo = Zoo()
    assert _select(zoo, include=["attn.*"]) == ["attn.in_proj_weight", "attn.out_proj.weight"]
    assert _select(zoo, include=["*"], exclude=["*conv*", "attn.*", "ens.*"]) == ["raw", "embed.weight", "head.weight"]
    assert _select(zoo, include=["norm.*"]) == []  # 1-D parameters are never matrices
    assert _select(zoo, param_filter=lambda name, p: p.ndim == 3) == [
        "conv.weight",
        "deconv.weight",
        "ens.weight",
        "ens.scale",
    ]
    assert _select(zoo, include=["ens.*"], param_filter=lambda name, p: name.endswith("scale")) == ["ens.scale"]


def test_views_of_the_selection() -> None:
    views = resolve_views(Zoo(), include=["attn.in_proj_weight", "ens.weight", "conv.weight"])
    assert [(v.name, tuple(v.matrix.shape)) for v in views] == [
        ("conv.weight", (3, 6, 8)),  # one (out, in) slice per kernel position
        ("attn.in_proj_weight.q", (8, 8)),
        ("attn.in_proj_weight.k", (8, 8)),
        ("attn.in_proj_weight.v", (8, 8)),
        ("ens.weight", (4, 3, 5)),
    ]


def test_empty_selection_lists_the_available_parameters() -> None:
    with pytest.raises(
        ValueError, match=r"matches no matrix of Zoo; parameters with ndim >= 2: \[.*'head.weight' \(2, 8\)"
    ):
        resolve_views(Zoo(), include=["encoder.*"])


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: validate_patterns("include", "fc*", allow_none=True),
            TypeError,
            r"got the str 'fc\*'; write \['fc\*'\]",
        ),
        (lambda: validate_patterns("exclude", [1], allow_none=False), TypeError, "exclude must be a list of str"),
        (lambda: validate_patterns("include", [], allow_none=True), ValueError, "include must not be empty"),
        (lambda: validate_filter("head.*"), TypeError, "param_filter must be None or a callable"),
    ],
)
def test_bad_selection_arguments(call, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()
