"""``rmt-reproduce``'s figures a reader can trust: a legend entry for every line and marker set, no legend over
data (legend window extents against the data's display coordinates after a draw), the scaling fit over its range
with its statement and residuals, and what failed an equilibration check drawn red and labelled."""

from __future__ import annotations

import re

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

from rmt_callbacks.figures.canvas import FLAG_COLOR, NOT_RELAXED, close_figure, new_figure
from rmt_callbacks.figures.reproduction import (
    dynamics_figure,
    pair_density_figure,
    rbm_spectra_figure,
    spacing_figure,
    two_species_figure,
)
from rmt_callbacks.fits import fit_through_origin
from rmt_callbacks.laws import GOEPairDensity

RED = to_rgba(FLAG_COLOR)
KAPPA = [4.0, 4.38, 4.38, 5.38, 5.38, 6.62, 6.62, 7.62, 7.62, 8.0]


def _densify(xy: np.ndarray, k: int = 16) -> np.ndarray:
    """Points along every segment of a polyline (a legend can sit on a segment between two vertices)."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if len(xy) < 2:
        return xy
    t = np.linspace(0.0, 1.0, k, endpoint=False)[None, :, None]
    return np.concatenate([(xy[:-1, None] + t * (xy[1:, None] - xy[:-1, None])).reshape(-1, 2), xy[-1:]])


def _inside(box: Bbox, pts: np.ndarray) -> np.ndarray:
    return (box.x0 <= pts[:, 0]) & (pts[:, 0] <= box.x1) & (box.y0 <= pts[:, 1]) & (pts[:, 1] <= box.y1)


def _data_display_points(ax: Axes) -> np.ndarray:
    """Display coordinates of everything drawn in ``ax``'s lines and collections, inside the axes."""
    points = [line.get_transform().transform(_densify(line.get_xydata())) for line in ax.lines]
    for coll in ax.collections:
        points += [coll.get_transform().transform(_densify(path.vertices)) for path in coll.get_paths()]
    pts = np.concatenate(points) if points else np.zeros((0, 2))
    pts = pts[np.isfinite(pts).all(axis=1)]
    return pts[_inside(ax.bbox, pts)]


def _legends_over_data(fig: Figure) -> list[str]:
    """What a legend covers: a data point inside its window extent, or a histogram bar's extent overlapping it
    (after a draw: the layout places the legends)."""
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)
    hits = []
    for legend in legends:
        box = legend.get_window_extent()
        for ax in fig.axes:
            inside = _inside(box, _data_display_points(ax))
            if np.any(inside):
                hits.append(f"{ax.get_title()!r}: {int(np.sum(inside))} points under a legend")
            for patch in ax.patches:
                extent = Bbox.intersection(patch.get_window_extent(), ax.bbox)
                if extent is not None and extent.width > 0 and extent.height > 0 and extent.overlaps(box):
                    hits.append(f"{ax.get_title()!r}: patch {patch.get_label()!r} under a legend")
    return hits


def _legends_outside_the_figure(fig: Figure) -> list[str]:
    boxes = [ax.get_legend().get_window_extent() for ax in fig.axes if ax.get_legend() is not None]
    return [
        str(b) for b in boxes if not (fig.bbox.x0 <= b.x0 and b.x1 <= fig.bbox.x1 and b.y0 >= 0 and b.y1 <= fig.bbox.y1)
    ]


def _unexplained(fig: Figure) -> list[str]:
    """Lines, collections and patches with no entry in their axes' legend (a container's entry covers its parts)."""
    missing = []
    for ax in fig.axes:
        legend = ax.get_legend()
        texts = {t.get_text() for t in legend.get_texts()} if legend is not None else set()
        named = [c for c in ax.containers if {c.get_label(), c.get_children()[0].get_label()} & texts]
        covered = {id(a) for c in named for a in c.get_children()}  # hist labels its first bar, errorbar its container
        for artist in [*ax.lines, *ax.collections, *ax.patches]:
            if id(artist) not in covered and artist.get_label() not in texts:
                missing.append(f"{ax.get_title()!r}: {type(artist).__name__} {artist.get_label()!r}")
    return missing


def _trusted(fig: Figure) -> None:
    fig.canvas.draw()
    assert _unexplained(fig) == []
    assert _legends_over_data(fig) == []
    assert _legends_outside_the_figure(fig) == []


def _texts(fig: Figure) -> list[str]:
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return [t.get_text() for lg in legends for t in lg.get_texts()] + [ax.get_title() for ax in fig.axes]


def _scaling_data(n: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.02, 0.25, n)
    err = rng.uniform(0.01, 0.03, n)
    return x, 2.27 * x + err * rng.normal(size=n), err


def _spacings(k: int = 13) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {f"α={0.01 * (i + 1):g}, |B|=16": rng.rayleigh(np.sqrt(2 / np.pi), 200) for i in range(k)}


def test_the_checks_can_fail() -> None:
    fig = new_figure(4, 3)
    ax = fig.subplots()
    ax.plot(np.arange(10.0), label="data")
    ax.plot(np.arange(10.0)[::-1])  # no legend entry
    ax.hist(np.random.default_rng(0).normal(5, 1, 500), density=True)  # bars with no entry
    ax.legend(loc="center")  # over the lines' crossing
    fig.canvas.draw()
    assert len(_unexplained(fig)) > 2
    assert any("points under a legend" in h for h in _legends_over_data(fig))
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))  # outside the axes, but past the figure's edge
    fig.canvas.draw()
    assert _legends_over_data(fig) == [] and len(_legends_outside_the_figure(fig)) == 1
    close_figure(fig)


def _each_figure(name: str) -> Figure:
    rng = np.random.default_rng(2)
    pair = rng.normal(1.0, 0.1, size=(200, 2))
    law = GOEPairDensity(center=1.0, sigma=0.1)
    x, y, err = _scaling_data()
    if name == "spectra":
        levels = {f"α = {a:g}": np.sort(rng.normal(KAPPA, 0.05, size=(32, 10)), axis=1) for a in (0.01, 0.1)}
        return rbm_spectra_figure(levels, KAPPA, xlabel="λ", flagged={"α = 0.01": [9]})
    if name == "pair":
        return pair_density_figure(pair, {"E12 fit": law}, title="pair", xlabel="x")
    if name == "species":
        return two_species_figure({"Z = 1": (pair, {"one": law}), "Z = 2": (pair, {})}, xlabel="x")
    if name == "dynamics":
        t = np.arange(20.0)
        return dynamics_figure({"Z": (t, rng.random((30, 20, 2)), np.ones((20, 2)))}, shown=5)
    if name == "fig3":  # 13 series, as fig3's
        return spacing_figure(_spacings(), (x, y, err, 2.27, 0.02), xlabel="x", flagged=x > 0.2)
    return spacing_figure({}, (x, y, err, fit_through_origin(x, y, err)), xlabel="x")  # scaling_ts


@pytest.mark.parametrize("name", ["spectra", "pair", "species", "dynamics", "fig3", "scaling_ts"])
def test_every_figure_explains_every_line_and_no_legend_covers_data(name: str) -> None:
    fig = _each_figure(name)
    _trusted(fig)
    close_figure(fig)


def test_the_fit_is_drawn_over_its_range_and_stated_with_residuals_on_bands() -> None:
    x, y, err = _scaling_data(30)
    err[3] = 0.0  # no residual for it: left out and said
    slope, slope_err = 2.3, 0.02
    fig = spacing_figure(_spacings(3), (x, y, err, slope, slope_err), xlabel="x")
    _, top, bottom = fig.axes
    (fit_line,) = [ln for ln in top.lines if ln.get_label().startswith("fit")]
    assert min(fit_line.get_xdata()) == pytest.approx(x.min()) and max(fit_line.get_xdata()) == pytest.approx(x.max())
    np.testing.assert_allclose(fit_line.get_ydata(), slope * np.asarray(fit_line.get_xdata()), rtol=1e-12)
    ok = err > 0
    chi2 = np.sum(((y[ok] - slope * x[ok]) / err[ok]) ** 2) / (ok.sum() - 1)  # n - 1 dof among the drawn residuals
    stated = re.fullmatch(
        r"fit a·x over x ∈ \[(\S+), (\S+)\], (\d+) points:\na = (\S+) ± (\S+), χ²/dof = (\S+)", fit_line.get_label()
    )
    assert stated is not None
    lo, hi, n, a, da, c = (float(g) for g in stated.groups())
    assert (lo, hi, n) == (pytest.approx(x.min(), rel=1e-2), pytest.approx(x.max(), rel=1e-2), 30)
    assert (a, da, c) == (slope, slope_err, pytest.approx(chi2, abs=0.005))
    (points,) = [ln for ln in bottom.lines if ln.get_label().startswith("(y − a·x)/error")]
    assert "1 with error 0 not drawn" in points.get_label()
    np.testing.assert_allclose(points.get_ydata(), (y[ok] - slope * x[ok]) / err[ok], rtol=1e-12)
    np.testing.assert_allclose(points.get_xdata(), x[ok])
    bands = {p.get_label(): p.get_window_extent() for p in bottom.patches}
    to_data = bottom.transData.inverted()
    for half, label in ((1.0, "±1 band"), (2.0, "±2 band")):
        (_, y0), (_, y1) = to_data.transform(bands[label].get_points())
        assert (y0, y1) == (pytest.approx(-half), pytest.approx(half))
    close_figure(fig)


def test_a_fit_result_gives_its_own_chi2_and_must_match_the_points() -> None:
    x, y, err = _scaling_data(12)
    fit = fit_through_origin(x, y, err)
    w = 1 / err**2  # the weighted least-squares slope through the origin, independently
    a = np.sum(w * x * y) / np.sum(w * x * x)
    chi2 = np.sum(w * (y - a * x) ** 2) / 11
    fig = spacing_figure({}, (x, y, err, fit), xlabel="x")
    (line,) = [ln for ln in fig.axes[0].lines if ln.get_label().startswith("fit")]
    assert f"a = {a:.3f} ± {np.sqrt(chi2 / np.sum(w * x * x)):.3f}, χ²/dof = {chi2:.2f}" in line.get_label()
    assert len(fig.axes) == 2  # no spacings: the scaling panel and its residuals only
    close_figure(fig)
    with pytest.raises(ValueError, match="fitted to 11 points, 12 are drawn"):
        spacing_figure({}, (x, y, err, fit_through_origin(x[1:], y[1:], err[1:])), xlabel="x")
    with pytest.raises(ValueError, match="too few points"):
        spacing_figure({}, (x, y, err, fit_through_origin(x[:1], y[:1], err[:1])), xlabel="x")
    for bad in ((x, y, err), (x, y, err[1:], 1.0, 0.1), (x, y, err, "fit"), [x, y, err, 1.0, 0.1]):
        with pytest.raises(ValueError, match="scaling"):
            spacing_figure({}, bad, xlabel="x")  # type: ignore[arg-type]


def test_flagged_points_and_series_are_hollow_red_and_labelled() -> None:
    x, y, err = _scaling_data(20)
    flags = np.zeros(20, dtype=bool)
    flags[[2, 7, 11]] = True
    spacings = _spacings(4)
    fig = spacing_figure(
        spacings, (x, y, err, 2.27, 0.02), xlabel="x", flagged=flags, flagged_series=[next(iter(spacings))]
    )
    left, top, bottom = fig.axes
    (red,) = [c for c in top.containers if c.get_label().endswith(NOT_RELAXED)]
    data = red.lines[0]
    assert data.get_markerfacecolor() == "none" and to_rgba(data.get_color()) == RED
    np.testing.assert_allclose(data.get_xdata(), x[flags])
    (res,) = [ln for ln in bottom.lines if ln.get_label().endswith(NOT_RELAXED)]
    np.testing.assert_allclose(res.get_xdata(), x[flags])
    assert res.get_markerfacecolor() == "none"
    red_series = [p for p in left.patches if p.get_label().endswith(NOT_RELAXED)]
    assert [p.get_label() for p in red_series] == [next(iter(spacings)) + NOT_RELAXED]
    assert (
        to_rgba(red_series[0].get_edgecolor()) == RED
        and red_series[0].get_linestyle() != left.patches[-1].get_linestyle()
    )
    _trusted(fig)
    close_figure(fig)
    # None and all-False draw the same thing, with nothing red and nothing "(not relaxed)"
    plain = spacing_figure(spacings, (x, y, err, 2.27, 0.02), xlabel="x")
    clean = spacing_figure(spacings, (x, y, err, 2.27, 0.02), xlabel="x", flagged=np.zeros(20, bool))
    assert _texts(plain) == _texts(clean) and not any(NOT_RELAXED in t for t in _texts(plain))
    assert [len(ax.lines) for ax in plain.axes] == [len(ax.lines) for ax in clean.axes]
    for ax in plain.axes:
        assert not any(to_rgba(ln.get_color()) == RED for ln in ax.lines)
    for f in (plain, clean):
        close_figure(f)


def test_bad_flags_are_refused_naming_the_argument() -> None:
    x, y, err = _scaling_data(5)
    for flags in (np.ones(4, bool), np.array([0, 1, 0, 0, 0]), np.ones((5, 1), bool)):
        with pytest.raises(ValueError, match="flagged must be a boolean array of one entry per point"):
            spacing_figure({}, (x, y, err, 2.0, 0.1), xlabel="x", flagged=flags)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="flagged_series has labels"):
        spacing_figure({"a": np.ones(3)}, (x, y, err, 2.0, 0.1), xlabel="x", flagged_series=["b"])
    levels = {"a": np.tile(np.asarray(KAPPA), (4, 1))}
    for flagged, match in ((["b"], "labels that spectra does not"), ({"a": [10]}, r"modes \[10\] of 'a' have no"),
                           ("a", "the string")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            rbm_spectra_figure(levels, KAPPA, xlabel="λ", flagged=flagged)
    pair = np.ones((3, 2))
    with pytest.raises(ValueError, match="titles that panels does not"):
        two_species_figure({"Z": (pair, {})}, xlabel="x", flagged=["Y"])


def test_spectra_flags_mark_modes_on_their_targets_or_the_whole_setting() -> None:
    rng = np.random.default_rng(3)
    levels = {s: np.sort(rng.normal(KAPPA, 0.05, size=(32, 10)), axis=1) for s in ("a", "b", "c")}
    fig = rbm_spectra_figure(levels, KAPPA, xlabel="λ", flagged={"a": [9, 0], "b": []})
    ax_a, ax_b, _ = fig.axes
    (black,) = [c for c in ax_a.collections if c.get_label() == "targets κₙ"]
    (red,) = [c for c in ax_a.collections if c.get_label().endswith(NOT_RELAXED)]
    red_x = sorted(float(p.vertices[0, 0]) for p in red.get_paths())
    assert red_x == [4.0, 8.0] and red.get_label() == "κ = 4, 8" + NOT_RELAXED
    assert tuple(red.get_colors()[0]) == RED and len(black.get_paths()) == 8
    assert not any(NOT_RELAXED in t for t in _texts(fig) if "κ = 4, 8" not in t)  # "b": [] flags nothing
    assert len(ax_b.collections) == 1
    close_figure(fig)
    fig = rbm_spectra_figure(levels, KAPPA, xlabel="λ", flagged=["c"])
    *_, ax_c = fig.axes
    assert ax_c.get_title() == "c" + NOT_RELAXED
    assert all(to_rgba(p.get_facecolor())[:3] == RED[:3] for p in ax_c.patches)
    assert ax_c.patches[0].get_label() == "levels of 32 networks" + NOT_RELAXED
    _trusted(fig)
    close_figure(fig)
    fig = pair_density_figure(rng.normal(size=(50, 2)), {}, title="pair", xlabel="x", flagged=True)
    assert fig.axes[0].get_title() == "pair" + NOT_RELAXED
    close_figure(fig)
