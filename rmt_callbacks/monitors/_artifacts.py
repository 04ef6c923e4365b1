"""What one analysis leaves in an MLflow run: spectra as ``.npz``, the fit table, skip and method tags, figures.

Written through the run's :class:`~rmt_callbacks.sinks.spool.MlflowWriter` (queued, spooled while the server is
down), from the monitor's background thread; figures are rendered here to PNG bytes, so the writer's thread never
touches matplotlib.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from ..analysis import MatrixResult, to_rows
from ..sinks.keys import artifact_path, tag_key

__all__ = ["write_artifacts"]


def write_artifacts(run: Any, results: Sequence[MatrixResult], *, step: int, figures: bool) -> None:
    """Spectra, the fit table, skip and method tags and (when due) figures of one analysis into ``run`` (an
    :class:`~rmt_callbacks.sinks.spool.MlflowWriter`)."""
    stem = f"step_{step:08d}"
    done = [r for r in results if r.skipped is None]
    exact = {r.name: r.spectra["gram"].numpy() for r in done if "density" not in r.spectra}
    if exact:
        run.log_arrays(exact, artifact_path("spectra", f"{stem}.npz"))
    symmetric = {r.name: r.spectra["symmetric"].numpy() for r in done if "symmetric" in r.spectra}
    if symmetric:
        run.log_arrays(symmetric, artifact_path("spectra", "symmetric", f"{stem}.npz"))
    densities = {r.name: r for r in done if "density" in r.spectra}  # estimated (SLQ): a density on bin edges
    if densities:
        arrays = {f"{n}/density": r.spectra["density"].numpy() for n, r in densities.items()}
        arrays.update({f"{n}/edges": r.spectra["density_edges"].numpy() for n, r in densities.items()})
        run.log_arrays(arrays, artifact_path("spectra", "density", f"{stem}.npz"))
    run.log_table([{"step": step, **row} for row in to_rows(results)], artifact_path("fits", f"{stem}.json"))
    tags = {tag_key("rmt.skipped.", r.name): r.skipped for r in results if r.skipped is not None}
    tags.update({tag_key("rmt.method.", r.name): r.method for r in done if r.method is not None})
    if tags:
        run.set_tags(tags)
    if figures:
        _write_figures(run, done, stem=stem, step=step)


def _write_figures(writer: Any, results: Sequence[MatrixResult], *, stem: str, step: int) -> None:
    from ..sinks.plots import close_figure, matrix_figure  # imports matplotlib: only when figures are due
    from ._figures import panels_of

    for r in results:
        panels = panels_of(r)
        if not panels:  # an estimated density has no levels to histogram: its arrays are the record
            continue
        fig = matrix_figure(panels, title=f"{r.name} {tuple(r.shape)}, step {step}")
        try:
            png = io.BytesIO()
            fig.savefig(png, format="png")
            writer.log_image(png.getvalue(), artifact_path("figures", r.name, f"{stem}.png"))
        finally:
            close_figure(fig)
