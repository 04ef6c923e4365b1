"""What the equilibration check flags reaches summary.json and the figures (fig2, fig3), from synthetic RBM spectra.

The spectra are exact stationary draws around the targets (each pair a 2×2 GOE block, each single level normal),
two snapshots per setting; a setting whose lowest pair still moves between the snapshots is flagged there and only
there.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from reference_models import TARGET_KAPPA, TARGET_X
from rmt_callbacks.dynamics import PairSummary, check_relaxation
from rmt_callbacks.figures.canvas import NOT_RELAXED
from rmt_callbacks.reproduce.commands import _fig2, _fig3
from rmt_callbacks.reproduce.rbm import PAIRS, SINGLES, RBMResult
from rmt_callbacks.reproduce.runs import Settings


def _spectra(n: int, g: torch.Generator, shift_lowest_pair: float = 0.0) -> torch.Tensor:
    """(n, 10) descending levels at the RBM's targets x* (docs/science.md#gaussian-rbm), width 0.05."""
    x = torch.empty(n, 10, dtype=torch.float64)
    for i, j in PAIRS:
        d = TARGET_X[i] + 0.05 * torch.randn(n, 2, generator=g, dtype=torch.float64)
        off = 0.05 / math.sqrt(2.0) * torch.randn(n, generator=g, dtype=torch.float64)
        block = torch.stack([torch.stack([d[:, 0], off], -1), torch.stack([off, d[:, 1]], -1)], -2)
        x[:, [j, i]] = torch.linalg.eigvalsh(block)
    for i in SINGLES:
        x[:, i] = TARGET_X[i] + 0.05 * torch.randn(n, generator=g, dtype=torch.float64)
    x[:, [7, 8]] += shift_lowest_pair
    return x


def _result(lr: float, g: torch.Generator, *, still_moving: bool) -> RBMResult:
    """A setting's result with the verdicts of :func:`check_relaxation` and plain estimates of the pairs (the
    analysis itself, :func:`analyse_rbm`, is tested in tests/dynamics; its σ jackknife costs seconds)."""
    mid = _spectra(128, g, shift_lowest_pair=-0.2 if still_moving else 0.0)  # 40 standard errors
    x = _spectra(128, g)
    verdicts = {f"pair{k + 1}": check_relaxation(mid[:, [i, j]], x[:, [i, j]]) for k, (i, j) in enumerate(PAIRS)}
    verdicts |= {f"single{k + 1}": check_relaxation(mid[:, i], x[:, i]) for k, i in enumerate(SINGLES)}
    spacings = [(x[:, i] - x[:, j]).abs() for i, j in PAIRS]
    pairs = tuple(
        PairSummary(float(x[:, [i, j]].mean()), 0.005, float(s.mean()), 0.003, float(s.mean()) / math.sqrt(math.pi),
                    0.002, float(x[:, [i, j]].mean()), verdicts[f"pair{k + 1}"].ks)
        for k, ((i, j), s) in enumerate(zip(PAIRS, spacings, strict=True))
    )  # fmt: skip
    return RBMResult(
        lr=lr,
        batch_size=16,
        x=x.numpy(),
        pairs=pairs,
        single_means=tuple(float(x[:, i].mean()) for i in SINGLES),
        single_stds=tuple(float(x[:, i].std()) for i in SINGLES),
        kappa=TARGET_KAPPA,
        normalised_spacings=torch.cat([s / s.mean() for s in spacings]).numpy(),
        surmise_beta=1.0,
        seed=1,
        equilibration=verdicts,
    )


def _texts(fig) -> list[str]:
    out = []
    for ax in fig.axes:
        out.append(ax.get_title())
        for legend in [ax.get_legend(), *fig.legends]:
            if legend is not None:
                out += [t.get_text() for t in legend.get_texts()]
    return out


def test_a_flagged_mode_is_in_the_summary_and_drawn_not_relaxed(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(30)
    results = [_result(0.01, g, still_moving=True), _result(0.08, g, still_moving=False)]
    assert [r.flagged for r in results] == [["pair4"], []]
    assert results[0].flagged_columns == [7, 8] and results[0].pair_flags == [False, False, False, True]
    settings = Settings(out=tmp_path, progress=False, monitor=False)
    fig3 = _fig3(argparse.Namespace(), settings, results)
    assert fig3.summary["fig3"]["flagged"] == ["lr0.01_bs16/pair4"]
    assert fig3.summary["fig3"]["settings"]["lr0.08_bs16"]["equilibration"]["pair4"]["relaxed"] is True
    assert fig3.metrics["flagged_modes"] == 1.0
    flagged_texts = [t for t in _texts(fig3.figures["fig3_spacings"]) if NOT_RELAXED in t]
    assert "α=0.01, |B|=16" + NOT_RELAXED in flagged_texts  # its spacing histogram
    assert any(t.startswith(r"$\langle S\rangle$") for t in flagged_texts)  # its point
    fig2 = _fig2(argparse.Namespace(), settings, results)
    assert fig2.summary["fig2"]["flagged"] == ["lr0.01_bs16/pair4"]
    spectra = _texts(fig2.figures["fig2_rbm_spectra"])
    assert sum(NOT_RELAXED in t for t in spectra) >= 1
    assert not any(NOT_RELAXED in t for t in _texts(fig2.figures["fig2_pair_closeup"]))  # α = 0.08's top pair
    assert np.isfinite(fig3.summary["fig3"]["a_fit_mean_spacing"])
