"""analyze() of every form a user may hold a model in (eager, scripted, traced, compiled, state_dict, safetensors,
.pt, Lightning checkpoint), the errors for what it refuses, and the ModelAnalysis it returns."""

from __future__ import annotations

import math
import pickle
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations

from rmt_callbacks import analyze
from rmt_callbacks.analysis import MatrixResult, ModelAnalysis, to_rows

ANALYSES = ["summary", "marchenko_pastur"]


class Ensemble(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 12, 10))


class Core(nn.Module):
    """Every module kind TorchScript can hold (no parametrizations: they do not script)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(30, 16)
        self.lin = nn.Linear(16, 16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.lstm = nn.LSTM(16, 8, num_layers=2, bidirectional=True, batch_first=True, proj_size=4)
        self.gru = nn.GRU(16, 6, batch_first=True)
        self.cell = nn.LSTMCell(16, 5)
        self.conv = nn.Conv1d(16, 12, 3)
        self.deconv = nn.ConvTranspose1d(12, 6, 3)
        self.ens = Ensemble()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(self.embed(x))
        a, _ = self.attn(h, h, h)
        r, _ = self.lstm(a)
        g, _ = self.gru(a)
        c, _ = self.cell(a[:, 0])
        d = self.deconv(self.conv(a.transpose(1, 2)))
        return r.sum() + g.sum() + c.sum() + d.sum() + self.ens.weight.sum()


class Full(nn.Module):
    """Core plus parametrized layers: every kind of the selection rule."""

    def __init__(self) -> None:
        super().__init__()
        self.core = Core()
        self.wn = parametrizations.weight_norm(nn.Linear(16, 14))
        self.sn = parametrizations.spectral_norm(nn.Linear(16, 14))
        self.orth = parametrizations.orthogonal(nn.Linear(14, 14))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.core.embed(x)
        return self.core(x) + self.wn(h).sum() + self.sn(h).sum() + self.orth(self.wn(h)).sum()


def _tokens() -> torch.Tensor:
    return torch.randint(0, 30, (2, 7), generator=torch.Generator().manual_seed(1))


def _full() -> Full:
    torch.manual_seed(0)
    model = Full()
    model(_tokens())  # a training-mode forward: spectral norm's power iteration has run once
    return model.eval()  # eval: a trace does not advance it again


def _numbers(result: ModelAnalysis) -> dict[str, dict[str, float]]:
    return {r.name: r.metrics for r in result if r.skipped is None}


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    """Equal metrics, to what the numerical route may change: a matrix decomposed in another stack (batched with
    other views, or alone) and buffers placed elsewhere in memory (MKL's least squares in the unfolding) round
    differently (~1e-15 relative), which the fits' iterations (fixed points to 1e-12, the surmise's optimiser to
    ~1e-8) carry into their results as up to ~1e-8 relative."""
    if a.keys() != b.keys():
        return False
    pairs = ((a[k], b[k]) for k in a)
    return all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-12) or (math.isnan(x) and math.isnan(y)) for x, y in pairs)


def test_every_form_of_one_model_gives_the_same_numbers(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = _full()
    eager = analyze(model, analyses=ANALYSES)
    want = _numbers(eager)
    assert len(want) == len(eager) > 60  # gates, q/k/v, directions, layers: nothing skipped from the module
    sources = {r.name: r.source for r in eager}
    assert sources["sn.weight"] == "linear" and sources["core.lstm.weight_hh_l1_reverse.o"] == "recurrent"

    compiled = analyze(torch.compile(model), analyses=ANALYSES)
    traced = analyze(torch.jit.trace(model, _tokens(), check_trace=False), analyses=ANALYSES)
    assert [(r.name, r.source) for r in compiled] == [(r.name, r.source) for r in eager]
    assert _numbers(compiled).keys() == want.keys() and all(_same(want[k], v) for k, v in _numbers(compiled).items())

    # traced: the same names and sources; orthogonal's applied weight is code, not stored: skipped, with the reason
    assert [(r.name, r.source) for r in traced if r.name != "orth.weight"] == [
        (r.name, r.source) for r in eager if r.name != "orth.weight"
    ]
    (orth,) = [r for r in traced if r.name == "orth.weight"]
    assert orth.skipped is not None and "pass the nn.Module" in orth.skipped and orth.source == "linear"
    assert all(_same(want[k], v) for k, v in _numbers(traced).items())

    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp_path / "model.safetensors"))
    torch.save(model.state_dict(), tmp_path / "model.pt")
    for form in (model.state_dict(), tmp_path / "model.safetensors", str(tmp_path / "model.pt")):
        got = analyze(form, analyses=ANALYSES)
        numbers = _numbers(got)
        # a state_dict has no module types: conv weights are batches over their leading dimensions (other numbers),
        # Linear and Embedding weights are plain "matrix"; orthogonal cannot be computed from its original
        assert "orth.weight" not in numbers and "core.conv.weight" in numbers
        same = {k: v for k, v in numbers.items() if "conv" not in k}
        assert same.keys() == {k for k in want if "conv" not in k and k != "orth.weight"}
        assert all(_same(want[k], v) for k, v in same.items()), form
        src = {r.name: r.source for r in got}
        assert src["core.lin.weight"] == src["core.embed.weight"] == src["sn.weight"] == "matrix"
        assert src["core.conv.weight"] == "ensemble" and src["core.lstm.weight_ih_l0.i"] == "recurrent"


def test_a_scripted_model_gives_the_numbers_of_the_eager_one() -> None:
    torch.manual_seed(0)
    core = Core().eval()
    eager = analyze(core, analyses=ANALYSES)
    scripted = analyze(torch.jit.script(core), analyses=ANALYSES)
    assert [(r.name, r.source, r.shape) for r in scripted] == [(r.name, r.source, r.shape) for r in eager]
    assert all(_same(a.metrics, b.metrics) for a, b in zip(eager, scripted, strict=True))


def test_a_state_dict_never_analyses_a_raw_original_under_the_weights_name() -> None:
    model = _full()
    got = {r.name: r for r in analyze(model.state_dict(), analyses=["summary"])}
    assert not any("original" in name for name in got)
    assert got["sn.weight"].metrics["spectral_norm"] == pytest.approx(1.0, abs=0.05)  # the applied weight's
    raw = torch.linalg.matrix_norm(model.sn.parametrizations.weight.original, ord=2)
    assert abs(float(raw) - 1.0) > 0.05
    assert got["orth.weight"].skipped is not None and "pass the nn.Module itself" in got["orth.weight"].skipped


def test_weight_norm_is_computed_along_its_dim() -> None:
    layer = parametrizations.weight_norm(nn.Linear(6, 5), dim=1)
    (r,) = analyze({"w." + k: v for k, v in layer.state_dict().items()}, analyses=["summary"])
    (e,) = analyze(nn.ModuleDict({"w": layer}), analyses=["summary"])
    assert r.name == e.name == "w.weight" and _same(r.metrics, e.metrics)


def test_a_lightning_checkpoint_is_read_from_its_state_dict(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(8, 6), nn.GRU(6, 4))
    path = tmp_path / "last.ckpt"
    torch.save({"epoch": 3, "global_step": 10, "state_dict": model.state_dict()}, path)
    names = [r.name for r in analyze(path, analyses=["summary"])]
    assert names == ["0.weight", *(f"1.weight_{w}_l0.{g}" for w in ("ih", "hh") for g in "rzn")]
    assert [r.name for r in analyze({"state_dict": model.state_dict()}, analyses=["summary"])] == names


class _Payload:
    """Unpickling this would write a file: a stand-in for a malicious checkpoint."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (Path.write_text, (Path(self.target), "pwned"))


def test_a_checkpoint_that_needs_unpickling_is_refused_and_never_run(tmp_path: Path) -> None:
    target = tmp_path / "ran.txt"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"weight": torch.ones(3, 3), "payload": _Payload(str(target))}, fh)
    with pytest.raises(ValueError, match=r"weights_only=True.*arbitrary unpickling.*torch.save\(model.state_dict\(\)"):
        analyze(path)
    assert not target.exists()
    module_path = tmp_path / "module.pth"
    torch.save(nn.Linear(4, 4), module_path)  # a whole pickled module
    with pytest.raises(ValueError, match="arbitrary unpickling"):
        analyze(module_path)


def test_without_safetensors_a_clear_import_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(ImportError, match="pip install safetensors"):
        analyze(tmp_path / "model.safetensors")


@pytest.mark.parametrize(
    ("source", "error", "match"),
    [
        (nn.ReLU(), ValueError, "has no parameters"),
        ({}, ValueError, "holds no tensors"),
        ({"a": 1}, ValueError, "holds no tensors"),
        (42, TypeError, r"analyze accepts an nn.Module .*a state_dict .*a path"),
        ([torch.ones(3, 3)], TypeError, "got list"),
        ("weights.npz", ValueError, r"expected a .safetensors"),
        ("missing.pt", FileNotFoundError, "no such file"),
        ({"w.weight": torch.ones(4)}, ValueError, r"matches no matrix of the state_dict.*\[\]"),
    ],
)
def test_what_is_refused_and_why(source: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        analyze(source)


def test_meta_device_weights_say_what_to_pass() -> None:
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 3))
    for source in (model, model.state_dict()):
        with pytest.raises(ValueError, match=r"meta device.*to_empty.*state_dict"):
            analyze(source)


def test_nothing_selected_suggests_include() -> None:
    with pytest.raises(ValueError, match=r"parameters with ndim >= 2: \['table' \(4, 5\)\]; select some with include"):
        analyze({"table": torch.randn(4, 5)})
    assert [r.name for r in analyze({"table": torch.randn(4, 5)}, include=["*"], analyses=["summary"])] == ["table"]


def _results() -> ModelAnalysis:
    torch.manual_seed(0)
    return analyze(nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 10)), analyses=ANALYSES)


def test_model_analysis_is_an_immutable_sequence_of_results() -> None:
    result = _results()
    first, second = result
    assert isinstance(first, MatrixResult) and len(result) == 2 and result[1] is second and result[-1] is second
    assert [r.name for r in result] == ["0.weight", "2.weight"] and isinstance(result[:1], ModelAnalysis)
    assert to_rows(result) == result.rows() and result == list(result)
    with pytest.raises(AttributeError):
        result.extra = 1  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        result[0] = first  # type: ignore[index]
    assert pickle.loads(pickle.dumps(result)) == result


def test_summary_counts_and_means() -> None:
    result = _results()
    s = result.summary
    assert (s["matrices"], s["analysed"], s["skipped"], s["estimated"]) == (2, 2, 0, 0)
    assert s["lambda_max"] == pytest.approx((result[0].metrics["lambda_max"] + result[1].metrics["lambda_max"]) / 2)
    assert "mp_sigma2" in s and "skipped" not in {k for k in s if k not in ("matrices", "analysed", "skipped")}


def test_the_table_shows_the_metrics_that_exist() -> None:
    results = [
        MatrixResult("a.weight", (4, 3), "linear", {"skipped": 0.0, "lambda_max": 2.0, "pl_alpha": 3.5}),
        MatrixResult("b.weight", (5, 5), "conv", {"skipped": 1.0}, "not finite", method=None),
    ]
    text = str(ModelAnalysis(results))
    lines = text.splitlines()
    assert lines[0].split() == ["name", "shape", "source", "lambda_max", "pl_alpha", "note"]
    assert lines[1].split()[:5] == ["a.weight", "(4,", "3)", "linear", "2"] and "3.5" in lines[1]
    assert "skipped: not finite" in lines[2] and len({len(line) for line in lines[:1]}) == 1
    assert "mp_sigma2" in str(_results()) and "stable_rank" in str(_results())


def test_to_pandas_and_its_error_without_pandas(monkeypatch: pytest.MonkeyPatch) -> None:
    pd = pytest.importorskip("pandas")
    frame = _results().to_pandas()
    assert isinstance(frame, pd.DataFrame) and list(frame["name"]) == ["0.weight", "2.weight"]
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        _results().to_pandas()


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_old_style_hook_norms_are_analysed_as_applied_from_the_module_and_its_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.utils.weight_norm(nn.Linear(64, 128)), nn.Linear(128, 64), nn.utils.spectral_norm(nn.Linear(64, 64))
    )
    model(torch.randn(3, 64))
    model.eval()
    eager = analyze(model, analyses=ANALYSES)
    assert [r.name for r in eager] == ["0.weight", "1.weight", "2.weight"]
    torch.save(model.state_dict(), tmp_path / "legacy.pt")
    for form in (model.state_dict(), tmp_path / "legacy.pt"):
        got = analyze(form, analyses=ANALYSES)
        assert [r.name for r in got] == ["0.weight", "1.weight", "2.weight"]
        assert all(_same(a.metrics, b.metrics) for a, b in zip(eager, got, strict=True))
    only = nn.Sequential(nn.utils.weight_norm(nn.Linear(64, 128)))
    assert [r.name for r in analyze(only, analyses=["summary"])] == ["0.weight"]
    # a spectral norm whose dim the shapes cannot tell (a ConvTranspose, dim=1, of square channels): said, not guessed
    tconv = nn.utils.spectral_norm(nn.ConvTranspose1d(6, 6, 3))
    (r,) = analyze({"t." + k: v for k, v in tconv.state_dict().items()}, analyses=["summary"])
    assert r.name == "t.weight" and r.skipped is not None and "pass the nn.Module itself" in r.skipped


def test_results_are_looked_up_by_matrix_name() -> None:
    result = _results()
    assert result["2.weight"] is result[1] and result[0].name == "0.weight" and len(result[:1]) == 1
    with pytest.raises(KeyError, match=r"no matrix named '1.weight'; the names are \['0.weight', '2.weight'\]"):
        result["1.weight"]


def test_tied_weights_are_named_in_the_table_and_the_summary() -> None:
    a = MatrixResult("emb.weight", (10, 6), "embedding", {"skipped": 0.0, "lambda_max": 2.0})
    b = MatrixResult("mid.weight", (6, 6), "linear", {"skipped": 0.0, "lambda_max": 1.0})
    out = ModelAnalysis([a, b], tied={"emb.weight": ["head.weight"], "gone.weight": ["x.weight"]})
    assert out.tied == {"emb.weight": ("head.weight",)} and out.summary["tied"] == 1
    assert str(out).splitlines()[-1] == "tied: head.weight is emb.weight (analysed once)"
    assert pickle.loads(pickle.dumps(out)) == out and out[1:].tied == {} and "tied" not in out[1:].summary
    assert "tied" not in ModelAnalysis([a]).summary and "tied" not in str(ModelAnalysis([a]))


def test_a_torchscript_archive_says_to_load_it_with_torch_jit_load(tmp_path: Path) -> None:
    path = tmp_path / "m_script.pt"
    torch.jit.save(torch.jit.script(nn.Linear(4, 4)), str(path))
    with pytest.raises(ValueError, match=r"TorchScript archive.*torch.jit.load\(path\).*pass the module"):
        analyze(str(path))


def test_a_corrupt_safetensors_file_names_the_file(tmp_path: Path) -> None:
    pytest.importorskip("safetensors")
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"abc")
    with pytest.raises(ValueError, match=r"cannot read '.*bad.safetensors' as a .safetensors file: .*header too small"):
        analyze(path)


def test_analyze_names_a_tied_output_head() -> None:
    """An output head sharing the embedding's tensor is analysed once and named, from the model and its state_dict."""

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.mid = nn.Embedding(50, 16), nn.Linear(16, 16)
            self.head = nn.Linear(16, 50, bias=False)
            self.head.weight = self.emb.weight

    model = Tied()
    for result in (analyze(model), analyze(model.state_dict())):
        assert [r.name for r in result] == ["emb.weight", "mid.weight"]
        assert result.tied == {"emb.weight": ("head.weight",)} and result.summary["tied"] == 1
        assert "tied: head.weight is emb.weight" in str(result)


def test_weight_norm_over_the_whole_weight_from_a_state_dict() -> None:
    """weight_norm(dim=None) stores a 0-d g: the applied weight is still exact from the state_dict."""
    layer = parametrizations.weight_norm(nn.Linear(30, 20), dim=None)
    (eager,), (stored,) = analyze(layer), analyze(layer.state_dict())
    assert eager.skipped is None and stored.skipped is None
    assert stored.metrics["lambda_max"] == pytest.approx(eager.metrics["lambda_max"], rel=1e-9)


def test_a_module_under_two_parents_is_named_twice() -> None:
    """The same Linear (or weight-normed Linear) at two places of a Sequential: analysed once, both names kept.
    (A state_dict of the weight-normed one holds its originals twice and is analysed under both names.)"""
    lin = nn.Linear(20, 20)
    normed = parametrizations.weight_norm(nn.Linear(20, 20))
    forms = [nn.Sequential(lin, nn.ReLU(), lin), nn.Sequential(lin, nn.ReLU(), lin).state_dict()]
    for net in [*forms, nn.Sequential(normed, nn.ReLU(), normed)]:
        result = analyze(net)
        assert [r.name for r in result] == ["0.weight"] and result.tied == {"0.weight": ("2.weight",)}


@pytest.mark.parametrize("norm", ["weight_norm", "spectral_norm"])
def test_a_recurrent_weight_parametrized_in_a_state_dict_is_still_split_into_gates(norm: str) -> None:
    lstm = getattr(parametrizations, norm)(nn.LSTM(8, 16), "weight_hh_l0")
    eager, stored = analyze(lstm), analyze(lstm.state_dict())
    assert [r.name for r in stored] == [r.name for r in eager] and len(eager) == 8  # 4 gates of each weight
    assert all(_same(a.metrics, b.metrics) for a, b in zip(eager, stored, strict=True))


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04 cut short"])
def test_a_corrupt_pt_file_gets_a_value_error_naming_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"broken\.pt"):
        analyze(path)
