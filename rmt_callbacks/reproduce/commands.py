"""What each ``rmt-reproduce`` subcommand runs, at ``--quick`` or ``--full`` sizes, and how it lands in MLflow.

``rbm`` and ``ts2x2`` are one MLflow run each. Every other command opens a parent run named after itself;
its training runs nest under it (MLflow's UI groups them), and it holds what spans several of them: the
figures written to ``--out`` (``figures/*.png``), the whole ``summary.json``, and the fits over the grid
(``summary/<name>`` metrics).

Independent training runs go through :func:`~rmt_callbacks.reproduce.runs.run_concurrently` as plain calls of
``run_rbm``, ``run_ts2x2`` and ``run_hidden``: one after another (``--jobs 1``) or in ``--jobs`` worker processes,
the results in a fixed order either way. With several devices or nodes, each run spans them all, and the runs go
one after another (``--jobs 1``): every rank executes the whole command, and only rank zero records
(:class:`~rmt_callbacks.reproduce.runs.Settings`).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from reference_models import MU2

from .equilibration import flagged_modes
from .hidden import HiddenSizes, run_hidden
from .launch import settings_from_args
from .pool import Call, estimated_seconds
from .rbm import PAIRS, RBMResult, run_rbm
from .runs import (
    Outcome,
    Settings,
    end_children,
    parent_run,
    record,
    run_concurrently,
    write_summary,
)
from .scaling import scaling_fit
from .teacher_student import run_ts2x2

if TYPE_CHECKING:
    from reference_models.hidden_layer import HiddenLayerName

    from ..laws import SpectralLaw

__all__ = ["ALPHA_SCAN", "BATCH_SCAN", "NESTED", "Sizes", "run"]

#: The authors' RBM grid for arXiv:2407.16427 (docs/science.md#reference-numbers): α scan at |B| = 16 and |B| scan
#: at α = 0.1.
ALPHA_SCAN = ((0.01, 16), (0.02, 16), (0.04, 16), (0.06, 16), (0.08, 16), (0.1, 16))
BATCH_SCAN = ((0.1, 4), (0.1, 8), (0.1, 32), (0.1, 64))
FIG2_SETTINGS = ((0.01, 16), (0.04, 16), (0.08, 16))
HIDDEN_ZS: tuple[HiddenLayerName, ...] = ("mat_1", "mat_2")
#: What the errors of the scaling fit contain (docs/science.md#analysis-recipe, step 6).
FIT_ERRORS = {
    "a_fit_mean_spacing_err": "weighted least squares through the origin on the pairs' jackknife errors (each: "
    "W₀ and chain noise), scaled by √(χ²/dof): the scatter of the points about the line sets it",
    "a_fit_sqrt_pi_sigma_err": "as a_fit_mean_spacing_err, for √π σ",
}


@dataclass(frozen=True)
class Sizes:
    """Ensemble sizes and lengths. ``quick`` finishes ``all`` in minutes on two CPU cores.

    **Quick RBM lengths.** Every mode should pass the equilibration check (rmt_callbacks.dynamics.check_relaxation)
    at α ≥ 0.02. The slow part is not the relaxation near the targets (Langevin time ≈ 30) but the growth of the
    κ = 8 level and the lowest pair (x* ≈ 1) from a nearly singular W₀: the update multiplies W from the right,
    so a level grows only as fast as it is already large, at ≈ 0.025 per unit of Langevin time t = α·steps.
    Measured at 128–512 networks (α = 0.02, 0.1; |B| = 16, 64): networks still far behind at t = 400 (5–7 %),
    600 (≈ 1 %), up to t ≈ 1000 (1 in ≈ 1000 networks); the drift between mid-run and the end, and the stragglers,
    clear from t ≈ 800. Hence t = 1200 per setting (α = 0.1: 12 000 steps; α = 0.02: 60 000), and at most 60 000
    steps, so α = 0.01 stops at t = 600 and is marked not relaxed rather than costing another 60 000 steps. The
    teacher–student relaxes in ≈ 10 steps and its data and noise repeat every epoch, so its state at the end of
    each epoch is the previous epoch's to rounding: one epoch is the papers' ten, and its mid-run snapshot
    (mid-epoch) is an independent draw.
    """

    rbm_networks: int
    rbm_steps_times_lr: float
    rbm_min_steps: int
    rbm_max_steps: int
    rbm_float32_noise: bool
    ts_networks: int
    ts_epochs: int
    hidden: HiddenSizes

    def rbm_steps(self, lr: float) -> int:
        """Enough SGD steps to relax every mode at learning rate ``lr`` (slowest: ≈ 1/(2αΩ_min) steps)."""
        return int(min(self.rbm_max_steps, max(self.rbm_min_steps, round(self.rbm_steps_times_lr / lr))))


QUICK = Sizes(
    rbm_networks=128,
    rbm_steps_times_lr=1200.0,
    rbm_min_steps=4000,
    rbm_max_steps=60_000,
    rbm_float32_noise=True,
    ts_networks=500,
    ts_epochs=1,
    hidden=HiddenSizes(dynamics_networks=500, density_networks=2000, density_steps=3000),
)
#: The papers' sizes: 7500 networks and 100 000 steps per RBM setting, 3000 teacher–student networks.
FULL = Sizes(
    rbm_networks=7500,
    rbm_steps_times_lr=0.0,
    rbm_min_steps=100_000,
    rbm_max_steps=100_000,
    rbm_float32_noise=False,
    ts_networks=3000,
    ts_epochs=10,
    hidden=HiddenSizes(dynamics_networks=500, density_networks=10_000, density_steps=3000),
)


def _sizes(args: argparse.Namespace) -> Sizes:
    return FULL if args.full else QUICK


def run(args: argparse.Namespace) -> Path:
    """Run the subcommand in ``args``; return the path of the ``summary.json`` it wrote."""
    start = time.perf_counter()
    settings = settings_from_args(args)
    sizes = "full" if args.full else "quick"
    parent = parent_run(settings, args.command) if args.command in NESTED else None
    if parent is not None:
        settings = replace(settings, out=args.out / "runs", parent_run_id=parent.run_id or None)
    try:
        outcome = _COMMANDS[args.command](args, settings)
    except BaseException:
        if parent is not None and parent.run_id:
            end_children(settings, parent.run_id)  # runs a killed worker could not end
            parent.logger.finalize("failed")
        raise
    summary = {**outcome.summary, "seconds": round(time.perf_counter() - start, 1), "sizes": sizes}
    if settings.rank != 0:  # every rank ran the command; rank zero records it
        return args.out / "summary.json"
    if parent is None:
        return write_summary(args.out, summary)
    params = {"sizes": sizes, "seed": args.seed, **outcome.params}
    return record(parent, args.out, summary=summary, metrics=outcome.metrics, params=params, figures=outcome.figures)


def _rbm(args: argparse.Namespace, settings: Settings) -> Outcome:
    sizes = _sizes(args)
    networks = args.networks or sizes.rbm_networks
    steps = args.steps or sizes.rbm_steps(args.lr)
    result = run_rbm(args.lr, args.batch_size, steps, networks, settings, float32_noise=sizes.rbm_float32_noise)
    if settings.rank == 0:
        np.savez(args.out / "eigenvalues.npz", eigenvalues=result.x)
    return Outcome({**result.summary(), "steps": steps})


def _ts2x2(args: argparse.Namespace, settings: Settings) -> Outcome:
    networks = args.networks or _sizes(args).ts_networks
    return Outcome(run_ts2x2(args.lr, args.batch_size, args.noise, networks, settings, epochs=args.epochs))


def _rbm_calls(
    args: argparse.Namespace, settings_list: tuple[tuple[float, int], ...], settings: Settings
) -> list[Call]:
    """One ``run_rbm`` call per (α, |B|); ``--steps``, where the command has it, overrides the sizes' step counts."""
    sizes = _sizes(args)
    networks = args.networks or sizes.rbm_networks
    calls = []
    for lr, bs in settings_list:
        steps = getattr(args, "steps", None) or sizes.rbm_steps(lr)
        kwargs = {"figures": False, "float32_noise": sizes.rbm_float32_noise}
        calls.append(
            Call(run_rbm, (lr, bs, steps, networks, settings), kwargs, cost=estimated_seconds("rbm", networks, steps))
        )
    return calls


def _rbm_grid(
    args: argparse.Namespace, settings_list: tuple[tuple[float, int], ...], settings: Settings
) -> list[RBMResult]:
    return run_concurrently(_rbm_calls(args, settings_list, settings), settings)


def _fig2(args: argparse.Namespace, settings: Settings, results: list[RBMResult] | None = None) -> Outcome:
    from ..figures.reproduction import pair_density_figure, rbm_spectra_figure
    from ..laws import GOEPairDensity

    results = results or _rbm_grid(args, FIG2_SETTINGS, settings)
    chosen = [r for r in results if (r.lr, r.batch_size) in FIG2_SETTINGS]
    kappa = chosen[0].kappa
    spectra = {f"α = {r.lr:g}, |B| = {r.batch_size}": MU2 - r.x for r in chosen}
    closeup = chosen[-1]
    i, j = PAIRS[0]
    pair = closeup.pairs[0]
    law = GOEPairDensity(center=MU2 - pair.center, sigma=pair.sigma)
    figures = {
        "fig2_rbm_spectra": rbm_spectra_figure(
            spectra,
            kappa,
            xlabel="λ = μ² − x",
            flagged={f"α = {r.lr:g}, |B| = {r.batch_size}": r.flagged_columns for r in chosen},
        ),
        "fig2_pair_closeup": pair_density_figure(
            MU2 - closeup.x[:, [i, j]],
            {"E12 fit": law},
            title=f"pair κ = {kappa[i]:.3f}",
            xlabel="λ = μ² − x",
            flagged="pair1" in closeup.flagged,
        ),
    }
    section = {f"lr{r.lr:g}_bs{r.batch_size}": r.summary() for r in chosen}
    return Outcome({"fig2": {**section, "flagged": flagged_modes(section)}}, figures)


def _fig3(args: argparse.Namespace, settings: Settings, results: list[RBMResult] | None = None) -> Outcome:
    from ..figures.reproduction import spacing_figure

    results = results or _rbm_grid(args, ALPHA_SCAN + BATCH_SCAN, settings)
    fit = scaling_fit(results)
    x = np.concatenate([r.predictor for r in results])
    y = np.array([p.mean_spacing for r in results for p in r.pairs])
    err = np.array([p.mean_spacing_err for r in results for p in r.pairs])
    normalised = {f"α={r.lr:g}, |B|={r.batch_size}": r.normalised_spacings for r in results}
    fig = spacing_figure(
        normalised,
        (x, y, err, fit["a_fit_mean_spacing"], fit["a_fit_mean_spacing_err"]),
        xlabel=r"$\sqrt{\alpha(\mu^2-\kappa)/|B|}$",
        flagged=np.array([f for r in results for f in r.pair_flags]),
        flagged_series=[f"α={r.lr:g}, |B|={r.batch_size}" for r in results if any(r.pair_flags)],
    )
    pooled = np.concatenate([r.normalised_spacings for r in results])
    measured = {**fit, "mean_s2": float((pooled**2).mean())}
    settings_summary = {f"lr{r.lr:g}_bs{r.batch_size}": r.summary() for r in results}
    flagged = flagged_modes(settings_summary)
    section = {**measured, "settings": settings_summary, "errors": FIT_ERRORS, "flagged": flagged}
    return Outcome({"fig3": section}, {"fig3_spacings": fig}, {**measured, "flagged_modes": float(len(flagged))})


_HIDDEN_STEPS_PER_EPOCH = 10  # HiddenLayerNetwork's default steps_per_epoch (reference_models.hidden_layer)


def _hidden_calls(args: argparse.Namespace, settings: Settings, zs: tuple[HiddenLayerName, ...]) -> list[Call]:
    """One ``run_hidden`` call (its dynamics and density runs) per fixed layer ``z``."""
    sizes = _sizes(args).hidden
    sizes = HiddenSizes(
        dynamics_networks=args.networks or sizes.dynamics_networks,
        dynamics_epochs=getattr(args, "epochs", None) or sizes.dynamics_epochs,
        density_networks=args.networks or sizes.density_networks,
        density_steps=getattr(args, "steps", None) or sizes.density_steps,
    )
    dynamics_steps = sizes.dynamics_epochs * _HIDDEN_STEPS_PER_EPOCH
    cost = estimated_seconds("hidden", sizes.dynamics_networks, dynamics_steps)
    cost += estimated_seconds("hidden", sizes.density_networks, sizes.density_steps)
    return [Call(run_hidden, (z, sizes, settings), cost=cost) for z in zs]


def _hidden_figures(
    args: argparse.Namespace,
    settings: Settings,
    zs: tuple[HiddenLayerName, ...],
    results: dict[HiddenLayerName, dict] | None = None,
) -> Outcome:
    from ..figures.reproduction import dynamics_figure, two_species_figure
    from ..laws import GOEPairDensity, TwoSpeciesPairDensity

    if results is None:
        results = dict(zip(zs, run_concurrently(_hidden_calls(args, settings, zs), settings), strict=True))
    panels = {}
    for z, r in results.items():
        values, one, two = r["density"]
        fits: dict[str, SpectralLaw] = {}
        if one.converged:
            fits["one species (E12)"] = GOEPairDensity(center=one.center, sigma=one.sigma)
        if two.converged:
            fits["two species (E30)"] = TwoSpeciesPairDensity(center=two.center, sigma1=two.sigma1, sigma2=two.sigma2)
        panels[f"Z = {z}"] = (values, fits)
    figures = {
        "fig4_hidden_dynamics": dynamics_figure({f"Z = {z}": r["trajectory"] for z, r in results.items()}),
        "fig5_hidden_density": two_species_figure(
            panels, xlabel="singular value", flagged=[f"Z = {z}" for z, r in results.items() if r["summary"]["flagged"]]
        ),
    }
    summaries = {z: r["summary"] for z, r in results.items()}
    if len(zs) == 1:
        return Outcome({"hidden": summaries[zs[0]]}, figures)
    return Outcome(
        {"hidden": {**summaries, "flagged": [f"{z}/{m}" for z, v in summaries.items() for m in v["flagged"]]}}, figures
    )


def _hidden(args: argparse.Namespace, settings: Settings) -> Outcome:
    outcome = _hidden_figures(args, settings, (args.z,))
    return replace(outcome, summary=outcome.summary["hidden"])


def _scaling(args: argparse.Namespace, settings: Settings) -> Outcome:
    from .scaling import run_scaling

    sizes = _sizes(args)
    ts_networks = args.networks or sizes.ts_networks
    rbm = _rbm_calls(args, ALPHA_SCAN + BATCH_SCAN, settings)
    outcome = run_scaling(rbm, ts_networks, settings, ts_epochs=sizes.ts_epochs)
    return replace(outcome, summary={"scaling": outcome.summary})


def _all(args: argparse.Namespace, settings: Settings) -> Outcome:
    rbm = _rbm_calls(args, ALPHA_SCAN + BATCH_SCAN, settings)
    hidden_calls = _hidden_calls(args, settings, HIDDEN_ZS)
    done = run_concurrently([*rbm, *hidden_calls], settings)  # one queue: the runs of both models share the cores
    results, hidden = done[: len(rbm)], dict(zip(HIDDEN_ZS, done[len(rbm) :], strict=True))
    parts = (
        _fig2(args, settings, results),
        _fig3(args, settings, results),
        _hidden_figures(args, settings, HIDDEN_ZS, hidden),
    )
    return Outcome(
        summary={k: v for p in parts for k, v in p.summary.items()},
        figures={k: v for p in parts for k, v in p.figures.items()},
        metrics={k: v for p in parts for k, v in p.metrics.items()},
    )


_COMMANDS = {
    "all": _all,
    "fig2": _fig2,
    "fig3": _fig3,
    "fig4": lambda a, s: _hidden_figures(a, s, HIDDEN_ZS),
    "fig5": lambda a, s: _hidden_figures(a, s, HIDDEN_ZS),
    "scaling": _scaling,
    "rbm": _rbm,
    "ts2x2": _ts2x2,
    "hidden": _hidden,
}
#: Commands that span several training runs: each opens a parent run that nests them.
NESTED = frozenset(_COMMANDS) - {"rbm", "ts2x2"}
