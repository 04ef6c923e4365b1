"""What the user asks for is what they get: every due step of an explicit cadence, the final weights always, late
analyses said once with numbers, and the overhead budget pacing only the default cadence."""

from __future__ import annotations

import csv
import itertools
import time
import warnings
from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from rmt_callbacks import SpectrumMonitor, analyze
from rmt_callbacks.monitors._recorder import Recorder
from rmt_callbacks.monitors._schedule import DEFAULT_OVERHEAD_BUDGET

from scaffold import Toy, quiet_trainer, random_loader

KEY = "rmt/net.0.weight/lambda_max"


def _paced(step_s: float = 0.0) -> Toy:
    """A small MLP whose optimizer step takes ``step_s`` seconds (what real training does: it takes time)."""
    torch.manual_seed(0)
    return Toy(
        net=nn.Sequential(nn.Linear(12, 20), nn.Tanh(), nn.Linear(20, 3)), loss="cross_entropy", lr=0.1, step_s=step_s
    )


def _fit(tmp_path: Path, monitor: SpectrumMonitor, model: Toy, **trainer_kwargs) -> tuple[list[int], list[str]]:
    """Fit; returns the steps at which ``KEY`` was logged and the RuntimeWarnings raised."""
    logger = CSVLogger(tmp_path, name="csv")
    trainer = quiet_trainer(logger=logger, callbacks=[monitor], **trainer_kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, random_loader(256, 12, seed=1, target=lambda x: x[:, :3].argmax(1)))
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r.get(KEY)]
    return steps, [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


@pytest.fixture(autouse=True)
def _warm() -> None:
    analyze(nn.Linear(12, 20))  # the first analysis of a process imports scipy: not what these tests time


def test_an_explicit_cadence_is_analysed_at_every_due_step_in_the_hook(tmp_path: Path) -> None:
    steps, said = _fit(tmp_path, SpectrumMonitor(every_n_train_steps=5, background=False), _paced(), max_steps=30)
    assert steps == [0, 5, 10, 15, 20, 25, 30]
    assert not [m for m in said if "was asked for" in m]


def test_an_explicit_cadence_is_analysed_at_every_due_step_in_the_background(tmp_path: Path) -> None:
    """Training at 20 ms a step leaves the worker 100 ms per analysis of two small matrices: it keeps up."""
    monitor = SpectrumMonitor(every_n_train_steps=5, figure_every_n_analyses=None)
    steps, said = _fit(tmp_path, monitor, _paced(step_s=0.02), max_steps=30)
    assert steps == [0, 5, 10, 15, 20, 25, 30]
    assert not [m for m in said if "was asked for" in m]


def test_analyses_slower_than_the_cadence_run_late_and_say_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each analysis takes 0.3 s, training 2 steps in ~10 ms: due steps wait for the worker; one warning, with the
    requested and achieved cadence, the cost and the way out; the logged intervals are the achieved ones."""
    analyse = Recorder.analyse

    def slow(self, *args, **kwargs):
        time.sleep(0.3)
        return analyse(self, *args, **kwargs)

    monkeypatch.setattr(Recorder, "analyse", slow)
    monitor = SpectrumMonitor(every_n_train_steps=2, figure_every_n_analyses=None)
    steps, said = _fit(tmp_path, monitor, _paced(step_s=0.005), max_steps=120)
    assert steps[0] == 0 and steps[-1] == 120 and steps == sorted(set(steps))
    assert 3 <= len(steps) < 61  # fewer than the 61 due steps: late ones were taken when the worker was free
    late = [m for m in said if "every_n_train_steps=2 was asked for" in m]
    assert len(late) == 1, said
    for words in ("analysis takes", "steps after the previous one", "rmt/monitor/analysis_interval",
                  "background=False"):  # fmt: skip
        assert words in late[0], late[0]
    with open(next(tmp_path.rglob("metrics.csv"))) as f:
        rows = [r for r in csv.DictReader(f) if r.get("rmt/monitor/analysis_interval")]
    intervals = [int(float(r["rmt/monitor/analysis_interval"])) for r in rows]
    assert intervals == [0, *(b - a for a, b in itertools.pairwise(steps))]
    overhead = [float(r["rmt/monitor/overhead"]) for r in rows if r.get("rmt/monitor/overhead")]
    assert len(overhead) == len(steps) - 1  # not at step 0, before any training
    assert all(0.0 < o < 1.0 for o in overhead)  # the monitor's own seconds (the sleep is outside them)


@pytest.mark.parametrize(
    ("cadence", "trainer_kwargs", "expected"),
    [
        ({"every_n_train_steps": 50}, {"max_steps": 7}, [0, 7]),
        ({"every_n_epochs": 3}, {"max_epochs": 2}, [0, 64]),  # 32 steps an epoch; no epoch was due
        ({}, {"max_steps": 12}, [0, 12]),  # the default cadence, every 50
    ],
)
def test_the_final_weights_are_always_analysed(tmp_path: Path, cadence: dict, trainer_kwargs: dict, expected) -> None:
    steps, _ = _fit(tmp_path, SpectrumMonitor(**cadence, background=False), _paced(), **trainer_kwargs)
    assert steps == expected


def test_the_budget_paces_only_the_default_cadence() -> None:
    assert SpectrumMonitor()._budget.fraction == DEFAULT_OVERHEAD_BUDGET
    assert SpectrumMonitor(every_n_train_steps=5)._budget.fraction is None
    assert SpectrumMonitor(every_n_epochs=1)._budget.fraction is None
    assert SpectrumMonitor(every_n_train_steps=5, overhead_budget=0.1)._budget.fraction == 0.1  # asked: honoured
    assert SpectrumMonitor(overhead_budget=None)._budget.fraction is None
