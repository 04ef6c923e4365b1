"""Lightning callbacks that watch the spectra of weight matrices during training.

:class:`SpectrumMonitor` and :class:`DysonMonitor` (and the helpers the integrations share) are imported on first
use, so that the pure helpers of this package (``_schedule``, ``_selection``) load without Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["DysonMonitor", "OnceMessages", "SpectrumMonitor", "has_lazy_parameters", "is_sharded"]

_LAZY = {
    "DysonMonitor": "rmt_callbacks.monitors.dyson",
    "SpectrumMonitor": "rmt_callbacks.monitors.spectrum",
    "OnceMessages": "rmt_callbacks.monitors._messages",  # what the integrations say, once each
    "is_sharded": "rmt_callbacks.monitors._gather",  # the integrations refuse sharded models
    "has_lazy_parameters": "rmt_callbacks.monitors._selection",  # and check a selection before a run is made
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rmt_callbacks.monitors' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
