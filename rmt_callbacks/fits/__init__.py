"""Fits of the spectral laws to data, and goodness-of-fit distances.

Every fit is a pure function of a tensor of any shape (pooled) that returns a frozen result dataclass with
named parameters, the KS distance to the fitted law, ``n``, an honest ``converged`` flag and a ``message``;
``to_metrics(prefix)`` turns it into scalar metrics and ``law()`` into the fitted
:class:`~rmt_callbacks.laws.SpectralLaw`. Non-finite input raises ``ValueError``; fewer than
:data:`MIN_VALUES` values (or all-equal values) give a failed result, never an exception. SciPy (the
optimisers) is imported on first use only.

Curve fits (:func:`fit_relaxation`, :func:`fit_through_origin`) fit a curve to points rather than a law to a
sample: their results (:class:`CurveFit`) carry the parameters, their standard errors, ``n``, ``converged`` and a
``message``, but no KS distance and no law; they take tensors, arrays or sequences.

Conventions (orientation, normalisation, β): :mod:`rmt_callbacks.spectral`.
"""

from ._result import (
    MIN_VALUES,
    CurveFit,
    FitResult,
    MarchenkoPasturFit,
    PairDensityFit,
    SemicircleFit,
    SurmiseFit,
    TwoSpeciesFit,
)
from .distances import ks_distance, l1_distance
from .marchenko_pastur import fit_marchenko_pastur
from .pair_density import fit_pair_density, fit_two_species
from .power_law import ParetoTail, PowerLawFit, fit_power_law
from .relaxation import RelaxationFit, fit_relaxation
from .scaling import ThroughOriginFit, fit_through_origin
from .semicircle import fit_semicircle
from .surmise import fit_surmise
from .truncated_power_law import TruncatedPowerLaw, TruncatedPowerLawFit, fit_truncated_power_law

__all__ = [
    "MIN_VALUES",
    "CurveFit",
    "FitResult",
    "MarchenkoPasturFit",
    "PairDensityFit",
    "ParetoTail",
    "PowerLawFit",
    "RelaxationFit",
    "SemicircleFit",
    "SurmiseFit",
    "ThroughOriginFit",
    "TruncatedPowerLaw",
    "TruncatedPowerLawFit",
    "TwoSpeciesFit",
    "fit_marchenko_pastur",
    "fit_pair_density",
    "fit_power_law",
    "fit_relaxation",
    "fit_semicircle",
    "fit_surmise",
    "fit_through_origin",
    "fit_truncated_power_law",
    "fit_two_species",
    "ks_distance",
    "l1_distance",
]
