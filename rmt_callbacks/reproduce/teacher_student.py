"""The 2×2 teacher–student experiment of arXiv:2407.16427: the student's singular values around the teacher's 2·𝟙.

The set-up and the prediction (E27) for ⟨S⟩ are in docs/science.md#teacher-student. Each setting (α, |B|, ε)
seeds its model from the run seed and the setting (:func:`~rmt_callbacks.reproduce.seeds.setting_seed`), and the
pair of singular values gets an equilibration verdict from a snapshot half-way through the run.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..dynamics import check_relaxation, summarize_pair
from .equilibration import mid_run_snapshot
from .runs import Settings, record, train
from .seeds import setting_seed

__all__ = ["run_ts2x2"]

#: Summary entries fixed by the setting: logged as params, not metrics.
_FIXED = ("lr", "batch_size", "noise", "networks", "predicted_mean_spacing", "predictor")


def run_ts2x2(
    lr: float, batch_size: int, noise: float, networks: int, settings: Settings, *, epochs: int = 10
) -> dict[str, Any]:
    """Train the teacher–student ensemble for ``epochs`` epochs, analyse the final singular values, record the run."""
    from reference_models import TeacherStudent2x2, predicted_mean_spacing

    seed = setting_seed(settings.seed, "ts2x2", lr, batch_size, noise)
    model = TeacherStudent2x2(networks=networks, lr=lr, batch_size=batch_size, noise=noise, seed=seed, epochs=epochs)
    name = f"ts2x2_lr{lr:g}_bs{batch_size}_n{noise:g}"
    mid = mid_run_snapshot(model.total_steps // 2, lambda m: m.singular_values())
    run = train(
        model, model.total_steps, settings, run_name=name, tags={"model": "TeacherStudent2x2"}, extra_callbacks=[mid]
    )
    sv = model.singular_values().detach().to("cpu", torch.float64)  # (E, 2)
    pair = summarize_pair(sv)
    verdict = check_relaxation(mid.values, sv, ks=pair.ks)
    predicted = predicted_mean_spacing(lr, batch_size, noise)
    summary = {
        "lr": lr,
        "batch_size": batch_size,
        "noise": noise,
        "networks": networks,
        "mean_singular_value": pair.mean,
        "mean_singular_value_err": pair.mean_err,
        "mean_spacing": pair.mean_spacing,
        "mean_spacing_err": pair.mean_spacing_err,
        "sigma": pair.sigma,
        "sigma_err": pair.sigma_err,
        "predicted_mean_spacing": predicted,
        "predictor": math.sqrt(lr * noise**2 / batch_size),
        "seed": seed,
        "equilibration": {"pair": verdict.to_summary()},
        "flagged": [] if verdict.relaxed else ["pair"],
    }
    metrics = {k: float(v) for k, v in summary.items() if k not in _FIXED and isinstance(v, float)}
    metrics.update(verdict.to_metrics("pair_"))
    params = {k: summary[k] for k in ("predicted_mean_spacing", "predictor")} | {"run_seed": settings.seed}
    record(
        run,
        settings.out / name,
        summary=summary,
        metrics=metrics,
        params=params,
        arrays={"singular_values": sv.numpy()},
    )
    return summary
