"""The Gaussian RBM experiments of arXiv:2407.16427 (docs/science.md#gaussian-rbm): one setting, the α and |B| grids.

Eigenvalues ``x`` of :math:`W^\\top W` are handled in the papers' descending order; the four doubly
degenerate target pairs sit at indices (1, 2), (3, 4), (5, 6), (7, 8) and the two single modes at 0 and 9.
Each of these six modes gets an equilibration verdict from the eigenvalues half-way through the run and at its end
(:func:`rmt_callbacks.dynamics.check_relaxation`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from reference_models import MU2

from ..dynamics import PairSummary, Relaxation, check_relaxation, summarize_pair
from ..fits import fit_surmise
from ..spectral import histogram_mean
from .equilibration import mid_run_snapshot
from .runs import Settings, record, train
from .seeds import setting_seed

__all__ = ["MODES", "PAIRS", "SINGLES", "RBMResult", "analyse_rbm", "run_rbm"]

PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8))
SINGLES = (0, 9)
#: The six modes' names in ``summary.json`` and MLflow: the pairs, then the single levels.
MODES = (*(f"pair{k + 1}" for k in range(len(PAIRS))), *(f"single{k + 1}" for k in range(len(SINGLES))))


def _errors(networks: int) -> str:
    """What the RBM's errors contain. Every network has its own W₀ and chains and the positive phase is exact (no
    data set), so a jackknife over networks holds every source of variance of one setting."""
    return (
        f"jackknife over {min(50, networks)} blocks of networks, each its own W₀ and chains (no data set): W₀ and "
        "chain noise"
    )


@dataclass(frozen=True)
class RBMResult:
    """One (α, |B|) setting: the final eigenvalues ``x`` (E, 10), descending, and their analysis."""

    lr: float
    batch_size: int
    x: np.ndarray
    pairs: tuple[PairSummary, ...]
    single_means: tuple[float, ...]
    single_stds: tuple[float, ...]
    kappa: tuple[float, ...]
    normalised_spacings: np.ndarray
    surmise_beta: float
    seed: int | None = None
    equilibration: dict[str, Relaxation] = field(default_factory=dict)

    @property
    def flagged(self) -> list[str]:
        """The modes (:data:`MODES`) whose equilibration check failed."""
        return [mode for mode, verdict in self.equilibration.items() if not verdict.relaxed]

    @property
    def pair_flags(self) -> list[bool]:
        """Per pair (the points of the scaling figure), whether it failed its equilibration check."""
        return [f"pair{k + 1}" in self.flagged for k in range(len(PAIRS))]

    @property
    def flagged_columns(self) -> list[int]:
        """The columns of ``x`` (descending levels) of the flagged modes."""
        columns = dict(zip(MODES, [*PAIRS, *((i,) for i in SINGLES)], strict=True))
        return sorted(c for mode in self.flagged for c in columns[mode])

    @property
    def predictor(self) -> np.ndarray:
        """The authors' x-axis :math:`\\sqrt{\\alpha(\\mu^2 - \\kappa)/|B|}` per pair."""
        x_star = MU2 - np.array([self.kappa[i] for i, _ in PAIRS])
        return np.sqrt(self.lr * x_star / self.batch_size)

    def summary(self) -> dict[str, Any]:
        """The numbers ``summary.json`` holds for this setting."""
        kappa_pairs = [self.kappa[i] for i, _ in PAIRS]
        return {
            "lr": self.lr,
            "batch_size": self.batch_size,
            "networks": int(self.x.shape[0]),
            "pair_kappa": kappa_pairs,
            "pair_means": [p.mean for p in self.pairs],
            "pair_means_err": [p.mean_err for p in self.pairs],
            "pair_mean_spacing": [p.mean_spacing for p in self.pairs],
            "pair_mean_spacing_err": [p.mean_spacing_err for p in self.pairs],
            "pair_sigma": [p.sigma for p in self.pairs],
            "pair_sigma_err": [p.sigma_err for p in self.pairs],
            "pair_lambda_fit_over_kappa": [(MU2 - p.center) / k for p, k in zip(self.pairs, kappa_pairs, strict=True)],
            "pair_ks": [p.ks for p in self.pairs],
            "pair_predictor": self.predictor.tolist(),
            "single_means": list(self.single_means),
            "single_stds": list(self.single_stds),
            "mean_s2": float((self.normalised_spacings**2).mean()),
            "surmise_beta": self.surmise_beta,
            "seed": self.seed,
            "errors": {
                k: _errors(self.x.shape[0]) for k in ("pair_means_err", "pair_mean_spacing_err", "pair_sigma_err")
            },
            "equilibration": {mode: verdict.to_summary() for mode, verdict in self.equilibration.items()},
            "flagged": self.flagged,
        }

    def metrics(self) -> dict[str, float]:
        """The measured numbers as flat names: ``pair{k}_<statistic>``, ``single{k}_mean``/``_std``, ``mean_s2``."""
        out: dict[str, float] = {}
        for k, p in enumerate(self.pairs):
            out.update(p.to_metrics(f"pair{k + 1}_"))
        for k, (m, s) in enumerate(zip(self.single_means, self.single_stds, strict=True)):
            out[f"single{k + 1}_mean"], out[f"single{k + 1}_std"] = m, s
        out["mean_s2"] = float((self.normalised_spacings**2).mean())
        out["surmise_beta"] = self.surmise_beta
        for mode, verdict in self.equilibration.items():
            out.update(verdict.to_metrics(f"{mode}_"))
        return out

    def params(self) -> dict[str, float]:
        """Numbers fixed by the setting: each level's target κ and each pair's predictor (the x-axis of Fig. 3)."""
        out = {f"pair{k + 1}_kappa": self.kappa[i] for k, (i, _) in enumerate(PAIRS)}
        out.update({f"pair{k + 1}_predictor": float(x) for k, x in enumerate(self.predictor)})
        out.update({f"single{k + 1}_kappa": self.kappa[i] for k, i in enumerate(SINGLES)})
        return out


def analyse_rbm(
    x: torch.Tensor,
    *,
    lr: float,
    batch_size: int,
    kappa: tuple[float, ...],
    mid: torch.Tensor | None = None,
    seed: int | None = None,
) -> RBMResult:
    """Analyse final eigenvalues ``x`` (E, 10), descending, as the papers do (docs/science.md#analysis-recipe).

    With ``mid``, the same networks' eigenvalues half-way through the run, every mode gets an equilibration
    verdict (:func:`rmt_callbacks.dynamics.check_relaxation`; a pair's law is its E12 fit). ``seed`` is the
    setting's seed, recorded with the result.
    """
    x = x.detach().to("cpu", torch.float64)
    pairs = tuple(summarize_pair(x[:, [i, j]]) for i, j in PAIRS)
    equilibration: dict[str, Relaxation] = {}
    if mid is not None:
        mid = mid.detach().to("cpu", torch.float64)
        for mode, (i, j), pair in zip(MODES, PAIRS, pairs, strict=False):
            equilibration[mode] = check_relaxation(mid[:, [i, j]], x[:, [i, j]], ks=pair.ks)
        for mode, i in zip(MODES[len(PAIRS) :], SINGLES, strict=True):
            equilibration[mode] = check_relaxation(mid[:, i], x[:, i])
    spacings = [(x[:, i] - x[:, j]).abs() for i, j in PAIRS]
    normalised = torch.cat([s / histogram_mean(s) for s in spacings])
    beta = fit_surmise(torch.cat([s / s.mean() for s in spacings])).beta
    return RBMResult(
        lr=lr,
        batch_size=batch_size,
        x=x.numpy(),
        pairs=pairs,
        single_means=tuple(float(x[:, i].mean()) for i in SINGLES),
        single_stds=tuple(float(x[:, i].std()) for i in SINGLES),
        kappa=kappa,
        normalised_spacings=normalised.numpy(),
        surmise_beta=float(beta),
        seed=seed,
        equilibration=equilibration,
    )


def run_rbm(
    lr: float,
    batch_size: int,
    steps: int,
    networks: int,
    settings: Settings,
    *,
    figures: bool = True,
    float32_noise: bool = False,
) -> RBMResult:
    r"""Train one ensemble at (α, |B|), analyse it, and record it as an MLflow run.

    The model's seed is the setting's (:func:`~rmt_callbacks.reproduce.seeds.setting_seed` of the run seed, α and
    |B|; the run's ``seed`` param, ``run_seed`` the command's); the eigenvalues after half the steps feed the
    equilibration check.

    ``float32_noise`` runs the Gibbs sweep (its normals and arithmetic) in float32, about 3–4× faster on CPUs;
    the chain covariance changes by far less than its 1/√|B| sampling noise, and the weights, :math:`\hat C_B` and
    the update stay float64 (:class:`reference_models.GaussianRBM`).
    """
    from reference_models import GaussianRBM

    seed = setting_seed(settings.seed, "rbm", lr, batch_size)
    model = GaussianRBM(networks=networks, lr=lr, batch_size=batch_size, seed=seed, float32_noise=float32_noise)
    name = f"rbm_lr{lr:g}_bs{batch_size}"
    mid = mid_run_snapshot(steps // 2, "eigenvalues")
    run = train(model, steps, settings, run_name=name, tags={"model": "GaussianRBM"}, extra_callbacks=[mid])
    kappa = tuple(float(k) for k in model.target_kappa_descending_x())
    x = model.eigenvalues()
    result = analyse_rbm(x, lr=lr, batch_size=batch_size, kappa=kappa, mid=mid.values, seed=seed)
    figs = {}
    if figures:
        from ..figures.reproduction import rbm_spectra_figure

        figs[name] = rbm_spectra_figure(
            {name: MU2 - result.x}, kappa, xlabel="λ = μ² − x", flagged={name: result.flagged_columns}
        )
    record(
        run,
        settings.out / name,
        summary=result.summary(),
        metrics=result.metrics(),
        params={**result.params(), "run_seed": settings.seed},
        figures=figs,
        arrays={"eigenvalues": result.x},
    )
    return result
