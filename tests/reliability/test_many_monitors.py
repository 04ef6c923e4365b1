"""Any number of monitors of one class in one Trainer: each has its own state key, its own run-level keys and its own
MLflow artifact folder, and a checkpoint restores each one's own state.

Real parts throughout: a Lightning ``Trainer`` on CPU training a small MLP for a few steps, an ``MLFlowLogger`` on a
sqlite store read back with ``MlflowClient``, a ``ModelCheckpoint`` resumed with ``ckpt_path=``, and a second Python
process for the descriptions of ``param_filter`` callables that the state keys are made of.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import ModuleType

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger
from mlflow import MlflowClient
from torch import nn
from torch.utils.data import DataLoader

from rmt_callbacks import DysonMonitor, SpectrumMonitor
from rmt_callbacks.monitors._identity import MAX_DESCRIPTION, describe

from scaffold import Toy, quiet_trainer, random_loader

SPECTRUM = {"analyses": ["summary"], "figure_every_n_analyses": None, "overhead_budget": None, "background": False}
DYSON = {"log_every_n_steps": 2, "window": 3, "overhead_budget": None}


def _mlp() -> Toy:
    return Toy(net=nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)), loss="cross_entropy", lr=0.1)


def _data() -> DataLoader:
    return random_loader(16, 6, batch_size=4, seed=0, target=lambda x: x[:, :3].argmax(dim=1))


def _trainer(root: Path, logger: object, callbacks: list, steps: int, **kwargs: object) -> pl.Trainer:
    return quiet_trainer(default_root_dir=root, logger=logger, callbacks=callbacks, max_steps=steps, **kwargs)


def _fit_mlflow(store: tuple[str, Path], name: str, callbacks: list, steps: int = 6) -> tuple[MlflowClient, str]:
    uri, root = store
    logger = MLFlowLogger(experiment_name=name, tracking_uri=uri, artifact_location=(root / name).as_uri())
    torch.manual_seed(0)
    _trainer(root / name, logger, callbacks, steps).fit(_mlp(), _data())
    return MlflowClient(uri), logger.run_id


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, key)]


def _files(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    """Every artifact file of the run under ``path``."""
    out: set[str] = set()
    for f in client.list_artifacts(run_id, path):
        out |= _files(client, run_id, f.path) if f.is_dir else {f.path}
    return out


def _arrays(client: MlflowClient, run_id: str, path: str, tmp: Path) -> list[str]:
    with np.load(client.download_artifacts(run_id, path, str(tmp)), allow_pickle=False) as f:
        return sorted(f.files)


def _messages(caught: list[warnings.WarningMessage], caplog: pytest.LogCaptureFixture, word: str) -> list[str]:
    said = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    return [m for m in said if word in m]


def _first(name: str, param: torch.Tensor) -> bool:
    return name.startswith("net.0")


def test_same_prefix_differing_only_in_param_filter(
    store: tuple[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two lambdas on two lines: two state keys; the second monitor is ``monitor-2``, said once with its keys."""
    a = SpectrumMonitor(every_n_train_steps=2, param_filter=lambda n, p: n.startswith("net.0"), **SPECTRUM)
    b = SpectrumMonitor(every_n_train_steps=2, param_filter=lambda n, p: n.startswith("net.2"), **SPECTRUM)
    assert a.state_key != b.state_key and "0x" not in a.state_key + b.state_key
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        client, run_id = _fit_mlflow(store, "filters", [a, b])
    assert (a.label, b.label) == ("monitor", "monitor-2")
    (said,) = _messages(caught, caplog, "labelled")
    assert "'monitor-2'" in said and "'rmt/monitor-2/analysis_interval'" in said and "'rmt/monitor-2/'" in said
    assert "log_key_prefix=" in said and not _messages(caught, caplog, "both select")  # disjoint matrices
    for label in ("monitor", "monitor-2"):  # one value per analysed step, each monitor under its own keys
        for stat in ("analysis_seconds", "analysis_interval"):
            assert _steps(client, run_id, f"rmt/{label}/{stat}") == [0, 2, 4, 6], (label, stat)
        assert _steps(client, run_id, f"rmt/{label}/overhead") == [2, 4, 6]
    assert _steps(client, run_id, "rmt/net.0.weight/lambda_max") == [0, 2, 4, 6]  # from a alone
    assert _steps(client, run_id, "rmt/net.2.weight/lambda_max") == [0, 2, 4, 6]  # from b alone
    assert _arrays(client, run_id, "rmt/monitor/spectra/step_00000004.npz", tmp_path) == ["net.0.weight"]
    assert _arrays(client, run_id, "rmt/monitor-2/spectra/step_00000004.npz", tmp_path) == ["net.2.weight"]
    assert {f.path for f in client.list_artifacts(run_id)} == {"rmt"}  # nothing at the top level any more


def test_same_prefix_differing_only_in_cadence_warns_that_matrices_coincide(
    store: tuple[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """The same matrices under one prefix: their per-matrix keys coincide (warned); the run-level keys do not."""
    monitors = [SpectrumMonitor(every_n_train_steps=k, **SPECTRUM) for k in (2, 3)]
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        client, run_id = _fit_mlflow(store, "cadence", monitors)
    (overlap,) = _messages(caught, caplog, "both select")
    assert "'net.0.weight', 'net.2.weight'" in overlap and "'rmt/net.0.weight/<stat>'" in overlap
    assert _steps(client, run_id, "rmt/monitor/analysis_interval") == [0, 2, 4, 6]
    assert _steps(client, run_id, "rmt/monitor-2/analysis_interval") == [0, 3, 6]
    intervals = [m.value for m in client.get_metric_history(run_id, "rmt/monitor-2/analysis_interval")]
    assert intervals == [0.0, 3.0, 3.0]
    spectra = {f"rmt/monitor-2/spectra/step_{s:08d}.npz" for s in (0, 3, 6)}
    assert _files(client, run_id, "rmt/monitor-2/spectra") == spectra


def test_different_include_and_prefixes_keep_every_artifact(
    store: tuple[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each monitor's spectra, fit tables, figures and summary under ``<prefix>monitor/``; none overwritten."""
    kwargs = {**SPECTRUM, "figure_every_n_analyses": 2}
    a = SpectrumMonitor(every_n_train_steps=2, include=["net.0.*"], log_key_prefix="a/", **kwargs)
    b = SpectrumMonitor(every_n_train_steps=3, include=["net.2.*"], log_key_prefix="b/", **kwargs)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        client, run_id = _fit_mlflow(store, "prefixes", [a, b])
    assert a.label == b.label == "monitor" and not _messages(caught, caplog, "labelled")
    cases = [("a", "net.0.weight", (0, 2, 4, 6), (0, 4, 6)), ("b", "net.2.weight", (0, 3, 6), (0, 6))]
    for prefix, matrix, steps, figures in cases:  # figures on analyses 0, 2, … and at the last step
        root = f"{prefix}/monitor"
        expected = {f"{root}/spectra/step_{s:08d}.npz" for s in steps} | {
            f"{root}/fits/step_{s:08d}.json" for s in steps
        }
        expected |= {f"{root}/figures/{matrix}/step_{s:08d}.png" for s in figures}
        expected |= {f"{root}/figures/{matrix}/evolution.png", f"{root}/summary/matrices.json"}
        assert _files(client, run_id, prefix) == expected, prefix
        for s in steps:
            assert _arrays(client, run_id, f"{root}/spectra/step_{s:08d}.npz", tmp_path / prefix) == [matrix]
        summary_file = client.download_artifacts(run_id, f"{root}/summary/matrices.json", str(tmp_path / prefix))
        summary = json.loads(Path(summary_file).read_text())
        assert [row[summary["columns"].index("name")] for row in summary["data"]] == [matrix, "(model mean)"]
        assert _steps(client, run_id, f"{prefix}/monitor/analysis_interval") == list(steps)
        assert _steps(client, run_id, f"{prefix}/{matrix}/lambda_max") == list(steps)


def test_two_dyson_monitors_with_different_cadence(store: tuple[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    """``dyson`` and ``dyson-2``: stride, window, |B|, lr and temperature each under its own label, once a step."""
    monitors = [DysonMonitor(every_n_train_steps=k, **DYSON) for k in (1, 2)]
    assert monitors[0].state_key != monitors[1].state_key
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        client, run_id = _fit_mlflow(store, "dyson", monitors)
    assert [m.label for m in monitors] == ["dyson", "dyson-2"]
    (said,) = _messages(caught, caplog, "labelled")
    assert "'rmt/dyson-2/noise_temperature'" in said and "artifacts" not in said  # DysonMonitor writes none
    assert len(_messages(caught, caplog, "both select")) == 1  # the same matrices: their dyson_* keys coincide
    for label, stride in (("dyson", 1.0), ("dyson-2", 2.0)):
        for stat in ("stride", "window", "batch_size", "lr", "noise_temperature"):
            assert _steps(client, run_id, f"rmt/{label}/{stat}") == [2, 4, 6], (label, stat)
        assert {m.value for m in client.get_metric_history(run_id, f"rmt/{label}/stride")} == {stride}
        temperatures = [m.value for m in client.get_metric_history(run_id, f"rmt/{label}/noise_temperature")]
        assert temperatures == pytest.approx([0.1 / 4] * 3)  # lr 0.1, |B| = 4
    windows = [m.value for m in client.get_metric_history(run_id, "rmt/dyson-2/window")]
    assert windows == [1.0, 2.0, 3.0]  # a snapshot every 2 steps (the first monitor's window is full at step 4)
    metrics = client.get_run(run_id).data.metrics
    assert not {"rmt/lr", "rmt/noise_temperature", "rmt/batch_size"} & metrics.keys()  # the run-level keys moved


def test_spectrum_and_dyson_monitors_together(store: tuple[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    monitors = [SpectrumMonitor(every_n_train_steps=3, **SPECTRUM), DysonMonitor(every_n_train_steps=1, **DYSON)]
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        client, run_id = _fit_mlflow(store, "both", monitors)
    assert [m.label for m in monitors] == ["monitor", "dyson"] and not _messages(caught, caplog, "labelled")
    assert _steps(client, run_id, "rmt/monitor/analysis_interval") == [0, 3, 6]
    assert _steps(client, run_id, "rmt/dyson/noise_temperature") == [2, 4, 6]
    assert _steps(client, run_id, "rmt/net.0.weight/lambda_max") == [0, 3, 6]
    assert _steps(client, run_id, "rmt/net.0.weight/dyson_width") == [4, 6]
    assert {f.path for f in client.list_artifacts(run_id, "rmt")} == {"rmt/monitor"}


def _monitors() -> list[pl.Callback]:
    """Two SpectrumMonitors differing only in cadence, two DysonMonitors only in ``param_filter`` (two lambdas)."""
    return [
        SpectrumMonitor(every_n_train_steps=2, **SPECTRUM),
        SpectrumMonitor(every_n_train_steps=3, **SPECTRUM),
        DysonMonitor(window=10, log_every_n_steps=3, overhead_budget=None, param_filter=lambda n, p: "0" in n),
        DysonMonitor(window=10, log_every_n_steps=3, overhead_budget=None, param_filter=lambda n, p: "2" in n),
    ]


def test_a_checkpoint_restores_each_monitors_own_state(tmp_path: Path) -> None:
    first = _monitors()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        _trainer(tmp_path, CSVLogger(tmp_path / "a"), [*first, ckpt], 6, enable_checkpointing=True).fit(_mlp(), _data())
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["callbacks"]
    assert {m.state_key for m in first} <= saved.keys()
    assert saved[first[0].state_key] == {"last_step": 6, "num_analyses": 4}  # steps 0, 2, 4, 6
    assert saved[first[1].state_key] == {"last_step": 6, "num_analyses": 3}  # steps 0, 3, 6
    assert list(saved[first[2].state_key]["snapshots"]) == ["net.0.weight"]
    assert list(saved[first[3].state_key]["snapshots"]) == ["net.2.weight"]

    resumed = _monitors()  # fresh objects, lambdas made again: the same state keys
    assert [m.state_key for m in resumed] == [m.state_key for m in first]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = _trainer(tmp_path, CSVLogger(tmp_path / "b"), resumed, 9)
        trainer.fit(_mlp(), _data(), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert resumed[0].state_dict() == {"last_step": 9, "num_analyses": 4 + 2}  # 8, and the final step 9
    assert resumed[1].state_dict() == {"last_step": 9, "num_analyses": 3 + 1}  # 9
    for monitor, matrix in ((resumed[2], "net.0.weight"), (resumed[3], "net.2.weight")):
        assert list(monitor._snapshots) == [matrix]  # its own window, continued across the resume
        assert [s.step for s in monitor._snapshots[matrix]] == list(range(1, 10))


def test_labels_count_monitors_of_a_class_with_one_prefix_in_callback_order() -> None:
    spectra = [SpectrumMonitor(every_n_train_steps=k, include=[f"net.{i}.*"]) for k, i in ((2, 0), (3, 2), (4, 0))]
    others = [SpectrumMonitor(log_key_prefix="x/"), DysonMonitor(), DysonMonitor(window=5, log_key_prefix="x/")]
    callbacks = [spectra[0], others[0], spectra[1], others[1], spectra[2], others[2]]
    trainer = _trainer(Path("."), CSVLogger("."), callbacks, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for monitor in callbacks:
            monitor.setup(trainer, _mlp(), "fit")
    assert [m.label for m in callbacks] == ["monitor", "monitor", "monitor-2", "dyson", "monitor-3", "dyson"]
    assert spectra[2].run_key("overhead") == "rmt/monitor-3/overhead" and spectra[2].artifact_root == "rmt/monitor-3"
    assert others[2].run_key("lr") == "x/dyson/lr"
    (overlap,) = [str(w.message) for w in caught if "both select" in str(w.message)]
    assert "SpectrumMonitor 'monitor-3'" in overlap and "'net.0.weight'" in overlap  # the first one's matrix
    trainer = _trainer(Path("."), CSVLogger("."), [spectra[2], spectra[0]], 1)  # another Trainer, another order
    with pytest.warns(RuntimeWarning, match="'monitor-2' and an earlier SpectrumMonitor"):
        for monitor in trainer.callbacks[:2]:
            monitor.setup(trainer, _mlp(), "fit")
    assert (spectra[2].label, spectra[0].label) == ("monitor", "monitor-2")


def test_a_selection_not_known_at_setup_is_said_to_be_unchecked(caplog: pytest.LogCaptureFixture) -> None:
    """Lazy layers have no shape at setup: whether two monitors share a matrix is said to be unknown, not guessed."""
    model = _mlp()
    model.net[0] = nn.LazyLinear(8)
    monitors = [SpectrumMonitor(every_n_train_steps=k) for k in (2, 3)]
    trainer = _trainer(Path("."), CSVLogger("."), monitors, 1)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        for monitor in monitors:
            monitor.setup(trainer, model, "fit")
    (said,) = _messages(caught, caplog, "labelled")
    assert "cannot be told before training" in said and "'rmt/<matrix>/<stat>'" in said
    assert not _messages(caught, caplog, "both select")


def test_identical_monitors_are_refused_by_lightning() -> None:
    """They would log the same records twice: Lightning refuses two stateful callbacks with one state key."""
    with pytest.raises(RuntimeError, match="state_key"):
        _trainer(Path("."), False, [SpectrumMonitor(param_filter=_first), SpectrumMonitor(param_filter=_first)], 1)
    _trainer(Path("."), False, [SpectrumMonitor(param_filter=_first), SpectrumMonitor(dense_limit=64)], 1)  # apart


FILTERS = """\
import functools

first = lambda name, param: name.startswith("net.0")
second = lambda name, param: name.startswith("net.2")
loop = [lambda name, param, i=i: str(i) in name for i in range(2)]


def by_prefix(prefix):
    def select(name, param):
        return name.startswith(prefix)
    return select


def top(name, param, prefix="net."):
    return name.startswith(prefix)


class Prefix:
    def __init__(self, prefix):
        self.prefix = prefix

    def __call__(self, name, param):
        return name.startswith(self.prefix)

    def method(self, name, param):
        return True


FILTERS = {
    "first": first, "second": second, "loop_0": loop[0], "loop_1": loop[1],
    "closure_a": by_prefix("net.0"), "closure_b": by_prefix("net.2"), "top": top,
    "partial_a": functools.partial(top, prefix="net.0"), "partial_b": functools.partial(top, prefix="net.2"),
    "object_a": Prefix("net.0"), "object_b": Prefix("net.2"), "method": Prefix("x").method,
}
"""

REPORT = """\
import json, sys
sys.path.insert(0, sys.argv[1])
from rmt_callbacks.monitors._identity import describe  # the whole of a state key that can vary
from rmt_filters import FILTERS
print(json.dumps({k: describe(f) for k, f in FILTERS.items()}))
"""


def _filters(root: Path) -> ModuleType:
    (root / "rmt_filters.py").write_text(FILTERS)
    spec = importlib.util.spec_from_file_location("rmt_filters", root / "rmt_filters.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_param_filters_are_described_stably_and_apart(tmp_path: Path) -> None:
    filters = _filters(tmp_path).FILTERS
    described = {k: describe(f) for k, f in filters.items()}
    assert described["first"] == "rmt_filters.<lambda>@rmt_filters.py:3"
    assert described["second"] == "rmt_filters.<lambda>@rmt_filters.py:4"
    assert described["loop_0"].endswith("<lambda>@rmt_filters.py:5[i=0]")  # one line, told apart by the default
    assert described["closure_a"] == "rmt_filters.by_prefix.<locals>.select@rmt_filters.py:9[prefix='net.0']"
    assert described["top"] == "rmt_filters.top"
    assert described["partial_b"] == "functools.partial(rmt_filters.top, prefix='net.2')"
    assert described["object_a"] == "rmt_filters.Prefix(prefix='net.0')"
    assert described["method"] == "rmt_filters.Prefix(prefix='x').method"
    assert len(set(described.values())) == len(described)  # every one apart
    assert not [d for d in described.values() if "0x" in d]  # no memory address
    assert describe(functools.partial(filters["top"], prefix="net.0")) == described["partial_a"]  # made again
    assert len(describe(lambda n, p, big="x" * 1000: True)) == MAX_DESCRIPTION  # a digest keeps it short

    env = {**os.environ, "PYTHONHASHSEED": "123"}  # another process, other addresses and string hashes
    out = subprocess.run(
        [sys.executable, "-c", REPORT, str(tmp_path)], capture_output=True, text=True, check=True, env=env, timeout=120
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == described
    for name, f in filters.items():  # a state key is the class, plain values and these descriptions
        assert f"'param_filter': {described[name]}," in SpectrumMonitor(param_filter=f).state_key
        assert f"'param_filter': {described[name]}," in DysonMonitor(param_filter=f).state_key


def test_a_callable_that_changes_keeps_its_state_key() -> None:
    """A filter object that counts its calls: the description is taken once, so the key holds during a run."""

    class Counting:
        def __init__(self) -> None:
            self.calls = 0

        def __call__(self, name: str, param: torch.Tensor) -> bool:
            self.calls += 1
            return True

    monitor = SpectrumMonitor(param_filter=Counting())
    key = monitor.state_key
    monitor.param_filter("w", torch.zeros(2, 2))
    assert monitor.state_key == key and "calls=0" in key
    monitor.param_filter = Counting()  # another object: described afresh
    monitor.param_filter.calls = 5
    assert "calls=5" in monitor.state_key
