"""``rmt_callbacks.compare`` and ``rmt-compare`` on real runs of a small model at different α/|B|, in a sqlite store
and on a real ``mlflow server``: the comparison run's table equals what the stored arrays give directly."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from torch import nn

import rmt_callbacks
from rmt_callbacks.comparison import UnknownRun
from rmt_callbacks.comparison.cli import main as cli

from scaffold import MlflowServer

SETTINGS = {"lr-0.1-b16": (0.1, 16, 40), "lr-0.05-b16": (0.05, 16, 40), "lr-0.1-b32": (0.1, 32, 20)}
EXTRA = "wide-head"  # another model: one more matrix, the first one of another shape


def _model(width: int = 40, extra: bool = False) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Linear(64, width), nn.Tanh(), nn.Linear(width, 10)]
    return nn.Sequential(*layers, nn.Tanh(), nn.Linear(10, 10)) if extra else nn.Sequential(*layers)


def _train(name: str, lr: float, batch: int, steps: int, experiment: str, extra: bool = False) -> str:
    net = _model(extra=extra)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(1)
    teacher = torch.randn(10, 64, generator=g)
    dyson = {"window": 8, "log_every_n_steps": 10, "overhead_budget": None}
    with mlflow.start_run(experiment_id=mlflow.set_experiment(experiment).experiment_id, run_name=name) as run:
        options: dict[str, Any] = {"batch_size": batch, "background": False, "figure_every_n_analyses": None}
        with rmt_callbacks.watch(net, opt, every_n_steps=20, dyson=dyson, **options) as watcher:
            for _ in range(steps):
                x = torch.randn(batch, 64, generator=g)
                nn.functional.cross_entropy(net(x), (x @ teacher.T).argmax(1)).backward()
                opt.step()
                opt.zero_grad()
                watcher.step()
    return run.info.run_id


def _populate(uri: str, experiment: str) -> dict[str, str]:
    previous, environment = mlflow.get_tracking_uri(), dict(os.environ)
    mlflow.set_tracking_uri(uri)
    try:
        ids = {name: _train(name, *setting, experiment) for name, setting in SETTINGS.items()}
        ids[EXTRA] = _train(EXTRA, 0.1, 16, 40, experiment, extra=True)
    finally:  # mlflow.set_experiment sets MLFLOW_EXPERIMENT_ID, which later tests' processes would inherit
        mlflow.set_tracking_uri(previous)
        os.environ.clear()
        os.environ.update(environment)
    return ids


@pytest.fixture(scope="module")
def sqlite_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    root = tmp_path_factory.mktemp("compare")
    here = os.getcwd()
    os.chdir(root)  # the store's default artifact root is ./mlruns, resolved when it is first opened
    try:
        uri = f"sqlite:///{root}/mlflow.db"
        return uri, _populate(uri, "scaling")
    finally:
        os.chdir(here)


def _stored(client: MlflowClient, run_id: str, path: str, tmp: Path) -> Path:
    return Path(client.download_artifacts(run_id, path, str(tmp)))


def _expected(client: MlflowClient, run_id: str, matrix: str, step: int, tmp: Path) -> dict[str, float]:
    """The table's numbers computed here, from the run's own arrays and fit table, with numpy only."""
    folder = tmp / run_id
    folder.mkdir(exist_ok=True)
    levels = np.load(_stored(client, run_id, f"rmt/monitor/spectra/step_{step:08d}.npz", folder))[matrix]
    table = json.loads(_stored(client, run_id, f"rmt/monitor/fits/step_{step:08d}.json", folder).read_text())
    rows_ = [dict(zip(table["columns"], r, strict=True)) for r in table["data"]]
    row = next(r for r in rows_ if r["name"] == matrix)
    rows, cols = (int(d) for d in row["shape"].strip("()").split(","))
    kept = np.sort(levels)[max(cols - rows, 0) :]  # without the structural zeros of a wide matrix
    s = np.diff(kept)
    r = np.minimum(s[1:], s[:-1]) / np.maximum(s[1:], s[:-1])
    return {
        "n_levels": kept.size, "lambda_min": kept.min(), "lambda_max": kept.max(), "lambda_mean": kept.mean(),
        "mean_spacing_ratio": r.mean() if r.size >= 16 else math.nan, "mp_sigma2": row["mp_sigma2"],  # as the monitor
    }  # fmt: skip


def test_compare_logs_a_run_whose_table_equals_the_stored_arrays(
    sqlite_runs: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    uri, ids = sqlite_runs
    names = list(SETTINGS)[:2]
    result = rmt_callbacks.compare([ids[n] for n in names], tracking_uri=uri, out=tmp_path / "out")
    client = MlflowClient(uri)
    run = client.get_run(result.run_id)
    assert run.data.tags["rmt.compare_of"] == ",".join(ids[n] for n in names)
    assert run.info.experiment_id == client.get_run(ids[names[0]]).info.experiment_id  # beside the runs
    assert run.info.status == "FINISHED"
    files = {f.path for f in client.list_artifacts(result.run_id, "compare/figures")}
    assert files == {"compare/figures/0.weight.png", "compare/figures/2.weight.png"}
    assert {p.name for p in (tmp_path / "out" / "figures").iterdir()} == {"0.weight.png", "2.weight.png"}
    logged = json.loads(_stored(client, result.run_id, "compare/table.json", tmp_path).read_text())
    assert logged == json.loads((tmp_path / "out" / "table.json").read_text())
    assert len(logged) == 4  # 2 matrices × 2 runs
    for row in logged:
        expected = _expected(client, row["run_id"], row["matrix"], row["step"], tmp_path)
        assert {k: row[k] for k in expected} == pytest.approx(expected, rel=1e-12, nan_ok=True)
        lr, batch, _ = SETTINGS[row["run"]]
        assert row["noise_temperature"] == pytest.approx(lr / batch)
        assert row["step"] == 40 and row["dyson_width"] > 0
        assert row["dyson_width_normalized"] == pytest.approx(row["dyson_width"] / math.sqrt(lr / batch), rel=1e-9)


def test_runs_by_name_a_missing_step_and_another_model(sqlite_runs: tuple[str, dict[str, str]]) -> None:
    uri, _ = sqlite_runs
    with pytest.warns(RuntimeWarning) as said:
        result = rmt_callbacks.compare(
            ["lr-0.1-b16", "lr-0.1-b32", EXTRA], tracking_uri=uri, experiment="scaling", step=40, log=False
        )
    text = " ".join(str(w.message) for w in said)
    assert "'lr-0.1-b32'" in text and "no spectra at step 40 (its steps: 0, 20)" in text  # named, left out
    assert "'4.weight' is held by run 'wide-head' only" in text
    assert result.matrices == ["0.weight", "2.weight"]  # what the two models share
    assert {r["run"] for r in result.table} == {"lr-0.1-b16", EXTRA}
    assert result.run_id is None


def test_an_unknown_run_lists_the_runs_there_are(sqlite_runs: tuple[str, dict[str, str]]) -> None:
    uri, _ = sqlite_runs
    with pytest.raises(UnknownRun, match=r"no run 'lr-9' \(id or name\) in experiment 'scaling'; its runs: ") as e:
        rmt_callbacks.compare(["lr-0.1-b16", "lr-9"], tracking_uri=uri, experiment="scaling")
    assert all(name in str(e.value) for name in SETTINGS)
    with pytest.raises(UnknownRun, match="0123456789abcdef0123456789abcdef"):
        rmt_callbacks.compare(["lr-0.1-b16", "0123456789abcdef0123456789abcdef"], tracking_uri=uri)
    with pytest.raises(ValueError, match="two or more runs"):
        rmt_callbacks.compare(["lr-0.1-b16"], tracking_uri=uri)


def test_the_cli(sqlite_runs: tuple[str, dict[str, str]], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    uri, ids = sqlite_runs
    argv = ["lr-0.1-b16", "lr-0.05-b16", "--experiment", "scaling", "--tracking-uri", uri, "--matrix", "0.*"]
    assert cli([*argv, "--out", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert f"rmt.compare_of={ids['lr-0.1-b16']},{ids['lr-0.05-b16']}" in out
    assert out.count("\n0.weight ") == 2 and "2.weight" not in out  # an aligned table, one row per run
    assert any(line.startswith("0.weight") and ids["lr-0.1-b16"] in line for line in out.splitlines())  # run_id
    assert (tmp_path / "cli" / "figures" / "0.weight.png").stat().st_size > 10_000
    assert cli(["lr-0.1-b16", "nope", "--experiment", "scaling", "--tracking-uri", uri]) == 2
    assert "its runs: " in capsys.readouterr().err


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("server")
    serving = MlflowServer(root)
    serving.start()
    try:
        yield serving.url
    finally:
        serving.kill()


def test_compare_over_a_real_mlflow_server(server: str, tmp_path: Path) -> None:
    ids = _populate(server, "scaling-server")
    result = rmt_callbacks.compare(list(SETTINGS)[:2], tracking_uri=server, experiment="scaling-server")
    client = MlflowClient(server)
    assert client.get_run(result.run_id).data.tags["rmt.compare_of"].split(",") == [ids[n] for n in list(SETTINGS)[:2]]
    logged = json.loads(_stored(client, result.run_id, "compare/table.json", tmp_path).read_text())
    for row in logged:
        expected = _expected(client, row["run_id"], row["matrix"], row["step"], tmp_path)
        assert {k: row[k] for k in expected} == pytest.approx(expected, rel=1e-12, nan_ok=True)
