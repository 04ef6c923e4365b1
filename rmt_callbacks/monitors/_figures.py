r"""From a :class:`~rmt_callbacks.analysis.MatrixResult` to the panels of its figure.

The sinks draw only arrays; here the fitted laws are evaluated on a grid. Panels, left to right:

* the pooled Gram spectrum with the fitted Marchenko–Pastur density (its continuous part; the atom of mass
  :math:`1 - 1/q` at zero for :math:`q > 1` shows as the histogram's first bar);
* for a square matrix, the pooled spectrum of the symmetric part with the fitted semicircle;
* the pooled normalised spacings with Poisson :math:`e^{-s}`, the GOE surmise
  :math:`\tfrac{\pi s}{2} e^{-\pi s^2/4}` and, when fitted, the surmise of the fitted :math:`\beta`.

References: arXiv:2412.20496; Mehta, *Random Matrices* (surmise).
"""

from __future__ import annotations

import math

import torch

from ..analysis import MatrixResult
from ..laws import PoissonSpacing, SpectralLaw, WignerSurmise
from ..sinks.plots import Curve, Panel

__all__ = ["GRID_POINTS", "panels_of"]

GRID_POINTS: int = 400
_SPACING_MAX: float = 4.0


def _curve(label: str, law: SpectralLaw, lo: float, hi: float) -> Curve:
    """``law.pdf`` on a grid over its support clipped to ``[lo, hi]``."""
    s_lo, s_hi = law.support
    a, b = max(lo, s_lo), min(hi, s_hi)
    if not (math.isfinite(a) and math.isfinite(b)) or b <= a:
        a, b = lo, hi
    x = torch.linspace(a, b, GRID_POINTS, dtype=torch.float64)
    return Curve(label, x.numpy(), law.pdf(x).numpy())


def _range(values: torch.Tensor) -> tuple[float, float]:
    finite = values[torch.isfinite(values)]
    if finite.numel() == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    pad = 0.05 * (hi - lo) or 0.5
    return lo - pad, hi + pad


def _law_panel(title: str, values: torch.Tensor, law: SpectralLaw | None, label: str) -> Panel:
    lo, hi = _range(values)
    curves = [_curve(label, law, lo, hi)] if law is not None else []
    return Panel(title, values.numpy(), curves, xlabel=r"eigenvalue $\lambda$")


def _spacing_panel(values: torch.Tensor, fitted: SpectralLaw | None) -> Panel:
    curves = [_curve("Poisson", PoissonSpacing(), 0.0, _SPACING_MAX)]
    curves.append(_curve(r"GOE surmise $\beta=1$", WignerSurmise(beta=1), 0.0, _SPACING_MAX))
    if fitted is not None:
        beta = getattr(fitted, "beta", math.nan)
        curves.append(_curve(f"fitted surmise $\\beta={beta:.2f}$", fitted, 0.0, _SPACING_MAX))
    return Panel("level spacings", values.numpy(), curves, xlabel="spacing $s$", value_range=(0.0, _SPACING_MAX))


def panels_of(result: MatrixResult) -> list[Panel]:
    """The histogram panels of one analysed matrix (empty for a skipped one).

    Args:
        result: an analysis result with its spectra and fitted laws.

    Returns:
        Up to three panels: Gram spectrum, symmetric part (square matrices), spacings.

    References: arXiv:2412.20496.

    Examples:
        >>> r = MatrixResult("w", (3, 3), "linear", {}, spectra={"gram": torch.tensor([0.5, 1.0, 2.0])})
        >>> [p.title for p in panels_of(r)]
        ['Gram spectrum $W^\\\\top W / M$']
    """
    if result.skipped is not None or "gram" not in result.spectra or result.spectra["gram"].numel() == 0:
        return []
    spectra, laws = result.spectra, result.laws
    panels = [
        _law_panel(
            r"Gram spectrum $W^\top W / M$",
            spectra["gram"].flatten(),
            laws.get("marchenko_pastur"),
            "Marchenko–Pastur fit",
        )
    ]
    if "symmetric" in spectra:
        panels.append(
            _law_panel(
                r"symmetric part $(W + W^\top)/2$",
                spectra["symmetric"].flatten(),
                laws.get("semicircle"),
                "semicircle fit",
            )
        )
    if "spacings" in spectra:
        panels.append(_spacing_panel(spectra["spacings"].flatten(), laws.get("spacings")))
    return panels
