"""The examples run (tiny sizes) and leave their metrics and arrays in one shared sqlite MLflow store."""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import mlflow
import pytest
from mlflow import MlflowClient

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FIGURES = "rmt/monitor/figures/net.0.weight"  # SpectrumMonitor's artifacts sit under <prefix><label>/


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"rmt_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import would: dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("examples")
    return root, f"sqlite:///{root}/mlflow.db"


@pytest.fixture
def in_store(store: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    monkeypatch.chdir(store[0])  # the default artifact root of a sqlite store is ./mlruns
    monkeypatch.syspath_prepend(str(EXAMPLES))  # cli.py imports its sibling mlp.py, as when run as a script
    return store


@pytest.fixture
def tracking(in_store: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """For the examples that log through MLflow's process-wide state (``mlflow.set_tracking_uri``, the
    ``MLFLOW_*`` variables Hugging Face reads): that state is the store's during the test and put back after."""
    previous = mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", in_store[1])  # the examples set these; monkeypatch restores them
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "rmt-examples")
    mlflow.set_tracking_uri(in_store[1])  # else Hugging Face's MLflowCallback ignores MLFLOW_TRACKING_URI
    yield in_store
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(previous)


def _lambda_max_keys(uri: str, run_id: str) -> set[str]:
    metrics = MlflowClient(tracking_uri=uri).get_run(run_id).data.metrics
    return {k for k in metrics if k.startswith("rmt/") and k.endswith("/lambda_max")}


def test_mlp_example(in_store: tuple[Path, str]) -> None:
    root, uri = in_store
    argv = ["--max-steps", "10", "--every-n-train-steps", "5", "--width", "16", "--tracking-uri", uri]
    run_id = _load("mlp").main([*argv, "--root-dir", str(root)])
    assert _lambda_max_keys(uri, run_id) == {f"rmt/net.{i}.weight/lambda_max" for i in (0, 2, 4)}
    client = MlflowClient(tracking_uri=uri)
    steps = [m.step for m in client.get_metric_history(run_id, "rmt/net.0.weight/lambda_max")]
    assert steps[0] == 0 and steps[-1] == 10 and len(steps) >= 2  # more than the initial step: the final weights
    assert set(steps) <= set(range(11))  # due steps 5 and 10, or as soon as the worker could take them
    artifacts = {f.path for f in client.list_artifacts(run_id, "rmt/monitor/spectra")}
    assert {f"rmt/monitor/spectra/step_{s:08d}.npz" for s in steps} <= artifacts  # every analysis logged its spectra
    figures = {f.path for f in client.list_artifacts(run_id, "rmt/monitor/figures/net.0.weight")}
    assert {f"{FIGURES}/step_00000000.png", f"{FIGURES}/step_00000010.png"} <= figures
    assert f"{FIGURES}/evolution.png" in figures


def test_transformer_example(in_store: tuple[Path, str]) -> None:
    root, uri = in_store
    argv = ["--max-steps", "4", "--every-n-train-steps", "4", "--dim", "8", "--tracking-uri", uri]
    run_id = _load("transformer").main([*argv, "--root-dir", str(root)])
    keys = _lambda_max_keys(uri, run_id)
    history = MlflowClient(tracking_uri=uri).get_metric_history(run_id, "rmt/model.embedding.weight/lambda_max")
    assert [m.step for m in history] == [0, 4]  # the initial and the final weights
    assert "rmt/model.embedding.weight/lambda_max" in keys
    assert "rmt/model.transformer.encoder.layers.0.self_attn.in_proj_weight.q/lambda_max" in keys
    assert "rmt/model.transformer.decoder.layers.0.multihead_attn.out_proj.weight/lambda_max" in keys


def _spectra(client: MlflowClient, run_id: str) -> set[str]:
    return {f.path for f in client.list_artifacts(run_id, "rmt/monitor/spectra")}


def test_plain_loop_example(tracking: tuple[Path, str]) -> None:
    pytest.importorskip("sklearn", reason="the digits data ship with scikit-learn (the `examples` extra)")
    _, uri = tracking
    argv = ["--max-steps", "10", "--every-n-steps", "5", "--width", "16", "--tracking-uri", uri]
    run_id = _load("plain_loop").main(argv)
    assert mlflow.active_run() is None  # the example's run is ended, and the watcher opened none of its own
    client = MlflowClient(tracking_uri=uri)
    assert _lambda_max_keys(uri, run_id) == {f"rmt/{i}.weight/lambda_max" for i in (0, 2, 4)}
    steps = [m.step for m in client.get_metric_history(run_id, "rmt/0.weight/lambda_max")]
    assert steps[0] == 0 and steps[-1] == 10 and set(steps) <= set(range(11))
    assert {f"rmt/monitor/spectra/step_{s:08d}.npz" for s in steps} <= _spectra(client, run_id)
    metrics = client.get_run(run_id).data.metrics
    assert metrics["rmt/dyson/batch_size"] == 32  # read from the DataLoader
    assert "train/loss" in metrics  # the loop's own metrics and the monitors' share the run


def test_hf_trainer_example(tracking: tuple[Path, str]) -> None:
    pytest.importorskip("transformers", reason="RMTCallback needs the `transformers` extra")
    root, uri = tracking
    argv = ["--max-steps", "4", "--every-n-steps", "4", "--hidden-size", "16", "--batch-size", "4"]
    run_id = _load("hf_trainer").main([*argv, "--accumulation", "2", "--tracking-uri", uri, "--output-dir", str(root)])
    client = MlflowClient(tracking_uri=uri)
    layer = [f"self_attn.{p}_proj" for p in "qkvo"] + [f"mlp.{p}_proj" for p in ("gate", "up", "down")]
    matrices = ["model.embed_tokens", "lm_head"] + [f"model.layers.{i}.{m}" for i in (0, 1) for m in layer]
    assert _lambda_max_keys(uri, run_id) == {f"rmt/{m}.weight/lambda_max" for m in matrices}
    steps = [m.step for m in client.get_metric_history(run_id, "rmt/lm_head.weight/lambda_max")]
    assert steps == [0, 4]  # the initial and the final weights
    assert {f"rmt/monitor/spectra/step_{s:08d}.npz" for s in steps} <= _spectra(client, run_id)
    metrics = client.get_run(run_id).data.metrics
    assert metrics["rmt/dyson/batch_size"] == 4 * 2  # per_device_train_batch_size × gradient_accumulation_steps
    assert "train_loss" in metrics  # the run is Hugging Face's own (report_to=["mlflow"]), not one of the callback's


def test_cli_example_with_its_yaml(in_store: tuple[Path, str]) -> None:
    pytest.importorskip("jsonargparse", reason="LightningCLI needs jsonargparse[signatures] (lightning[pytorch-extra])")
    root, uri = in_store
    args = [
        "fit",
        "--config", str(EXAMPLES / "spectrum_monitor.yaml"),
        "--trainer.max_steps=6",
        f"--trainer.default_root_dir={root}",
        f"--trainer.logger.init_args.tracking_uri={uri}",
        "--model.width=16",
    ]  # fmt: skip
    cli = _load("cli").main(args)
    (monitor,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "SpectrumMonitor"]
    assert monitor.exclude == ("net.4.*",) and monitor.figure_every_n_analyses == "auto"
    assert monitor.overhead_budget == "auto" and monitor._budget.fraction is None  # every_n_train_steps is explicit
    keys = _lambda_max_keys(uri, cli.trainer.logger.run_id)
    assert keys == {"rmt/net.0.weight/lambda_max", "rmt/net.2.weight/lambda_max"}  # net.4 excluded by the YAML
    history = MlflowClient(tracking_uri=uri).get_metric_history(
        cli.trainer.logger.run_id, "rmt/net.0.weight/lambda_max"
    )
    assert [m.step for m in history] == [0, 6]  # 6 steps, shorter than the cadence of 50: the final weights too


def test_scaling_rule_example(in_store: tuple[Path, str]) -> None:
    pytest.importorskip("sklearn", reason="the digits data ship with scikit-learn (the `examples` extra)")
    root, uri = in_store
    figure = root / "scaling_rule.png"
    argv = ["--seeds", "1", "--langevin-time", "2", "--warm-start-time", "1", "--window", "5", "--out", str(root)]
    ratios, compared = _load("scaling_rule").main([*argv, "--tracking-uri", uri, "--figure", str(figure)])
    assert figure.stat().st_size > 0
    assert ratios.eigenvalue.shape == ratios.spacing.shape == (1, 2)
    (runs,) = ratios.widths
    # the monitor read each run's temperature: α from the optimizer, |B| from the DataLoader
    assert [(w.lr, w.batch_size) for w in runs] == [(0.05, 16), (0.1, 32), (0.1, 16)]
    assert [w.temperature for w in runs] == pytest.approx([0.05 / 16, 0.1 / 32, 0.1 / 16])
    for w in runs:
        assert set(w.width) == {"net.0.weight", "net.2.weight"}
        assert w.time[-1] == pytest.approx(2.0)  # equal Langevin time: 40 steps at 0.05, 20 at 0.1
        assert all((v > 0).all() for v in (*w.width.values(), *w.spacing.values()))
    # rmt_callbacks.compare logged the seed's three runs side by side as a run of the same experiment
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(compared.run_id)
    assert run.data.tags["rmt.compare_of"].split(",") == [w.run_id for w in runs]
    assert run.info.experiment_id == client.get_run(runs[0].run_id).info.experiment_id
    assert compared.warnings == [] and compared.matrices == ["net.0.weight", "net.2.weight"]
    # each run at its last step: equal Langevin time, 40 steps at α = 0.05 and 20 at 0.1
    assert [compared.steps[w.run_id] for w in runs] == [40, 20, 20]
    logged = {f.path for f in client.list_artifacts(compared.run_id, "compare/figures")}
    assert logged == {f"compare/figures/{m}.png" for m in compared.matrices}
    assert all((root / "compare" / "figures" / f"{m}.png").stat().st_size > 10_000 for m in compared.matrices)
    assert {f.path for f in client.list_artifacts(compared.run_id, "compare")} >= {
        "compare/table.csv",
        "compare/table.json",
    }


# The slow test's margins come from the spread of the per-seed ratios over 16 other seeds (8–23) of the example's
# default settings: std 0.062 for b/a and 0.082 for c/a (eigenvalue units; their means 1.010 and 1.455, and over
# seeds 0–23, 1.003 ± 0.064 and 1.431 ± 0.085). A mean over n seeds then has standard error σ/√n.
SPREAD_EQUAL_T, SPREAD_DOUBLE_T = 0.062, 0.082


@pytest.mark.slow  # ≈ 1–2 min (4 seeds × 3 runs and a warm start); the fast one is test_scaling_rule_example
def test_scaling_rule_example_shows_the_rule(in_store: tuple[Path, str]) -> None:
    """Equal α/|B|: equal widths; twice α/|B|: √2 wider (the linear scaling rule, docs/science.md).

    With n = 4 seeds and the calibrated spreads σ above, each mean has standard error SE = σ/√n; a difference of
    more than 3 SE fails (a 0.3 % chance per check for a correct estimator). The checks: the equal-temperature
    ratio b/a is within 3 SE of 1; the double-temperature ratio c/a is nearer √2 than 1 even 3 SE below its mean,
    i.e. above (1 + √2)/2 + 3 SE ≈ 1.33 (an estimator blind to the temperature, c/a ≈ 1, fails); divided by the
    square root of the ratio of the temperatures the monitor logged, b/a is within 3 SE of 1 and c/a within
    3 SE/√2 (a |B| read wrong fails). The spread over the seeds must stay below 2.5 σ (a 0.03 % chance for a
    correct estimator): a noisier estimator would make the margins above meaningless.
    """
    pytest.importorskip("sklearn", reason="the digits data ship with scikit-learn (the `examples` extra)")
    root, uri = in_store
    example = _load("scaling_rule")
    n = 4
    comparison = example.run(
        range(n), langevin_time=40.0, warm_start_time=60.0, window=50, tracking_uri=uri, root_dir=root
    )
    equal_t, double_t = comparison.eigenvalue[:, 0], comparison.eigenvalue[:, 1]
    normalized = comparison.normalized  # (seeds, 2): b/a and c/a of the widths divided by √T
    se_equal, se_double = SPREAD_EQUAL_T / math.sqrt(n), SPREAD_DOUBLE_T / math.sqrt(n)
    report = example.report(comparison)
    assert equal_t.std(ddof=1) < 2.5 * SPREAD_EQUAL_T and double_t.std(ddof=1) < 2.5 * SPREAD_DOUBLE_T, report
    assert abs(equal_t.mean() - 1.0) < 3 * se_equal, report
    assert double_t.mean() - 3 * se_double > (1 + math.sqrt(2)) / 2, report
    assert abs(normalized[:, 0].mean() - 1.0) < 3 * se_equal, report
    assert abs(normalized[:, 1].mean() - 1.0) < 3 * se_double / math.sqrt(2), report
