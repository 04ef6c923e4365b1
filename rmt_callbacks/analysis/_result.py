r"""What an analysis returns: :class:`MatrixResult`, the analysis names, and rows for a table.

Conventions: :mod:`rmt_callbacks.analysis`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from ..eigensolver import Solver
from ..laws import SpectralLaw
from ..spectral import DENSE_LIMIT, nonstructural_levels

__all__ = [
    "ANALYSES",
    "DEFAULT_ANALYSES",
    "MAX_DENSE_LEVELS",
    "MIN_UNFOLD_LEVELS",
    "Analysis",
    "Levels",
    "MatrixResult",
    "Outcome",
    "is_stepwise",
    "nonstructural",
    "to_rows",
    "validate_analyses",
]

Analysis = Literal["summary", "marchenko_pastur", "semicircle", "spacings", "power_law", "randomize"]
ANALYSES: tuple[str, ...] = ("summary", "marchenko_pastur", "semicircle", "spacings", "power_law", "randomize")
DEFAULT_ANALYSES: tuple[str, ...] = ("summary", "marchenko_pastur", "spacings", "power_law")
r"""What :func:`analyze` and the monitor compute unless told otherwise: everything the Gram spectrum gives, from one
eigendecomposition per matrix. ``"semicircle"`` is left out: it is the law of a *symmetric* random matrix, and for a
weight matrix it needs a second decomposition (of :math:`(W + W^\top)/2`), which would double the cost of every
analysis of a square layer (``benchmarks/RESULTS.md``, section 1), while the spectra of a general :math:`W` that
the papers follow are its Gram spectra; add it to ``analyses`` where a symmetric part means something.
``"randomize"`` is left out for the same reason (a second decomposition, of a shuffled copy of every matrix)."""
MIN_UNFOLD_LEVELS: int = 10
MAX_DENSE_LEVELS: int = DENSE_LIMIT - 1
r"""Largest :math:`\min(M, N)` diagonalised exactly (:data:`~rmt_callbacks.spectral.DENSE_LIMIT` - 1); the density
of a larger matrix is estimated (``method="slq"``), never skipped for its size."""
_RUN_CONSTANT = frozenset({"skipped", "estimated", "mp_ratio", "n_levels"})


def is_stepwise(stat: str, shape: Sequence[int] = ()) -> bool:
    """Whether a statistic of :attr:`MatrixResult.metrics` can change during training (a metric per step) or is
    fixed by the matrix's shape and the analysis's outcome (``skipped``, ``estimated``, ``mp_ratio``, ``n_levels``,
    ``*_converged``: table columns and run tags, not charts). Given the matrix's ``shape`` ``(..., M, N)``, also
    what the shape pins: ``lambda_min`` of a wide matrix (:math:`N > M`: a structural zero) and
    ``mp_lambda_minus`` of a square one (:math:`q = 1`: the lower edge is 0).

    Examples:
        >>> [s for s in ("lambda_max", "mp_ratio", "mp_converged", "surmise_beta") if is_stepwise(s)]
        ['lambda_max', 'surmise_beta']
        >>> is_stepwise("lambda_min", (4, 8)), is_stepwise("lambda_min", (8, 4)), is_stepwise("mp_lambda_minus", (8, 8))
        (False, True, False)
    """
    if stat in _RUN_CONSTANT or stat.endswith("_converged"):
        return False
    m, n = tuple(shape[-2:]) if len(shape) >= 2 else (0, 0)
    return not ((stat == "lambda_min" and n > m > 0) or (stat == "mp_lambda_minus" and m == n > 0))


@dataclass(frozen=True)
class MatrixResult:
    """The analysis of one matrix view.

    Attributes:
        name: the view's name (dotted parameter name, ``.q/.k/.v`` for attention in-projections).
        shape: the view's shape ``(..., M, N)``.
        source: what it came from (``"linear"``, ``"conv"``, ``"embedding"``, ``"attention"``, ``"ensemble"``, …).
        metrics: statistic name to value, e.g. ``{"lambda_max": 2.9, "mp_sigma2": 1.0, ...}``.
        skipped: why the matrix was not analysed, or ``None``.
        failures: analysis name to the reason it failed (its ``converged`` metric is 0).
        spectra: ``"gram"`` ``(..., N)``, ``"symmetric"`` ``(..., N)`` (square only; decomposed in the weights'
            precision, at least float32) and ``"spacings"`` (pooled, 1-D) as float64 CPU tensors, for arrays and
            figures.
        laws: the fitted laws by analysis name, for figure overlays.
        method: what produced the spectrum: ``"eigvalsh"`` (exact levels) or ``"slq"`` (estimated density; then
            ``spectra`` holds ``"density"`` ``(bins,)`` on ``"density_edges"`` ``(bins + 1,)``, pooled over the
            batch, and ``"gram"`` is empty, ``(..., 0)``: there are no exact levels); ``None`` when skipped.
    """

    name: str
    shape: tuple[int, ...]
    source: str
    metrics: dict[str, float]
    skipped: str | None = None
    failures: dict[str, str] = field(default_factory=dict)
    spectra: dict[str, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)
    laws: dict[str, SpectralLaw] = field(default_factory=dict, repr=False, compare=False)
    method: str | None = "eigvalsh"


def nonstructural(result: MatrixResult) -> torch.Tensor:
    """The pooled Gram levels without the :math:`N - M` structural zeros of a wide matrix, flat (may be empty):
    what the monitor keeps over training and the figures draw.

    Examples:
        >>> r = MatrixResult("w", (2, 4), "linear", {}, spectra={"gram": torch.tensor([0.0, 0.0, 1.0, 3.0])})
        >>> nonstructural(r).tolist()
        [1.0, 3.0]
    """
    gram = result.spectra.get("gram")
    if gram is None or gram.numel() == 0:
        return torch.empty(0, dtype=torch.float64)
    return nonstructural_levels(gram.reshape(-1, gram.shape[-1]), result.shape[-2]).flatten()


@dataclass(frozen=True)
class Levels:
    """What the analyses of one view read.

    Attributes:
        gram: the ascending normalised Gram levels ``(B, N)``.
        rows: :math:`M`.
        cols: :math:`N`.
        symmetric: the levels ``(B, N)`` of :math:`(W_b + W_b^\\top)/2` (square views, when asked for), why they
            could not be computed (``str``), or ``None``.
        matrix: the weights ``(B, M, N)`` (detached; a view where possible).
        solver: the ``solver`` of the analysis (:mod:`rmt_callbacks.eigensolver`), for analyses that decompose
            more (``"randomize"``).
    """

    gram: torch.Tensor
    rows: int
    cols: int
    symmetric: torch.Tensor | str | None
    matrix: torch.Tensor
    solver: Solver = "auto"


@dataclass(frozen=True)
class Outcome:
    """What one analysis found: metrics, the fitted law (if it fits one), why it failed, and arrays to keep."""

    metrics: dict[str, float]
    law: SpectralLaw | None = None
    failure: str | None = None
    spectra: dict[str, torch.Tensor] = field(default_factory=dict)


def validate_analyses(analyses: object) -> tuple[str, ...]:
    """Check a non-empty list of names from :data:`ANALYSES`.

    Raises:
        TypeError: not a list of str (a bare str included).
        ValueError: empty, or an unknown name.

    Examples:
        >>> validate_analyses(["summary"])
        ('summary',)
    """
    if isinstance(analyses, str) or not isinstance(analyses, Sequence):
        raise TypeError(f"analyses must be a list of names from {ANALYSES}, got {analyses!r}")
    unknown = [a for a in analyses if a not in ANALYSES]
    if unknown or not analyses:
        raise ValueError(f"analyses must be a non-empty list of names from {ANALYSES}, got {list(analyses)!r}")
    return tuple(dict.fromkeys(analyses))


def to_rows(results: Sequence[MatrixResult]) -> list[dict[str, Any]]:
    """One flat dict per result: ``name``, ``shape``, ``source``, ``method``, ``skip_reason``, ``failures``, metrics.

    ``method`` says what produced the spectrum (``"eigvalsh"``, ``"slq"``; ``None`` when skipped).

    Examples:
        >>> to_rows([MatrixResult("w", (2, 3), "linear", {"skipped": 0.0, "lambda_max": 1.5})])
        [{'name': 'w', 'shape': '(2, 3)', 'source': 'linear', 'method': 'eigvalsh', 'skip_reason': None, 'failures': '', 'skipped': 0.0, 'lambda_max': 1.5}]
    """  # noqa: E501
    rows = []
    for r in results:
        failures = "; ".join(f"{k}: {v}" for k, v in r.failures.items())
        head = {"name": r.name, "shape": str(r.shape), "source": r.source, "method": r.method, "skip_reason": r.skipped}
        rows.append({**head, "failures": failures, **r.metrics})
    return rows
