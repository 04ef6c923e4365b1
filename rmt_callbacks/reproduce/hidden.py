"""The linear hidden-layer network (paper.md 6, the project's design): relaxation rates and stationary density.

Fig. 4: the ensemble-mean squared singular values :math:`\\xi_i(t)` relax at rates :math:`\\gamma_i \\propto
z_i^2` (E29); we fit :math:`\\xi(t) = A(1 - B e^{-\\gamma t})^2` from epoch 2 on. Fig. 5: the pooled stationary
singular values are fitted with the one-species (E12) and two-species (E30) pair densities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..fits import fit_pair_density, fit_two_species
from .runs import Settings, record, train

__all__ = ["HiddenSizes", "fit_relaxation", "run_hidden"]


@dataclass(frozen=True)
class HiddenSizes:
    """Ensemble sizes and lengths of the two hidden-layer experiments (defaults: paper.md 6.2)."""

    dynamics_networks: int = 500
    dynamics_epochs: int = 100
    density_networks: int = 2000
    density_steps: int = 3000


def fit_relaxation(t: np.ndarray, xi: np.ndarray, *, t_min: float = 2.0) -> tuple[float, float, float]:
    r"""Fit :math:`\xi(t) = A (1 - B e^{-\gamma t})^2` to a mean trajectory for :math:`t \ge t_{\min}` (E29).

    Returns ``(A, B, γ)``; γ is per unit of ``t``.

    Example:
        >>> t = np.arange(0, 50.0)
        >>> a, b, g = fit_relaxation(t, 4.0 * (1 - 0.9 * np.exp(-0.1 * t)) ** 2)
        >>> round(a, 6), round(b, 6), round(g, 6)
        (4.0, 0.9, 0.1)
    """
    from scipy.optimize import curve_fit

    keep = t >= t_min
    tt, yy = t[keep], xi[keep]
    a0 = float(yy[-1])
    ratio = np.clip(1.0 - np.sqrt(np.clip(yy / a0, 0.0, None)), 1e-6, None)
    g0 = max(1e-3, float(-np.polyfit(tt[: max(3, len(tt) // 3)], np.log(ratio[: max(3, len(tt) // 3)]), 1)[0]))

    def model(t: np.ndarray, a: float, b: float, g: float) -> np.ndarray:
        return a * (1.0 - b * np.exp(-g * t)) ** 2

    popt, _ = curve_fit(model, tt, yy, p0=[a0, 1.0, g0], maxfev=20_000)
    return float(popt[0]), float(popt[1]), float(popt[2])


def _record_trajectory(model: Any, epochs: int, steps_per_epoch: int, settings: Settings, name: str) -> Any:
    """Train epoch by epoch, keeping the squared singular values after every epoch: (E, epochs + 1, 2)."""
    import lightning.pytorch as pl

    snapshots = [model.singular_values().detach().cpu() ** 2]

    class _Snapshots(pl.Callback):
        def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
            if trainer.global_step % steps_per_epoch == 0:
                snapshots.append(pl_module.singular_values().detach().cpu() ** 2)

    logger = train(model, epochs * steps_per_epoch, settings, run_name=name, extra_callbacks=[_Snapshots()])
    return logger, torch.stack(snapshots, dim=1).to(torch.float64).numpy()


def run_hidden(z: str, sizes: HiddenSizes, settings: Settings) -> dict[str, Any]:
    """Both hidden-layer experiments for one fixed layer ``z`` (``"mat_1"`` or ``"mat_2"``)."""
    from reference_models import HiddenLayerNetwork

    dyn = HiddenLayerNetwork(
        networks=sizes.dynamics_networks, z=z, lr=0.01, batch_size=16, noise=0.1, seed=settings.seed
    )
    spe = dyn.steps_per_epoch
    logger, xi = _record_trajectory(dyn, sizes.dynamics_epochs, spe, settings, f"hidden_{z}_dynamics")
    t = np.arange(xi.shape[1], dtype=np.float64)
    mean = xi.mean(axis=0)  # (T, 2), column 0 the smaller squared singular value
    fits = [fit_relaxation(t, mean[:, k]) for k in range(2)]
    rates = sorted((f[2] for f in fits), reverse=True)
    predicted = sorted(dyn.predicted_rates(), reverse=True)
    fitted = np.stack([f[0] * (1 - f[1] * np.exp(-f[2] * t)) ** 2 for f in fits], axis=1)
    record(logger, settings.out / f"hidden_{z}_dynamics", metrics={"rate_fast": rates[0], "rate_slow": rates[1]})

    den = HiddenLayerNetwork(
        networks=sizes.density_networks, z=z, lr=0.1, batch_size=16, noise=0.1, seed=settings.seed + 1
    )
    logger = train(den, sizes.density_steps, settings, run_name=f"hidden_{z}_density")
    sv = den.singular_values().detach().to("cpu", torch.float64).reshape(-1)
    one, two = fit_pair_density(sv), fit_two_species(sv)
    summary = {
        "z": z,
        "rates": rates,
        "predicted_rates": predicted,
        "rate_ratio": rates[0] / rates[1],
        "predicted_rate_ratio": predicted[0] / predicted[1],
        "amplitudes": [f[0] for f in fits],
        "ks_one_species": one.ks,
        "ks_two_species": two.ks,
        "sigma_one_species": one.sigma,
        "sigma1": two.sigma1,
        "sigma2": two.sigma2,
        "center": two.center,
    }
    metrics = {k: v for k, v in summary.items() if isinstance(v, float) and math.isfinite(v)}
    record(logger, settings.out / f"hidden_{z}_density", metrics=metrics, arrays={"singular_values": sv.numpy()})
    return {"summary": summary, "trajectory": (t, xi, fitted), "density": (sv.numpy(), one, two)}
