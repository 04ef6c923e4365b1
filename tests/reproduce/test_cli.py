"""``rmt-reproduce`` as a user runs it: real training, real summary.json, a real MLflow sqlite store."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from rmt_callbacks.cli import build_parser, main


def _run(tmp_path: Path, *argv: str) -> tuple[dict, str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out), "--tracking-uri", uri, "--no-progress"]) == 0
    return json.loads((out / "summary.json").read_text()), uri


def test_parser_rejects_bad_values() -> None:
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["rbm", "--lr", "-0.1"])
    with pytest.raises(SystemExit):
        parser.parse_args(["hidden", "--z", "mat_3"])
    with pytest.raises(SystemExit):
        parser.parse_args(["all", "--quick", "--full"])
    assert parser.parse_args(["all"]).full is False


def test_rbm_writes_summary_eigenvalues_and_an_mlflow_run(tmp_path: Path) -> None:
    summary, uri = _run(tmp_path, "rbm", "--lr", "0.1", "--batch-size", "16", "--steps", "300", "--networks", "12")
    for key in ("pair_means", "pair_mean_spacing", "pair_sigma"):
        assert len(summary[key]) == 4 and all(math.isfinite(v) for v in summary[key])
    assert len(summary["single_means"]) == 2
    assert summary["pair_means"] == sorted(summary["pair_means"], reverse=True)
    x = np.load(tmp_path / "out" / "eigenvalues.npz", allow_pickle=False)["eigenvalues"]
    assert x.shape == (12, 10)
    assert np.all(np.diff(x, axis=1) <= 0)  # descending x, the papers' order
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("rmt-reproduce").experiment_id])
    run_id, metrics, params = run.info.run_id, run.data.metrics, run.data.params
    # the measured numbers, once each, under summary/ (their own chart section), and nowhere else
    assert metrics["summary/pair1_mean"] == pytest.approx(summary["pair_means"][0])
    assert metrics["summary/pair4_mean_spacing"] == pytest.approx(summary["pair_mean_spacing"][3])
    assert metrics["summary/mean_s2"] == pytest.approx(summary["mean_s2"])
    assert [m.step for m in client.get_metric_history(run_id, "summary/pair1_mean")] == [0]
    assert not {"pair1/mean", "pair1_mean", "mean_s2"} & set(metrics)
    # what the setting fixes is a param, not a metric
    assert params["lr"] == "0.1" and params["max_steps"] == "300"
    assert float(params["pair1_kappa"]) == pytest.approx(summary["pair_kappa"][0])
    assert float(params["pair2_predictor"]) == pytest.approx(summary["pair_predictor"][1])
    assert not [k for k in metrics if "kappa" in k or "predictor" in k]
    # its figure and its part of summary.json are artifacts of the run
    assert {"figures", "arrays.npz", "summary.json"} <= {a.path for a in client.list_artifacts(run_id)}
    assert "figures/rbm_lr0.1_bs16.png" in {a.path for a in client.list_artifacts(run_id, "figures")}
    part = json.loads(Path(client.download_artifacts(run_id, "summary.json", str(tmp_path))).read_text())
    assert part["pair_means"] == summary["pair_means"] and part["single_stds"] == summary["single_stds"]


def test_ts2x2_summary_keys_and_its_run(tmp_path: Path) -> None:
    summary, uri = _run(
        tmp_path, "ts2x2", "--lr", "0.1", "--batch-size", "4", "--noise", "0.1", "--networks", "30", "--epochs", "1"
    )
    assert {"mean_spacing", "mean_singular_value", "sigma"} <= set(summary)
    assert summary["mean_singular_value"] == pytest.approx(2.0, abs=0.05)
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("rmt-reproduce").experiment_id])
    assert run.data.metrics["summary/mean_spacing"] == pytest.approx(summary["mean_spacing"])
    # the prediction (E27) and the x-axis value are fixed by (α, |B|, ε): params
    assert float(run.data.params["predicted_mean_spacing"]) == pytest.approx(summary["predicted_mean_spacing"])
    assert not {"summary/predicted_mean_spacing", "summary/predictor", "summary/lr"} & set(run.data.metrics)
    assert {"summary.json", "arrays.npz"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    assert (tmp_path / "out" / "ts2x2_lr0.1_bs4_n0.1" / "arrays.npz").is_file()
