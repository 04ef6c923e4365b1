"""The linear hidden-layer network behind Figs. 4–5 of arXiv:2412.20496: relaxation rates and stationary density.

The model is this project's design (docs/science.md#hidden-layer); the labels (E12), (E29), (E30) are docs/science.md's.
Fig. 4: the ensemble-mean squared singular values :math:`\\xi_i(t)` relax at rates :math:`\\gamma_i \\propto z_i^2`
(E29); we fit :math:`\\xi(t) = A(1 - B e^{-\\gamma t})^2` from epoch 2 on (:func:`~rmt_callbacks.fits.fit_relaxation`).
Fig. 5: the pooled stationary singular values are fitted with the one-species (E12) and two-species (E30) pair
densities; the pair of singular values gets an equilibration verdict (a snapshot half-way through the run against
the end, the law its two-species fit). Each run seeds its model from the run seed, ``z`` and the experiment
(:func:`~rmt_callbacks.reproduce.seeds.setting_seed`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..dynamics import check_relaxation
from ..fits import fit_pair_density, fit_relaxation, fit_two_species
from .equilibration import mid_run_snapshot
from .runs import Settings, record, train
from .seeds import setting_seed

if TYPE_CHECKING:
    from reference_models.hidden_layer import HiddenLayerName

__all__ = ["HiddenSizes", "run_hidden"]


@dataclass(frozen=True)
class HiddenSizes:
    """Ensemble sizes and lengths of the two hidden-layer experiments (defaults: docs/science.md#hidden-layer)."""

    dynamics_networks: int = 500
    dynamics_epochs: int = 100
    density_networks: int = 2000
    density_steps: int = 3000


def _record_trajectory(model: Any, epochs: int, steps_per_epoch: int, settings: Settings, name: str) -> Any:
    """Train epoch by epoch, keeping the squared singular values after every epoch: (E, epochs + 1, 2)."""
    import lightning.pytorch as pl

    snapshots = [model.singular_values().detach().cpu() ** 2]

    class _Snapshots(pl.Callback):
        def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
            if trainer.global_step % steps_per_epoch == 0:
                snapshots.append(pl_module.singular_values().detach().cpu() ** 2)

    run = train(model, epochs * steps_per_epoch, settings, run_name=name, extra_callbacks=[_Snapshots()])
    return run, torch.stack(snapshots, dim=1).to(torch.float64).numpy()


def run_hidden(z: HiddenLayerName, sizes: HiddenSizes, settings: Settings) -> dict[str, Any]:
    """Both hidden-layer experiments for one fixed layer ``z`` (``"mat_1"`` or ``"mat_2"``), each an MLflow run."""
    dynamics, trajectory = _run_dynamics(z, sizes, settings)
    density, fits = _run_density(z, sizes, settings)
    return {"summary": {**dynamics, **density}, "trajectory": trajectory, "density": fits}


def _run_dynamics(
    z: HiddenLayerName, sizes: HiddenSizes, settings: Settings
) -> tuple[dict[str, Any], tuple[np.ndarray, ...]]:
    """Fig. 4's run: fitted relaxation rates (metrics) against the predicted ones (params)."""
    from reference_models import HiddenLayerNetwork

    seed = setting_seed(settings.seed, "hidden", z, "dynamics")
    model = HiddenLayerNetwork(networks=sizes.dynamics_networks, z=z, lr=0.01, batch_size=16, noise=0.1, seed=seed)
    name = f"hidden_{z}_dynamics"
    run, xi = _record_trajectory(model, sizes.dynamics_epochs, model.steps_per_epoch, settings, name)
    t = np.arange(xi.shape[1], dtype=np.float64)
    mean = xi.mean(axis=0)  # (T, 2), column 0 the smaller squared singular value
    fits = [fit_relaxation(t, mean[:, k]) for k in range(2)]
    for k, fit in enumerate(fits):
        if not fit.converged:
            raise RuntimeError(f"{name}: the relaxation fit of mode {k + 1} failed: {fit.message}")
    rates = sorted((f.rate for f in fits), reverse=True)
    predicted = sorted(model.predicted_rates(), reverse=True)
    fitted = np.stack([f.curve(t) for f in fits], axis=1)
    summary = {
        "z": z,
        "rates": rates,
        "predicted_rates": predicted,
        "rate_ratio": rates[0] / rates[1],
        "predicted_rate_ratio": predicted[0] / predicted[1],
        "amplitudes": [f.amplitude for f in fits],
        "dynamics_seed": seed,
    }
    metrics = {"rate_fast": rates[0], "rate_slow": rates[1], "rate_ratio": rates[0] / rates[1]}
    metrics.update({f"amplitude_mode{k + 1}": f.amplitude for k, f in enumerate(fits)})
    params = {"predicted_rate_fast": predicted[0], "predicted_rate_slow": predicted[1]}
    params.update(predicted_rate_ratio=predicted[0] / predicted[1], run_seed=settings.seed)
    record(run, settings.out / name, summary=summary, metrics=metrics, params=params)
    return summary, (t, xi, fitted)


def _run_density(z: HiddenLayerName, sizes: HiddenSizes, settings: Settings) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """Fig. 5's run: one- and two-species fits to the pooled stationary singular values, and their verdict."""
    from reference_models import HiddenLayerNetwork

    seed = setting_seed(settings.seed, "hidden", z, "density")
    model = HiddenLayerNetwork(networks=sizes.density_networks, z=z, lr=0.1, batch_size=16, noise=0.1, seed=seed)
    name = f"hidden_{z}_density"
    mid = mid_run_snapshot(sizes.density_steps // 2, "singular_values")
    run = train(model, sizes.density_steps, settings, run_name=name, extra_callbacks=[mid])
    pairs = model.singular_values().detach().to("cpu", torch.float64)  # (E, 2)
    sv = pairs.reshape(-1)
    one, two = fit_pair_density(sv), fit_two_species(sv)
    verdict = check_relaxation(mid.values, pairs, ks=two.ks if two.converged else one.ks if one.converged else None)
    metrics = {
        "ks_one_species": one.ks,
        "ks_two_species": two.ks,
        "sigma_one_species": one.sigma,
        "sigma1": two.sigma1,
        "sigma2": two.sigma2,
        "center": two.center,
    }
    summary: dict[str, Any] = {"z": z, **metrics, "density_seed": seed}
    summary.update(equilibration={"pair": verdict.to_summary()}, flagged=[] if verdict.relaxed else ["pair"])
    metrics.update(verdict.to_metrics("pair_"))
    params = {"run_seed": settings.seed}
    record(
        run,
        settings.out / name,
        summary=summary,
        metrics=metrics,
        params=params,
        arrays={"singular_values": sv.numpy()},
    )
    return summary, (sv.numpy(), one, two)
