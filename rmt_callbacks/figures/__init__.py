r"""All of the package's plotting: the figures the monitor logs, :func:`esd_figure`, and ``rmt-reproduce``'s.

The log-log view of the empirical spectral density (ESD) is how heavy tails are read (Martin & Mahoney,
arXiv:1810.01075): the levels on log-spaced bins, the fitted Marchenko–Pastur density, and the fitted power-law
tail :math:`p(x) \propto x^{-\alpha}` from :math:`x_{\min}` (``"power_law"`` analysis) drawn as a density of all
the levels. :func:`esd_figure` draws it, or every panel the monitor logs, for any analysed matrix.

Its modules, each importing only the pure layers (spectral, laws, fits, analysis) and matplotlib (the monitors and
``rmt-reproduce`` import them by name; each loads matplotlib):

* ``canvas``: the primitives: a ``Figure`` on an Agg canvas (matplotlib's object API, never pyplot), a legend
  outside its axes, the one binning rule of every histogram (:func:`~rmt_callbacks.spectral.freedman_diaconis_edges`,
  capped), a law's density on a grid, saving, rendering to PNG and releasing a figure;
* ``matrix``: one matrix's figure at one step, one histogram panel per view (``matrix_figure``);
* ``evolution``: a matrix's spectrum over training (``evolution_figure``);
* ``recipes``: from an analysis result to its panels (``panels_of``, ``evolution_curves``);
* ``reproduction``: the papers' figures drawn by ``rmt-reproduce``, each line in a legend outside the axes and
  what failed an equilibration check drawn red (``flagged``);
* ``spacings``: its spacing figure (fig3, scaling): the collapse on the surmise, and ⟨S⟩ against the predictor
  with the through-origin fit over its stated range and the residuals.

Importing this package loads no matplotlib; :func:`esd_figure` imports it on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from .._checks import one_of
from ..analysis import MatrixResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["esd_figure"]

_KINDS = ("all", "loglog")


def esd_figure(result: MatrixResult, *, kind: Literal["all", "loglog"] = "all") -> Figure:
    r"""The figure of one analysed matrix: every panel the monitor draws (``kind="all"``: Gram spectrum, log-log
    ESD, symmetric part, spacings) or the log-log ESD with its power-law fit alone (``kind="loglog"``).

    Save it with ``fig.savefig(path)``; it is not registered with pyplot (no figure is left open).

    Args:
        result: one result of :func:`rmt_callbacks.analyze` (or ``analyze_views``).
        kind: ``"all"`` or ``"loglog"``.

    Returns:
        A matplotlib ``Figure`` on an Agg canvas.

    Raises:
        TypeError: ``result`` is not a :class:`~rmt_callbacks.analysis.MatrixResult`.
        ValueError: an unknown ``kind``, or a result with no exact levels to draw (skipped, or estimated by SLQ).

    References: Martin & Mahoney, arXiv:1810.01075 (log-log ESD); arXiv:2412.20496.

    Examples:
        >>> import torch
        >>> from rmt_callbacks import analyze
        >>> (r,) = analyze(torch.nn.Linear(100, 60))
        >>> [ax.get_title().split("\n")[0] for ax in esd_figure(r, kind="loglog").axes]
        ['ESD, log-log']
    """
    from .matrix import matrix_figure
    from .recipes import panels_of

    if not isinstance(result, MatrixResult):
        raise TypeError(f"esd_figure: result must be a MatrixResult from analyze(), got {type(result).__name__}")
    one_of("kind", kind, _KINDS, owner="esd_figure")
    panels = panels_of(result)
    if not panels:
        why = result.skipped or f"its spectrum was estimated ({result.method}), there are no exact levels"
        raise ValueError(f"esd_figure: nothing to draw for {result.name!r}: {why}")
    if kind == "loglog":
        panels = [p for p in panels if p.loglog]
    return matrix_figure(panels, title=f"{result.name} {tuple(result.shape)}")
