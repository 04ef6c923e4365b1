"""Resume: a run that crashes at an arbitrary step and is resumed from its checkpoint continues the same MLflow
run; both monitors' states come back (through ``torch.load(weights_only=True)``), no step is logged twice or lost.

Every epoch is one full batch of the same 8 samples, so where Lightning restarts inside the data does not matter.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
from mlflow import MlflowClient
from torch.utils.data import DataLoader

from rmt_callbacks import DysonMonitor, SpectrumMonitor, analyze

from scaffold import Toy, quiet_trainer, random_loader


class Crash(pl.Callback):
    """Raise when step ``at`` is about to run (its checkpoint of step ``at`` is already on disk)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == self.at:
            raise RuntimeError(f"simulated crash at step {self.at}")


def _net() -> Toy:
    return Toy(6, 5, lr=0.1)  # fc: Linear(6, 5)


def _data() -> DataLoader:
    return random_loader(8, 6, batch_size=8, seed=0, target=lambda x: x[:, :5].sin())


def _monitors() -> list[pl.Callback]:
    return [
        SpectrumMonitor(
            every_n_train_steps=3, overhead_budget=None, analyses=["summary"], figure_every_n_analyses=None
        ),
        DysonMonitor(every_n_train_steps=1, log_every_n_steps=2, window=4, batch_size=8, overhead_budget=None),
    ]


def _trainer(tmp: Path, logger: MLFlowLogger, callbacks: list[pl.Callback], steps: int, every: int = 1) -> pl.Trainer:
    ckpt = ModelCheckpoint(dirpath=tmp / "ckpt", every_n_train_steps=every, save_last=True, save_top_k=0)
    return quiet_trainer(
        max_steps=steps, default_root_dir=tmp, logger=logger, callbacks=[*callbacks, ckpt], log_every_n_steps=1,
        enable_checkpointing=True,
    )  # fmt: skip


def test_crash_and_resume_continue_the_same_run(tmp_path: Path) -> None:
    uri, art = f"sqlite:///{tmp_path}/mlflow.db", (tmp_path / "art").as_uri()
    first = MLFlowLogger(experiment_name="resume", tracking_uri=uri, artifact_location=art)
    with pytest.raises(RuntimeError, match="simulated crash at step 7"):
        _trainer(tmp_path, first, [*_monitors(), Crash(7)], steps=12).fit(_net(), _data())

    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)  # nothing of ours needs unpickling
    assert saved["global_step"] == 7
    states = {k.split("{")[0]: v for k, v in saved["callbacks"].items() if k.startswith(("Spectrum", "Dyson"))}
    assert states["SpectrumMonitor"] == {"last_step": 6, "num_analyses": 3}
    window = states["DysonMonitor"]["snapshots"]["fc.weight"]  # (step, Langevin time, levels): 5 of fc's 6 are not
    assert [(s, t, levels.shape) for s, t, levels in window] == [  # structural zeros
        (k, pytest.approx(0.1 * k), torch.Size([5])) for k in (4, 5, 6, 7)
    ]

    monitors = _monitors()
    second = MLFlowLogger(experiment_name="resume", tracking_uri=uri, run_id=first.run_id)
    model = _net()
    _trainer(tmp_path, second, monitors, steps=12).fit(model, _data(), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert second.run_id == first.run_id

    client = MlflowClient(uri)
    steps = [m.step for m in client.get_metric_history(first.run_id, "rmt/fc.weight/lambda_max")]
    assert steps == [0, 3, 6, 7, 9, 12]  # the resume step 7 is a training start: analysed once (never 6 again)
    assert monitors[0].state_dict() == {"last_step": 12, "num_analyses": 6}  # a lost state would count 3
    last = client.get_metric_history(first.run_id, "rmt/fc.weight/lambda_max")[-1].value
    assert last == pytest.approx(analyze(model)[0].metrics["lambda_max"], rel=1e-9)  # the resumed weights
    widths = [m.step for m in client.get_metric_history(first.run_id, "rmt/fc.weight/dyson_width")]
    assert widths == [4, 6, 8, 10, 12]  # 3 snapshots make a width; a lost window would hold one at step 8
    temperatures = client.get_metric_history(first.run_id, "rmt/dyson/noise_temperature")
    assert [m.step for m in temperatures] == [2, 4, 6, 8, 10, 12]
    assert [m.value for m in temperatures] == pytest.approx([0.1 / 8] * 6)
    spectra = sorted(f.path for f in client.list_artifacts(first.run_id, "rmt/monitor/spectra"))
    assert spectra == [f"rmt/monitor/spectra/step_{s:08d}.npz" for s in (0, 3, 6, 7, 9, 12)]


def test_steps_replayed_from_an_older_checkpoint_are_not_logged_twice(tmp_path: Path) -> None:
    """Checkpoints every 4 steps, crash at 7: the resume from step 4 replays 5-7, already logged (6) or not."""
    uri, art = f"sqlite:///{tmp_path}/mlflow.db", (tmp_path / "art").as_uri()
    first = MLFlowLogger(experiment_name="replay", tracking_uri=uri, artifact_location=art)
    with pytest.raises(RuntimeError, match="simulated crash at step 7"):
        _trainer(tmp_path, first, [*_monitors(), Crash(7)], steps=12, every=4).fit(_net(), _data())
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["global_step"] == 4

    second = MLFlowLogger(experiment_name="replay", tracking_uri=uri, run_id=first.run_id)
    with pytest.warns(UserWarning, match=f"MLflow run {first.run_id} already holds step 6 of ") as caught:
        _trainer(tmp_path, second, _monitors(), steps=12, every=4).fit(
            _net(), _data(), ckpt_path=tmp_path / "ckpt" / "last.ckpt"
        )
    assert sum("already holds step" in str(w.message) for w in caught) == 1  # once, by the run's one writer
    client = MlflowClient(uri)
    steps = [m.step for m in client.get_metric_history(first.run_id, "rmt/fc.weight/lambda_max")]
    assert sorted(steps) == [0, 3, 4, 6, 9, 12]  # 6 once; 4 is the resume start, not logged before
    widths = [m.step for m in client.get_metric_history(first.run_id, "rmt/fc.weight/dyson_width")]
    assert sorted(widths) == [4, 6, 8, 10, 12]  # 6 logged before the crash, not again (3 snapshots: from 4)
