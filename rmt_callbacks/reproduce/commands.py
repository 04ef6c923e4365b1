"""What each ``rmt-reproduce`` subcommand runs, at ``--quick`` or ``--full`` sizes."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .hidden import HiddenSizes, run_hidden
from .rbm import MU2, PAIRS, RBMResult, run_rbm, scaling_fit
from .runs import Settings, write_summary
from .teacher_student import run_ts2x2

__all__ = ["ALPHA_SCAN", "BATCH_SCAN", "Sizes", "run"]

#: The papers' RBM grid (paper.md 3.5): α scan at |B| = 16 and |B| scan at α = 0.1.
ALPHA_SCAN = ((0.01, 16), (0.02, 16), (0.04, 16), (0.06, 16), (0.08, 16), (0.1, 16))
BATCH_SCAN = ((0.1, 4), (0.1, 8), (0.1, 32), (0.1, 64))
FIG2_SETTINGS = ((0.01, 16), (0.04, 16), (0.08, 16))


@dataclass(frozen=True)
class Sizes:
    """Ensemble sizes and lengths. ``quick`` finishes ``all`` in minutes on two CPU cores."""

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
    rbm_steps_times_lr=250.0,
    rbm_min_steps=4000,
    rbm_max_steps=20_000,
    rbm_float32_noise=True,
    ts_networks=500,
    ts_epochs=2,
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


def _settings(args: argparse.Namespace, out: Path | None = None) -> Settings:
    return Settings(
        out=out or args.out,
        seed=args.seed,
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        progress=not args.no_progress,
        accelerator=args.accelerator,
    )


def _sizes(args: argparse.Namespace) -> Sizes:
    return FULL if args.full else QUICK


def run(args: argparse.Namespace) -> Path:
    """Run the subcommand in ``args``; return the path of the ``summary.json`` it wrote."""
    start = time.perf_counter()
    summary = _COMMANDS[args.command](args)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    summary["sizes"] = "full" if args.full else "quick"
    return write_summary(args.out, summary)


def _rbm(args: argparse.Namespace) -> dict[str, Any]:
    sizes = _sizes(args)
    networks = args.networks or sizes.rbm_networks
    steps = args.steps or sizes.rbm_steps(args.lr)
    result = run_rbm(args.lr, args.batch_size, steps, networks, _settings(args), float32_noise=sizes.rbm_float32_noise)
    np.savez(args.out / "eigenvalues.npz", eigenvalues=result.x)
    return {**result.summary(), "steps": steps}


def _ts2x2(args: argparse.Namespace) -> dict[str, Any]:
    networks = args.networks or _sizes(args).ts_networks
    return run_ts2x2(args.lr, args.batch_size, args.noise, networks, _settings(args), epochs=args.epochs)


def _hidden(args: argparse.Namespace) -> dict[str, Any]:
    return _run_hidden_figures(args, (args.z,))["hidden"]


def _rbm_grid(
    args: argparse.Namespace, settings_list: tuple[tuple[float, int], ...], settings: Settings | None = None
) -> list[RBMResult]:
    sizes = _sizes(args)
    networks = args.networks or sizes.rbm_networks
    settings = settings or _settings(args, args.out / "runs")
    return [
        run_rbm(lr, bs, sizes.rbm_steps(lr), networks, settings, figures=False, float32_noise=sizes.rbm_float32_noise)
        for lr, bs in settings_list
    ]


def _fig2(args: argparse.Namespace, results: list[RBMResult] | None = None) -> dict[str, Any]:
    from .figures import pair_density_figure, rbm_spectra_figure

    results = results or _rbm_grid(args, FIG2_SETTINGS)
    chosen = [r for r in results if (r.lr, r.batch_size) in FIG2_SETTINGS]
    kappa = chosen[0].kappa
    spectra = {f"α = {r.lr:g}, |B| = {r.batch_size}": MU2 - r.x for r in chosen}
    fig = rbm_spectra_figure(spectra, kappa, xlabel="λ = μ² − x")
    fig.savefig(args.out / "fig2_rbm_spectra.png", dpi=120)
    closeup = chosen[-1]
    i, j = PAIRS[0]
    pair = closeup.pairs[0]
    from ..laws import GOEPairDensity

    law = GOEPairDensity(center=MU2 - pair.center, sigma=pair.sigma)
    fig = pair_density_figure(
        MU2 - closeup.x[:, [i, j]], {"E12 fit": law}, title=f"pair κ = {kappa[i]:.3f}", xlabel="λ = μ² − x"
    )
    fig.savefig(args.out / "fig2_pair_closeup.png", dpi=120)
    return {"fig2": {f"lr{r.lr:g}_bs{r.batch_size}": r.summary() for r in chosen}}


def _fig3(args: argparse.Namespace, results: list[RBMResult] | None = None) -> dict[str, Any]:
    from .figures import spacing_figure

    results = results or _rbm_grid(args, ALPHA_SCAN + BATCH_SCAN)
    fit = scaling_fit(results)
    x = np.concatenate([r.predictor for r in results])
    y = np.array([p.mean_spacing for r in results for p in r.pairs])
    err = np.array([p.mean_spacing_err for r in results for p in r.pairs])
    normalised = {f"α={r.lr:g}, |B|={r.batch_size}": r.normalised_spacings for r in results}
    fig = spacing_figure(
        normalised,
        (x, y, err, fit["a_fit_mean_spacing"], fit["a_fit_mean_spacing_err"]),
        xlabel=r"$\sqrt{\alpha(\mu^2-\kappa)/|B|}$",
    )
    fig.savefig(args.out / "fig3_spacings.png", dpi=120)
    pooled = np.concatenate([r.normalised_spacings for r in results])
    return {
        "fig3": {
            **fit,
            "mean_s2": float((pooled**2).mean()),
            "settings": {f"lr{r.lr:g}_bs{r.batch_size}": r.summary() for r in results},
        }
    }


def _run_hidden_figures(args: argparse.Namespace, zs: tuple[str, ...]) -> dict[str, Any]:
    from ..laws import GOEPairDensity, TwoSpeciesPairDensity
    from .figures import dynamics_figure, two_species_figure

    sizes = _sizes(args).hidden
    sizes = HiddenSizes(
        dynamics_networks=args.networks or sizes.dynamics_networks,
        dynamics_epochs=getattr(args, "epochs", None) or sizes.dynamics_epochs,
        density_networks=args.networks or sizes.density_networks,
        density_steps=getattr(args, "steps", None) or sizes.density_steps,
    )
    results = {z: run_hidden(z, sizes, _settings(args, args.out / "runs")) for z in zs}
    args.out.mkdir(parents=True, exist_ok=True)
    dynamics_figure({f"Z = {z}": r["trajectory"] for z, r in results.items()}).savefig(
        args.out / "fig4_hidden_dynamics.png", dpi=120
    )
    panels = {}
    for z, r in results.items():
        values, one, two = r["density"]
        fits = {}
        if one.converged:
            fits["one species (E12)"] = GOEPairDensity(center=one.center, sigma=one.sigma)
        if two.converged:
            fits["two species (E30)"] = TwoSpeciesPairDensity(center=two.center, sigma1=two.sigma1, sigma2=two.sigma2)
        panels[f"Z = {z}"] = (values, fits)
    two_species_figure(panels, xlabel="singular value").savefig(args.out / "fig5_hidden_density.png", dpi=120)
    summaries = {z: r["summary"] for z, r in results.items()}
    return {"hidden": summaries if len(zs) > 1 else summaries[zs[0]]}


def _scaling(args: argparse.Namespace) -> dict[str, Any]:
    from .scaling import run_scaling

    def grid(settings: Settings) -> list[RBMResult]:
        return _rbm_grid(args, ALPHA_SCAN + BATCH_SCAN, settings)

    sizes = _sizes(args)
    ts_networks = args.networks or sizes.ts_networks
    return {"scaling": run_scaling(grid, ts_networks, _settings(args), ts_epochs=sizes.ts_epochs)}


def _all(args: argparse.Namespace) -> dict[str, Any]:
    results = _rbm_grid(args, ALPHA_SCAN + BATCH_SCAN)
    return {**_fig2(args, results), **_fig3(args, results), **_run_hidden_figures(args, ("mat_1", "mat_2"))}


_COMMANDS = {
    "all": _all,
    "fig2": _fig2,
    "fig3": _fig3,
    "fig4": lambda a: _run_hidden_figures(a, ("mat_1", "mat_2")),
    "fig5": lambda a: _run_hidden_figures(a, ("mat_1", "mat_2")),
    "scaling": _scaling,
    "rbm": _rbm,
    "ts2x2": _ts2x2,
    "hidden": _hidden,
}
