"""The 2×2 teacher–student experiment of arXiv:2407.16427: the student's singular values around the teacher's 2·𝟙.

The set-up and the prediction (E27) for ⟨S⟩ are in docs/science.md#teacher-student. Each setting (α, |B|, ε)
seeds its model from the run seed and the setting (:func:`~rmt_callbacks.reproduce.seeds.setting_seed`), and the
pair of singular values gets an equilibration verdict from a snapshot half-way through the run.

**Errors.** All networks trained on one data set share it, and a run's ⟨S⟩ carries a factor set by its data
(run-to-run spread of several per cent at small |B|, several times the error of a jackknife over the networks of
one data set). So each setting trains :func:`data_sets_for` independent data sets (networks split into
contiguous groups, :class:`reference_models.TeacherStudent2x2`'s ``data_sets``) and its errors are a
delete-one-data-set jackknife: they contain the network noise, W₀ and the draw of the data set. ``summary.json``
says so under ``"errors"``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..dynamics import check_relaxation, summarize_pair
from .equilibration import mid_run_snapshot
from .runs import Settings, record, train
from .seeds import setting_seed

__all__ = ["MIN_DATA_SETS", "NETWORKS_PER_DATA_SET", "data_sets_for", "run_ts2x2"]

#: Summary entries fixed by the setting: logged as params, not metrics.
_FIXED = ("lr", "batch_size", "noise", "networks", "predicted_mean_spacing", "predictor")
#: Networks per data set of a setting, and the fewest data sets (a jackknife over 10 groups knows its own error to
#: ≈ 1/√(2·9) = 24 %; the papers' 3000 networks make 150 data sets of 20).
NETWORKS_PER_DATA_SET = 20
MIN_DATA_SETS = 10


def data_sets_for(networks: int) -> int:
    """The data sets of a setting of ``networks`` networks: ``networks // 20``, at least 10 and at most ``networks``.

    Example:
        >>> data_sets_for(500), data_sets_for(3000), data_sets_for(30), data_sets_for(4)
        (25, 150, 10, 4)
    """
    return min(networks, max(MIN_DATA_SETS, networks // NETWORKS_PER_DATA_SET))


def _errors(data_sets: int, networks: int) -> str:
    """What the errors of a setting contain, in words."""
    if data_sets > 1:
        return (
            f"delete-one-data-set jackknife over {data_sets} data sets of {networks / data_sets:.3g} networks: "
            "network noise and W₀, and the draw of the data set"
        )
    return (
        f"jackknife over {min(50, networks)} blocks of networks that all share one data set: network noise and W₀ "
        "only, not the draw of the data set (several times larger at small |B|, docs/science.md#analysis-recipe)"
    )


def run_ts2x2(
    lr: float,
    batch_size: int,
    noise: float,
    networks: int,
    settings: Settings,
    *,
    epochs: int = 10,
    data_sets: int | None = None,
) -> dict[str, Any]:
    """Train the teacher–student ensemble for ``epochs`` epochs, analyse the final singular values, record the run.

    ``data_sets`` independent data sets (default :func:`data_sets_for` ``(networks)``; 1 is the authors' one data
    set per run, with errors that leave its draw out) split the networks; the errors are a delete-one-data-set
    jackknife. The model rejects ``data_sets`` outside ``1..networks`` by name.
    """
    from reference_models import TeacherStudent2x2, predicted_mean_spacing

    seed = setting_seed(settings.seed, "ts2x2", lr, batch_size, noise)
    data_sets = data_sets_for(networks) if data_sets is None else data_sets
    model = TeacherStudent2x2(
        networks=networks, lr=lr, batch_size=batch_size, noise=noise, seed=seed, epochs=epochs, data_sets=data_sets
    )
    groups = model.data_set_index if data_sets > 1 else None
    name = f"ts2x2_lr{lr:g}_bs{batch_size}_n{noise:g}"
    mid = mid_run_snapshot(model.total_steps // 2, "singular_values")
    run = train(
        model, model.total_steps, settings, run_name=name, tags={"model": "TeacherStudent2x2"}, extra_callbacks=[mid]
    )
    sv = model.singular_values().detach().to("cpu", torch.float64)  # (E, 2)
    pair = summarize_pair(sv, groups=groups)
    verdict = check_relaxation(mid.values, sv, ks=pair.ks, groups=groups)
    predicted = predicted_mean_spacing(lr, batch_size, noise)
    summary = {
        "lr": lr,
        "batch_size": batch_size,
        "noise": noise,
        "networks": networks,
        "data_sets": data_sets,
        "mean_singular_value": pair.mean,
        "mean_singular_value_err": pair.mean_err,
        "mean_spacing": pair.mean_spacing,
        "mean_spacing_err": pair.mean_spacing_err,
        "sigma": pair.sigma,
        "sigma_err": pair.sigma_err,
        "predicted_mean_spacing": predicted,
        "predictor": math.sqrt(lr * noise**2 / batch_size),
        "seed": seed,
        "errors": {
            k: _errors(data_sets, networks) for k in ("mean_singular_value_err", "mean_spacing_err", "sigma_err")
        },
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
