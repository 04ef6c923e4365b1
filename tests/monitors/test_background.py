"""SpectrumMonitor off the training thread: same numbers as in the hook, nothing lost, paced by its budget."""

from __future__ import annotations

import csv
import itertools
import logging
import threading
from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from rmt_callbacks import SpectrumMonitor, analyze
from rmt_callbacks.monitors._worker import AnalysisWorker, OverheadBudget

from scaffold import Toy, quiet_trainer, random_loader

STEPS = 12


@pytest.fixture(autouse=True)
def _warm() -> None:
    analyze(nn.Linear(16, 24))  # the first analysis of a process imports scipy: not what these tests are about


def _net(fail_at: int | None = None) -> Toy:
    """Two layers, a large learning rate (the weights move visibly every step); optionally fails at a step.

    A step takes at least 30 ms, as real training does: the worker (a few ms per analysis of these two small
    matrices) keeps up with a cadence of 2 or 3 steps even on a loaded machine, so every due step is analysed on
    time (the late path is tested in ``test_cadence.py``)."""
    torch.manual_seed(0)  # identical initial weights in every arm
    net = nn.Sequential(nn.Linear(16, 24), nn.Tanh(), nn.Linear(24, 16))
    return Toy(net=net, lr=0.5, step_s=0.03, fail_at=fail_at)


def _fit(tmp_path: Path, monitor: SpectrumMonitor, model: Toy | None = None, steps: int = STEPS) -> list[dict]:
    data = random_loader(96, 16, 16, batch_size=8, seed=1)
    logger = CSVLogger(tmp_path, name="csv")
    trainer = quiet_trainer(
        max_steps=steps, logger=logger, callbacks=[monitor], default_root_dir=tmp_path, log_every_n_steps=1
    )
    trainer.fit(model or _net(), data)
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        return list(csv.DictReader(f))


def _by_step(rows: list[dict[str, str]], skip: tuple[str, ...] = ("analysis_seconds", "overhead")) -> dict[int, dict]:
    """Values by step, without the timings (``monitor/analysis_seconds``, ``monitor/overhead``)."""
    out: dict[int, dict[str, str]] = {}
    for r in rows:
        kept = {k: v for k, v in r.items() if v and k != "step" and not k.endswith(skip)}
        out.setdefault(int(r["step"]), {}).update(kept)
    return out


def test_background_analysis_equals_the_synchronous_one_step_by_step(tmp_path: Path) -> None:
    """The worker analyses a copy taken at the step it reports: later optimizer steps do not leak into it."""
    kwargs = {"every_n_train_steps": 3, "overhead_budget": None, "analyses": ["summary", "marchenko_pastur"]}
    kwargs["solver"] = "torch"  # one solver in both arms (the worker's thread count may differ): to the last bit
    background = _by_step(_fit(tmp_path / "bg", SpectrumMonitor(**kwargs)))
    inline = _by_step(_fit(tmp_path / "inline", SpectrumMonitor(background=False, **kwargs)))
    assert sorted(background) == sorted(inline) == [0, 3, 6, 9, 12]  # the last one was flushed at train end
    assert background == inline  # every value, to the printed digit
    assert {background[s]["rmt/monitor/analysis_interval"] for s in (3, 6, 9, 12)} == {"3.0"}


def test_the_analysis_runs_on_another_thread(tmp_path: Path) -> None:
    threads: set[str] = set()

    def record(name: str, param: torch.Tensor) -> bool:  # called where the views are resolved: the training thread
        threads.add(threading.current_thread().name)
        return True

    monitor = SpectrumMonitor(every_n_train_steps=4, overhead_budget=None, param_filter=record)
    seen: list[tuple[str, int]] = []
    original = monitor._run_analysis

    def spy(*args, **kwargs):
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return original(*args, **kwargs)

    monitor._run_analysis = spy
    torch.set_num_threads(2)  # training's setting (the conftest fixture restores it)
    _fit(tmp_path, monitor)
    assert threads == {threading.current_thread().name}
    assert set(seen) == {("rmt-SpectrumMonitor", 1)} and len(seen) == 4  # steps 0, 4, 8, 12; one intra-op thread
    assert torch.get_num_threads() == 2  # the worker's setting is its own
    later: list[int] = []
    started_after = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    started_after.start()
    started_after.join()
    assert later == [2]  # nor is it the default of threads started after it (torch keeps the last value set)


def test_a_tiny_budget_defers_every_later_analysis_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With f = 1e-9 an analysis of ~ms would need ~10^6 s of training before the next: only the first two due steps
    run (the first analysis is a warm-up the budget does not count), and the final weights at train end; said at
    info level on the default cadence, as a warning on one the user asked for (a budget passed explicitly paces it
    too)."""
    with caplog.at_level(logging.INFO):
        rows = _fit(tmp_path, SpectrumMonitor(overhead_budget=1e-9), steps=110)  # the default cadence, every 50 steps
    assert _second_and_last(rows, every=50) == 110
    notes = [r.message for r in caplog.records if "overhead_budget=1e-09" in r.message]
    assert len(notes) == 1 and "deferred" in notes[0] and "the default cadence stretches" in notes[0], notes
    with pytest.warns(RuntimeWarning, match=r"overhead_budget=1e-09 was passed, so it paces the cadence you asked for"):
        rows = _fit(tmp_path / "explicit", SpectrumMonitor(every_n_train_steps=2, overhead_budget=1e-9))
    assert _second_and_last(rows, every=2) == STEPS


def _second_and_last(rows: list[dict[str, str]], *, every: int) -> int:
    """The step of the last of exactly three analyses: step 0 (the warm-up the budget does not count), the first
    due step the worker was free for (2 or 50 on an idle machine, a later due step when the warm-up is slow), and
    the final weights, whose step it returns."""
    steps = sorted(_by_step([r for r in rows if r.get("rmt/net.0.weight/lambda_max")]))
    assert len(steps) == 3 and steps[0] == 0 and steps[1] % every == 0 and steps[1] < steps[2], steps
    return steps[2]


def test_analyses_before_a_crash_are_logged(tmp_path: Path) -> None:
    monitor = SpectrumMonitor(every_n_train_steps=2, overhead_budget=None, analyses=["summary"])
    with pytest.raises(RuntimeError, match="failed at step 7"):
        _fit(tmp_path, monitor, _net(fail_at=7))
    with open(next(tmp_path.rglob("metrics.csv"))) as f:
        steps = sorted(_by_step([r for r in csv.DictReader(f) if r.get("rmt/net.0.weight/lambda_max")]))
    assert steps == [0, 2, 4, 6]


def test_worker_keeps_order_and_hands_errors_back() -> None:
    worker: AnalysisWorker[int] = AnalysisWorker("test")
    for i in range(5):
        worker.submit(lambda i=i: 1 // (i - 3) if i == 3 else i)
    done = worker.drain()
    worker.close()
    assert [f.value for f in done] == [0, 1, 2, None, 4]
    assert isinstance(done[3].error, ZeroDivisionError) and not worker.busy


def test_drain_with_a_timeout_returns_what_finished() -> None:
    release = threading.Event()
    worker: AnalysisWorker[str] = AnalysisWorker("test")
    worker.submit(lambda: "fast")
    worker.submit(lambda: release.wait(10) and "slow")
    first = worker.drain(timeout_s=0.5)
    assert [f.value for f in first][:1] == ["fast"]
    release.set()
    rest = worker.drain()
    worker.close()
    assert [f.value for f in first + rest] == ["fast", "slow"] and not worker.busy


def test_budget_spacing_is_cost_over_fraction() -> None:
    """An analysis of c seconds at fraction f allows the next one exactly c / f seconds after it started."""
    now = [0.0]
    budget = OverheadBudget(0.0625, clock=lambda: now[0])  # binary fractions: the comparisons are exact
    starts = []
    for tick in range(1000):  # a clock advancing 0.125 s per check, analyses costing 0.25 s: one every 4 s
        now[0] = tick * 0.125
        if budget.allows():
            starts.append(now[0])
            budget.started()
            budget.finished(0.25)
    assert starts[:2] == [0.0, 0.125]  # the first analysis is a warm-up: it does not count
    gaps = {round(b - a, 6) for a, b in itertools.pairwise(starts[1:])}
    assert gaps == {4.0}
    assert OverheadBudget(None).allows()


def test_the_monitor_pickles_for_spawned_processes(tmp_path: Path) -> None:
    """``ddp_spawn`` pickles the callbacks: the copy gets its own worker and still analyses."""
    import pickle

    copy = pickle.loads(pickle.dumps(SpectrumMonitor(every_n_train_steps=6, overhead_budget=None)))
    assert copy.every_n_train_steps == 6 and not copy._worker.busy
    assert sorted(_by_step([r for r in _fit(tmp_path, copy) if r.get("rmt/net.0.weight/lambda_max")])) == [0, 6, 12]
