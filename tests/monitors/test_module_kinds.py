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
from torch.utils.data import DataLoader

from rmt_callbacks import DysonMonitor, SpectrumMonitor

from scaffold import Toy, quiet_trainer, random_loader


class Recurrent(Toy):
    """Only recurrent layers: an LSTM, a GRU cell."""

    def __init__(self) -> None:
        super().__init__(lstm=nn.LSTM(6, 8, batch_first=True, bidirectional=True), cell=nn.GRUCell(16, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x.view(-1, 2, 6))
        return self.cell(out[:, -1])


def _parametrized() -> Toy:
    """Spectral-norm and weight-norm layers, and a compiled submodule (eager backend: no compiler needed)."""
    torch.manual_seed(0)
    model = Toy(
        sn=parametrizations.spectral_norm(nn.Linear(12, 10)),
        wn=parametrizations.weight_norm(nn.Linear(10, 8)),
        head=torch.compile(nn.Linear(8, 4), backend="eager"),
    )
    with torch.no_grad():
        model.sn.parametrizations.weight.original.mul_(3.0)  # the raw weight's norm is far from 1
    return model


def _loader(out: int) -> DataLoader:
    return random_loader(64, 12, out, batch_size=8, seed=0)


def _fit(tmp_path: Path, model: pl.LightningModule, monitor: pl.Callback, out: int) -> list[dict[str, str]]:
    logger = CSVLogger(tmp_path, name="csv")
    quiet_trainer(max_steps=8, logger=logger, callbacks=[monitor]).fit(model, _loader(out))
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
    model = _parametrized()
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
        rows = _fit(tmp_path, _parametrized(), DysonMonitor(log_every_n_steps=4, window=4, overhead_budget=None), out=4)
    assert not [r for r in caplog.records if "no optimizer updates it" in r.getMessage()]
    logged = {k.removeprefix("rmt/").rpartition("/")[0] for r in rows for k, v in r.items() if v and "dyson_width" in k}
    assert logged == {"sn.weight", "wn.weight", "head.weight"}


def test_a_gathered_stand_in_reads_parametrized_weights_as_the_live_model() -> None:
    """The sharded path analyses a stand-in of gathered copies: a parametrization's originals and state travel."""
    from rmt_callbacks.analysis import resolve_views
    from rmt_callbacks.monitors._gather import snapshot_module
    from rmt_callbacks.monitors._selection import parameter_names

    model = _parametrized().eval()
    views = resolve_views(model)
    names = parameter_names(model, views)
    assert "sn.parametrizations.weight.original" in names and "sn.weight" not in names
    again = resolve_views(snapshot_module(_one_process(model), model, names))
    assert [(v.name, v.matrix.tolist()) for v in again] == [(v.name, v.matrix.tolist()) for v in views]


def _legacy() -> Toy:
    """Old-style, hook-based weight_norm and spectral_norm layers (torch.nn.utils.weight_norm / spectral_norm)."""
    torch.manual_seed(0)
    model = Toy(
        wn=nn.utils.weight_norm(nn.Linear(12, 10)), sn=nn.utils.spectral_norm(nn.Linear(10, 8)), head=nn.Linear(8, 4)
    )
    with torch.no_grad():
        model.sn.weight_orig.mul_(3.0)  # the raw weight's norm is far from 1
    return model


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_both_monitors_read_old_style_hook_norms_as_applied(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    monitors = [
        SpectrumMonitor(every_n_train_steps=4, analyses=["summary"]),
        DysonMonitor(log_every_n_steps=4, window=4, overhead_budget=None),
    ]
    logger = CSVLogger(tmp_path, name="csv")
    trainer = quiet_trainer(max_steps=8, logger=logger, callbacks=monitors)
    with caplog.at_level(logging.INFO):
        trainer.fit(_legacy(), _loader(4))
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

    model = _legacy()
    model.training_step((torch.randn(2, 12), torch.randn(2, 4)), 0)  # spectral norm iterates once
    model.eval()
    views = resolve_views(model)
    names = parameter_names(model, views)
    assert names == ["wn.weight_g", "wn.weight_v", "sn.weight_orig", "head.weight"]
    again = resolve_views(snapshot_module(_one_process(model), model, names))
    assert [(v.name, v.matrix.tolist()) for v in again] == [(v.name, v.matrix.tolist()) for v in views]
