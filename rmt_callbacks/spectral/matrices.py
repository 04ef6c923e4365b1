r"""From parameters to the matrices whose spectra are analysed: Linear, ConvNd, Embedding, attention, recurrent
layers, ensembles. Which parameters a model offers and which are selected: :mod:`rmt_callbacks.spectral.selection`.

Every view is a detached *view* of the parameter's memory where PyTorch allows one, oriented ``(..., M, N)``
(out, in) as fixed in :mod:`rmt_callbacks.spectral`; leading dimensions are a batch analysed matrix by matrix.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.nn.utils.weight_norm import WeightNorm

from .._checks import one_of

__all__ = ["MatrixView", "applied_from_originals", "iter_matrices", "legacy_norms", "matrices_of", "module_kind"]

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
    "Conv1D": "linear_t",  # Hugging Face's (GPT-2's) linear layer: weight (in, out), y = x W + b
    "Bilinear": None,
    "Embedding": "embedding",
    "EmbeddingBag": "embedding",
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
        aliases: the other names of the same parameter (tied weights, analysed once under ``name``), or ``()``.
    """

    name: str
    matrix: torch.Tensor
    source: str
    aliases: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        one_of("source", self.source, SOURCES, owner="MatrixView")
        if not isinstance(self.matrix, torch.Tensor) or self.matrix.ndim < 2:
            raise ValueError(f"MatrixView: matrix must be a tensor of shape (..., M, N), got {self.matrix!r:.80}")


def _conv_view(weight: torch.Tensor, conv: str, *, transposed: bool, groups: int = 1) -> torch.Tensor:
    """ConvNd weight ``(out, in/g, k1, ..)`` -> ``(k1*k2*.. * g, out/g, in/g)`` or ``(g, out/g, in/g*k1*..)``;
    depthwise (``in/g == 1``): ``(out, k1*k2*..)``. See :func:`matrices_of`."""
    if groups > 1 and weight.shape[0] % groups == 0:
        blocks = weight.unflatten(0, (groups, -1))  # (g, out/g, in/g, k..); transposed: (g, in/g, out/g, k..)
        if transposed:
            blocks = blocks.transpose(1, 2)
        if blocks.shape[2] == 1:  # depthwise: one input channel per group, its kernels are the columns
            return blocks.flatten(0, 1).flatten(1)
        if conv == "flatten":
            return blocks.flatten(2)
        return blocks.permute(*range(3, blocks.ndim), 0, 1, 2).flatten(0, blocks.ndim - 3)  # (k.. * g, out/g, in/g)
    if transposed:  # ConvTransposeNd stores (in, out/groups, k1, ..)
        weight = weight.transpose(0, 1)
    if conv == "flatten":
        return weight.flatten(1)
    kernel_first = weight.permute(*range(2, weight.ndim), 0, 1)  # (k1, .., kd, out, in)
    return kernel_first.flatten(0, weight.ndim - 3)  # a view for a contiguous weight


def applied_from_originals(
    originals: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor] | None = None
) -> torch.Tensor | str:
    r"""The applied weight of a parametrization from its stored originals alone, or why it cannot be known.

    Exact for weight norm (``original0`` = :math:`g`, ``original1`` = :math:`v`, :math:`g` of size 1 except
    along ``dim``): :math:`W = g\, v / \|v\|`, the norm over every dimension but ``dim``, by the kernel of
    ``parametrizations.weight_norm``; and for spectral norm when ``state`` holds its power-iteration vectors
    (``0._u``, ``0._v``): :math:`W / u^\top W_{\rm mat} v`, what the module applies in eval mode (``dim`` from the
    sizes of :math:`u, v`; where both 0 and 1 fit, 0 for a 2-D weight, refused otherwise). Orthogonal and any
    other parametrization need the module's code: the reason says to pass the module.

    Examples:
        >>> v, g = torch.tensor([[3.0, 4.0], [0.0, 2.0]]), torch.tensor([[10.0], [1.0]])
        >>> applied_from_originals({"original0": g, "original1": v})
        tensor([[6., 8.],
                [0., 1.]])
    """
    keys = sorted(originals)
    if keys == ["original0", "original1"]:
        g, v = originals["original0"], originals["original1"]
        g = g.reshape([1] * v.ndim) if g.ndim == 0 else g  # weight_norm(dim=None): one norm for the whole weight
        if g.ndim == v.ndim and all(a in (1, b) for a, b in zip(g.shape, v.shape, strict=True)):
            dims = [d for d in range(g.ndim) if g.shape[d] != 1]
            if len(dims) <= 1:
                return torch._weight_norm(v.detach(), g.detach(), dims[0] if dims else -1)
    if keys == ["original"] and state is not None and sorted(state) == ["0._u", "0._v"]:
        w, u, v = originals["original"].detach(), state["0._u"], state["0._v"]
        fits = [d for d in range(min(w.ndim, 2)) if u.numel() == w.shape[d] and v.numel() * w.shape[d] == w.numel()]
        if w.ndim >= 2 and fits and (len(fits) == 1 or w.ndim == 2):
            mat = w.movedim(fits[0], 0).flatten(1)
            return w / torch.vdot(u.clone(memory_format=torch.contiguous_format), torch.mv(mat, v.clone()))
    return (
        f"a parametrized weight stored as its originals {keys}: the weight it applies cannot be computed from them "
        "(only weight_norm's original0/original1 can); pass the nn.Module itself to analyse it"
    )


Legacy = dict[str, tuple[tuple[str, ...], Callable[[], "torch.Tensor | str"]]]


def guarded(compute: Any) -> torch.Tensor | str:
    """An applied weight, or why it could not be computed (never an exception: a monitor skips the matrix)."""
    try:
        return compute()
    except Exception as exc:  # a user's parametrization may raise anything
        return f"its applied weight could not be computed: {type(exc).__name__}: {exc}"


def legacy_norms(
    params: Mapping[str, torch.Tensor], buffers: Mapping[str, torch.Tensor], module: nn.Module | None = None
) -> Legacy:
    r"""The weights of the old-style, hook-based ``torch.nn.utils.weight_norm`` / ``spectral_norm`` of one module.

    Weight name ``X`` to the parameters behind it and a function computing the weight the module applies, under
    no_grad, without advancing spectral norm's power iteration (or returning why it cannot be computed):

    * an eager ``module``: from its forward pre-hooks (``WeightNorm`` / ``SpectralNorm``, their ``.name`` and
      ``.dim``): ``torch._weight_norm(X_v, X_g, dim)``; ``X_orig / (u^\top X_{\rm mat} v)`` from the stored
      ``X_u``, ``X_v`` (``SpectralNorm.compute_weight(do_power_iteration=False)``);
    * ``module=None`` (a state_dict's keys, a scripted or traced module, whose hooks are gone): by names, where
      ``X`` itself is absent: ``X_orig`` + ``X_u`` + ``X_v`` is spectral norm, else ``X_g`` + ``X_v`` weight norm,
      computed by :func:`applied_from_originals` (the ``dim`` from the shapes; an ambiguous one is refused).

    Examples:
        >>> sd = {"weight_g": torch.ones(2, 1), "weight_v": torch.tensor([[3.0, 4.0], [0.0, 2.0]])}
        >>> {x: (attrs, f()) for x, (attrs, f) in legacy_norms(sd, sd).items()}  # doctest: +NORMALIZE_WHITESPACE
        {'weight': (('weight_g', 'weight_v'), tensor([[0.6000, 0.8000],
                                                      [0.0000, 1.0000]]))}
    """
    out: Legacy = {}
    if module is not None:
        for hook in module._forward_pre_hooks.values():
            n: str = getattr(hook, "name", "")
            if isinstance(hook, WeightNorm) and {f"{n}_g", f"{n}_v"} <= params.keys():
                out[n] = ((f"{n}_g", f"{n}_v"), partial(_weight_norm, params[f"{n}_v"], params[f"{n}_g"], hook.dim))
            elif isinstance(hook, SpectralNorm) and f"{n}_orig" in params and {f"{n}_u", f"{n}_v"} <= buffers.keys():
                out[n] = ((f"{n}_orig",), partial(_no_grad, partial(hook.compute_weight, module, False)))
        return out
    names = {**params, **buffers}
    for key in names:
        x = key.removesuffix("_v")
        if key == x or x in names:
            continue
        if f"{x}_orig" in params and f"{x}_u" in names:
            state = {"0._u": names[f"{x}_u"], "0._v": names[key]}
            out[x] = ((f"{x}_orig",), partial(applied_from_originals, {"original": params[f"{x}_orig"]}, state))
        elif f"{x}_g" in params and key in params:
            pair = {"original0": params[f"{x}_g"], "original1": params[key]}
            out[x] = ((f"{x}_g", key), partial(applied_from_originals, pair))
    return out


def _weight_norm(v: torch.Tensor, g: torch.Tensor, dim: int) -> torch.Tensor:
    r"""The weight of the hook-based ``weight_norm``: :math:`g\, v / \|v\|`, by its own kernel."""
    return torch._weight_norm(v.detach(), g.detach(), dim)


def _no_grad(fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return fn().detach()


def module_kind(module: Any) -> str | None:
    """What a module is, for the views of its weights: ``"linear"`` (``"linear_t"``: weight stored ``(in, out)``),
    ``"conv"``, ``"conv_transpose"``, ``"embedding"``, ``"attention"``, ``"lstm"``/``"gru"``/``"rnn"`` or their
    ``*_cell``, or ``None``.

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
    if isinstance(module, nn.Embedding | nn.EmbeddingBag):
        return "embedding"
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):  # transformers.pytorch_utils.Conv1D, by name
        return "linear_t"
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
    groups: int | None = None,
) -> list[MatrixView]:
    """The views of one tensor ``weight`` named ``name`` whose owner is of ``kind`` (:func:`module_kind`).

    ``gates``: the gate blocks of a recurrent weight; ``None``: from ``kind`` (LSTM 4, GRU 3, RNN 1).
    ``groups``: a convolution's (``None``: unknown, read as 1). A tensor
    with ``ndim < 2`` gives ``[]``. The rules: :func:`matrices_of`.
    """
    one_of("conv", conv, _CONV_VIEWS)
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
        return [MatrixView(name, _conv_view(w, conv, transposed=kind == "conv_transpose", groups=groups or 1), "conv")]
    if kind in ("linear", "embedding") and attr == "weight":
        return [MatrixView(name, w, kind)]
    if kind == "linear_t" and attr == "weight" and w.ndim == 2:  # read as the Linear it is: (out, in)
        return [MatrixView(name, w.T, "linear")]
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
      A grouped convolution (``groups = g > 1``) is ``g`` independent maps, one per block of channels (the full
      ``(out, in)`` matrix at a kernel position is block diagonal), so each group is its own matrix: slices
      ``(k_1 \cdots k_d \cdot g, out/g, in/g)``, flatten ``(g, out/g, in/g \cdot k_1 \cdots k_d)``. A depthwise
      one (``in/g = 1``: its slices would be ``(out/g, 1)`` vectors) is the one matrix ``(out, k_1 \cdots k_d)``
      of its filters, in both views. ``groups`` is read from the module (eager or scripted); a traced module or
      a state_dict does not keep it, and its weight is read as ``groups = 1``.
    * ``nn.Embedding`` and ``nn.EmbeddingBag`` weight ``(num_embeddings, dim)``: as is.
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
    one_of("conv", conv, _CONV_VIEWS)
    if not isinstance(param, torch.Tensor):
        raise TypeError(f"param {name!r} must be a torch.Tensor, got {type(param).__name__}")
    kind = module_kind(module)
    groups = getattr(module, "groups", None) if kind in ("conv", "conv_transpose") else None
    return views_of(kind, name, param, conv=conv, groups=groups if isinstance(groups, int) else None)


def iter_matrices(
    model: nn.Module,
    *,
    conv: Literal["slices", "flatten"] = "slices",
    include_all_params: bool = False,
) -> list[MatrixView]:
    r"""The matrices of a model, in ``named_parameters()`` order (shared parameters once).

    The default selection is the one rule of :mod:`rmt_callbacks.spectral.selection` (the one :func:`analyze`
    and the monitors use): Linear, ConvNd, ConvTransposeNd, Embedding(Bag), attention (q/k/v), RNN/LSTM/GRU and
    their cells (a matrix per gate), parametrized weights (old-style weight_norm / spectral_norm hooks too) as the
    weight they apply, compiled modules under their original names, and every ``weight`` with 3 or more
    dimensions. With ``include_all_params=True`` every parameter with ``ndim >= 2`` is taken. Unlike
    :func:`~rmt_callbacks.analysis.resolve_views`, an empty selection gives ``[]``.

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

    one_of("conv", conv, _CONV_VIEWS)
    include = ("*",) if include_all_params else None
    chosen = select(candidates(model), include=include, exclude=(), param_filter=None)
    return [
        v
        for c in chosen
        if c.skipped is None
        for v in views_of(c.kind, c.name, c.tensor, conv=conv, gates=c.gates, groups=c.groups)
    ]
