r"""From parameters to the matrices whose spectra are analysed: Linear, ConvNd, Embedding, attention, ensembles.

Every view is a detached *view* of the parameter's memory where PyTorch allows one, oriented ``(..., M, N)``
(out, in) as fixed in :mod:`rmt_callbacks.spectral`; leading dimensions are a batch analysed matrix by matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

__all__ = ["MatrixView", "iter_matrices", "matrices_of"]

SOURCES = ("linear", "conv", "embedding", "attention", "ensemble", "matrix")
_CONV_VIEWS = ("slices", "flatten")
_DEFAULT_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)
_ATTENTION_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


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
    * Any other parameter with ``ndim >= 3``: an ensemble ``(..., M, N)`` analysed as a batch; ``ndim == 2``:
      a plain matrix; ``ndim < 2`` (biases, norms) and uninitialised lazy parameters: no matrix, ``[]``.

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
    """
    if conv not in _CONV_VIEWS:
        raise ValueError(f"conv must be one of {_CONV_VIEWS}, got {conv!r}")
    if not isinstance(param, torch.Tensor):
        raise TypeError(f"param {name!r} must be a torch.Tensor, got {type(param).__name__}")
    if isinstance(param, nn.parameter.UninitializedParameter) or param.ndim < 2:
        return []
    w = param.detach()
    attr = name.rsplit(".", 1)[-1]
    if isinstance(module, nn.MultiheadAttention) and attr in _ATTENTION_WEIGHTS:
        if attr != "in_proj_weight":
            return [MatrixView(name, w, "attention")]
        e = module.embed_dim  # in_proj_weight is (3E, E): rows [0, E) query, [E, 2E) key, [2E, 3E) value
        return [MatrixView(f"{name}.{part}", w[i * e : (i + 1) * e], "attention") for i, part in enumerate("qkv")]
    if isinstance(module, nn.modules.conv._ConvNd) and attr == "weight" and w.ndim >= 3:
        return [MatrixView(name, _conv_view(w, conv, transposed=module.transposed), "conv")]
    if isinstance(module, nn.Linear) and attr == "weight":
        return [MatrixView(name, w, "linear")]
    if isinstance(module, nn.Embedding) and attr == "weight":
        return [MatrixView(name, w, "embedding")]
    return [MatrixView(name, w, "ensemble" if w.ndim >= 3 else "matrix")]


def _is_default(module: nn.Module, attr: str) -> bool:
    if isinstance(module, nn.MultiheadAttention):
        return attr in _ATTENTION_WEIGHTS
    return attr == "weight" and isinstance(module, _DEFAULT_TYPES)


def iter_matrices(
    model: nn.Module,
    *,
    conv: Literal["slices", "flatten"] = "slices",
    include_all_params: bool = False,
) -> list[MatrixView]:
    r"""The matrices of a model, in ``named_parameters()`` order (shared parameters once).

    The default selection is the ``weight`` of every ``nn.Linear`` (including the attention output projection
    and ``NonDynamicallyQuantizableLinear``), ``nn.Conv1d/2d/3d`` and ``nn.Embedding``, and the
    ``in_proj_weight`` (or separate ``q/k/v_proj_weight``) of every ``nn.MultiheadAttention``; norms, biases
    and other parameters are not selected. With ``include_all_params=True`` every parameter with
    ``ndim >= 2`` is taken, each resolved through its owning module by :func:`matrices_of`.

    .. math::

        \{W\} = \bigcup_{\text{selected } (name, p)} \texttt{matrices\_of}(\text{owner}(name), name, p).

    Args:
        model: any module.
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
    if conv not in _CONV_VIEWS:
        raise ValueError(f"conv must be one of {_CONV_VIEWS}, got {conv!r}")
    views: list[MatrixView] = []
    for name, param in model.named_parameters():
        if isinstance(param, nn.parameter.UninitializedParameter):
            continue  # a lazy module before its first forward: no shape yet
        owner_name, _, attr = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        if _is_default(owner, attr) or (include_all_params and param.ndim >= 2):
            views.extend(matrices_of(owner, name, param, conv=conv))
    return views
