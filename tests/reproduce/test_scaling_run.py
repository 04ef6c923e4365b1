"""The linear scaling rule as the reproduction measures it: teacher–student ⟨S⟩ against √(αε²/|B|)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from reference_models import predicted_mean_spacing
from rmt_callbacks.reproduce.runs import Settings, parent_run, record
from rmt_callbacks.reproduce.scaling import ts_scaling_fit
from rmt_callbacks.reproduce.teacher_student import run_ts2x2

SETTINGS = ((0.1, 16, 0.1), (0.1, 64, 0.1), (0.1, 16, 0.05), (0.05, 8, 0.1))


@pytest.mark.slow  # ≈ 1–2 min; the fast ⟨S⟩-vs-(E27) check is in tests/reference_models
def test_ts_mean_spacing_follows_sqrt_alpha_eps2_over_b_in_nested_runs(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base = Settings(out=tmp_path / "out", tracking_uri=uri, progress=False, monitor=False)
    parent = parent_run(base, "scaling-test")
    child = Settings(out=tmp_path / "out", tracking_uri=uri, progress=False, monitor=False, parent_run_id=parent.run_id)
    summaries = [run_ts2x2(lr, bs, eps, 400, child, epochs=1) for lr, bs, eps in SETTINGS]
    for s in summaries:
        # Each data set adds a factor of ≈ √(α/((2−α)|B|)) ≤ 6 % to ⟨S⟩, 20 data sets (data_sets_for(400)) ≤ 1.3 %;
        # with 400 networks the ensemble mean adds 0.52/√400 ≈ 2.6 %: 20 % is > 6 combined standard errors.
        predicted = predicted_mean_spacing(s["lr"], s["batch_size"], s["noise"])
        assert s["mean_spacing"] == pytest.approx(predicted, rel=0.2)
    fit = ts_scaling_fit(summaries)
    # Ideal slope √π·√(2/(2−α)) ≈ 1.80 at α = 0.1 (E27); the authors' 1.878 ± 0.034 includes α up to 0.5.
    assert fit["a_fit_mean_spacing"] == pytest.approx(math.sqrt(math.pi) * math.sqrt(2 / 1.9), rel=0.1)
    assert fit["a_fit_sqrt_pi_sigma"] == pytest.approx(fit["a_fit_mean_spacing"], rel=0.1)
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("rmt-reproduce").experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.run_id]
    assert len(children) == len(SETTINGS)
    assert {r.data.params["batch_size"] for r in children} == {"16", "64", "8"}


@pytest.mark.slow  # ≈ 1 min: 14 teacher–student settings and two tiny RBM runs
def test_scaling_command_nests_every_setting_under_one_parent(tmp_path: Path) -> None:
    from rmt_callbacks.reproduce.pool import Call
    from rmt_callbacks.reproduce.rbm import run_rbm
    from rmt_callbacks.reproduce.scaling import TS_SCANS, run_scaling

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = Settings(out=tmp_path / "out", tracking_uri=uri, progress=False, monitor=False)
    parent = parent_run(settings, "scaling")
    child = replace(settings, out=settings.out / "runs", parent_run_id=parent.run_id)

    rbm = [Call(run_rbm, (lr, bs, 300, 16, child), {"figures": False}) for lr, bs in ((0.1, 16), (0.05, 8))]
    outcome = run_scaling(rbm, 20, child, ts_epochs=1)
    figures = set(outcome.figures)
    record(
        parent,
        settings.out,
        summary=outcome.summary,
        metrics=outcome.metrics,
        params=outcome.params,
        figures=outcome.figures,
    )
    summary = outcome.summary
    assert math.isfinite(summary["rbm"]["a_fit_mean_spacing"])
    assert math.isfinite(summary["teacher_student"]["a_fit_mean_spacing"])
    assert figures == {"scaling_rbm", "scaling_ts"}
    assert (tmp_path / "out" / "scaling_rbm.png").stat().st_size > 0
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("rmt-reproduce").experiment_id])
    (top,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert top.info.run_id == parent.run_id
    assert len(runs) == 1 + 2 + len(TS_SCANS)
    assert top.data.metrics["summary/ts_a_fit_mean_spacing"] == pytest.approx(
        summary["teacher_student"]["a_fit_mean_spacing"]
    )
    assert top.data.params["authors_ts_a_fit"] == "1.8785 ± 0.0338"
    assert "summary.json" in {a.path for a in client.list_artifacts(parent.run_id)}
    assert {a.path for a in client.list_artifacts(parent.run_id, "figures")} == {
        "figures/scaling_rbm.png",
        "figures/scaling_ts.png",
    }


def test_a_scaling_fit_that_cannot_be_made_raises_rather_than_writing_nan() -> None:
    from rmt_callbacks.reproduce.scaling import _slope_fits

    with pytest.raises(ValueError, match="scaling fit of mean_spacing failed: too few points"):
        _slope_fits([0.5], [1.0], [0.1], [0.6], [0.1])
