"""The teacher–student errors against the spread of independent runs: with several data sets per setting they
contain the data-set term; the jackknife over the networks of one data set does not (docs/science.md#teacher-student).

The check: K independent runs of one setting at |B| = 4 (where the data-set term is largest) give K values of ⟨S⟩;
the ratio R of their sample variance to the mean reported variance is :math:`\\chi^2_{K-1}/(K-1)` if the errors are
right. Each reported variance is a jackknife over D groups, itself uncertain by :math:`\\sqrt{2/(D-1)}`; averaged
over K runs that is ≤ 7 % here, so the bounds are the 0.1 % and 99.9 % quantiles of :math:`\\chi^2_{K-1}/(K-1)`
widened by 25 %.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from reference_models import TeacherStudent2x2, fit_reference
from rmt_callbacks.dynamics import jackknife
from rmt_callbacks.reproduce.runs import Settings
from rmt_callbacks.spectral import histogram_mean


def _bounds(k: int) -> tuple[float, float]:
    """Where R = var(⟨S⟩ over k runs) / mean(reported err²) lies with probability 99.8 % when the errors are right."""
    return 0.8 * stats.chi2.ppf(0.001, k - 1) / (k - 1), 1.25 * stats.chi2.ppf(0.999, k - 1) / (k - 1)


def _ratio(values: np.ndarray, errors: np.ndarray) -> float:
    return float(values.var(ddof=1) / (errors**2).mean())


def _spacing(pair: torch.Tensor) -> float:
    return histogram_mean((pair[:, 0] - pair[:, 1]).abs())


def test_errors_over_data_sets_match_the_spread_of_independent_runs_and_within_one_data_set_do_not() -> None:
    """Fast twin of the test below: the K runs are K blocks of one ensemble (contiguous networks, each block its
    own data sets, W₀ and noise: independent runs in all but name), 150 steps (relaxed in ≈ 30), 400 networks."""
    k, networks, per_run = 24, 400, 20
    low, high = _bounds(k)
    found = {}
    for data_sets in (per_run, 1):
        model = TeacherStudent2x2(
            networks=k * networks, lr=0.1, batch_size=4, noise=0.1, seed=5, epochs=1, batches_per_epoch=150,
            data_sets=k * data_sets,
        )  # fmt: skip
        fit_reference(model, model.total_steps, accelerator="cpu")
        sv, index = model.singular_values().to(torch.float64), model.data_set_index
        runs = [slice(r * networks, (r + 1) * networks) for r in range(k)]
        if data_sets > 1:
            assert all(len(index[r].unique()) == per_run for r in runs)  # each run its own 20 data sets
            results = [jackknife(sv[r], _spacing, groups=index[r]) for r in runs]
        else:
            results = [jackknife(sv[r], _spacing) for r in runs]  # 50 blocks of networks of one data set
        values, errors = (np.array(v) for v in zip(*results, strict=True))
        found[data_sets] = _ratio(values, errors)
    assert low < found[per_run] < high, (found, (low, high))
    assert found[1] > high, (found, (low, high))  # the within-one-data-set error misses the data-set term


@pytest.mark.slow  # 3–7 min: 2 × 12 runs of 1500 networks through run_ts2x2 into a real MLflow store
def test_reported_ts_errors_match_the_spread_of_independent_seeds(tmp_path: Path) -> None:
    from rmt_callbacks.reproduce.teacher_student import run_ts2x2

    k, networks = 12, 1500
    low, high = _bounds(k)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    found = {}
    for data_sets in (None, 1):  # the default (75 data sets of 20 networks), then the authors' one data set
        summaries = [
            run_ts2x2(
                0.1, 4, 0.1, networks,
                Settings(out=tmp_path / f"{data_sets}_{seed}", seed=seed, tracking_uri=uri, progress=False,
                         monitor=False),
                epochs=1, data_sets=data_sets,
            )
            for seed in range(k)
        ]  # fmt: skip
        values = np.array([s["mean_spacing"] for s in summaries])
        errors = np.array([s["mean_spacing_err"] for s in summaries])
        found[data_sets] = _ratio(values, errors)
        assert len({s["seed"] for s in summaries}) == k
    assert summaries[0]["data_sets"] == 1 and "not the draw of the data set" in summaries[0]["errors"]["sigma_err"]
    assert low < found[None] < high, (found, (low, high))
    assert found[1] > high, (found, (low, high))


def test_a_ts_run_says_what_its_errors_contain(tmp_path: Path) -> None:
    from rmt_callbacks.reproduce.teacher_student import data_sets_for, run_ts2x2

    settings = Settings(out=tmp_path, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", progress=False, monitor=False)
    summary = run_ts2x2(0.1, 16, 0.1, 60, settings, epochs=1)
    assert summary["data_sets"] == data_sets_for(60) == 10
    assert summary["errors"]["mean_spacing_err"].startswith("delete-one-data-set jackknife over 10 data sets of 6")
    assert summary["equilibration"]["pair"]["relaxed"] is True and summary["flagged"] == []
    with pytest.raises(ValueError, match="data_sets"):
        run_ts2x2(0.1, 16, 0.1, 60, settings, epochs=1, data_sets=61)
