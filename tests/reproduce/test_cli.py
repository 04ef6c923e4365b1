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
    assert run.data.metrics["pair1/mean"] == pytest.approx(summary["pair_means"][0])
    assert run.data.params["lr"] == "0.1"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"figures", "arrays.npz"} <= artifacts


def test_ts2x2_summary_keys(tmp_path: Path) -> None:
    summary, _ = _run(
        tmp_path, "ts2x2", "--lr", "0.1", "--batch-size", "4", "--noise", "0.1", "--networks", "30", "--epochs", "1"
    )
    assert {"mean_spacing", "mean_singular_value", "sigma"} <= set(summary)
    assert summary["mean_singular_value"] == pytest.approx(2.0, abs=0.05)


def test_hidden_summary_keys(tmp_path: Path) -> None:
    summary, _ = _run(tmp_path, "hidden", "--z", "mat_1", "--networks", "60", "--epochs", "30", "--steps", "300")
    assert {"rates", "rate_ratio", "predicted_rate_ratio", "ks_one_species", "ks_two_species"} <= set(summary)
    assert summary["predicted_rate_ratio"] == pytest.approx(4.0)
    assert (tmp_path / "out" / "fig4_hidden_dynamics.png").stat().st_size > 0
