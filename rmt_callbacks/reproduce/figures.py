"""The reproduction's figures: matplotlib only here, on the Agg backend.

The RBM spectra and spacing figures follow arXiv:2407.16427's (docs/science.md#gaussian-rbm); the hidden-layer
figures are Figs. 4–5 of arXiv:2412.20496 (docs/science.md#hidden-layer).

Every function takes plain arrays and fitted laws and returns a closed-over ``Figure``; nothing is shown or saved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from ..laws import BetaSurmise, PoissonSpacing, SpectralLaw, WignerSurmise

__all__ = ["dynamics_figure", "pair_density_figure", "rbm_spectra_figure", "spacing_figure", "two_species_figure"]


def _curve(law: SpectralLaw, lo: float, hi: float, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    x = torch.linspace(lo, hi, n, dtype=torch.float64)
    return x.numpy(), law.pdf(x).numpy()


def _fd_bins(values: np.ndarray) -> int:
    q75, q25 = np.percentile(values, [75, 25])
    width = 2.0 * (q75 - q25) / len(values) ** (1 / 3)
    span = float(values.max() - values.min())
    return max(10, min(400, int(span / width))) if width > 0 else 50


def rbm_spectra_figure(spectra: Mapping[str, np.ndarray], targets: Sequence[float], *, xlabel: str) -> Figure:
    """Pooled spectral histograms, one panel per setting, with dashed lines at the targets (arXiv:2407.16427).

    Each value is an ``(E, n)`` array of one setting's levels. As in the papers, the bin width is the
    Freedman–Diaconis width of the first level's distribution, applied over the pooled range.
    """
    fig, axes = plt.subplots(len(spectra), 1, figsize=(6, 2.2 * len(spectra)), sharex=True, squeeze=False)
    for ax, (label, values) in zip(axes[:, 0], spectra.items(), strict=True):
        q75, q25 = np.percentile(values[:, 0], [75, 25])
        width = 2.0 * (q75 - q25) / len(values) ** (1 / 3)
        pooled = values.ravel()
        bins = max(10, min(600, int((pooled.max() - pooled.min()) / width))) if width > 0 else 100
        ax.hist(pooled, bins=bins, density=True, color="tab:blue", alpha=0.7)
        for t in targets:
            ax.axvline(t, color="k", ls="--", lw=0.8)
        ax.set_ylabel("density")
        ax.set_title(label, fontsize=9)
    axes[-1, 0].set_xlabel(xlabel)
    fig.tight_layout()
    return fig


def pair_density_figure(values: np.ndarray, fits: Mapping[str, SpectralLaw], *, title: str, xlabel: str) -> Figure:
    """Histogram of one pair's pooled levels with fitted densities overlaid (E12, and E30 where given)."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    values = values.ravel()
    ax.hist(values, bins=_fd_bins(values), density=True, color="tab:gray", alpha=0.6, label="ensemble")
    lo, hi = float(values.min()), float(values.max())
    for (label, law), ls in zip(fits.items(), ("--", "-", ":"), strict=False):
        ax.plot(*_curve(law, lo, hi), ls=ls, lw=1.5, label=label)
    ax.set(xlabel=xlabel, ylabel="density", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def two_species_figure(panels: Mapping[str, tuple[np.ndarray, Mapping[str, SpectralLaw]]], *, xlabel: str) -> Figure:
    """One panel per case: histogram and the one- and two-species fits (arXiv:2412.20496, Fig. 5)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for ax, (title, (values, fits)) in zip(axes[0], panels.items(), strict=True):
        values = values.ravel()
        ax.hist(values, bins=_fd_bins(values), density=True, color="tab:gray", alpha=0.6, label="ensemble")
        lo, hi = float(values.min()), float(values.max())
        for (label, law), ls in zip(fits.items(), ("--", "-"), strict=False):
            ax.plot(*_curve(law, lo, hi), ls=ls, lw=1.5, label=label)
        ax.set(xlabel=xlabel, ylabel="density", title=title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def spacing_figure(
    normalised: Mapping[str, np.ndarray],
    scaling: tuple[np.ndarray, np.ndarray, np.ndarray, float, float],
    *,
    xlabel: str,
) -> Figure:
    """Left: normalised spacings of every setting against the surmise; right: ⟨S⟩ against the predictor.

    ``scaling`` is ``(x, mean_spacing, error, slope, slope_error)``.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    grid = np.linspace(0.0, 4.0, 400)
    for label, s in normalised.items():
        left.hist(s.ravel(), bins=40, range=(0, 4), density=True, histtype="step", lw=0.8, label=label)
    for law, name, ls in (
        (WignerSurmise(beta=1), "β = 1 surmise", "-"),
        (BetaSurmise(beta=2.0), "β = 2", ":"),
        (PoissonSpacing(), "Poisson", "--"),
    ):
        left.plot(grid, law.pdf(torch.from_numpy(grid)).numpy(), "k", ls=ls, lw=1.5, label=name)
    left.set(xlabel=r"$s = S/\langle S\rangle$", ylabel="P(s)", xlim=(0, 4))
    left.legend(fontsize=6, ncol=2)
    x, y, err, a, da = scaling
    right.errorbar(x, y, yerr=err, fmt="o", ms=3, label=r"$\langle S\rangle$")
    line = np.linspace(0.0, float(x.max()) * 1.05, 50)
    right.plot(line, a * line, "k--", label=f"fit: a = {a:.3f} ± {da:.3f}")
    right.set(xlabel=xlabel, ylabel=r"$\langle S\rangle$", xlim=(0, None), ylim=(0, None))
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


def dynamics_figure(
    panels: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    *,
    shown: int = 20,
) -> Figure:
    """Squared singular values against epoch: ``shown`` networks thin, the ensemble mean solid, fits dashed.

    Each panel is ``(epochs (T,), squared singular values (E, T, 2), fitted curves (T, 2))`` (arXiv:2412.20496, Fig. 4).
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for ax, (title, (t, xi, fitted)) in zip(axes[0], panels.items(), strict=True):
        for k, color in enumerate(("tab:blue", "tab:orange")):
            ax.plot(t, xi[:shown, :, k].T, color=color, alpha=0.15, lw=0.6)
            ax.plot(t, xi[:, :, k].mean(0), color=color, lw=2.0, label=f"mean, mode {k + 1}")
            ax.plot(t, fitted[:, k], "k--", lw=1.0)
        ax.set(xlabel="epoch", ylabel=r"squared singular value $\xi$", title=title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
