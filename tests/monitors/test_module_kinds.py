"""Both monitors, in real Lightning runs, on recurrent layers, parametrized weights and compiled submodules."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.nn.utils import parametrizations
from torch.utils.data import DataLoader, TensorDataset

from rmt_callbacks import DysonMonitor, SpectrumMonitor


class Recurrent(pl.LightningModule):
    """Only recurrent layers: an LSTM, a GRU cell."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(6, 8, batch_first=True, bidirectional=True)
        self.cell = nn.GRUCell(16, 4)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        out, _ = self.lstm(x.view(-1, 2, 6))
        return nn.functional.mse_loss(self.cell(out[:, -1]), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


class Parametrized(pl.LightningModule):
    """Spectral-norm and weight-norm layers, and a compiled submodule (eager backend: no compiler needed)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.sn = parametrizations.spectral_norm(nn.Linear(12, 10))
        with torch.no_grad():
            self.sn.parametrizations.weight.original.mul_(3.0)  # the raw weight's norm is far from 1
        self.wn = parametrizations.weight_norm(nn.Linear(10, 8))
        self.head = torch.compile(nn.Linear(8, 4), backend="eager")

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.head(torch.tanh(self.wn(torch.tanh(self.sn(x))))), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def _loader(out: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(64, 12, generator=g), torch.randn(64, out, generator=g)), batch_size=8)


def _fit(tmp_path: Path, model: pl.LightningModule, monitor: pl.Callback, out: int) -> list[dict[str, str]]:
    logger = CSVLogger(tmp_path, name="csv")
    trainer = pl.Trainer(
        max_steps=8, logger=logger, callbacks=[monitor], accelerator="cpu", enable_progress_bar=False,
        enable_checkpointing=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, _loader(out))
    with open(Path(logger.log_dir) / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def _names(rows: list[dict[str, str]], stat: str) -> set[str]:
    return {k.removeprefix("rmt/").removesuffix(f"/{stat}") for k in rows[0] if k.endswith(f"/{stat}")}


def _one_process(model: nn.Module) -> SimpleNamespace:
    """The trainer as ``snapshot_module`` reads it in one process (the gather a sharded monitor runs)."""
    return SimpleNamespace(strategy=SimpleNamespace(model=model), is_global_zero=True)


GATES = {f"lstm.weight_{w}_l0{d}.{g}" for w in ("ih", "hh") for d in ("", "_reverse") for g in "ifgo"}
CELL = {f"cell.weight_{w}.{g}" for w in ("ih", "hh") for g in "rzn"}


def test_spectrum_monitor_on_a_model_of_recurrent_layers_only(tmp_path: Path) -> None:
    rows = _fit(tmp_path, Recurrent(), SpectrumMonitor(every_n_train_steps=4, analyses=["summary"]), out=4)
    assert _names(rows, "lambda_max") == GATES | CELL


def test_dyson_monitor_on_a_model_of_recurrent_layers_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        rows = _fit(tmp_path, Recurrent(), DysonMonitor(log_every_n_steps=4, window=4, overhead_budget=None), out=4)
    assert not [r for r in caplog.records if "no optimizer updates it" in r.getMessage()]
    logged = {k.removeprefix("rmt/").rpartition("/")[0] for r in rows for k, v in r.items() if v and "dyson_width" in k}
    assert logged == GATES | CELL


def test_spectrum_monitor_reads_parametrized_weights_as_applied_and_compiled_names(tmp_path: Path) -> None:
    model = Parametrized()
    rows = _fit(tmp_path, model, SpectrumMonitor(every_n_train_steps=4, analyses=["summary"]), out=4)
    assert _names(rows, "spectral_norm") == {"sn.weight", "wn.weight", "head.weight"}
    last = [r for r in rows if r.get("rmt/sn.weight/spectral_norm")][-1]
    assert float(last["rmt/sn.weight/spectral_norm"]) == pytest.approx(1.0, abs=0.05)  # the applied weight's norm
    raw = float(torch.linalg.matrix_norm(model.sn.parametrizations.weight.original.detach(), ord=2))
    assert raw > 1.5  # what was reported before: the raw original's


def test_dyson_monitor_follows_parametrized_weights_through_their_originals(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        rows = _fit(tmp_path, Parametrized(), DysonMonitor(log_every_n_steps=4, window=4, overhead_budget=None), out=4)
    assert not [r for r in caplog.records if "no optimizer updates it" in r.getMessage()]
    logged = {k.removeprefix("rmt/").rpartition("/")[0] for r in rows for k, v in r.items() if v and "dyson_width" in k}
    assert logged == {"sn.weight", "wn.weight", "head.weight"}


def test_a_gathered_stand_in_reads_parametrized_weights_as_the_live_model() -> None:
    """The sharded path analyses a stand-in of gathered copies: a parametrization's originals and state travel."""
    from rmt_callbacks.analysis import resolve_views
    from rmt_callbacks.monitors._gather import snapshot_module
    from rmt_callbacks.monitors._selection import parameter_names

    model = Parametrized().eval()
    views = resolve_views(model)
    names = parameter_names(model, views)
    assert "sn.parametrizations.weight.original" in names and "sn.weight" not in names
    again = resolve_views(snapshot_module(_one_process(model), model, names))
    assert [(v.name, v.matrix.tolist()) for v in again] == [(v.name, v.matrix.tolist()) for v in views]


class Legacy(pl.LightningModule):
    """Old-style, hook-based weight_norm and spectral_norm layers (torch.nn.utils.weight_norm / spectral_norm)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.wn = nn.utils.weight_norm(nn.Linear(12, 10))
        self.sn = nn.utils.spectral_norm(nn.Linear(10, 8))
        with torch.no_grad():
            self.sn.weight_orig.mul_(3.0)  # the raw weight's norm is far from 1
        self.head = nn.Linear(8, 4)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.head(torch.tanh(self.sn(torch.tanh(self.wn(x))))), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_both_monitors_read_old_style_hook_norms_as_applied(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    monitors = [
        SpectrumMonitor(every_n_train_steps=4, analyses=["summary"]),
        DysonMonitor(log_every_n_steps=4, window=4, overhead_budget=None),
    ]
    logger = CSVLogger(tmp_path, name="csv")
    trainer = pl.Trainer(
        max_steps=8, logger=logger, callbacks=monitors, accelerator="cpu", enable_progress_bar=False,
        enable_checkpointing=False, enable_model_summary=False,
    )  # fmt: skip
    with caplog.at_level(logging.INFO):
        trainer.fit(Legacy(), _loader(4))
    with open(Path(logger.log_dir) / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert not [r for r in caplog.records if "no optimizer updates it" in r.getMessage()]
    assert _names(rows, "spectral_norm") == {"wn.weight", "sn.weight", "head.weight"}
    logged = {k.removeprefix("rmt/").rpartition("/")[0] for r in rows for k, v in r.items() if v and "dyson_width" in k}
    assert logged == {"wn.weight", "sn.weight", "head.weight"}
    last = [r for r in rows if r.get("rmt/sn.weight/spectral_norm")][-1]
    assert float(last["rmt/sn.weight/spectral_norm"]) == pytest.approx(1.0, abs=0.1)  # applied, not the raw ~3


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_a_gathered_stand_in_reads_old_style_hook_norms_as_the_live_model() -> None:
    from rmt_callbacks.analysis import resolve_views
    from rmt_callbacks.monitors._gather import snapshot_module
    from rmt_callbacks.monitors._selection import parameter_names

    model = Legacy()
    model.training_step((torch.randn(2, 12), torch.randn(2, 4)), 0)  # spectral norm iterates once
    model.eval()
    views = resolve_views(model)
    names = parameter_names(model, views)
    assert names == ["wn.weight_g", "wn.weight_v", "sn.weight_orig", "head.weight"]
    again = resolve_views(snapshot_module(_one_process(model), model, names))
    assert [(v.name, v.matrix.tolist()) for v in again] == [(v.name, v.matrix.tolist()) for v in views]
