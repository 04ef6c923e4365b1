"""``rmt_callbacks.watch`` in plain loops: where it logs, what it refuses, and set-ups beyond one model and one
optimizer (two optimizers, a scheduler, a wrapped model, an error inside the loop)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import pytest
import torch
from mlflow import MlflowClient
from torch import nn

import rmt_callbacks
from rmt_callbacks.integrations._host import LoopHost

ROOT = Path(__file__).resolve().parents[2]


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(48, 40), nn.Tanh(), nn.Linear(40, 8))


def _train(watcher: Any, net: nn.Module, optimizers: list[torch.optim.Optimizer], steps: int, **kw: Any) -> None:
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 48, generator=g)
        net(x).square().mean().backward()
        for opt in optimizers:
            opt.step()
            opt.zero_grad()
        if kw.get("scheduler") is not None and kw.get("scheduler_first"):
            kw["scheduler"].step()
        watcher.step()
        if kw.get("scheduler") is not None and not kw.get("scheduler_first"):
            kw["scheduler"].step()


def _collect(seen: dict[int, dict[str, float]]) -> Callable[[dict[str, float], int], None]:
    """A ``log=`` that merges each step's records into ``seen[step]`` (one analysis and one Dyson log per step)."""
    return lambda metrics, step: seen.setdefault(step, {}).update(metrics)


def _runs(uri: str) -> list[Any]:
    client = MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_log_callable_alone_gets_every_analysis_and_no_mlflow_run_is_made(tracking: str) -> None:
    net, seen = _net(), []
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    before = len(_runs(tracking))
    with rmt_callbacks.watch(net, opt, every_n_steps=3, background=False, log=lambda m, s: seen.append((s, m))) as w:
        assert w.run_id is None
        _train(w, net, [opt], 7)
    steps = sorted({s for s, m in seen if "rmt/0.weight/lambda_max" in m})
    assert steps == [0, 3, 6, 7]  # the initial weights, every due step, the final weights
    assert len(_runs(tracking)) == before


def test_the_active_run_gets_the_records_and_stays_the_users(tracking: str) -> None:
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    with mlflow.start_run() as run:
        dyson = {"overhead_budget": None}  # a snapshot every step, however fast this loop
        with rmt_callbacks.watch(net, opt, every_n_steps=2, batch_size=16, dyson=dyson, background=False) as w:
            _train(w, net, [opt], 4)
        assert w.run_id == run.info.run_id
        assert MlflowClient(tracking).get_run(run.info.run_id).info.status == "RUNNING"  # still the user's to end
    client = MlflowClient(tracking)
    history = client.get_metric_history(run.info.run_id, "rmt/2.weight/lambda_max")
    assert [m.step for m in history] == [0, 2, 4]
    assert client.get_run(run.info.run_id).data.metrics["rmt/dyson/batch_size"] == 16


def test_without_an_active_run_it_makes_one_and_ends_it_failed_on_an_error(tracking: str) -> None:
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    with pytest.raises(RuntimeError, match="boom"), pytest.warns(RuntimeWarning, match=r"to watch\(\)"):
        with rmt_callbacks.watch(net, opt, every_n_steps=2, experiment="watch-errors", background=False) as w:
            _train(w, net, [opt], 3)
            raise RuntimeError("boom")
    run = MlflowClient(tracking).get_run(w.run_id)
    assert run.info.status == "FAILED"
    steps = [m.step for m in MlflowClient(tracking).get_metric_history(w.run_id, "rmt/0.weight/lambda_max")]
    assert steps == [0, 2]  # what was analysed before the error is logged
    with rmt_callbacks.watch(net, opt, every_n_steps=2, experiment="watch-errors", background=False) as ok:
        _train(ok, net, [opt], 2)
    assert MlflowClient(tracking).get_run(ok.run_id).info.status == "FINISHED"
    assert ok.run_id != w.run_id


def test_run_id_and_tracking_uri_name_the_run(tracking: str, tmp_path: Path) -> None:
    other = f"sqlite:///{tmp_path / 'other.db'}"
    client = MlflowClient(other)
    run = client.create_run(client.create_experiment("elsewhere"))
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    with mlflow.start_run():  # an active run on the default store is not where run_id points
        with rmt_callbacks.watch(net, opt, every_n_steps=2, tracking_uri=other, run_id=run.info.run_id) as w:
            _train(w, net, [opt], 2)
    assert w.run_id == run.info.run_id
    assert "rmt/0.weight/lambda_max" in client.get_run(run.info.run_id).data.metrics
    with rmt_callbacks.watch(net, opt, every_n_steps=2, tracking_uri=other, experiment="made-there") as made:
        _train(made, net, [opt], 2)
    assert client.get_run(made.run_id).info.status == "FINISHED"
    assert mlflow.get_tracking_uri() == tracking  # the user's process-wide URI is left as it was


def test_two_optimizers_each_matrix_gets_its_own_rate_read_at_the_update(tracking: str) -> None:
    """Two optimizers at different rates and a scheduler: per-matrix α and T, the same wherever step() is called."""
    records = []
    for scheduler_first in (False, True):
        net, seen = _net(), {}
        first = torch.optim.SGD(net[0].parameters(), lr=0.1)
        second = torch.optim.SGD(net[2].parameters(), lr=0.02, momentum=0.5)
        halve = torch.optim.lr_scheduler.StepLR(first, step_size=3, gamma=0.5)
        log = _collect(seen)
        dyson = {"window": 3, "log_every_n_steps": 2, "overhead_budget": None}
        with rmt_callbacks.watch(net, [first, second], batch_size=16, dyson=dyson, log=log, background=False) as w:
            _train(w, net, [first, second], 6, scheduler=halve, scheduler_first=scheduler_first)
        records.append(seen)
    assert records[0].keys() == records[1].keys()
    for step, values in records[0].items():  # the same weights, the same rates: the same records
        timed = ("analysis_seconds", "overhead")
        same = {k: v for k, v in values.items() if not k.endswith(timed)}
        assert same == pytest.approx({k: records[1][step][k] for k in same}, rel=1e-12), step
    last = records[0][6]
    assert "rmt/dyson/lr" not in last  # two groups: no run-wide rate
    # the update taken at step 6 (the 6th) ran at 0.1 × 0.5 (halved after 3 updates); momentum: α/(1-μ)
    assert last["rmt/0.weight/dyson_lr"] == pytest.approx(0.05)
    assert last["rmt/0.weight/dyson_temperature"] == pytest.approx(0.05 / 16)
    assert last["rmt/2.weight/dyson_temperature"] == pytest.approx(0.02 / 0.5 / 16)


def test_a_data_parallel_wrapper_keeps_the_users_names(tracking: str) -> None:
    net, seen = _net(), []
    wrapped = nn.DataParallel(net)  # on CPU it only calls the module; names would carry "module."
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    with rmt_callbacks.watch(wrapped, opt, every_n_steps=5, log=lambda m, s: seen.append(m), background=False):
        pass
    assert {k for m in seen for k in m if k.endswith("/lambda_max")} == {
        "rmt/0.weight/lambda_max",
        "rmt/2.weight/lambda_max",
    }


def test_bad_arguments_fail_before_training(tracking: str) -> None:
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    with pytest.raises(ValueError, match="every_n_steps must be None or an int >= 1, got 0"):
        rmt_callbacks.watch(net, opt, every_n_steps=0, log=print)
    with pytest.raises(ValueError, match="matches no matrix"):
        rmt_callbacks.watch(net, opt, include=["encoder.*"], log=print)
    with pytest.raises(TypeError, match=r"torch\.optim\.Optimizer"):
        rmt_callbacks.watch(net, "sgd", log=print)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="accumulation"):
        rmt_callbacks.watch(net, opt, accumulation=0, log=print)
    with pytest.raises(TypeError, match="dyson"):
        rmt_callbacks.watch(net, opt, dyson="yes", log=print)  # type: ignore[arg-type]


def test_step_after_close_is_said_and_ignored(tracking: str) -> None:
    net, seen = _net(), []
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    watcher = rmt_callbacks.watch(net, opt, every_n_steps=1, log=lambda m, s: seen.append(s), background=False)
    watcher.close()
    watcher.close()  # idempotent
    count = len(seen)
    with pytest.warns(RuntimeWarning, match="after close"):
        watcher.step()
    assert len(seen) == count


def test_the_host_has_every_trainer_attribute_the_monitors_read() -> None:
    """The monitors read the Trainer only through these names: a new one must be added to LoopHost too."""
    read: set[str] = set()
    for path in [
        *(ROOT / "rmt_callbacks" / "monitors").glob("*.py"),
        ROOT / "rmt_callbacks" / "sinks" / "lightning.py",
    ]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "trainer":
                read.add(node.attr)
            text = ast.unparse(node) if isinstance(node, ast.Attribute) else ""
            if re.fullmatch(r"trainer\.strategy\.\w+", text):
                read.add(text.removeprefix("trainer."))
    host = LoopHost(optimizers=[])
    assert {"global_step", "loggers", "optimizers", "strategy.broadcast"} <= read  # the scan sees them
    missing = {attr for attr in read if not hasattr(host.strategy if "." in attr else host, attr.split(".")[-1])}
    assert not missing, f"the monitors read {sorted(missing)} of the Trainer; add them to LoopHost"


def test_importing_the_package_never_imports_transformers() -> None:
    """Only ``rmt_callbacks.integrations.transformers`` imports it. (Lightning itself may: torchmetrics imports
    ``transformers`` when it is installed, so ``watch``, which loads Lightning, is checked statically.)"""
    code = "import sys, rmt_callbacks, rmt_callbacks.integrations; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"
    importers = []
    for path in (ROOT / "rmt_callbacks").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            if any(n == "transformers" or n.startswith("transformers.") for n in names):
                importers.append(path.relative_to(ROOT).as_posix())
    assert sorted(set(importers)) == ["rmt_callbacks/integrations/transformers.py"]


def test_arguments_in_the_wrong_place_say_where_they_belong(tracking: str) -> None:
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    with pytest.raises(TypeError, match=r"window=: a DysonMonitor argument: pass dyson=\{'window': ...\}"):
        rmt_callbacks.watch(net, opt, window=10, log=print)
    with pytest.raises(TypeError, match="takes every_n_steps"):
        rmt_callbacks.watch(net, opt, every_n_train_steps=5, log=print)
    with pytest.raises(TypeError, match="lr_typo=: not an argument"):
        rmt_callbacks.watch(net, opt, lr_typo=1, log=print)


def test_a_loop_that_never_calls_step_is_told(tracking: str) -> None:
    net, seen = _net(), []
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    watcher = rmt_callbacks.watch(net, opt, every_n_steps=2, log=lambda m, s: seen.append(s), background=False)
    for _ in range(3):
        net(torch.randn(4, 48)).square().mean().backward()
        opt.step()
    with pytest.warns(RuntimeWarning, match=r"stepped 3 times but watcher.step\(\) was never called"):
        watcher.close()


def test_overhead_budget_reaches_both_monitors(tracking: str) -> None:
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    with rmt_callbacks.watch(net, opt, overhead_budget=None, log=print) as watcher:
        assert [m.overhead_budget for m in watcher.monitors] == [None, None]


def test_two_watchers_on_one_run_need_their_own_prefix(tracking: str) -> None:
    a, b = _net(0), _net(1)
    oa, ob = (torch.optim.SGD(m.parameters(), lr=0.05) for m in (a, b))
    with mlflow.start_run() as run:
        with rmt_callbacks.watch(a, oa, every_n_steps=2, background=False) as first:
            with pytest.raises(ValueError, match=r"another open watcher already logs into MLflow run .*'rmt/b/'"):
                rmt_callbacks.watch(b, ob, every_n_steps=2, background=False)
            with rmt_callbacks.watch(b, ob, every_n_steps=2, background=False, log_key_prefix="rmt/b/") as second:
                _train(first, a, [oa], 2)
                _train(second, b, [ob], 2)
    metrics = MlflowClient(tracking).get_run(run.info.run_id).data.metrics
    assert {"rmt/0.weight/lambda_max", "rmt/b/0.weight/lambda_max"} <= set(metrics)
    assert metrics["rmt/0.weight/lambda_max"] != metrics["rmt/b/0.weight/lambda_max"]  # each its own model


def test_a_selection_error_leaves_no_run_behind(tracking: str) -> None:
    before = len(_runs(tracking))
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    with pytest.raises(ValueError, match=r"watch: .*matches no matrix"):
        rmt_callbacks.watch(net, opt, include=["encoder.*"], experiment="watch-selection")
    assert len(_runs(tracking)) == before
    assert opt._optimizer_step_pre_hooks == {} and opt._optimizer_step_post_hooks == {}  # no hook left behind
