"""The log-log ESD figure with the power-law fit, for analyze results and in the monitor's panels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rmt_callbacks.analysis import analyze, analyze_views
from rmt_callbacks.figures import esd_figure
from rmt_callbacks.figures.canvas import close_figure
from rmt_callbacks.figures.recipes import panels_of
from rmt_callbacks.spectral import MatrixView


def _heavy(m: int = 400, n: int = 200, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mag = torch.rand(m, n, generator=g, dtype=torch.float64) ** (-1 / 2.5)
    return mag * torch.sign(torch.randn(m, n, generator=g, dtype=torch.float64))


def test_loglog_figure_draws_the_fitted_tail_as_a_density_of_all_levels(tmp_path) -> None:
    (r,) = analyze_views([MatrixView("w", _heavy(), "matrix")])
    assert r.metrics["pl_converged"] == 1.0
    fig = esd_figure(r, kind="loglog")
    (ax,) = fig.axes
    assert ax.get_xscale() == ax.get_yscale() == "log"
    (line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("power law")]
    x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
    alpha, x_min, share = r.metrics["pl_alpha"], r.metrics["pl_x_min"], r.metrics["pl_n_tail"] / 200
    assert x[0] == pytest.approx(x_min) and x[-1] == pytest.approx(float(r.spectra["gram"].max()))
    assert y == pytest.approx(share * (alpha - 1) / x_min * (x / x_min) ** (-alpha), rel=1e-9)
    assert "α = " in ax.get_title() and any(ln.get_label() == "x_min" for ln in ax.get_lines())
    fig.savefig(tmp_path / "esd.png")
    assert (tmp_path / "esd.png").stat().st_size > 1000
    close_figure(fig)


def test_all_panels_and_the_monitor_share_the_overlay() -> None:
    (r,) = analyze_views([MatrixView("w", _heavy(), "matrix")])
    fig = esd_figure(r)
    titles = [ax.get_title().split("\n")[0] for ax in fig.axes]
    assert titles[:2] == ["Gram spectrum WᵀW / M", "ESD, log-log"] and len(titles) == len(panels_of(r))
    close_figure(fig)
    (loglog,) = [p for p in panels_of(r) if p.loglog]
    assert any(c.label.startswith("power law") for c in loglog.curves)


def test_no_overlay_without_a_converged_fit_and_clear_errors() -> None:
    q, _ = torch.linalg.qr(torch.randn(120, 40, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    (flat,) = analyze_views([MatrixView("q", q, "matrix")])
    (loglog,) = [p for p in panels_of(flat) if p.loglog]
    assert not any(c.label.startswith("power law") for c in loglog.curves)
    (bad,) = analyze_views([MatrixView("nan", torch.full((4, 4), float("nan")), "matrix")])
    with pytest.raises(ValueError, match="nothing to draw"):
        esd_figure(bad)
    with pytest.raises(ValueError, match="kind"):
        esd_figure(flat, kind="linear")
    with pytest.raises(TypeError, match="MatrixResult"):
        esd_figure([flat])


def test_an_all_zero_weight_draws_without_warnings(tmp_path) -> None:
    """Nothing positive to put on log axes: the panel stays empty and unlabelled, no legend warning."""
    import warnings

    layer = torch.nn.Linear(20, 30)
    torch.nn.init.zeros_(layer.weight)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figure = esd_figure(analyze(layer)[0])
        figure.savefig(tmp_path / "zero.png")
    assert figure.axes[0].get_legend() is not None and figure.axes[1].get_legend() is None
