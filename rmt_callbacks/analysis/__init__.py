r"""The per-matrix analysis shared by :class:`~rmt_callbacks.SpectrumMonitor` and :func:`analyze`.

Each selected parameter becomes one or more :class:`~rmt_callbacks.spectral.MatrixView` of shape
``(..., M, N)``; leading dimensions (an ensemble of networks, the kernel positions of a convolution) are a
batch of :math:`B` matrices. Conventions (orientation, Gram normalisation, ascending order):
:mod:`rmt_callbacks.spectral`. Per view, with :math:`X_b = W_b^\top W_b / M`:

* ``"summary"``: :func:`~rmt_callbacks.spectral.spectrum_summary` of each :math:`X_b`, averaged over the batch
  (``lambda_min``, ``lambda_max``, ``lambda_mean``, ``spectral_norm``, ``stable_rank``, ``mean_spacing_ratio``;
  the ratio is left out below its minimum count of ratios), and ``rank``, ``rank_loss``, ``spectral_entropy``;
* ``"marchenko_pastur"``: the Marchenko–Pastur fit of the non-structural eigenvalues pooled over the batch, ratio
  :math:`q = N/M` (``mp_…``, with ``n_levels``);
* ``"power_law"``: the power-law fit of the tail of the pooled non-structural levels and WeightWatcher's norms
  (``pl_…``, ``log_norm``, ``log_spectral_norm``, ``log_alpha_norm``; :mod:`rmt_callbacks.analysis._tails`);
* ``"randomize"`` (not a default): the levels of a seeded element-shuffled copy (``rand_…``: correlation traps,
  the KS distance between the two spectra);
* ``"semicircle"`` (not a default; ask for it): for square :math:`W`, the semicircle fit of the pooled
  eigenvalues of :math:`(W_b + W_b^\top)/2` (``semicircle_…``);
* ``"spacings"``: the Wigner-surmise fit of the pooled normalised spacings of the non-structural Gram levels,
  the spikes (levels above the Marchenko–Pastur spike threshold) left out (``surmise_…``). A matrix with at least
  :data:`MIN_UNFOLD_LEVELS` levels is unfolded on its own (polynomial degree :math:`\min(5, \lfloor n/10
  \rfloor)`, 10% of the levels trimmed at each edge) in the variable
  :math:`\sqrt{\lambda}` (the singular values over :math:`\sqrt M`: unfolding is invariant under a smooth
  monotone map, and this one keeps the density finite at the hard edge of :math:`q = 1`); smaller matrices of a
  batch have their raw spacings divided by the batch mean at each level index (the papers' ensemble
  normalisation :math:`s = S / \langle S \rangle`).

.. math::

    \bar m = \frac{1}{B} \sum_{b=1}^{B} m(X_b),\qquad
    \text{fit}\Big(\bigcup_{b=1}^{B} \operatorname{spec} X_b\Big).

**Cost and memory.** The Gram spectra of equal-shape matrices (over all views of a call) are decomposed together
in stacks of bounded bytes (:mod:`rmt_callbacks.spectral.stacks`: one or two copies of the largest matrix or of
8 MiB; on a CPU by torch's or scipy's LAPACK, as the ``solver`` argument's fixed rule picks for the matrix size:
:mod:`rmt_callbacks.eigensolver`, so a repeated analysis gives the same bits); the eigensolver is all but the whole
cost: one decomposition per matrix, two per square matrix with ``"semicircle"``.

**Past the dense eigensolver.** A view with :math:`\min(M, N) \ge` :data:`~rmt_callbacks.spectral.DENSE_LIMIT`
(8192) is not diagonalised: its Gram density is estimated by stochastic Lanczos quadrature
(:func:`~rmt_callbacks.spectral.estimate_density`, fixed probe seed, no global random numbers) and the result's
``method`` is ``"slq"`` instead of ``"eigvalsh"``. It gets what the estimate supports: ``lambda_max`` (the
largest Ritz value, converged to the top edge from below), ``lambda_min`` (smallest Ritz value; 0 when
:math:`N > M`), ``lambda_mean`` :math:`= \|W\|_F^2/(MN)` (exact), ``spectral_norm`` :math:`= \sqrt{M
\lambda_{\max}}`, ``stable_rank`` :math:`= N \lambda_{\rm mean}/\lambda_{\max}`, ``estimated = 1``, and the
density (``spectra["density"]`` on ``spectra["density_edges"]``, pooled over the batch). Fits and spacings need
the exact levels: they fail with that reason (``converged = 0``). No matrix is skipped for its size.

A matrix that cannot be analysed (not a real floating tensor, NaN/Inf, fewer than 2 rows or columns) is
*skipped* with a reason; the finiteness check is one sum over the stored entries, so a huge (even expanded,
stride-0) matrix full of NaN is refused without a dense pass or a mask. An analysis that fails records
``{prefix}converged = 0`` (``mp_``, ``surmise_``, ``semicircle_``, ``pl_``) and the reason. Nothing here raises on
bad weights. Pure torch: no Lightning, MLflow or matplotlib.

References: arXiv:2412.20496, arXiv:2407.16427; Martin & Mahoney, arXiv:1810.01075 (post-hoc ``analyze``).
"""

from __future__ import annotations

from ._analyses import TABLE
from ._engine import analyze, analyze_views
from ._report import ModelAnalysis
from ._result import (
    ANALYSES,
    DEFAULT_ANALYSES,
    MAX_DENSE_LEVELS,
    MIN_UNFOLD_LEVELS,
    Analysis,
    Levels,
    MatrixResult,
    Outcome,
    is_stepwise,
    nonstructural,
    to_rows,
    validate_analyses,
)
from ._views import invalid_reason, resolve_views, skip_reason

__all__ = [
    "ANALYSES",
    "DEFAULT_ANALYSES",
    "MAX_DENSE_LEVELS",
    "MIN_UNFOLD_LEVELS",
    "TABLE",
    "Analysis",
    "Levels",
    "MatrixResult",
    "ModelAnalysis",
    "Outcome",
    "analyze",
    "analyze_views",
    "invalid_reason",
    "is_stepwise",
    "nonstructural",
    "resolve_views",
    "skip_reason",
    "to_rows",
    "validate_analyses",
]
