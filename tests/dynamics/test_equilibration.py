"""The relaxation verdict on synthetic ensembles: stationary, drifting, straggling, of the wrong law, grouped.

The stationary ensembles are exact draws of the laws the check compares with (2×2 GOE blocks for a pair, E12; a
normal law for a level), each snapshot drawn independently, as the snapshots of a mode that relaxes in much less
than half a run are.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from rmt_callbacks.dynamics import check_relaxation, ks_normal
from rmt_callbacks.dynamics.equilibration import DRIFT_Z, KS_P, STRAGGLER_WIDTHS


def _goe_pairs(n: int, center: float, sigma: float, g: torch.Generator) -> torch.Tensor:
    """Eigenvalues (n, 2) of 2×2 GOE blocks: diagonal N(center, σ²), off-diagonal N(0, σ²/2) (E10, E12)."""
    d = center + sigma * torch.randn(n, 2, generator=g, dtype=torch.float64)
    off = sigma / math.sqrt(2.0) * torch.randn(n, generator=g, dtype=torch.float64)
    h = torch.stack([torch.stack([d[:, 0], off], -1), torch.stack([off, d[:, 1]], -1)], -2)
    return torch.linalg.eigvalsh(h)


def _levels(n: int, g: torch.Generator, loc: float = 1.0, scale: float = 0.1) -> torch.Tensor:
    return loc + scale * torch.randn(n, generator=g, dtype=torch.float64)


def test_stationary_ensembles_are_relaxed_and_their_drift_is_a_unit_normal() -> None:
    # 60 quick-run-sized modes (E = 128): 40 pairs and 20 levels. Each check errs with probability ≲ 1e-4, so
    # none of the 60 verdicts may be "not relaxed"; the drifts of independent snapshots are N(0, 1) to the
    # jackknife's 10 % accuracy, so their standard deviation over 100 values lies in [0.7, 1.35] (≥ 3σ bounds).
    g = torch.Generator().manual_seed(11)
    drifts = []
    for k in range(60):
        pair = k < 40
        mid, end = (_goe_pairs(128, 2.0, 0.2, g) if pair else _levels(128, g) for _ in range(2))
        verdict = check_relaxation(mid, end)
        assert verdict.relaxed, (k, verdict)
        assert verdict.stragglers == 0 and verdict.ks_p > KS_P
        drifts += [verdict.drift_z] + ([verdict.spacing_drift_z] if pair else [])
    assert 0.7 < float(np.std(drifts)) < 1.35
    assert abs(float(np.mean(drifts))) < 4 / math.sqrt(len(drifts))


def test_a_level_still_relaxing_is_flagged_for_its_drift() -> None:
    # v(t) = 1 + (v0 − 1) e^{−t/τ} + noise with v0 = 0.2, τ = 1 (half a run = 2τ): the mean moves by 0.8·(e^{−2} −
    # e^{−4}) = 0.094 between mid-run and the end, ≈ 9 standard errors of 0.1/√128.
    g = torch.Generator().manual_seed(12)
    mid = _levels(128, g, loc=1.0 - 0.8 * math.exp(-2.0))
    end = _levels(128, g, loc=1.0 - 0.8 * math.exp(-4.0))
    verdict = check_relaxation(mid, end)
    assert verdict.failed == ("drift",) and verdict.drift_z > DRIFT_Z
    assert verdict.ks_p > KS_P and verdict.stragglers == 0  # each snapshot alone looks stationary


def test_a_pair_whose_spacing_still_shrinks_is_flagged_for_the_spacing_alone() -> None:
    g = torch.Generator().manual_seed(13)
    mid, end = _goe_pairs(500, 2.0, 0.3, g), _goe_pairs(500, 2.0, 0.2, g)
    verdict = check_relaxation(mid, end)
    assert verdict.failed[0] == "drift"
    assert abs(verdict.drift_z) < 3 < -verdict.spacing_drift_z  # the mean stays, the spacing shrinks


def test_a_few_stragglers_are_flagged_though_neither_the_mean_nor_the_ks_moves() -> None:
    # The Gaussian RBM's κ = 8 level after 4000 steps at α = 0.1 (quick size): relaxed at 0.85 ± 0.1 but 4 % of
    # the networks still near 0, 8.5 widths below; the same networks in both snapshots (they grow slowly).
    g = torch.Generator().manual_seed(14)
    mid, end = _levels(128, g, 0.85), _levels(128, g, 0.85)
    stuck = torch.arange(5)
    mid[stuck], end[stuck] = 0.001, 0.01
    verdict = check_relaxation(mid, end)
    assert verdict.failed == ("stragglers",) and verdict.stragglers == 5
    assert verdict.ks_p > KS_P and abs(verdict.drift_z) < DRIFT_Z


def test_a_level_of_the_wrong_law_is_flagged_by_its_ks_distance() -> None:
    # Two populations at 1 ± 0.05 and 1.5 ± 0.05 in both snapshots: stationary, no value far from the median
    # (the MAD spans both), but far from any normal law.
    g = torch.Generator().manual_seed(15)

    def bimodal() -> torch.Tensor:
        return _levels(400, g, 1.0, 0.05) + 0.5 * (torch.rand(400, generator=g) < 0.5)

    end = bimodal()
    verdict = check_relaxation(bimodal(), end)
    assert verdict.failed == ("law",) and verdict.ks_p < KS_P
    assert verdict.ks == ks_normal(end)


def test_a_pair_of_the_wrong_law_is_flagged_and_a_given_ks_is_used() -> None:
    g = torch.Generator().manual_seed(16)
    mid, end = _goe_pairs(400, 2.0, 0.2, g), _goe_pairs(400, 2.0, 0.2, g)
    assert check_relaxation(mid, end, ks=0.3).failed == ("law",)  # the caller's fit of its law
    poisson = torch.stack([2.0 + 0.2 * torch.randn(400, generator=g, dtype=torch.float64) for _ in range(2)], 1)
    spread = check_relaxation(poisson, 2.0 + 0.2 * torch.randn(400, 2, generator=g, dtype=torch.float64))
    assert "law" not in spread.failed  # two independent normal levels: the E12 fit still holds to KS ≈ 0.03


def test_a_mode_that_no_longer_moves_is_not_flagged_for_rounding() -> None:
    # The teacher–student at the end of an epoch of its fixed data set: the previous epoch's state, to rounding.
    end = _goe_pairs(200, 2.0, 0.01, torch.Generator().manual_seed(17))
    mid = end * (1 + 1e-16 * torch.randn(200, 2, generator=torch.Generator().manual_seed(18), dtype=torch.float64))
    verdict = check_relaxation(mid, end)
    assert verdict.relaxed and abs(verdict.drift_z) < 1e-6


def test_shared_drifts_within_groups_need_the_grouped_errors() -> None:
    # d = a_g + e: 20 data sets of 25 networks (interleaved), each set moved by its own a_g (spread 0.2, mean
    # 0.09), e ~ N(0, 0.05²). The mean of d has error √(0.2²/20 + 0.05²/500) = 0.045, a drift of ≈ 2; a
    # jackknife over networks sees only the spread of d (0.21/√500 = 0.009) and calls it a drift of ≈ 10.
    g = torch.Generator().manual_seed(19)
    groups = torch.arange(500) % 20
    shared = torch.randn(20, generator=g, dtype=torch.float64)
    shared = 0.09 + 0.2 * (shared - shared.mean()) / shared.std()
    mid = _levels(500, g, 2.0, 0.05)
    end = mid + shared[groups] + 0.05 * torch.randn(500, generator=g, dtype=torch.float64)
    by_network = check_relaxation(mid, end)
    by_set = check_relaxation(mid, end, groups=groups)
    assert by_set.drift_z == pytest.approx(float((end - mid).mean()) / math.sqrt(0.2**2 / 20 + 0.05**2 / 500), rel=0.1)
    assert abs(by_set.drift_z) < DRIFT_Z < abs(by_network.drift_z)


def test_ks_normal_is_scipys_kstest_statistic() -> None:
    rng = np.random.default_rng(20)
    for x in (rng.normal(size=50), rng.exponential(size=300), np.array([0.0, 0.0, 1.0])):
        expected = stats.kstest(x, "norm", args=(x.mean(), x.std(ddof=1))).statistic
        assert ks_normal(torch.from_numpy(x)) == pytest.approx(expected, abs=1e-12)
    assert ks_normal(torch.ones(5, dtype=torch.float64)) == 1.0


def test_the_ks_p_value_is_the_kolmogorov_tail_at_the_number_of_networks() -> None:
    # Asymptotically P(√n D > y) = 2 Σ (−1)^{k−1} e^{−2k²y²} (Kolmogorov); at n = 2000 it holds to ≈ 1 %.
    g = torch.Generator().manual_seed(21)
    mid, end = _levels(2000, g), _levels(2000, g)
    verdict = check_relaxation(mid, end, ks=0.03)
    y = 0.03 * math.sqrt(2000)
    kolmogorov = 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * y * y) for k in range(1, 50))
    assert verdict.ks_p == pytest.approx(kolmogorov, rel=0.05)


def test_thresholds_can_be_set_and_stragglers_counted_per_network() -> None:
    g = torch.Generator().manual_seed(22)
    mid, end = _goe_pairs(300, 2.0, 0.2, g), _goe_pairs(300, 2.0, 0.2, g)
    end[0, 0] = end[:, 0].median() + 3.5 * 1.4826 * (end[:, 0] - end[:, 0].median()).abs().median()
    end[0, 1] = end[:, 1].median() - 3.5 * 1.4826 * (end[:, 1] - end[:, 1].median()).abs().median()
    assert check_relaxation(mid, end).stragglers == 0
    assert check_relaxation(mid, end, straggler_widths=3.0).stragglers >= 1  # one network, however many columns
    assert STRAGGLER_WIDTHS == 6.0
    loose = check_relaxation(mid, end, drift_z=1e-9, ks_p=0.9999)
    assert set(loose.failed) >= {"drift", "law"}


def test_the_verdict_as_summary_and_metrics() -> None:
    g = torch.Generator().manual_seed(23)
    level = check_relaxation(_levels(100, g), _levels(100, g))
    summary = level.to_summary()
    assert set(summary) == {"relaxed", "drift_z", "ks", "ks_p", "stragglers", "failed"}
    assert summary["relaxed"] is True and summary["failed"] == []
    pair = check_relaxation(_goe_pairs(100, 2.0, 0.2, g), _goe_pairs(100, 2.0, 0.2, g))
    assert "spacing_drift_z" in pair.to_summary()
    metrics = pair.to_metrics("pair1_")
    assert metrics == {
        "pair1_relaxed": 1.0,
        "pair1_drift_z": pair.drift_z,
        "pair1_ks_p": pair.ks_p,
        "pair1_stragglers": 0.0,
    }


@pytest.mark.parametrize(
    ("mid", "end", "kwargs", "error", "match"),
    [
        (torch.zeros(5), torch.zeros(6), {}, ValueError, "same shape"),
        (torch.zeros(5, 3), torch.zeros(5, 3), {}, ValueError, r"\(E,\) or \(E, 2\)"),
        (torch.zeros(1), torch.zeros(1), {}, ValueError, "E >= 2"),
        (torch.zeros(5), torch.tensor([0.0, 1, 2, 3, math.nan]), {}, ValueError, "end has non-finite"),
        (torch.zeros(5), torch.zeros(5), {"drift_z": 0.0}, ValueError, "drift_z must be positive"),
        (torch.zeros(5), torch.zeros(5), {"ks_p": -1.0}, ValueError, "ks_p must be positive"),
        (torch.zeros(4), torch.zeros(4), {"groups": torch.zeros(4, dtype=torch.long)}, ValueError, "2 groups"),
    ],
)
def test_bad_input_is_refused_by_name(mid, end, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        check_relaxation(mid, end, **kwargs)
