"""The one default selection rule (rmt_callbacks.spectral.selection) on real modules of every kind it knows."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations

import rmt_callbacks
from rmt_callbacks import analyze
from rmt_callbacks.spectral import iter_matrices
from rmt_callbacks.spectral.selection import candidates, select_names, select_views


class Ensemble(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 6, 5))


def _every_kind() -> nn.Module:
    torch.manual_seed(0)
    return nn.ModuleDict(
        {
            "lin": nn.Linear(8, 6),
            "conv": nn.Conv2d(3, 4, 3),
            "deconv": nn.ConvTranspose1d(4, 2, 3),
            "embed": nn.Embedding(10, 8),
            "attn": nn.MultiheadAttention(8, 2),
            "sep": nn.MultiheadAttention(8, 2, kdim=4, vdim=5),
            "lstm": nn.LSTM(8, 6, num_layers=2, bidirectional=True, proj_size=3),
            "gru": nn.GRU(8, 5),
            "rnn": nn.RNN(8, 4),
            "lcell": nn.LSTMCell(8, 3),
            "gcell": nn.GRUCell(8, 3),
            "rcell": nn.RNNCell(8, 3),
            "wn": parametrizations.weight_norm(nn.Linear(8, 7)),
            "sn": parametrizations.spectral_norm(nn.Linear(8, 7)),
            "orth": parametrizations.orthogonal(nn.Linear(7, 7)),
            "ens": Ensemble(),
            "norm": nn.LayerNorm(8),
        }
    )


def test_every_kind_is_selected_under_its_user_visible_name() -> None:
    names = [v.name for v in iter_matrices(_every_kind())]
    lstm = [f"lstm.weight_{w}_l{k}{d}" for k in (0, 1) for d in ("", "_reverse") for w in ("ih", "hh", "hr")]
    expected_lstm = [n if "_hr_" in n else f"{n}.{g}" for n in lstm for g in ("ifgo" if "_hr_" not in n else "-")]
    assert names == [
        "lin.weight",
        "conv.weight",
        "deconv.weight",
        "embed.weight",
        "attn.in_proj_weight.q",
        "attn.in_proj_weight.k",
        "attn.in_proj_weight.v",
        "attn.out_proj.weight",
        "sep.q_proj_weight",
        "sep.k_proj_weight",
        "sep.v_proj_weight",
        "sep.out_proj.weight",
        *expected_lstm,
        *(f"gru.weight_{w}_l0.{g}" for w in ("ih", "hh") for g in "rzn"),
        "rnn.weight_ih_l0",
        "rnn.weight_hh_l0",
        *(f"lcell.weight_{w}.{g}" for w in ("ih", "hh") for g in "ifgo"),
        *(f"gcell.weight_{w}.{g}" for w in ("ih", "hh") for g in "rzn"),
        "rcell.weight_ih",
        "rcell.weight_hh",
        "wn.weight",
        "sn.weight",
        "orth.weight",
        "ens.weight",
    ]


def test_gate_blocks_are_the_rows_of_each_gate() -> None:
    lstm = nn.LSTM(4, 3)
    views = {v.name: v for v in iter_matrices(nn.ModuleDict({"r": lstm}))}
    for i, g in enumerate("ifgo"):
        view = views[f"r.weight_ih_l0.{g}"]
        assert view.source == "recurrent" and view.matrix.shape == (3, 4)
        assert torch.equal(view.matrix, lstm.weight_ih_l0[3 * i : 3 * (i + 1)])
        assert view.matrix.data_ptr() == lstm.weight_ih_l0[3 * i :].data_ptr()  # a view, no copy


def test_parametrized_weights_are_the_weights_they_apply() -> None:
    model = _every_kind()
    model.eval()
    views = {v.name: v for v in iter_matrices(model)}
    for name in ("wn", "sn", "orth"):
        assert torch.equal(views[f"{name}.weight"].matrix, getattr(model, name).weight.detach())
    assert not any("original" in n for n in views)
    sigma = torch.linalg.matrix_norm(views["sn.weight"].matrix, ord=2)
    raw = torch.linalg.matrix_norm(model.sn.parametrizations.weight.original.detach(), ord=2)
    assert abs(float(sigma) - 1.0) < 0.05 and abs(float(raw) - 1.0) > 0.05  # the applied weight, not the original
    q = views["orth.weight"].matrix
    assert torch.allclose(q @ q.T, torch.eye(7), atol=1e-5)


def test_reading_a_spectral_norm_module_does_not_advance_its_power_iteration() -> None:
    layer = parametrizations.spectral_norm(nn.Linear(6, 5))
    u = layer.parametrizations.weight[0]._u.clone()
    iter_matrices(nn.ModuleDict({"sn": layer}))
    assert torch.equal(layer.parametrizations.weight[0]._u, u) and layer.training


def test_compiled_models_and_submodules_keep_their_original_names() -> None:
    model = _every_kind()
    want = [(v.name, v.source) for v in iter_matrices(model)]
    assert [(v.name, v.source) for v in iter_matrices(torch.compile(model))] == want
    model["lin"] = torch.compile(model["lin"])
    assert "lin._orig_mod.weight" in dict(model.named_parameters())
    assert [(v.name, v.source) for v in iter_matrices(model)] == want


def test_iter_matrices_and_analyze_select_the_same_matrices() -> None:
    model = _every_kind()
    views = iter_matrices(model)
    results = analyze(model, analyses=["summary"])
    assert [(r.name, r.shape, r.source) for r in results] == [(v.name, tuple(v.matrix.shape), v.source) for v in views]
    assert [v.name for v in select_views(model)] == [v.name for v in views]
    assert select_names(model, include=None, exclude=(), param_filter=None)[:2] == ["lin.weight", "conv.weight"]


def test_include_all_takes_every_matrix_but_never_a_raw_original() -> None:
    names = [v.name for v in iter_matrices(_every_kind(), include_all_params=True)]
    assert "norm.weight" not in names and not any("original" in n for n in names)
    assert {"wn.weight", "sn.weight", "orth.weight"} <= set(names)


def test_a_model_of_recurrent_layers_only_is_selected() -> None:
    model = nn.Sequential(nn.GRU(4, 4))
    assert [v.name for v in select_views(model)] == [f"0.weight_{w}_l0.{g}" for w in ("ih", "hh") for g in "rzn"]


def test_nothing_selected_lists_the_parameters_and_suggests_include() -> None:
    class Custom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table = nn.Parameter(torch.zeros(4, 5))
            self.scale = nn.Parameter(torch.zeros(5))

    with pytest.raises(ValueError, match=r"parameters with ndim >= 2: \['table' \(4, 5\)\]; select some with include="):
        select_views(Custom())
    assert [v.name for v in select_views(Custom(), include=["table"])] == ["table"]


def test_candidates_of_a_scripted_module_know_its_kinds() -> None:
    scripted = torch.jit.script(nn.Sequential(nn.Linear(4, 3), nn.Conv1d(2, 2, 2)))
    assert [(c.name, c.kind) for c in candidates(scripted) if c.tensor.ndim >= 2] == [
        ("0.weight", "linear"),
        ("1.weight", "conv"),
    ]


def test_the_pure_layer_never_imports_the_monitors() -> None:
    root = Path(rmt_callbacks.__file__).parent
    for package in ("spectral", "analysis"):
        for path in (root / package).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    assert "monitors" not in (node.module or ""), path


def _legacy() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.utils.weight_norm(nn.Linear(64, 128)), nn.Linear(128, 64), nn.utils.spectral_norm(nn.Linear(64, 64))
    )
    model(torch.randn(3, 64))  # a training forward: spectral norm's power iteration has run once
    return model.eval()


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_old_style_hook_norms_are_the_weights_they_apply() -> None:
    model = _legacy()
    u = model[2].weight_u.clone()
    views = iter_matrices(model)
    assert [v.name for v in views] == ["0.weight", "1.weight", "2.weight"]
    assert torch.equal(views[0].matrix, model[0].weight) and torch.equal(views[2].matrix, model[2].weight)
    assert torch.equal(model[2].weight_u, u)  # the power iteration was not advanced
    every = [v.name for v in iter_matrices(model, include_all_params=True)]
    assert every == ["0.weight", "1.weight", "2.weight"]  # weight_g, weight_v, weight_orig: never on their own
    traced = torch.jit.trace(model, torch.randn(2, 64))  # the hooks are gone: read by the names they left
    assert [(v.name, v.matrix.tolist()) for v in iter_matrices(traced)] == [(v.name, v.matrix.tolist()) for v in views]
    behind = {c.name: [n for n, _ in c.parameters] for c in candidates(model)}
    assert behind["0.weight"] == ["0.weight_g", "0.weight_v"] and behind["2.weight"] == ["2.weight_orig"]


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_nothing_selected_never_suggests_a_vector() -> None:
    with pytest.raises(ValueError, match=r"ndim >= 2: \['0.weight' \(128, 64\), .*include=\['0.weight', '1.weight'\]"):
        select_views(_legacy(), include=["none"])  # not '0.weight_g' (128, 1)
    with pytest.raises(ValueError, match=r"include=\['w.table'\]"):
        select_views(nn.ModuleDict({"w": _Scaled()}))


class _Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(128, 1))
        self.table = nn.Parameter(torch.ones(4, 5))


def test_embedding_bag_weights_are_selected() -> None:
    bag = nn.EmbeddingBag(10, 4)
    (view,) = iter_matrices(nn.ModuleDict({"bag": bag}))
    assert (view.name, view.source) == ("bag.weight", "embedding") and torch.equal(view.matrix, bag.weight)


def test_grouped_convolutions_are_a_matrix_per_group_and_depthwise_ones_their_filters() -> None:
    torch.manual_seed(0)
    grouped, depthwise = nn.Conv2d(32, 64, 3, groups=4), nn.Conv2d(32, 32, 3, groups=32)
    tgrouped = nn.ConvTranspose1d(8, 12, 3, groups=4)  # weight (in, out/g, k)
    views = {v.name: v.matrix for v in iter_matrices(nn.ModuleDict({"g": grouped, "d": depthwise, "t": tgrouped}))}
    w = grouped.weight
    assert views["g.weight"].shape == (9 * 4, 16, 8)
    for pos in range(9):
        for g in range(4):
            block = w[16 * g : 16 * (g + 1), :, pos // 3, pos % 3]  # group g's (out/g, in/g) map at one position
            assert torch.equal(views["g.weight"][pos * 4 + g], block)
    assert torch.equal(views["d.weight"], depthwise.weight.flatten(1)) and views["d.weight"].shape == (32, 9)
    t = tgrouped.weight
    assert views["t.weight"].shape == (3 * 4, 3, 2) and torch.equal(views["t.weight"][1 * 4 + 2], t[4:6, :, 1].T)
    flat = iter_matrices(nn.ModuleDict({"g": grouped, "d": depthwise}), conv="flatten")
    assert [tuple(v.matrix.shape) for v in flat] == [(4, 16, 72), (32, 9)]
    scripted = torch.jit.script(nn.Sequential(grouped))
    assert [tuple(v.matrix.shape) for v in iter_matrices(scripted)] == [(36, 16, 8)]  # scripted modules keep groups


def test_tied_weights_are_analysed_once_and_carry_their_other_names() -> None:
    from rmt_callbacks.spectral.selection import resolve

    model = nn.ModuleDict({"emb": nn.Embedding(10, 6), "mid": nn.Linear(6, 6), "head": nn.Linear(6, 10)})
    model["head"].weight = model["emb"].weight
    cands = candidates(model)
    assert {c.name: c.aliases for c in cands if c.aliases} == {"emb.weight": ("head.weight",)}
    views = resolve(cands)
    assert [(v.name, v.aliases) for v in views] == [("emb.weight", ("head.weight",)), ("mid.weight", ())]


def test_a_parametrization_that_raises_is_skipped_with_its_reason() -> None:
    """A user's parametrization may fail when read outside its forward (here: after it is switched off); the matrix
    is skipped with the reason, never raised into a monitor's hook."""
    from torch.nn.utils import parametrize

    from rmt_callbacks import analyze

    class Fragile(nn.Module):
        armed = False

        def forward(self, w: torch.Tensor) -> torch.Tensor:
            if self.armed:
                raise RuntimeError("tensors on two devices")
            return 2 * w

    net = nn.Sequential(nn.Linear(20, 30), nn.Linear(30, 10))
    fragile = Fragile()
    parametrize.register_parametrization(net[0], "weight", fragile)
    fragile.armed = True
    by_name = {r.name: r for r in analyze(net)}
    assert "could not be computed: RuntimeError: tensors on two devices" in by_name["0.weight"].skipped
    assert by_name["1.weight"].skipped is None


class Conv1D(nn.Module):
    """Hugging Face's ``transformers.pytorch_utils.Conv1D`` as GPT-2 uses it: ``y = x W + b``, ``W`` of shape
    ``(in, out)`` (a stand-in with its name and attributes; ``tests/integrations`` uses the real one)."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf, self.nx = nf, nx
        self.weight = nn.Parameter(torch.randn(nx, nf) / nx**0.5)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight + self.bias


def test_hugging_face_conv1d_is_read_as_the_linear_it_is() -> None:
    """GPT-2's Conv1D and the nn.Linear computing the same map (weight transposed) give the same matrix, shape and
    numbers; the default rule selects it (before, GPT-2 was analysed on its embeddings only)."""
    torch.manual_seed(0)
    conv = Conv1D(nf=24, nx=40)
    linear = nn.Linear(40, 24)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.T)
    x = torch.randn(5, 40)
    torch.testing.assert_close(conv(x), linear(x) - linear.bias + conv.bias)  # the same map
    (view,) = select_views(nn.Sequential(conv))
    assert view.name == "0.weight" and tuple(view.matrix.shape) == (24, 40) and view.source == "linear"
    torch.testing.assert_close(view.matrix, linear.weight.detach())
    ours, reference = analyze(nn.Sequential(conv))[0], analyze(nn.Sequential(linear))[0]
    assert ours.metrics == pytest.approx(reference.metrics, rel=1e-12, nan_ok=True)
    scripted = torch.jit.script(nn.Sequential(Conv1D(nf=24, nx=40)))
    assert [tuple(v.matrix.shape) for v in select_views(scripted)] == [(24, 40)]
