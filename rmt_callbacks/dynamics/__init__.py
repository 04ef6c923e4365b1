"""Dyson-Brownian-motion observables: trajectory estimators, near-degenerate pairs, jackknife, relaxation checks.

The scaling fit through the origin is :func:`rmt_callbacks.fits.fit_through_origin`.

Conventions (orientation, ordering, the papers' pair spacing): :mod:`rmt_callbacks.spectral`; trajectories and
Langevin time: :mod:`rmt_callbacks.dynamics.estimators`.
"""

from .._moved import moved_names
from .equilibration import Relaxation, check_relaxation, ks_normal
from .estimators import (
    coulomb_repulsion,
    diffusion_coefficient,
    drift,
    fluctuation_width,
    noise_temperature,
    predicted_pair_spacing,
    wishart_repulsion,
)
from .pairs import PairSummary, jackknife, summarize_pair
from .window import level_spacing, normalized, window_statistics

__all__ = [
    "PairSummary",
    "Relaxation",
    "check_relaxation",
    "coulomb_repulsion",
    "diffusion_coefficient",
    "drift",
    "fluctuation_width",
    "jackknife",
    "ks_normal",
    "level_spacing",
    "noise_temperature",
    "normalized",
    "predicted_pair_spacing",
    "summarize_pair",
    "window_statistics",
    "wishart_repulsion",
]


__getattr__ = moved_names(
    __name__,
    {
        "fit_slope_through_origin": "moved to rmt_callbacks.fits.fit_through_origin, the one home of the fits; it "
        "returns a ThroughOriginFit (.slope, .slope_std, .chi2_dof) instead of a tuple"
    },
)
