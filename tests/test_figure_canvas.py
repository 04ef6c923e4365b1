"""Figures: density histograms that integrate to one, curves drawn as given, capped bins, no pyplot."""

from __future__ import annotations

import io
import itertools
import subprocess
import sys

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg

from rmt_callbacks.figures.canvas import MAX_BINS, Curve, Marker, close_figure, histogram_edges
from rmt_callbacks.figures.evolution import evolution_figure
from rmt_callbacks.figures.matrix import Y_HEADROOM, Panel, matrix_figure
from rmt_callbacks.spectral import freedman_diaconis_edges


def _bars(ax) -> tuple[np.ndarray, np.ndarray]:
    heights = np.array([p.get_height() for p in ax.patches])
    widths = np.array([p.get_width() for p in ax.patches])
    return heights, widths


def test_histograms_are_densities_and_curves_are_drawn_as_given() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(3, 400))  # a batch is pooled: 1200 samples
    x = np.linspace(-4.0, 4.0, 101)
    y = np.exp(-(x**2) / 2) / np.sqrt(2 * np.pi)
    s = rng.exponential(size=500)
    fig = matrix_figure(
        [Panel("spectrum", values, [Curve("normal", x, y)]), Panel("spacings", s, value_range=(0.0, 4.0))],
        title="w, step 3",
    )
    assert isinstance(fig.canvas, FigureCanvasAgg)
    assert len(fig.axes) == 2 and fig.get_suptitle() == "w, step 3"
    heights, widths = _bars(fig.axes[0])
    assert np.sum(heights * widths) == pytest.approx(1.0, abs=1e-9)
    (line,) = fig.axes[0].get_lines()
    np.testing.assert_array_equal(line.get_xdata(), x)
    np.testing.assert_array_equal(line.get_ydata(), y)
    assert fig.axes[0].get_legend().get_texts()[0].get_text() == "data (n=1200)"
    lo, hi = fig.axes[1].patches[0].get_x(), fig.axes[1].patches[-1].get_x() + fig.axes[1].patches[-1].get_width()
    assert (lo, hi) == pytest.approx((0.0, 4.0))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    close_figure(fig)
    assert fig.axes == []


def test_bins_are_capped_and_non_finite_values_dropped() -> None:
    # Cauchy tails: the Freedman–Diaconis rule asks for thousands of bins here, far above MAX_BINS
    cauchy = np.random.default_rng(1).standard_cauchy(20000)
    assert len(histogram_edges(cauchy, max_bins=10**9)) - 1 > MAX_BINS
    values = np.concatenate([cauchy, [np.nan, np.inf]])
    fig = matrix_figure([Panel("spiky", values)])
    heights, widths = _bars(fig.axes[0])
    assert len(heights) == MAX_BINS
    assert np.sum(heights * widths) == pytest.approx(1.0)
    assert fig.axes[0].get_legend().get_texts()[0].get_text() == "data (n=20000)"


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="panels must not be empty"):
        matrix_figure([])
    with pytest.raises(ValueError, match=r"Curve 'c': x and y must be 1-D of one length, got \(3,\) and \(2,\)"):
        Curve("c", np.zeros(3), np.zeros(2))


def test_plots_never_load_pyplot() -> None:
    code = (
        "import sys, numpy as np\nfrom rmt_callbacks.figures.matrix import Panel, matrix_figure\n"
        "matrix_figure([Panel('p', np.arange(10.0))]).savefig('/dev/null', format='png')\n"
        "from rmt_callbacks.figures.reproduction import pair_density_figure\n"  # tight_layout, mathtext
        "pair_density_figure(np.arange(10.0), {}, title='$x$', xlabel='x').savefig('/dev/null', format='png')\n"
        "print('matplotlib.pyplot' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_density_singularity_does_not_flatten_the_histogram() -> None:
    x = np.linspace(1e-8, 1.0, 200)
    y = 0.5 / np.sqrt(x)  # integrable, unbounded at 0 (Marchenko–Pastur at q = 1 behaves like this)
    values = np.random.default_rng(2).uniform(size=500) ** 2  # density 0.5 / sqrt(x) on (0, 1]
    fig = matrix_figure([Panel("q=1", values, [Curve("law", x, y)])])
    heights, _ = _bars(fig.axes[0])
    assert fig.axes[0].get_ylim()[1] == pytest.approx(Y_HEADROOM * heights.max())
    assert y.max() > Y_HEADROOM * heights.max()  # the cap was needed


def test_spikes_leave_the_bins_to_the_bulk_and_are_marked() -> None:
    rng = np.random.default_rng(2)
    bulk = rng.uniform(1.0, 3.0, size=500)
    spikes = np.array([12.0, 50.0])
    fig = matrix_figure([Panel("spectrum", np.concatenate([bulk, spikes]), spikes=spikes, markers=[Marker("λ₊", 3.1)])])
    ax = fig.axes[0]
    heights, widths = _bars(ax)
    assert ax.patches[-1].get_x() + ax.patches[-1].get_width() == pytest.approx(bulk.max())  # bins end at the bulk
    assert np.sum(heights * widths) == pytest.approx(1.0)
    assert ax.get_xlim()[1] < 12.0  # the bulk fills the axis
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "spikes beyond (2), up to 50" in labels and "λ₊" in labels
    close_figure(fig)


def test_loglog_panels_use_log_bins_on_log_axes() -> None:
    values = np.random.default_rng(3).pareto(2.0, size=2000) + 1.0
    fig = matrix_figure([Panel("tail", np.concatenate([values, [0.0, -1.0]]), loglog=True)])
    ax = fig.axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    heights, widths = _bars(ax)
    assert np.sum(heights * widths) == pytest.approx(1.0)  # non-positive values dropped, still a density
    ratios = [p.get_width() / p.get_x() for p in ax.patches]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-9)  # geometric bins
    close_figure(fig)


@pytest.mark.parametrize(("spread", "log"), [(1.0, False), (1000.0, True)])
def test_evolution_figure_overlays_first_middle_and_last(spread: float, log: bool) -> None:
    rng = np.random.default_rng(4)
    steps = [0, 10, 20, 35, 50, 51, 70, 100]  # uneven, as late analyses make them
    samples = [np.concatenate([rng.uniform(1.0, 2.0, 300), [spread * (1 + s / 100)]]) for s in steps]
    fig = evolution_figure(steps, samples, xlabel="λ", curves=[Curve("law", np.linspace(1, 2, 5), np.ones(5))])
    image, overlay, _ = fig.axes  # the density image, the overlays, the colour bar
    labels = [t.get_text() for t in overlay.get_legend().get_texts()]
    assert {"step 0", "step 100"} <= set(labels) and len(labels) == 6 and "law" in labels  # 5 steps and the law
    assert overlay.get_xlabel() == ("log10 λ" if log else "λ")
    rows = image.collections[0].get_coordinates()[:, 0, 1]  # each step's row spans halfway to its neighbours
    np.testing.assert_allclose(rows[1:-1], [(a + b) / 2 for a, b in itertools.pairwise(steps)])
    assert all(lo < s < hi for lo, s, hi in zip(rows[:-1], steps, rows[1:], strict=True))
    close_figure(fig)


def _edges(ax) -> np.ndarray:
    return np.array([p.get_x() for p in ax.patches] + [ax.patches[-1].get_x() + ax.patches[-1].get_width()])


def test_panels_bin_by_the_fits_rule() -> None:
    values = np.random.default_rng(5).gamma(2.0, size=3000)
    fig = matrix_figure([Panel("p", values)])
    expected = freedman_diaconis_edges(torch.from_numpy(values), max_bins=MAX_BINS).numpy()
    np.testing.assert_allclose(_edges(fig.axes[0]), expected, rtol=1e-12)
    close_figure(fig)


def test_reproduction_figures_use_the_one_rule_and_are_released_once_saved(tmp_path) -> None:
    from rmt_callbacks.figures.canvas import save_figure
    from rmt_callbacks.figures.reproduction import (
        SPECTRA_MAX_BINS,
        dynamics_figure,
        pair_density_figure,
        rbm_spectra_figure,
        spacing_figure,
        two_species_figure,
    )
    from rmt_callbacks.laws import GOEPairDensity

    rng = np.random.default_rng(6)
    levels = np.sort(rng.normal(np.arange(8.0), 0.05, size=(64, 8)), axis=1)  # (E, n): 64 networks, 8 levels
    fig = rbm_spectra_figure({"a": levels}, [1.0, 2.0], xlabel="λ")
    width = freedman_diaconis_edges(torch.from_numpy(levels[:, 0]))  # the first level's width over the pooled range
    expected = freedman_diaconis_edges(torch.from_numpy(levels), width_from=torch.from_numpy(levels[:, 0]),
                                       max_bins=SPECTRA_MAX_BINS).numpy()  # fmt: skip
    np.testing.assert_allclose(_edges(fig.axes[0]), expected, rtol=1e-12)
    assert len(expected) - 1 > len(width) - 1
    pair = rng.normal(1.0, 0.1, size=(200, 2))
    figures = {
        "spectra": fig,
        "pair": pair_density_figure(pair, {"E12": GOEPairDensity(center=1.0, sigma=0.1)}, title="t", xlabel="x"),
        "species": two_species_figure({"Z": (pair, {})}, xlabel="x"),
        "spacings": spacing_figure({"s": rng.exponential(size=500)}, (*[np.ones(3)] * 3, 1.0, 0.1), xlabel="x"),
        "dynamics": dynamics_figure({"Z": (np.arange(5.0), rng.random((3, 5, 2)), rng.random((5, 2)))}),
    }
    np.testing.assert_allclose(_edges(figures["pair"].axes[0]), histogram_edges(pair), rtol=1e-12)
    (line,) = figures["pair"].axes[0].get_lines()
    assert line.get_xdata()[0] == pytest.approx(pair.min()) and line.get_xdata()[-1] == pytest.approx(pair.max())
    for name, figure in figures.items():
        assert isinstance(figure.canvas, FigureCanvasAgg)
        save_figure(figure, tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").stat().st_size > 1000 and figure.axes == []
