"""Per-setting seeds and the mid-run snapshot of ``rmt-reproduce``, against independent references."""

from __future__ import annotations

import pickle
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from reference_models import TeacherStudent2x2, fit_reference
from rmt_callbacks.reproduce.equilibration import flagged_modes, mid_run_snapshot
from rmt_callbacks.reproduce.runs import Settings
from rmt_callbacks.reproduce.seeds import setting_seed


def test_a_setting_seed_is_numpys_seed_sequence_of_the_run_seed_and_the_settings_text() -> None:
    expected = np.random.SeedSequence([3, zlib.crc32(b"rbm|0.1|16")]).generate_state(1, dtype=np.uint64)[0]
    assert setting_seed(3, "rbm", 0.1, 16) == int(expected) & (2**63 - 1)
    assert setting_seed(3, "rbm", np.float64(0.1), np.int64(16)) == setting_seed(3, "rbm", 0.1, 16)
    assert setting_seed(3, "ts2x2", 0.1, 16, 0.1) == setting_seed(3, "ts2x2", 0.1, 16, 0.1)
    seeds = {setting_seed(s, "rbm", lr, bs) for s in (0, 1) for lr in (0.01, 0.02, 0.1) for bs in (4, 16)}
    assert len(seeds) == 12 and all(0 <= s < 2**63 for s in seeds)


@pytest.mark.parametrize(
    ("seed", "setting", "error", "match"),
    [(-1, ("rbm",), ValueError, "seed must be an integer >= 0"), (0, (), ValueError, "give the setting"),
     (0, ("rbm", [0.1]), TypeError, "string or a number"), (0, ("rbm", True), TypeError, "string or a number")],
)  # fmt: skip
def test_setting_seed_refuses_bad_input(seed, setting, error, match) -> None:
    with pytest.raises(error, match=match):
        setting_seed(seed, *setting)


def test_settings_of_one_seed_draw_independent_initial_weights() -> None:
    # Two settings' W₀ (E = 2000 networks, 4 entries each, std 0.1): their correlation is N(0, 1/8000) if
    # independent (4.5σ = 0.05); one seed for both, as before per-setting seeds, makes them equal.
    a, b = (
        TeacherStudent2x2(networks=2000, batch_size=bs, seed=setting_seed(0, "ts2x2", 0.1, bs, 0.1)).weight
        for bs in (4, 16)
    )
    r = float(np.corrcoef(a.detach().reshape(-1), b.detach().reshape(-1))[0, 1])
    assert abs(r) < 4.5 / np.sqrt(8000)


def test_the_mid_run_snapshot_is_the_state_after_that_many_steps() -> None:
    # Reference: a second model of the same seed trained for exactly 37 steps.
    def model() -> TeacherStudent2x2:
        return TeacherStudent2x2(networks=5, batch_size=4, seed=9, epochs=1, batches_per_epoch=100)

    snap, start = mid_run_snapshot(37, "singular_values"), mid_run_snapshot(0, "singular_values")
    long = model()
    fit_reference(long, 80, callbacks=[snap, start], accelerator="cpu")
    short = model()
    fit_reference(short, 37, accelerator="cpu")
    assert snap.values is not None and torch.equal(snap.values, short.singular_values())
    assert not torch.equal(snap.values, long.singular_values())
    assert torch.equal(start.values, model().singular_values())  # step 0: before the first update
    # ddp_spawn trains in new processes: the callback pickles, and its snapshot comes back through the trainer's
    # callback_metrics (what Lightning returns from a spawned rank zero), where recover() finds it
    trainer = fit_reference(model(), 80, callbacks=[mid_run_snapshot(37, "singular_values")], accelerator="cpu")
    unpickled = pickle.loads(pickle.dumps(mid_run_snapshot(37, "singular_values")))
    assert unpickled.values is None
    unpickled.recover(trainer)
    assert unpickled.values is not None and torch.equal(unpickled.values, short.singular_values())
    with pytest.raises(ValueError, match="step must be >= 0"):
        mid_run_snapshot(-1, "singular_values")


def test_flagged_modes_walks_settings_and_lists() -> None:
    summary = {
        "a": {"equilibration": {"pair1": {"relaxed": False}, "single1": {"relaxed": True}}},
        "b": [{"equilibration": {"pair": {"relaxed": False}}}, {"equilibration": {"pair": {"relaxed": True}}}],
        "c": 1.0,
    }
    assert flagged_modes(summary) == ["a/pair1", "b/0/pair"]


def test_an_rbm_run_too_short_is_flagged_and_a_long_enough_one_is_not(tmp_path: Path) -> None:
    """The real Gaussian RBM (16 networks, α = 0.2, |B| = 16), its verdicts read back from a real MLflow store.

    After 400 steps (Langevin time 80) the κ = 8 level and the lowest pair are still growing from W₀ ≈ 0.1 (their
    drift between step 200 and the end, networks far behind the rest). After 5000 steps (time 1000) every mode has
    relaxed; the ones slowest to grow from a nearly singular W₀ take ≈ 600 (docs/science.md#gaussian-rbm).
    """
    from rmt_callbacks.reproduce.rbm import MODES, run_rbm

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = Settings(out=tmp_path / "out", tracking_uri=uri, progress=False, monitor=False)
    short = run_rbm(0.2, 16, 400, 16, settings, figures=False)
    assert {"pair4", "single2"} <= set(short.flagged)
    long = run_rbm(0.2, 16, 5000, 16, Settings(out=tmp_path / "long", tracking_uri=uri, progress=False, monitor=False))
    assert long.flagged == [], {m: v.failed for m, v in long.equilibration.items()}
    summary = long.summary()
    assert set(summary["equilibration"]) == set(MODES)
    assert summary["seed"] == setting_seed(0, "rbm", 0.2, 16)
    assert summary["errors"]["pair_mean_spacing_err"].startswith("jackknife over 16 blocks of networks")
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("rmt-reproduce").experiment_id])
    by_steps = {r.data.params["max_steps"]: r.data for r in runs}
    assert by_steps["400"].metrics["summary/single2_relaxed"] == 0.0
    assert {by_steps["5000"].metrics[f"summary/{m}_relaxed"] for m in MODES} == {1.0}
    assert by_steps["5000"].params["seed"] == str(summary["seed"])
    assert by_steps["5000"].params["run_seed"] == "0"
