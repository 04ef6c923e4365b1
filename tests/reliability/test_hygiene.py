"""Hygiene: nothing is unpickled, no configuration evaluates code, and hostile parameter names reach MLflow only
through the one sanitiser (valid keys, no collisions, no path traversal, file-system length limits).

The source scan walks the syntax tree of every module we ship (``rmt_callbacks``, ``reference_models``,
``examples``, ``benchmarks``); the name tests train real models whose modules are called ``/etc/passwd``,
``λ``/``μ``, ``a b``/``a_b`` (equal once plainly cleaned) and 300+ characters, and read the sqlite MLflow store
and its artifact folder back.
"""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import MLFlowLogger
from mlflow import MlflowClient
from torch import nn

from rmt_callbacks import SpectrumMonitor, analyze
from rmt_callbacks.sinks.keys import MAX_KEY_LENGTH, MAX_SEGMENT_LENGTH, metric_key, tag_key

from scaffold import Toy, quiet_trainer, random_loader

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = [p for d in ("rmt_callbacks", "reference_models", "examples", "benchmarks") for p in (ROOT / d).rglob("*.py")]
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}
UNSAFE_CALLS = {"eval", "exec", "compile", "__import__"}


def _keyword(call: ast.Call, name: str) -> object:
    for kw in call.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


def _violations(tree: ast.AST) -> list[str]:
    """Unsafe imports and calls in one module's syntax tree (line: what)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            out += [f"{node.lineno}: import {n}" for n in names if n and n.split(".")[0] in UNSAFE_MODULES]
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
        if isinstance(func, ast.Name) and name in UNSAFE_CALLS:
            out.append(f"{node.lineno}: {name}()")
        if owner == "torch" and name == "load" and _keyword(node, "weights_only") is not True:
            out.append(f"{node.lineno}: torch.load without weights_only=True")
        if owner in ("np", "numpy") and name == "load" and _keyword(node, "allow_pickle") is not False:
            out.append(f"{node.lineno}: np.load without allow_pickle=False")
        if owner == "yaml" and name in ("load", "load_all", "unsafe_load", "full_load"):
            out.append(f"{node.lineno}: yaml.{name} (use yaml.safe_load)")
    return out


def test_the_scanner_catches_what_it_looks_for() -> None:
    bad = "import pickle\nx = eval('1')\ntorch.load(f)\nnp.load(f)\nyaml.load(s)\ntorch.load(f, weights_only=False)"
    assert len(_violations(ast.parse(bad))) == 6
    good = "torch.load(f, weights_only=True)\nnp.load(f, allow_pickle=False)\nyaml.safe_load(s)\nmodel.eval()"
    assert _violations(ast.parse(good)) == []


def test_nothing_shipped_unpickles_or_evaluates_code() -> None:
    assert len(SHIPPED) > 20  # the scan sees the package
    found = {str(p.relative_to(ROOT)): v for p in SHIPPED if (v := _violations(ast.parse(p.read_text(), str(p))))}
    assert found == {}


def test_long_names_keep_their_statistic_and_stay_distinct() -> None:
    a, b = "y" * 300 + ".a.weight", "y" * 300 + ".b.weight"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keys = {metric_key("rmt/", n, s) for n in (a, b) for s in ("lambda_max", "lambda_min", "mp_sigma2")}
    assert len(keys) == 6 and all(len(k) <= MAX_KEY_LENGTH for k in keys)
    assert sum(k.endswith("/mp_sigma2") for k in keys) == 2
    assert sum("too long for an MLflow key" in str(w.message) for w in caught) == 2  # once per name


class Hostile(Toy):
    """Linear layers under module names that are paths, non-ASCII, or over every length limit."""

    NAMES = (
        "/etc/passwd",
        "λ weights",
        "μ weights",
        "a b",
        "a_b",
        "z" * 300 + "a",
        "z" * 300 + "b",
    )  # pairs: one cleaned

    def __init__(self) -> None:
        super().__init__(lr=0.01)
        self.layers = nn.ModuleDict()
        for i, name in enumerate(self.NAMES):
            self.layers[name] = nn.Linear(6 + i, 5)

    def training_step(self, batch: tuple[torch.Tensor], batch_idx: int) -> torch.Tensor:
        (x,) = batch
        return sum(layer(x[:, : layer.in_features]).pow(2).mean() for layer in self.layers.values())


def test_hostile_parameter_names_reach_mlflow_only_through_the_sanitiser(tmp_path: Path) -> None:
    uri, root = f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "artifacts"
    logger = MLFlowLogger(experiment_name="names", tracking_uri=uri, artifact_location=root.as_uri())
    monitor = SpectrumMonitor(
        every_n_train_steps=2, overhead_budget=None, analyses=["summary"], figure_every_n_analyses=1
    )
    trainer = quiet_trainer(max_steps=2, default_root_dir=tmp_path, logger=logger, callbacks=[monitor])
    model = Hostile()
    data = random_loader(16, 5 + len(Hostile.NAMES), batch_size=8, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, data)
    failures = [str(w.message) for w in caught if "writing to MLflow failed" in str(w.message)]
    assert failures == []  # every artifact write succeeded

    metrics = MlflowClient(uri).get_run(logger.run_id).data.metrics
    for result in analyze(model, analyses=["summary"]):  # every statistic of every matrix under its own key
        for stat in ("lambda_max", "lambda_mean", "stable_rank"):  # (5, N > 5): lambda_min is a structural 0
            assert metrics[metric_key("rmt/", result.name, stat)] == pytest.approx(result.metrics[stat], rel=1e-9)
    assert len([k for k in metrics if k.endswith("/lambda_max")]) == len(Hostile.NAMES)

    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    figures = [p for p in files if p.suffix == ".png"]
    assert not Path("/etc/passwd.weight").exists()
    assert len(figures) == 3 * len(Hostile.NAMES)  # steps 0, 2 and the evolution per matrix: no two names share a file
    assert all(p.resolve().is_relative_to(root.resolve()) for p in figures)
    assert all(len(part) <= MAX_SEGMENT_LENGTH for p in files for part in p.relative_to(tmp_path).parts)


class Broken(Toy):
    """One trainable layer and two frozen NaN layers whose 300-character names share every character but the last."""

    LONG = ("q" * 300 + "1", "q" * 300 + "2")

    def __init__(self) -> None:
        super().__init__(ok=nn.Linear(6, 5), optimizer=lambda m: torch.optim.SGD(m.ok.parameters(), lr=0.01))
        self.layers = nn.ModuleDict({name: nn.Linear(4, 3) for name in self.LONG})
        for layer in self.layers.values():
            layer.weight.requires_grad_(False)
            with torch.no_grad():
                layer.weight.fill_(float("nan"))

    def training_step(self, batch: tuple[torch.Tensor], batch_idx: int) -> torch.Tensor:
        (x,) = batch
        return self.ok(x[:, :6]).pow(2).mean()


def test_skip_tags_of_long_names_sharing_a_head_stay_apart(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    logger = MLFlowLogger(experiment_name="tags", tracking_uri=uri, artifact_location=(tmp_path / "a").as_uri())
    monitor = SpectrumMonitor(
        every_n_train_steps=1, overhead_budget=None, analyses=["summary"], figure_every_n_analyses=None
    )
    trainer = quiet_trainer(max_steps=1, default_root_dir=tmp_path, logger=logger, callbacks=[monitor])
    data = random_loader(8, 9, batch_size=8, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Broken(), data)
        expected = {tag_key("rmt.skipped.", f"layers.{n}.weight") for n in Broken.LONG}
    run = MlflowClient(uri).get_run(logger.run_id).data
    tags = {k: v for k, v in run.tags.items() if k.startswith("rmt.skipped.")}
    assert len(tags) == 2 and all(len(k) <= MAX_KEY_LENGTH and "NaN" in v for k, v in tags.items())
    assert len(expected) == 2  # the one tag-key function keeps them apart too
    assert not [k for k in run.metrics if k.startswith("rmt/layers.")]  # skipped: tags, never metrics
