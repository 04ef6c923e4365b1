"""matrices_of / iter_matrices on real torch modules: shapes, orientation, shared memory, the default selection."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rmt_callbacks.spectral import MatrixView, iter_matrices, matrices_of


def _same_memory(view: torch.Tensor, param: torch.Tensor) -> bool:
    return view.untyped_storage().data_ptr() == param.untyped_storage().data_ptr()


def test_linear_weight_is_taken_as_is_detached_and_shared() -> None:
    lin = nn.Linear(5, 3)
    (view,) = matrices_of(lin, "fc.weight", lin.weight)
    assert (view.name, view.source) == ("fc.weight", "linear")
    assert torch.equal(view.matrix, lin.weight) and not view.matrix.requires_grad
    assert view.matrix.data_ptr() == lin.weight.data_ptr()  # no copy
    with torch.no_grad():
        lin.weight.mul_(2.0)
    assert torch.equal(view.matrix, lin.weight)  # a view follows later updates


def test_biases_and_norm_weights_are_not_matrices() -> None:
    lin = nn.Linear(5, 3)
    assert matrices_of(lin, "fc.bias", lin.bias) == []
    ln = nn.LayerNorm(4)
    assert matrices_of(ln, "ln.weight", ln.weight) == []


@pytest.mark.parametrize(
    ("conv", "kernel"),
    [(nn.Conv1d(4, 6, 3), (3,)), (nn.Conv2d(4, 6, (2, 3)), (2, 3)), (nn.Conv3d(4, 6, (2, 1, 3)), (2, 1, 3))],
)
def test_conv_slices_are_the_matrices_at_each_kernel_position(conv: nn.Module, kernel: tuple[int, ...]) -> None:
    (view,) = matrices_of(conv, "c.weight", conv.weight)
    k = torch.Size(kernel).numel()
    assert view.source == "conv" and view.matrix.shape == (k, 6, 4)
    positions = torch.cartesian_prod(*[torch.arange(s) for s in kernel]).reshape(k, len(kernel))  # row-major order
    for p, pos in enumerate(positions.tolist()):
        assert torch.equal(view.matrix[p], conv.weight[(slice(None), slice(None), *pos)])
    assert _same_memory(view.matrix, conv.weight)


@pytest.mark.parametrize("conv", [nn.Conv1d(4, 6, 3), nn.Conv2d(4, 6, (2, 3)), nn.Conv3d(4, 6, 2)])
def test_conv_flatten_is_the_unrolled_out_by_in_kernel_matrix(conv: nn.Module) -> None:
    (view,) = matrices_of(conv, "c.weight", conv.weight, conv="flatten")
    w = conv.weight
    assert torch.equal(view.matrix, w.reshape(w.shape[0], -1)) and _same_memory(view.matrix, w)
    x = torch.randn(1, *w.shape[1:])  # one input patch: the convolution is the flattened matrix times the patch
    conv_nd = getattr(torch.nn.functional, f"conv{w.ndim - 2}d")
    torch.testing.assert_close(conv_nd(x, w).reshape(-1), view.matrix @ x.reshape(-1))


def test_grouped_and_transposed_convolutions_are_oriented_out_by_in() -> None:
    grouped = nn.Conv2d(4, 6, 3, groups=2)  # one (out/g, in/g) = (3, 2) matrix per group and kernel position
    (view,) = matrices_of(grouped, "g.weight", grouped.weight)
    assert view.matrix.shape == (18, 3, 2)
    w = grouped.weight.detach()
    blocks = [w[3 * g : 3 * (g + 1), :, i, j] for g in range(2) for i in range(3) for j in range(3)]
    assert all(any(torch.equal(b, m) for m in view.matrix) for b in blocks)
    tconv = nn.ConvTranspose2d(4, 6, (2, 3))  # weight stored (in, out, k1, k2)
    (view,) = matrices_of(tconv, "t.weight", tconv.weight)
    assert view.matrix.shape == (6, 6, 4)
    assert torch.equal(view.matrix[4], tconv.weight[:, :, 1, 1].T)  # position (1, 1) = 1 * 3 + 1


def test_embedding_weight_is_taken_as_is() -> None:
    emb = nn.Embedding(10, 4)
    (view,) = matrices_of(emb, "emb.weight", emb.weight)
    assert view.source == "embedding" and torch.equal(view.matrix, emb.weight)


def test_attention_in_projection_splits_into_query_key_value() -> None:
    mha = nn.MultiheadAttention(8, 2)
    views = matrices_of(mha, "attn.in_proj_weight", mha.in_proj_weight)
    assert [v.name for v in views] == ["attn.in_proj_weight.q", "attn.in_proj_weight.k", "attn.in_proj_weight.v"]
    assert {v.source for v in views} == {"attention"}
    for i, v in enumerate(views):
        assert torch.equal(v.matrix, mha.in_proj_weight[8 * i : 8 * (i + 1)]) and _same_memory(
            v.matrix, mha.in_proj_weight
        )
    x = torch.randn(3, 8)  # the query block is the map the module applies to its query input
    q_ref, _, _ = torch.nn.functional._in_projection_packed(x, x, x, mha.in_proj_weight)
    torch.testing.assert_close(q_ref, x @ views[0].matrix.T)


def test_separate_query_key_value_projections_are_single_matrices() -> None:
    mha = nn.MultiheadAttention(8, 2, kdim=5, vdim=3)
    views = [v for n, p in mha.named_parameters() for v in matrices_of(mha, n, p)]
    shapes = {v.name: tuple(v.matrix.shape) for v in views if v.source == "attention"}
    assert shapes == {"q_proj_weight": (8, 8), "k_proj_weight": (8, 5), "v_proj_weight": (8, 3)}


def test_parameters_with_batch_dimensions_are_ensembles() -> None:
    w = nn.Parameter(torch.randn(4, 7, 5))
    (view,) = matrices_of(None, "ensemble", w)
    assert view.source == "ensemble" and view.matrix.shape == (4, 7, 5) and _same_memory(view.matrix, w)
    (plain,) = matrices_of(None, "w", nn.Parameter(torch.randn(7, 5)))
    assert plain.source == "matrix"


def test_lazy_parameters_before_initialisation_are_skipped() -> None:
    lazy = nn.LazyLinear(3)
    assert matrices_of(lazy, "weight", lazy.weight) == []
    assert iter_matrices(nn.Sequential(lazy), include_all_params=True) == []


class _Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 8)
        self.conv = nn.Conv1d(8, 8, 3)
        self.attn = nn.MultiheadAttention(8, 2)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 11)
        self.head.weight = self.emb.weight  # tied: analysed once
        self.experts = nn.Parameter(torch.randn(3, 8, 4))  # not a module weight


def test_iter_matrices_default_selection() -> None:
    views = iter_matrices(_Small())
    assert [(v.name, v.source, tuple(v.matrix.shape)) for v in views] == [
        ("emb.weight", "embedding", (11, 8)),
        ("conv.weight", "conv", (3, 8, 8)),
        ("attn.in_proj_weight.q", "attention", (8, 8)),
        ("attn.in_proj_weight.k", "attention", (8, 8)),
        ("attn.in_proj_weight.v", "attention", (8, 8)),
        ("attn.out_proj.weight", "linear", (8, 8)),
    ]


def test_iter_matrices_all_parameters_and_flattened_convolutions() -> None:
    views = iter_matrices(_Small(), include_all_params=True, conv="flatten")
    shapes = {v.name: (v.source, tuple(v.matrix.shape)) for v in views}
    assert shapes["experts"] == ("ensemble", (3, 8, 4))
    assert shapes["conv.weight"] == ("conv", (8, 24))
    assert not any(name.startswith("norm") or name.endswith("bias") for name in shapes)


def test_bad_arguments_are_rejected() -> None:
    lin = nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"conv must be one of \('slices', 'flatten'\), got 'rows'"):
        matrices_of(lin, "weight", lin.weight, conv="rows")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="conv must be one of"):
        iter_matrices(lin, conv="rows")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"param 'w' must be a torch\.Tensor, got list"):
        matrices_of(None, "w", [[1.0]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="source must be one of"):
        MatrixView("w", torch.ones(2, 2), "dense")
