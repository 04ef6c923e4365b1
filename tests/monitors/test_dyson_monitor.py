"""DysonMonitor in real Lightning runs: the exact temperature, the linear scaling rule, jumps, state."""

from __future__ import annotations

import csv
import warnings
from collections import deque
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from reference_models import TeacherStudent2x2
from rmt_callbacks import DysonMonitor
from rmt_callbacks.monitors._batch import batch_size_of

from scaffold import Toy, quiet_trainer, random_loader


def _regression(lr: float, step_lr_at: int | None = None) -> Toy:
    """One Linear ``layer``, SGD at ``lr``, divided by 10 every ``step_lr_at`` steps if given."""

    def optimizer(module: Toy) -> dict:
        opt = torch.optim.SGD(module.parameters(), lr=lr)
        if step_lr_at is None:
            return {"optimizer": opt}
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=step_lr_at, gamma=0.1)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return Toy(layer=torch.nn.Linear(6, 5), optimizer=optimizer)


def _loader(batch_size: int, n: int = 256) -> DataLoader:
    return random_loader(n, 6, 5, batch_size=batch_size, seed=0)


def _fit(module: pl.LightningModule, monitor: DysonMonitor, steps: int, tmp_path: Path, loader=None) -> list[dict]:
    logger = CSVLogger(tmp_path, name="csv")
    quiet_trainer(max_steps=steps, logger=logger, callbacks=[monitor]).fit(module, loader)
    with open(Path(logger.log_dir) / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def _final(rows: list[dict], key: str) -> float:
    return [float(r[key]) for r in rows if r.get(key)][-1]


def test_logs_the_exact_temperature_of_a_real_run(tmp_path: Path) -> None:
    rows = _fit(
        _regression(lr=0.05),
        DysonMonitor(log_every_n_steps=5, window=10, overhead_budget=None),
        20,
        tmp_path,
        _loader(8),
    )
    key = "rmt/dyson/noise_temperature"
    logged = [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]
    assert [s for s, _ in logged] == [5, 10, 15, 20]
    assert all(t == 0.05 / 8 for _, t in logged)
    assert _final(rows, "rmt/layer.weight/dyson_width") > 0.0
    assert _final(rows, "rmt/layer.weight/dyson_diffusion_normalized") == pytest.approx(
        _final(rows, "rmt/layer.weight/dyson_diffusion") / (0.05 / 8)
    )


def _ts_widths(lr: float, batch_size: int, tmp_path: Path) -> dict[str, float]:
    langevin_time = 40.0  # steps · α, the same for both runs: 4/α relaxation times of the TS drift (τ = 1)
    steps = round(langevin_time / lr)
    model = TeacherStudent2x2(networks=300, lr=lr, batch_size=batch_size, epochs=1, batches_per_epoch=steps, seed=1)
    rows = _fit(model, DysonMonitor(log_every_n_steps=steps, window=100, overhead_budget=None), steps, tmp_path)
    return {k: _final(rows, f"rmt/weight/dyson_{k}") for k in ("ensemble_width_normalized", "diffusion_normalized")}


def test_normalised_widths_agree_at_equal_temperature(tmp_path: Path) -> None:
    a = _ts_widths(0.1, 16, tmp_path / "a")
    b = _ts_widths(0.05, 8, tmp_path / "b")
    # The ensemble std of 300 networks × 2 levels is known to ≈ 1/√600 ≈ 4 % per run; the discrete-time factor
    # 2/(2 − α) of (E27) differs by 0.6 % in the width. 15 % is ≈ 2.5 combined standard errors.
    assert a["ensemble_width_normalized"] == pytest.approx(b["ensemble_width_normalized"], rel=0.15)
    # D/T = const · ε²: 100 snapshots × 600 levels of increments pin it to a few per cent.
    assert a["diffusion_normalized"] == pytest.approx(b["diffusion_normalized"], rel=0.15)


def test_warns_once_when_the_temperature_jumps(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(_regression(lr=0.1, step_lr_at=10), DysonMonitor(log_every_n_steps=5), 30, tmp_path, _loader(8))
    jumps = [w for w in caught if "jumped" in str(w.message)]
    assert len(jumps) == 1
    assert "0.0125" in str(jumps[0].message) and "lr=0.1" in str(jumps[0].message)


def test_state_round_trip_keeps_the_window(tmp_path: Path) -> None:
    monitor = DysonMonitor(log_every_n_steps=5, window=4, overhead_budget=None)
    _fit(_regression(lr=0.05), monitor, 10, tmp_path, _loader(8))
    state = monitor.state_dict()
    assert len(state["snapshots"]["layer.weight"]) == 4
    fresh = DysonMonitor(log_every_n_steps=5, window=4)
    fresh.load_state_dict(state)
    restored = fresh.state_dict()
    assert restored["snapshots"]["layer.weight"][-1][:2] == state["snapshots"]["layer.weight"][-1][:2]  # step, time
    assert torch.equal(restored["snapshots"]["layer.weight"][-1][2], state["snapshots"]["layer.weight"][-1][2])
    assert restored["clocks"] == state["clocks"] == {"0:0": (pytest.approx(10 * 0.05), 10)}  # Langevin time


def test_selection_that_matches_nothing_raises_at_fit_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"DysonMonitor: .*matches no matrix"):
        _fit(_regression(lr=0.05), DysonMonitor(include=["nothing.*"]), 2, tmp_path, _loader(8))


def test_a_bad_solver_is_refused_at_construction_and_a_good_one_kept() -> None:
    import pickle

    with pytest.raises(ValueError, match=r"solver must be one of \('auto', 'torch', 'scipy'\), got 'lapack'"):
        DysonMonitor(solver="lapack")  # type: ignore[arg-type]
    monitor = DysonMonitor(solver="torch")
    assert pickle.loads(pickle.dumps(monitor)).solver == "torch"  # ddp_spawn
    assert monitor.state_key == DysonMonitor().state_key  # last bits only: not part of its identity


def test_the_solver_decomposes_the_snapshots(tmp_path: Path) -> None:
    runs = {}
    for solver in ("torch", "scipy"):
        monitor = DysonMonitor(log_every_n_steps=5, window=4, overhead_budget=None, solver=solver)
        torch.manual_seed(0)  # the same initial weights in both runs
        _fit(_regression(lr=0.05), monitor, 5, tmp_path / solver, _loader(8))
        runs[solver] = torch.stack(
            [s[2] for s in monitor.state_dict()["snapshots"]["layer.weight"]]
        )  # (step, t, levels)
    assert runs["torch"].shape == (4, 5)  # Linear(6, 5): 5 levels per snapshot
    torch.testing.assert_close(runs["scipy"], runs["torch"], rtol=1e-12, atol=1e-14)  # LAPACK's rounding apart


def test_batch_size_of_nested_batches() -> None:
    assert batch_size_of([torch.zeros(()), (torch.zeros(5, 2),)]) == 5
    assert batch_size_of("text") is None


def test_a_stretched_stride_keeps_every_factor_th_snapshot_back_from_the_newest() -> None:
    from rmt_callbacks.monitors.dyson import Snapshot

    monitor = DysonMonitor(window=10)
    monitor._snapshots = {"w": deque(Snapshot(s, 0.1 * s, torch.zeros(2)) for s in range(3, 11))}  # steps 3..10
    monitor._stretch(4)
    assert monitor._stride == 4 and [s.step for s in monitor._snapshots["w"]] == [6, 10]


def test_budget_stretches_the_stride_of_a_real_run_and_says_so(tmp_path: Path) -> None:
    """A budget no snapshot can meet: the stride jumps at the second snapshot (the first pays for warm-up)."""
    monitor = DysonMonitor(log_every_n_steps=1, window=10, overhead_budget=1e-9)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = _fit(_regression(lr=0.05), monitor, 6, tmp_path, _loader(8))
    strides = [(int(r["step"]), float(r["rmt/dyson/stride"])) for r in rows if r.get("rmt/dyson/stride")]
    assert strides == [(1, 1.0)] + [(s, 1024.0) for s in range(2, 7)]  # stride_factor's limit, one decision
    assert monitor.state_dict()["stride"] == 1024
    told = [str(w.message) for w in caught if "recording every 1024 steps from step 2" in str(w.message)]
    assert len(told) == 1 and "overhead_budget=1e-09" in told[0]  # a budget passed explicitly: a warning
    assert not any(r.get("rmt/layer.weight/dyson_width") for r in rows if int(r["step"]) >= 2)  # one snapshot left


def test_auto_budget_never_stretches_a_stride_the_user_chose(tmp_path: Path) -> None:
    monitor = DysonMonitor(every_n_train_steps=2, log_every_n_steps=2, window=10)
    rows = _fit(_regression(lr=0.05), monitor, 12, tmp_path, _loader(8))
    assert {float(r["rmt/dyson/stride"]) for r in rows if r.get("rmt/dyson/stride")} == {2.0}
    assert [s.step for s in monitor._snapshots["layer.weight"]] == [2, 4, 6, 8, 10, 12]
