r"""A spectral density as a histogram on equal bins: the :class:`SpectralDensity` container, the exact density of
given eigenvalues, and the L1 distance of two densities.

The estimators of densities too large to diagonalise, which return the same container:
:mod:`rmt_callbacks.spectral.density`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._checks import at_least

__all__ = ["SpectralDensity", "bin_points", "density_from_eigenvalues", "density_l1", "exact_density"]


@dataclass(frozen=True)
class SpectralDensity:
    """A spectral density as a histogram on ``bins`` equal bins.

    Args:
        edges: bin edges, shape ``(bins + 1,)``, increasing.
        density: density in each bin, shape ``(bins,)``; :math:`\\sum_b \\rho_b\\,\\Delta_b = 1`.
        lambda_min: smallest eigenvalue (exact, or the smallest Ritz value; ``edges[0]`` lies below it).
        lambda_max: largest eigenvalue (exact, or the largest Ritz value; ``edges[-1]`` lies above it).
        method: ``"exact"``, ``"slq"`` or ``"kpm"``: what produced it.

    Example:
        >>> d = density_from_eigenvalues(torch.tensor([0.0, 1.0, 1.0, 2.0]), bins=4)
        >>> d.method, float(d.cdf(d.edges[-1]))
        ('exact', 1.0)
    """

    edges: torch.Tensor
    density: torch.Tensor
    lambda_min: float
    lambda_max: float
    method: str

    @property
    def mass(self) -> torch.Tensor:
        """Probability of each bin, shape ``(bins,)``."""
        return self.density * self.edges.diff()

    def cdf(self, x: torch.Tensor | float) -> torch.Tensor:
        """Cumulative distribution, linear inside each bin, 0 below ``edges[0]`` and 1 above ``edges[-1]``."""
        t = torch.as_tensor(x, dtype=self.edges.dtype, device=self.edges.device)
        cum = torch.cat([self.mass.new_zeros(1), self.mass.cumsum(0)])
        i = torch.searchsorted(self.edges, t.contiguous()).clamp(1, self.edges.numel() - 1)
        frac = ((t - self.edges[i - 1]) / self.edges.diff()[i - 1]).clamp(0.0, 1.0)
        return cum[i - 1] + frac * self.mass[i - 1]

    def to_metrics(self, prefix: str = "") -> dict[str, float]:
        """``lambda_min``, ``lambda_max``, the histogram ``mean`` and ``estimated`` (1.0 unless exact)."""
        centres = 0.5 * (self.edges[1:] + self.edges[:-1])
        mean, estimated = float((centres * self.mass).sum()), float(self.method != "exact")
        stats = {"lambda_min": self.lambda_min, "lambda_max": self.lambda_max, "mean": mean, "estimated": estimated}
        return {f"{prefix}{key}": value for key, value in stats.items()}


def exact_density(eigs: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    r"""Histogram density :math:`\rho_b = \#\{\lambda_j \in [e_b, e_{b+1})\} / (n\,\Delta_b)` of exact eigenvalues.

    The last bin is closed; eigenvalues outside the edges are not counted (the density then integrates to
    less than one).

    Args:
        eigs: eigenvalues, any shape (flattened), ``n`` elements.
        edges: increasing bin edges, shape ``(bins + 1,)``.

    Returns:
        Float64 density, shape ``(bins,)``, on ``edges.device``.

    Raises:
        ValueError: if ``edges`` is not 1-D, increasing, with at least two entries.

    Example:
        >>> exact_density(torch.tensor([0.1, 0.2, 0.7, 1.0]), torch.tensor([0.0, 0.5, 1.0])).tolist()
        [1.0, 1.0]
    """
    ed = _check_edges(edges)
    e = eigs.detach().to(device=ed.device, dtype=torch.float64).flatten()
    return bin_points(e, torch.full_like(e, 1.0 / max(e.numel(), 1)), ed) / ed.diff()


def density_l1(a: SpectralDensity, b_density: torch.Tensor) -> float:
    r""":math:`\sum_b |\rho^a_b - \rho^b_b|\,\Delta_b`, the L1 distance of two densities on the edges of ``a``.

    Example:
        >>> d = density_from_eigenvalues(torch.tensor([0.0, 1.0]), bins=2)
        >>> density_l1(d, exact_density(torch.tensor([0.0, 0.0]), d.edges))
        1.0
    """
    if b_density.shape != a.density.shape:
        raise ValueError(
            f"density_l1: b_density must have shape {tuple(a.density.shape)}, got {tuple(b_density.shape)}"
        )
    diff = a.density - b_density.to(a.density)
    return float((diff.abs() * a.edges.diff()).sum())


def density_from_eigenvalues(eigs: torch.Tensor, *, bins: int = 100) -> SpectralDensity:
    """The ``"exact"`` :class:`SpectralDensity` of given eigenvalues on ``bins`` bins over their range.

    Args:
        eigs: eigenvalues, any shape (flattened), at least one, finite.
        bins: number of bins, at least 1.

    Raises:
        ValueError: if ``eigs`` is empty or not finite, or ``bins < 1``.

    Example:
        >>> d = density_from_eigenvalues(torch.tensor([1.0, 2.0, 3.0]), bins=2)
        >>> d.edges.tolist(), d.mass.tolist()
        ([1.0, 2.0, 3.0], [0.3333333333333333, 0.6666666666666666])
    """
    e = eigs.detach().to(torch.float64).flatten()
    if e.numel() == 0 or not bool(torch.isfinite(e).all()):
        raise ValueError("density_from_eigenvalues: eigs must be non-empty and finite")
    bins = at_least("bins", bins, 1, owner="density_from_eigenvalues")
    lo, hi = float(e.min()), float(e.max())
    pad = 0.5 if hi == lo else 0.0
    edges = torch.linspace(lo - pad, hi + pad, bins + 1, dtype=torch.float64, device=e.device)
    return SpectralDensity(edges, exact_density(e, edges), lo, hi, "exact")


def bin_points(x: torch.Tensor, w: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Mass ``w`` at points ``x`` summed per bin (last bin closed, outside points dropped).

    Example:
        >>> bin_points(torch.tensor([0.2, 1.0, 3.0]), torch.tensor([0.5, 0.25, 0.25]), torch.tensor([0.0, 0.5, 1.0]))
        tensor([0.5000, 0.2500])
    """
    bins = edges.numel() - 1
    x, w = x.to(edges).flatten(), w.to(edges).flatten()
    idx = torch.bucketize(x, edges, right=True) - 1
    idx = torch.where(x == edges[-1], bins - 1, idx)
    inside = (idx >= 0) & (idx < bins)
    return edges.new_zeros(bins).index_add_(0, idx[inside], w[inside])


def _check_edges(edges: torch.Tensor) -> torch.Tensor:
    ed = torch.as_tensor(edges).detach().to(torch.float64)
    if ed.ndim != 1 or ed.numel() < 2 or not bool((ed.diff() > 0).all()):
        raise ValueError(f"edges must be a 1-D increasing tensor of length >= 2, got shape {tuple(ed.shape)}")
    return ed
