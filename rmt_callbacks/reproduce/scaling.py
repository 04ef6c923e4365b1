r"""``rmt-reproduce scaling``: the linear scaling rule of arXiv:2412.20496 and arXiv:2407.16427 across the grids.

The rule and the grids are in docs/science.md (sections "Linear scaling rule" and "Reference numbers").

RBM: α scan at |B| = 16 and |B| scan at α = 0.1, ⟨S⟩ of each pair against
:math:`\sqrt{\alpha(\mu^2-\kappa)/|B|}` (authors: slope 2.275 ± 0.033). Teacher–student: α, |B| and ε scans,
⟨S⟩ against :math:`\sqrt{\alpha\varepsilon^2/|B|}` (authors: 1.878 ± 0.034).
Every setting is a child MLflow run of one parent run (``Settings.parent_run_id``), so MLflow's compare views
(parallel coordinates, charts grouped by ``lr`` or ``batch_size``) show the rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..fits import fit_through_origin
from .pool import Call, estimated_seconds
from .rbm import RBMResult
from .runs import Outcome, Settings, run_concurrently
from .teacher_student import run_ts2x2

__all__ = ["TS_SCANS", "run_scaling", "scaling_fit", "ts_scaling_fit"]

#: (α, |B|, ε) of the teacher–student scans of arXiv:2407.16427 (docs/science.md#teacher-student); the shared point
#: (0.1, 16, 0.1) appears once.
TS_SCANS: tuple[tuple[float, int, float], ...] = (
    *((lr, 16, 0.1) for lr in (0.1, 0.2, 0.3, 0.4, 0.5)),
    *((0.1, bs, 0.1) for bs in (4, 8, 32, 64)),
    *((0.1, 16, eps) for eps in (0.05, 0.06, 0.07, 0.08, 0.09)),
)


def scaling_fit(results: list[RBMResult]) -> dict[str, float]:
    r"""Fit ⟨S⟩ = a·x and √π σ = a·x through the origin over every pair of every RBM setting,
    :math:`x = \sqrt{\alpha(\mu^2-\kappa)/|B|}` (:attr:`RBMResult.predictor`).

    References: arXiv:2407.16427; docs/science.md#analysis-recipe, step (6).
    """
    pairs = [p for r in results for p in r.pairs]
    return _slope_fits(
        np.concatenate([r.predictor for r in results]),
        [p.mean_spacing for p in pairs],
        [p.mean_spacing_err for p in pairs],
        [p.sigma for p in pairs],
        [p.sigma_err for p in pairs],
    )


def ts_scaling_fit(summaries: list[dict[str, Any]]) -> dict[str, float]:
    r"""Fit ⟨S⟩ = a·x and √π σ = a·x through the origin, :math:`x = \sqrt{\alpha\varepsilon^2/|B|}`.

    References: arXiv:2407.16427; docs/science.md#analysis-recipe, step (6).
    """
    return _slope_fits(*([s[key] for s in summaries] for key in _TS_KEYS))


_TS_KEYS = ("predictor", "mean_spacing", "mean_spacing_err", "sigma", "sigma_err")
_TS_BATCHES_PER_EPOCH = 500  # TeacherStudent2x2's mini-batches per epoch (the papers'): the queue's cost estimate


def _slope_fits(
    x: Any, spacing: Sequence[float], spacing_err: Sequence[float], sigma: Sequence[float], sigma_err: Sequence[float]
) -> dict[str, float]:
    """The slopes of ⟨S⟩ and of √π σ against ``x`` and their errors, as ``summary.json`` holds them.

    Errors are floored at 1e-12 (a pair whose jackknife error vanishes gets a large weight, not a division by zero).
    """
    out: dict[str, float] = {}
    for key, scale, y, err in (
        ("mean_spacing", 1.0, spacing, spacing_err),
        ("sqrt_pi_sigma", math.sqrt(math.pi), sigma, sigma_err),
    ):
        e = scale * np.maximum(np.asarray(err, dtype=np.float64), 1e-12)
        fit = fit_through_origin(x, scale * np.asarray(y, dtype=np.float64), e)
        if not fit.converged:  # as the old fit raised: no NaN slope in summary.json
            raise ValueError(f"the scaling fit of {key} failed: {fit.message}")
        out[f"a_fit_{key}"], out[f"a_fit_{key}_err"] = fit.slope, fit.slope_std
    return out


def run_scaling(rbm_calls: Sequence[Call], ts_networks: int, settings: Settings, *, ts_epochs: int = 10) -> Outcome:
    """Run both grids as runs nested under ``settings.parent_run_id``; return the fits and the collapse figures.

    ``rbm_calls`` train the RBM grid (each returns an :class:`~rmt_callbacks.reproduce.rbm.RBMResult`); they and
    the teacher–student settings go into one queue (:func:`~rmt_callbacks.reproduce.runs.run_concurrently`), so
    that the runs of both grids share the cores.
    """
    from ..figures.reproduction import spacing_figure

    cost = estimated_seconds("ts2x2", ts_networks, ts_epochs * _TS_BATCHES_PER_EPOCH)
    ts_calls = [
        Call(run_ts2x2, (lr, bs, eps, ts_networks, settings), {"epochs": ts_epochs}, cost) for lr, bs, eps in TS_SCANS
    ]
    done = run_concurrently([*rbm_calls, *ts_calls], settings)
    rbm: list[RBMResult] = done[: len(rbm_calls)]
    ts: list[dict[str, Any]] = done[len(rbm_calls) :]
    rbm_fit, ts_fit = scaling_fit(rbm), ts_scaling_fit(ts)
    x = np.concatenate([r.predictor for r in rbm])
    y = np.array([p.mean_spacing for r in rbm for p in r.pairs])
    err = np.array([p.mean_spacing_err for r in rbm for p in r.pairs])
    fig_rbm = spacing_figure(
        {f"α={r.lr:g}, |B|={r.batch_size}": r.normalised_spacings for r in rbm},
        (x, y, err, rbm_fit["a_fit_mean_spacing"], rbm_fit["a_fit_mean_spacing_err"]),
        xlabel=r"$\sqrt{\alpha(\mu^2-\kappa)/|B|}$",
        flagged=np.array([f for r in rbm for f in r.pair_flags]),
        flagged_series=[f"α={r.lr:g}, |B|={r.batch_size}" for r in rbm if any(r.pair_flags)],
    )
    fig_ts = spacing_figure(
        {},
        (
            np.array([s["predictor"] for s in ts]),
            np.array([s["mean_spacing"] for s in ts]),
            np.array([s["mean_spacing_err"] for s in ts]),
            ts_fit["a_fit_mean_spacing"],
            ts_fit["a_fit_mean_spacing_err"],
        ),
        xlabel=r"$\sqrt{\alpha\varepsilon^2/|B|}$",
        flagged=np.array([bool(s["flagged"]) for s in ts]),
    )
    authors = {"rbm_a_fit": [2.2750, 0.0326], "ts_a_fit": [1.8785, 0.0338]}
    rbm_flagged = [f"lr{r.lr:g}_bs{r.batch_size}/{mode}" for r in rbm for mode in r.flagged]
    ts_flagged = [f"lr{s['lr']:g}_bs{s['batch_size']}_n{s['noise']:g}/{mode}" for s in ts for mode in s["flagged"]]
    return Outcome(
        summary={
            "rbm": {
                **rbm_fit,
                "settings": {f"lr{r.lr:g}_bs{r.batch_size}": r.summary() for r in rbm},
                "flagged": rbm_flagged,
            },
            "teacher_student": {**ts_fit, "settings": ts, "flagged": ts_flagged},
            "errors": {
                "a_fit_*_err": "weighted least squares through the origin on each setting's errors (their own "
                "'errors' say what they contain), scaled by √(χ²/dof)",
            },
            "authors": authors,
        },
        figures={"scaling_rbm": fig_rbm, "scaling_ts": fig_ts},
        metrics={
            **{f"rbm_{k}": v for k, v in rbm_fit.items()},
            **{f"ts_{k}": v for k, v in ts_fit.items()},
            "flagged_modes": float(len(rbm_flagged) + len(ts_flagged)),
        },
        params={f"authors_{k}": f"{a:.4f} ± {e:.4f}" for k, (a, e) in authors.items()},
    )
