"""SpectrumMonitor with a real Trainer on CPU and a CSV logger: cadence, step, selection, skips, state, errors."""

from __future__ import annotations

import csv
import subprocess
import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader

from rmt_callbacks import SpectrumMonitor, analyze
from rmt_callbacks.analysis import ANALYSES, is_stepwise

from scaffold import Toy, quiet_trainer, random_loader


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 3))


def _tiny() -> Toy:
    """Two linear layers on Gaussian data."""
    return Toy(net=_mlp(), loss="cross_entropy", lr=0.1)


class WithSkips(Toy):
    """:func:`_tiny` and extra parameters to exercise skips."""

    def __init__(self) -> None:
        super().__init__(net=_mlp(), loss="cross_entropy", lr=0.1)
        self.thin = nn.Linear(12, 1)  # weight (1, 12): degenerate, and used in the loss below
        self.broken = nn.Module()  # an ensemble weight (E, M, N) full of NaN, not trained
        self.broken.weight = nn.Parameter(torch.full((4, 6, 5), float("nan")), requires_grad=False)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return super().training_step(batch, batch_idx) + 0.01 * self.thin(batch[0]).pow(2).mean()


def _loader(n: int = 64, batch_size: int = 8) -> DataLoader:
    return random_loader(n, 12, batch_size=batch_size, seed=1, target=lambda x: x[:, :3].argmax(dim=1))


def _fit(tmp_path: Path, callbacks: list, *, model: pl.LightningModule | None = None, **trainer_kwargs) -> tuple:
    logger = CSVLogger(tmp_path, name="csv")
    kwargs = {"max_steps": 6, **trainer_kwargs}
    trainer = quiet_trainer(default_root_dir=tmp_path, logger=logger, callbacks=callbacks, **kwargs)
    model = model or _tiny()
    trainer.fit(model, _loader())
    return trainer, model, _csv_rows(logger)


def _csv_rows(logger: CSVLogger) -> list[dict[str, str]]:
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        return list(csv.DictReader(f))


def _steps_with(rows: list[dict[str, str]], key: str) -> list[int]:
    return [int(r["step"]) for r in rows if r.get(key)]


def test_step_is_global_step_and_values_match_analyze(tmp_path: Path) -> None:
    """Every 3 optimizer steps with 2 batches per step: analyses at global steps 0, 3, 6, logged at those steps."""
    analyses = ["summary", "marchenko_pastur"]
    monitor = SpectrumMonitor(every_n_train_steps=3, analyses=analyses, background=False)  # exact under any load
    trainer, model, rows = _fit(tmp_path, [monitor], accumulate_grad_batches=2)
    assert trainer.global_step == 6
    assert _steps_with(rows, "rmt/net.0.weight/lambda_max") == [0, 3, 6]
    final = {r.name: r.metrics for r in analyze(model, analyses=["summary", "marchenko_pastur"])}
    last = rows[-1]
    for name, metrics in final.items():
        for stat, value in ((k, v) for k, v in metrics.items() if is_stepwise(k, model.get_parameter(name).shape)):
            rel = 1e-6 if stat.startswith("mp_") else 1e-9  # the fit's optimiser tolerance: the CPU solver may differ
            assert float(last[f"rmt/{name}/{stat}"]) == pytest.approx(value, rel=rel, abs=1e-12), (name, stat)
    assert not [k for k in trainer.callback_metrics if k.startswith("rmt/")]  # never through pl_module.log
    assert monitor.state_dict() == {"last_step": 6, "num_analyses": 3}


def test_epoch_cadence(tmp_path: Path) -> None:
    monitor = SpectrumMonitor(
        every_n_epochs=2, overhead_budget=None, include=["net.0.*"], analyses=["summary"], log_key_prefix="spec/"
    )
    _, _, rows = _fit(tmp_path, [monitor], max_steps=-1, max_epochs=4)  # 8 steps per epoch
    assert _steps_with(rows, "spec/net.0.weight/stable_rank") == [0, 16, 32]
    assert not any(k.startswith("spec/net.2") for k in rows[0])


def test_bad_matrices_are_skipped_with_one_warning_each(tmp_path: Path) -> None:
    monitor = SpectrumMonitor(every_n_train_steps=2, background=False)  # every step exactly, whatever the load
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, _, rows = _fit(tmp_path, [monitor], model=WithSkips())
    assert trainer.global_step == 6  # training was not disturbed
    skips = [str(w.message) for w in caught if "SpectrumMonitor: skipping" in str(w.message)]
    assert len(skips) == 2, skips  # 4 analyses, but one warning per (matrix, reason)
    assert any("'thin.weight'" in s and "degenerate shape (1, 12)" in s for s in skips)
    assert any("'broken.weight'" in s and "120 of its 120 entries are NaN or Inf" in s for s in skips)
    assert _steps_with(rows, "rmt/net.0.weight/lambda_max") == [0, 2, 4, 6]
    assert not [k for k in rows[0] if k.startswith(("rmt/thin.", "rmt/broken."))]  # a skip is a tag, not a metric
    assert not [k for k in rows[0] if k.endswith(("/skipped", "_converged", "/mp_ratio"))]  # no constant metric


def test_state_is_checkpointed_and_resumed(tmp_path: Path) -> None:
    first = SpectrumMonitor(every_n_train_steps=4, overhead_budget=None, analyses=["summary"])
    other = SpectrumMonitor(every_n_train_steps=4, overhead_budget=None, analyses=["summary"], log_key_prefix="other/")
    assert first.state_key != other.state_key
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _fit(tmp_path / "a", [first, other, ckpt], max_steps=4, enable_checkpointing=True)
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["callbacks"]
    assert saved[first.state_key] == {"last_step": 4, "num_analyses": 2}
    assert saved[other.state_key] == {"last_step": 4, "num_analyses": 2}

    resumed = SpectrumMonitor(every_n_train_steps=4, overhead_budget=None, analyses=["summary"])
    trainer = quiet_trainer(
        default_root_dir=tmp_path / "b", logger=CSVLogger(tmp_path / "b"), callbacks=[resumed], max_steps=8
    )
    trainer.fit(_tiny(), _loader(), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    rows = _csv_rows(trainer.logger)
    assert _steps_with(rows, "rmt/net.0.weight/lambda_max") == [8]  # step 4 is not analysed twice
    assert resumed.state_dict() == {"last_step": 8, "num_analyses": 3}


def test_without_a_logger_it_warns_and_does_nothing(tmp_path: Path) -> None:
    monitor = SpectrumMonitor(every_n_train_steps=2)
    trainer = quiet_trainer(logger=False, callbacks=[monitor], max_steps=4)
    with pytest.warns(RuntimeWarning, match="the Trainer has no logger; nothing will be analysed"):
        trainer.fit(_tiny(), _loader())
    assert monitor.state_dict() == {"last_step": 4, "num_analyses": 3}  # the schedule still advanced


def test_selection_that_matches_nothing_raises_at_fit_start(tmp_path: Path) -> None:
    monitor = SpectrumMonitor(include=["encoder.*"])
    with pytest.raises(ValueError, match=r"SpectrumMonitor: .*include=\('encoder.\*',\).*'net.0.weight' \(16, 12\)"):
        _fit(tmp_path, [monitor])


BUDGET_MUST = r"overhead_budget must be 'auto', None or a number in \(0, 1\]"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"every_n_train_steps": 5, "every_n_epochs": 1}, ValueError, "mutually exclusive"),
        ({"every_n_train_steps": 0}, ValueError, r"every_n_train_steps must be None or an int >= 1, got 0"),
        ({"include": "net.*"}, TypeError, r"include must be a list of fnmatch patterns, got the str 'net.\*'"),
        ({"exclude": [3]}, TypeError, r"exclude must be a list of str"),
        ({"param_filter": "net.*"}, TypeError, r"param_filter must be None or a callable"),
        ({"analyses": ["summary", "alpha"]}, ValueError, r"analyses must be a non-empty list of names from .*'alpha'"),
        ({"analyses": []}, ValueError, r"analyses must be a non-empty list"),
        ({"log_key_prefix": 1}, TypeError, r"log_key_prefix must be a str, got int \(1\)"),
        ({"figure_every_n_analyses": -1}, ValueError, r"figure_every_n_analyses must be None or an int >= 0, got -1"),
        ({"overhead_budget": 0}, ValueError, rf"{BUDGET_MUST}, got 0"),
        ({"overhead_budget": 1.5}, ValueError, rf"{BUDGET_MUST}, got 1.5"),
        ({"overhead_budget": "2%"}, ValueError, rf"{BUDGET_MUST}, got '2%'"),
        ({"figure_every_n_analyses": "some"}, ValueError, r"figure_every_n_analyses must be 'auto', None or an int"),
        ({"background": 1}, TypeError, r"background must be a bool, got int \(1\)"),
        ({"solver": "mkl"}, ValueError, r"solver must be one of \('auto', 'torch', 'scipy'\), got 'mkl'"),
        ({"solver": None}, ValueError, r"solver must be one of \('auto', 'torch', 'scipy'\), got None"),
    ],
)
def test_bad_arguments_raise_in_init(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        SpectrumMonitor(**kwargs)


def test_the_solver_is_kept_through_pickling_and_stays_out_of_the_state_key() -> None:
    """A solver moves the numbers only in their last bits: a checkpoint of one restores into the other."""
    import pickle

    monitor = SpectrumMonitor(every_n_train_steps=2, solver="scipy")
    copy = pickle.loads(pickle.dumps(monitor))  # ddp_spawn
    assert monitor.solver == copy.solver == copy._recorder.solver == "scipy"
    assert monitor.state_key == copy.state_key == SpectrumMonitor(every_n_train_steps=2).state_key


def test_the_logged_values_are_those_of_analyze_with_the_same_solver(tmp_path: Path) -> None:
    monitor = SpectrumMonitor(every_n_train_steps=3, background=False, solver="torch", analyses=["summary"])
    _, model, rows = _fit(tmp_path, [monitor], max_steps=3)
    logged = {k: float(v) for r in rows if r.get("step") == "3" for k, v in r.items() if v and k != "step"}
    want = {r.name: r.metrics for r in analyze(model, analyses=["summary"], solver="torch")}
    assert logged["rmt/net.0.weight/lambda_max"] == want["net.0.weight"]["lambda_max"]  # to the bit: one route


def test_without_mlflow_logger_no_mlflow_and_no_plotting_is_loaded(tmp_path: Path) -> None:
    """Lightning loads matplotlib itself; what we promise is that our plots and MLflow sinks stay unloaded."""
    code = f"""
import sys, lightning.pytorch as pl
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.loggers import CSVLogger
from rmt_callbacks import SpectrumMonitor
trainer = pl.Trainer(max_steps=2, logger=CSVLogger({str(tmp_path)!r}), enable_checkpointing=False,
                     callbacks=[SpectrumMonitor(every_n_train_steps=1)], enable_progress_bar=False)
trainer.fit(BoringModel())
print([m for m in ("mlflow", "rmt_callbacks.figures", "rmt_callbacks.sinks.mlflow") if m in sys.modules])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_docstring_lists_every_logged_statistic() -> None:
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 40), nn.Linear(40, 20))
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(40, 40, generator=g))
    stats = {k for r in analyze(model, analyses=ANALYSES) for k in r.metrics}
    assert {"mp_sigma2", "semicircle_radius", "surmise_beta", "mean_spacing_ratio", "skipped"} <= stats
    documented = SpectrumMonitor.__doc__.split("Logged metrics")[1].split("MLflow run")[0]
    assert [s for s in sorted(stats) if is_stepwise(s) and f"``{s}``" not in documented] == []


def test_failed_tag_tells_the_latest_analysis() -> None:
    """A fit that failed at step 0 and succeeds later must not leave its old reason in the run tag."""
    from rmt_callbacks.analysis import MatrixResult
    from rmt_callbacks.monitors._artifacts import run_tags

    failed = MatrixResult("w", (8, 8), "linear", {"skipped": 0.0}, failures={"power_law": "not a heavy tail"})
    healthy = MatrixResult("w", (8, 8), "linear", {"skipped": 0.0})
    assert run_tags([failed])["rmt.failed.w"] == "power_law: not a heavy tail"
    assert run_tags([healthy])["rmt.failed.w"] == "none"
