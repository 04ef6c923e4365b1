"""rmt-callbacks: watch the random-matrix physics of training as it happens.

Pure functions on tensors live in :mod:`rmt_callbacks.spectral` (spectra, spacings; the conventions),
:mod:`rmt_callbacks.laws` (semicircle, Marchenko–Pastur, surmise, pair densities) and
:mod:`rmt_callbacks.fits`. The Lightning callbacks and the MLflow sinks build on them.

Importing the package is cheap: it loads neither Lightning, MLflow, SciPy nor matplotlib; every name below
is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "DysonMonitor": "rmt_callbacks.monitors",
    "SpectrumMonitor": "rmt_callbacks.monitors",
    "analyze": "rmt_callbacks.analysis",
    "compare": "rmt_callbacks.comparison",
    "watch": "rmt_callbacks.integrations.loop",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rmt_callbacks' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
