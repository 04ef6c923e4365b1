r"""Spectra of weight matrices: the conventions every part of rmt-callbacks follows.

This docstring is the single place where the project's conventions are fixed; every other module refers
here instead of restating them.

**Orientation.** A weight matrix is a tensor ``W`` of shape ``(..., M, N)``: PyTorch's ``(out, in)`` for
``nn.Linear``. Leading dimensions are a batch (an *ensemble* of independent matrices, e.g. ``(E, M, N)``)
and are analysed matrix by matrix, never mixed.

**Gram matrix and its normalisation.** ``kind="gram"`` studies

.. math::

    X = \frac{1}{M} W^\top W \in \mathbb{R}^{N \times N},

so that a matrix with i.i.d. entries of variance :math:`\sigma^2` has a Marchenko–Pastur spectrum with
parameters :math:`(\sigma^2, q)`. ``esd`` returns all :math:`N` eigenvalues; when :math:`N > M` the
:math:`N - M` structural zeros are exact zeros (the smaller Gram matrix is diagonalised and padded). The
papers' :math:`X = W^\top W` (arXiv:2407.16427) is ``M * esd(W)``; :func:`esd` accepts ``normalize=False``
for it.

**Aspect ratio.** :math:`q = N / M` (in over out). For :math:`q > 1` the Marchenko–Pastur law has an atom of
mass :math:`1 - 1/q` at zero.

**Singular values.** ``kind="singular"`` gives the :math:`\min(M, N)` singular values of ``W`` itself,
unnormalised; :math:`s_i^2 = M x_i` for the non-zero Gram eigenvalues.

**Symmetric part.** ``kind="symmetric"`` gives the eigenvalues of :math:`(W + W^\top)/2` of a square
``W``: the matrix whose eigenvalues obey Dyson Brownian motion in the harmonic picture (docs/science.md, E5).

**Ordering.** Every spectrum is returned in ascending order along the last dimension. (The papers list the
eigenvalues of :math:`W^\top W` in descending order; reverse with ``.flip(-1)`` where that is needed.)

**Dyson index.** :math:`\beta = 1` for real weights (GOE class), :math:`\beta = 2` for complex Hermitian
(GUE), :math:`\beta = 4` for quaternion (GSE); :math:`\beta = 0` is uncorrelated levels (Poisson). Fits
treat :math:`\beta` as a continuous number (the generalised surmise).

**Spacings and unfolding.** Raw spacings are :math:`S_i = \lambda_{i+1} - \lambda_i` of the ascending
spectrum. *Unfolding* maps the spectrum through a smooth fit :math:`\bar N(\lambda)` of its counting function
:math:`N(\lambda) = \#\{\lambda_j \le \lambda\}` (a least-squares polynomial of a given degree in the
standardised variable), so that the unfolded levels have unit mean density; unfolded spacings
:math:`s_i = \bar N(\lambda_{i+1}) - \bar N(\lambda_i)` are then rescaled to mean one per matrix. Spacing
*ratios* :math:`r_i = \min(S_i, S_{i+1}) / \max(S_i, S_{i+1})` need no unfolding.

**Near-degenerate pairs** (papers' definition, docs/science.md#pair-density): for a pair of levels that share a target
value, :math:`S = |x_i - x_{i+1}|` is taken per network and pooled over the ensemble; the normalised spacing
is :math:`s = S / \langle S \rangle`, and :math:`\langle S \rangle` is the ensemble mean (or the papers'
histogram-weighted mean).

**Past the dense eigensolver.** For :math:`\min(M, N) \ge` :data:`DENSE_LIMIT` the Gram density is estimated
from matrix-vector products (:func:`estimate_density`, stochastic Lanczos quadrature) instead of diagonalised;
:class:`SpectralDensity` records which method produced it. Below it, many equal-shape matrices are decomposed
together, in stacks of bounded memory, by :func:`~rmt_callbacks.spectral.stacks.stacked_levels`.

**Device and dtype.** Every computation runs on the input's device. Eigen-decompositions of float16 /
bfloat16 inputs are carried out in float32; results keep float32 or float64.

References: arXiv:2412.20496, arXiv:2407.16427.
"""

from .density import (
    DENSE_LIMIT,
    SpectralDensity,
    density_from_eigenvalues,
    density_l1,
    estimate_density,
    exact_density,
)
from .esd import esd, validate_matrix
from .matrices import MatrixView, iter_matrices, matrices_of, module_kind
from .resolution import numerical_rank, rank_cut, rounding_epsilon, spacing_resolution
from .spacing import (
    freedman_diaconis_edges,
    histogram_mean,
    mean_spacing_ratio,
    pair_spacings,
    spacing_ratios,
    spacings,
    unfolded_spacings,
)
from .summary import nonstructural_levels, spectral_norm, spectrum_summary, stable_rank

__all__ = [
    "DENSE_LIMIT",
    "MatrixView",
    "SpectralDensity",
    "density_from_eigenvalues",
    "density_l1",
    "esd",
    "estimate_density",
    "exact_density",
    "freedman_diaconis_edges",
    "histogram_mean",
    "iter_matrices",
    "matrices_of",
    "mean_spacing_ratio",
    "module_kind",
    "nonstructural_levels",
    "numerical_rank",
    "pair_spacings",
    "rank_cut",
    "rounding_epsilon",
    "spacing_ratios",
    "spacing_resolution",
    "spacings",
    "spectral_norm",
    "spectrum_summary",
    "stable_rank",
    "unfolded_spacings",
    "validate_matrix",
]
