r"""From parameters to the matrices whose spectra are analysed: Linear, ConvNd, Embedding, attention, recurrent
layers, ensembles. Which parameters a model offers and which are selected: :mod:`rmt_callbacks.spectral.selection`.

Every view is a detached *view* of the parameter's memory where PyTorch allows one, oriented ``(..., M, N)``
(out, in) as fixed in :mod:`rmt_callbacks.spectral`; leading dimensions are a batch analysed matrix by matrix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

__all__ = ["MatrixView", "iter_matrices", "matrices_of", "module_kind"]

SOURCES = ("linear", "conv", "embedding", "attention", "recurrent", "ensemble", "matrix")
_CONV_VIEWS = ("slices", "flatten")
_ATTENTION_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")
GATES: dict[str, int] = {"lstm": 4, "gru": 3, "rnn": 1, "lstm_cell": 4, "gru_cell": 3, "rnn_cell": 1}
"""Gate blocks stacked in the rows of a recurrent weight (PyTorch's order: LSTM i, f, g, o; GRU r, z, n)."""
GATE_NAMES: dict[int, str] = {4: "ifgo", 3: "rzn"}
GATED = re.compile(r"weight_(ih|hh)(_l\d+(_reverse)?)?")
"""Recurrent weights whose rows stack the gates: ``weight_ih_l{k}[_reverse]``, ``weight_hh_l{k}[_reverse]`` of
RNN/LSTM/GRU and ``weight_ih``/``weight_hh`` of their cells."""
PROJECTION = re.compile(r"weight_hr_l\d+(_reverse)?")
"""The LSTM projection (``proj_size > 0``): one matrix, no gates."""
_KIND_BY_NAME = {
    "Linear": "linear",
    "NonDynamicallyQuantizableLinear": "linear",
    "Bilinear": None,
    "Embedding": "embedding",
    "MultiheadAttention": "attention",
    **{f"Conv{d}d": "conv" for d in (1, 2, 3)},
    **{f"ConvTranspose{d}d": "conv_transpose" for d in (1, 2, 3)},
    "LSTM": "lstm",
    "GRU": "gru",
    "RNN": "rnn",
    "LSTMCell": "lstm_cell",
    "GRUCell": "gru_cell",
    "RNNCell": "rnn_cell",
}
_RNN_MODES = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn", "RNN_RELU": "rnn"}
_CELLS = ((nn.LSTMCell, "lstm_cell"), (nn.GRUCell, "gru_cell"), (nn.RNNCell, "rnn_cell"))


@dataclass(frozen=True)
class MatrixView:
    """A named batch of matrices to analyse.

    Attributes:
        name: the dotted parameter name (``named_parameters()``), with ``.q``/``.k``/``.v`` appended for the
            blocks of an attention in-projection.
        matrix: shape ``(..., M, N)``, detached; leading dimensions are a batch.
        source: where it came from, one of ``"linear"``, ``"conv"``, ``"embedding"``, ``"attention"``,
            ``"ensemble"`` (a parameter with batch dimensions) or ``"matrix"`` (any other 2-D parameter).
    """

    name: str
    matrix: torch.Tensor
    source: str

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"MatrixView: source must be one of {SOURCES}, got {self.source!r}")
        if not isinstance(self.matrix, torch.Tensor) or self.matrix.ndim < 2:
            raise ValueError(f"MatrixView: matrix must be a tensor of shape (..., M, N), got {self.matrix!r:.80}")


def _conv_view(weight: torch.Tensor, conv: str, *, transposed: bool) -> torch.Tensor:
    """ConvNd weight ``(out, in/groups, k1, ..)`` -> ``(k1*k2*.., out, in/groups)`` or ``(out, in/groups*k1*..)``."""
    if transposed:  # ConvTransposeNd stores (in, out/groups, k1, ..)
        weight = weight.transpose(0, 1)
    if conv == "flatten":
        return weight.flatten(1)
    kernel_first = weight.permute(*range(2, weight.ndim), 0, 1)  # (k1, .., kd, out, in)
    return kernel_first.flatten(0, weight.ndim - 3)  # a view for a contiguous weight


def module_kind(module: Any) -> str | None:
    """What a module is, for the views of its weights: ``"linear"``, ``"conv"``, ``"conv_transpose"``,
    ``"embedding"``, ``"attention"``, ``"lstm"``/``"gru"``/``"rnn"`` or their ``*_cell``, or ``None``.

    Eager modules by type (subclasses and parametrized modules included); a ``torch.jit`` scripted or traced
    module by its ``original_name`` (``"Linear"``, ``"LSTM"``, ``"ParametrizedLinear"``, ...).

    Examples:
        >>> module_kind(nn.ConvTranspose2d(2, 3, 1)), module_kind(nn.GRUCell(2, 3)), module_kind(nn.ReLU())
        ('conv_transpose', 'gru_cell', None)
    """
    if module is None:
        return None
    if isinstance(module, torch.jit.ScriptModule):
        name = str(getattr(module, "original_name", ""))
        return _KIND_BY_NAME.get(name.removeprefix("Parametrized"))
    if isinstance(module, nn.MultiheadAttention):
        return "attention"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv_transpose" if module.transposed else "conv"
    if isinstance(module, nn.Embedding):
        return "embedding"
    if isinstance(module, nn.RNNBase):
        return _RNN_MODES.get(module.mode)
    return next((kind for cls, kind in _CELLS if isinstance(module, cls)), None)


def views_of(
    kind: str | None,
    name: str,
    weight: torch.Tensor,
    *,
    conv: Literal["slices", "flatten"] = "slices",
    gates: int | None = None,
) -> list[MatrixView]:
    """The views of one tensor ``weight`` named ``name`` whose owner is of ``kind`` (:func:`module_kind`).

    ``gates``: the gate blocks of a recurrent weight; ``None``: from ``kind`` (LSTM 4, GRU 3, RNN 1). A tensor
    with ``ndim < 2`` gives ``[]``. The rules: :func:`matrices_of`.
    """
    if conv not in _CONV_VIEWS:
        raise ValueError(f"conv must be one of {_CONV_VIEWS}, got {conv!r}")
    if isinstance(weight, nn.parameter.UninitializedParameter) or weight.ndim < 2:
        return []
    w = weight.detach()
    attr = name.rsplit(".", 1)[-1]
    if kind == "attention" and attr in _ATTENTION_WEIGHTS:
        if attr != "in_proj_weight" or w.shape[0] % 3:
            return [MatrixView(name, w, "attention")]
        e = w.shape[0] // 3  # in_proj_weight is (3E, E): rows [0, E) query, [E, 2E) key, [2E, 3E) value
        return [MatrixView(f"{name}.{part}", w[i * e : (i + 1) * e], "attention") for i, part in enumerate("qkv")]
    if kind in ("conv", "conv_transpose") and attr == "weight" and w.ndim >= 3:
        return [MatrixView(name, _conv_view(w, conv, transposed=kind == "conv_transpose"), "conv")]
    if kind in ("linear", "embedding") and attr == "weight":
        return [MatrixView(name, w, kind)]
    if w.ndim == 2 and (kind in GATES or kind == "recurrent"):
        if PROJECTION.fullmatch(attr):
            return [MatrixView(name, w, "recurrent")]
        if GATED.fullmatch(attr):
            count = GATES.get(kind or "", 1) if gates is None else gates
            if count <= 1 or w.shape[0] % count:
                return [MatrixView(name, w, "recurrent")]
            h, labels = w.shape[0] // count, GATE_NAMES.get(count, "".join(map(str, range(count))))
            return [MatrixView(f"{name}.{g}", w[i * h : (i + 1) * h], "recurrent") for i, g in enumerate(labels)]
    return [MatrixView(name, w, "ensemble" if w.ndim >= 3 else "matrix")]


def matrices_of(
    module: nn.Module | None,
    name: str,
    param: torch.Tensor,
    *,
    conv: Literal["slices", "flatten"] = "slices",
) -> list[MatrixView]:
    r"""The matrices of one parameter, given the module that owns it.

    * ``nn.Linear`` weight ``(out, in)``: as is.
    * ``nn.ConvNd`` weight ``(out, in/groups, k_1, .., k_d)``, two views:

      - ``conv="slices"`` (default): the batch ``(k_1 \cdots k_d, out, in/groups)`` of the matrices
        ``W[:, :, i, j, ..]`` at each kernel position, each analysed on its own and pooled by the analysis;
      - ``conv="flatten"``: one matrix ``(out, in/groups \cdot k_1 \cdots k_d)``, the unrolled (im2col) map.

      ``nn.ConvTransposeNd`` (weight ``(in, out/groups, k..)``) is first transposed to (out, in).
    * ``nn.Embedding`` weight ``(num_embeddings, dim)``: as is.
    * ``nn.MultiheadAttention`` ``in_proj_weight`` ``(3E, E)``: three ``(E, E)`` views named ``{name}.q``,
      ``{name}.k``, ``{name}.v``; separate ``q/k/v_proj_weight`` are single matrices.
    * ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` ``weight_ih_l{k}[_reverse]``, ``weight_hh_l{k}[_reverse]`` and their
      cells' ``weight_ih``, ``weight_hh``: one ``(H, \cdot)`` view per gate block of rows, named ``{name}.i``,
      ``.f``, ``.g``, ``.o`` (LSTM), ``{name}.r``, ``.z``, ``.n`` (GRU); a plain RNN's as is; the LSTM projection
      ``weight_hr_l{k}`` as is (source ``"recurrent"``).
    * Any other parameter with ``ndim >= 3``: an ensemble ``(..., M, N)`` analysed as a batch; ``ndim == 2``:
      a plain matrix; ``ndim < 2`` (biases, norms) and uninitialised lazy parameters: no matrix, ``[]``.

    The module's kind is read by :func:`module_kind` (eager type, or a scripted/traced module's
    ``original_name``).

    .. math::

        W^{\text{slices}}_{(i,j)} = W[:, :, i, j] \in \mathbb{R}^{out \times in},\qquad
        W^{\text{flatten}} \in \mathbb{R}^{out \times (in \cdot k_1 k_2)}.

    Args:
        module: the module owning ``param`` (``None`` if unknown: the shape alone decides).
        name: the parameter's dotted name.
        param: the parameter, any shape.
        conv: the convolution view, ``"slices"`` or ``"flatten"``.

    Returns:
        The views, detached and sharing memory with ``param`` whenever a view is possible.

    Raises:
        ValueError: ``conv`` is not ``"slices"`` or ``"flatten"``.
        TypeError: ``param`` is not a tensor.

    References: arXiv:2412.20496; Martin, Mahoney, JMLR 22 (2021), arXiv:1810.01075 (conv slices).

    Example:
        >>> views = matrices_of(nn.Conv2d(3, 8, 5), "conv.weight", nn.Conv2d(3, 8, 5).weight)
        >>> views[0].matrix.shape, views[0].source
        (torch.Size([25, 8, 3]), 'conv')
        >>> [v.name for v in matrices_of(nn.LSTM(3, 2), "weight_hh_l0", nn.LSTM(3, 2).weight_hh_l0)]
        ['weight_hh_l0.i', 'weight_hh_l0.f', 'weight_hh_l0.g', 'weight_hh_l0.o']
    """
    if conv not in _CONV_VIEWS:
        raise ValueError(f"conv must be one of {_CONV_VIEWS}, got {conv!r}")
    if not isinstance(param, torch.Tensor):
        raise TypeError(f"param {name!r} must be a torch.Tensor, got {type(param).__name__}")
    return views_of(module_kind(module), name, param, conv=conv)


def iter_matrices(
    model: nn.Module,
    *,
    conv: Literal["slices", "flatten"] = "slices",
    include_all_params: bool = False,
) -> list[MatrixView]:
    r"""The matrices of a model, in ``named_parameters()`` order (shared parameters once).

    The default selection is the one rule of :mod:`rmt_callbacks.spectral.selection` (the one :func:`analyze`
    and the monitors use): Linear, ConvNd, ConvTransposeNd, Embedding, attention (q/k/v), RNN/LSTM/GRU and
    their cells (a matrix per gate), parametrized weights as the weight they apply, compiled modules under their
    original names, and every ``weight`` with 3 or more dimensions. With ``include_all_params=True`` every
    parameter with ``ndim >= 2`` is taken. Unlike :func:`~rmt_callbacks.analysis.resolve_views`, an empty
    selection gives ``[]``.

    .. math::

        \{W\} = \bigcup_{\text{selected } (name, p)} \texttt{matrices\_of}(\text{owner}(name), name, p).

    Args:
        model: any module (eager, scripted, traced or compiled).
        conv: the convolution view (see :func:`matrices_of`).
        include_all_params: take every parameter with ``ndim >= 2``, not only the default selection.

    Returns:
        The :class:`MatrixView` list, named by the dotted parameter names.

    Raises:
        ValueError: ``conv`` is not ``"slices"`` or ``"flatten"``.

    References: arXiv:2412.20496.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.Linear(3, 2))
        >>> [(v.name, tuple(v.matrix.shape)) for v in iter_matrices(model)]
        [('0.weight', (3, 4)), ('2.weight', (2, 3))]
    """
    from .selection import candidates, select  # the selection builds on this module's views

    if conv not in _CONV_VIEWS:
        raise ValueError(f"conv must be one of {_CONV_VIEWS}, got {conv!r}")
    include = ("*",) if include_all_params else None
    chosen = select(candidates(model), include=include, exclude=(), param_filter=None)
    return [
        v for c in chosen if c.skipped is None for v in views_of(c.kind, c.name, c.tensor, conv=conv, gates=c.gates)
    ]
