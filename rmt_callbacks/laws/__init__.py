"""Spectral laws: one small frozen class per law, each with ``pdf(x)``, ``cdf(x)`` and ``support``.

Torch tensors in, torch tensors out (float32 stays float32, everything else becomes float64); parameters
are validated at construction. Conventions (orientation, normalisation, β): :mod:`rmt_callbacks.spectral`.
"""

from ._base import SpectralLaw
from .marchenko_pastur import MarchenkoPastur
from .pair_density import GOEPairDensity, TwoSpeciesPairDensity
from .semicircle import WignerSemicircle
from .surmise import (
    MEAN_SPACING_RATIO,
    MEAN_SPACING_RATIO_SURMISE,
    BetaSurmise,
    PoissonSpacing,
    WignerSurmise,
    surmise_constants,
)

__all__ = [
    "MEAN_SPACING_RATIO",
    "MEAN_SPACING_RATIO_SURMISE",
    "BetaSurmise",
    "GOEPairDensity",
    "MarchenkoPastur",
    "PoissonSpacing",
    "SpectralLaw",
    "TwoSpeciesPairDensity",
    "WignerSemicircle",
    "WignerSurmise",
    "surmise_constants",
]
