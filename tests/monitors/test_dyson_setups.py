"""DysonMonitor in the set-ups users train in: accumulation, several optimizers and groups, schedulers, batch
kinds, momentum and adaptive optimizers, wide, convolutional and lazy layers, no logger, short runs."""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from rmt_callbacks import DysonMonitor

from scaffold import Toy, quiet_trainer


def _net(shapes: list[tuple[int, int]], optimizer: Callable[[Toy], Any], *, manual: bool = False) -> Toy:
    """Linear layers (``layers.0``, ``layers.1``, ...; tanh between) trained on a fixed regression; ``optimizer``
    builds the optimizers from the module."""
    return Toy(layers=nn.ModuleList(nn.Linear(i, o) for i, o in shapes), optimizer=optimizer, manual=manual)


def _data(n: int = 256, d_in: int = 6, d_out: int = 5) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d_in, generator=g)
    teacher = torch.randn(d_in, d_out, generator=g) / math.sqrt(d_in)
    return TensorDataset(x, torch.sin(2 * x @ teacher) + 0.3 * torch.randn(n, d_out, generator=g))


def _fit(model: pl.LightningModule, monitor: DysonMonitor, loader: Any, tmp: Path, **trainer: Any) -> dict[str, dict]:
    """Train; every logged metric as {key: {step: value}}, checking that no key is logged twice at one step."""
    logger = CSVLogger(tmp, name="csv")
    quiet_trainer(logger=logger, callbacks=[monitor], **trainer).fit(model, loader)
    out: dict[str, dict[int, float]] = {}
    if not (Path(logger.log_dir) / "metrics.csv").exists():
        return out  # nothing logged
    with open(Path(logger.log_dir) / "metrics.csv") as fh:
        for row in csv.DictReader(fh):
            for key, value in row.items():
                if key != "step" and value:
                    assert int(row["step"]) not in out.setdefault(key, {}), f"{key} logged twice at {row['step']}"
                    out[key][int(row["step"])] = float(value)
    return out


def _sgd(lr: float, **kw: Any) -> Callable[[Toy], torch.optim.Optimizer]:
    return lambda m: torch.optim.SGD(m.parameters(), lr=lr, **kw)


def test_accumulation_logs_the_numbers_of_the_unaccumulated_run(tmp_path: Path) -> None:
    """8 × 4 accumulated batches and batches of 32 take the same steps: the same snapshots, |B| and numbers."""
    runs = {}
    for name, batch, accumulate in (("plain", 32, 1), ("accumulated", 8, 4)):
        torch.manual_seed(0)
        monitor = DysonMonitor(log_every_n_steps=5, window=10, overhead_budget=None)
        model = _net([(6, 5)], _sgd(0.05))
        loader = DataLoader(_data(), batch_size=batch)
        runs[name] = _fit(model, monitor, loader, tmp_path / name, max_steps=20, accumulate_grad_batches=accumulate)
        assert [s.step for s in monitor._snapshots["layers.0.weight"]] == list(range(11, 21))  # one per step
    plain, accumulated = runs["plain"], runs["accumulated"]
    batch = {5: 32.0, 10: 32.0, 15: 32.0, 20: 32.0}
    assert accumulated["rmt/dyson/batch_size"] == plain["rmt/dyson/batch_size"] == batch
    assert accumulated["rmt/dyson/noise_temperature"] == pytest.approx({s: 0.05 / 32 for s in (5, 10, 15, 20)})
    for key in ("dyson_width", "dyson_diffusion", "dyson_width_normalized", "dyson_diffusion_normalized"):
        key = f"rmt/layers.0.weight/{key}"
        assert accumulated[key] == pytest.approx(plain[key], rel=1e-4), key  # the same trajectory up to rounding


def test_each_matrix_is_normalised_by_its_own_optimizer_and_group(tmp_path: Path) -> None:
    def two_optimizers(m: Toy) -> list[torch.optim.Optimizer]:
        return [torch.optim.SGD(m.layers[0].parameters(), lr=0.1), torch.optim.SGD(m.layers[1].parameters(), lr=1e-3)]

    def two_groups(m: Toy) -> torch.optim.Optimizer:
        groups = [{"params": m.layers[0].parameters()}, {"params": m.layers[1].parameters(), "lr": 1e-3}]
        return torch.optim.SGD(groups, lr=0.1)

    for name, make, manual in (("optimizers", two_optimizers, True), ("groups", two_groups, False)):
        logged = _fit(
            _net([(6, 8), (8, 5)], make, manual=manual),
            DysonMonitor(log_every_n_steps=4, window=5, overhead_budget=None),
            DataLoader(_data(), batch_size=16),
            tmp_path / name,
            max_steps=16,
        )
        for layer, lr in (("layers.0.weight", 0.1), ("layers.1.weight", 1e-3)):
            assert set(logged[f"rmt/{layer}/dyson_lr"].values()) == {lr}, name
            assert list(logged[f"rmt/{layer}/dyson_temperature"].values()) == pytest.approx([lr / 16] * 4), name
            width, normalized = logged[f"rmt/{layer}/dyson_width"], logged[f"rmt/{layer}/dyson_width_normalized"]
            assert normalized == pytest.approx({s: w / math.sqrt(lr / 16) for s, w in width.items()})
        assert "rmt/dyson/lr" not in logged and "rmt/dyson/noise_temperature" not in logged  # no run-wide rate


def test_the_logged_rate_is_the_one_of_the_update_just_taken(tmp_path: Path) -> None:
    def halving(m: Toy) -> dict:
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5**k)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logged = _fit(
            _net([(6, 5)], halving),
            DysonMonitor(log_every_n_steps=2, window=4, overhead_budget=None),
            DataLoader(_data(), batch_size=8),
            tmp_path,
            max_steps=6,
        )
    assert logged["rmt/dyson/lr"] == pytest.approx({2: 0.1 * 0.5, 4: 0.1 * 0.5**3, 6: 0.1 * 0.5**5})  # 0.1/2^(k-1)
    assert len([w for w in caught if "jumped" in str(w.message)]) == 1


@dataclasses.dataclass
class Batch:
    x: torch.Tensor
    y: torch.Tensor


def _collate(kind: str) -> Callable[[list], Any]:
    def collate(rows: list) -> Any:
        x, y = torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])
        if kind == "dataclass":
            return Batch(x, y)
        if kind == "dict":
            return {"inputs": x, "targets": y}
        if kind == "time-major":  # (T=3, B, features): the leading dimension is time
            return x.expand(3, *x.shape), y
        return [x, y]

    return collate


class FlexibleNet(Toy):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if isinstance(batch, Batch):
            x, y = batch.x, batch.y
        elif isinstance(batch, dict):
            x, y = batch["inputs"], batch["targets"]
        else:
            x, y = batch
            x = x[-1] if x.ndim == 3 else x
        return nn.functional.mse_loss(self(x), y)


@pytest.mark.parametrize("kind", ["dataclass", "dict", "list", "time-major"])
def test_batch_size_comes_from_the_argument_or_the_dataloader_whatever_the_batch(kind: str, tmp_path: Path) -> None:
    loader = DataLoader(_data(), batch_size=8, collate_fn=_collate(kind))
    for explicit in (None, 8):
        logged = _fit(
            FlexibleNet(layers=nn.ModuleList([nn.Linear(6, 5)]), optimizer=_sgd(0.05)),
            DysonMonitor(log_every_n_steps=3, window=3, batch_size=explicit, overhead_budget=None),
            loader,
            tmp_path / str(explicit),
            max_steps=6,
        )
        assert logged["rmt/dyson/batch_size"] == {3: 8.0, 6: 8.0}
        assert logged["rmt/dyson/noise_temperature"] == pytest.approx({3: 0.05 / 8, 6: 0.05 / 8})


def test_a_batch_size_guessed_from_shapes_is_warned_about(tmp_path: Path) -> None:
    data = _data(64)
    batches = [(data.tensors[0][i : i + 4], data.tensors[1][i : i + 4]) for i in range(0, 64, 4)]
    batches = DataLoader(batches, batch_size=None)  # batches made elsewhere: no batch_size to read
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logged = _fit(
            _net([(6, 5)], _sgd(0.05)), DysonMonitor(log_every_n_steps=5, window=3), batches, tmp_path, max_steps=10
        )
    guessed = [str(w.message) for w in caught if "guessed" in str(w.message)]
    assert len(guessed) == 1 and "batch_size=" in guessed[0]
    assert logged["rmt/dyson/batch_size"] == {5: 4.0, 10: 4.0}


def test_momentum_gives_the_effective_temperature_and_adam_none(tmp_path: Path) -> None:
    logged = _fit(
        _net([(6, 5)], _sgd(0.01, momentum=0.9)),
        DysonMonitor(log_every_n_steps=5, window=4, overhead_budget=None),
        DataLoader(_data(), batch_size=8),
        tmp_path / "momentum",
        max_steps=10,
    )
    assert logged["rmt/dyson/noise_temperature"] == pytest.approx({5: 0.0125, 10: 0.0125})  # 0.01 / ((1 - 0.9) 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logged = _fit(
            _net([(6, 5)], lambda m: torch.optim.Adam(m.parameters(), lr=1e-3)),
            DysonMonitor(log_every_n_steps=5, window=4, overhead_budget=None),
            DataLoader(_data(), batch_size=8),
            tmp_path / "adam",
            max_steps=10,
        )
    adam = [str(w.message) for w in caught if "Adam is not plain SGD" in str(w.message)]
    assert len(adam) == 1
    assert "rmt/layers.0.weight/dyson_width" in logged and "rmt/layers.0.weight/dyson_diffusion" in logged
    assert not [k for k in logged if k.endswith("_normalized") or "temperature" in k]


def _levels(weight: np.ndarray) -> np.ndarray:
    """numpy's reference: the min(M, N) non-structural eigenvalues of WᵀW/M, ascending."""
    m, n = weight.shape
    small = weight @ weight.T if m < n else weight.T @ weight
    return np.linalg.eigvalsh(small.astype(np.float64) / m)


class Record(pl.Callback):
    def __init__(self) -> None:
        self.weights: list[np.ndarray] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.weights.append(pl_module.layers[0].weight.detach().numpy().copy())


@pytest.mark.parametrize("shape", [(12, 4), (4, 12), (6, 6)])
def test_widths_are_those_of_the_nonstructural_levels_computed_with_numpy(
    shape: tuple[int, int], tmp_path: Path
) -> None:
    d_in, d_out = shape
    record, monitor = Record(), DysonMonitor(log_every_n_steps=12, window=12, overhead_budget=None)
    logger = CSVLogger(tmp_path, name="csv")
    trainer = quiet_trainer(logger=logger, callbacks=[record, monitor], max_steps=12)
    trainer.fit(_net([(d_in, d_out)], _sgd(0.05)), DataLoader(_data(d_in=d_in, d_out=d_out), batch_size=8))
    levels = np.stack([_levels(w) for w in record.weights])  # (12, min(M, N)): no structural zeros
    t = 0.05 * np.arange(1, 13)
    spacing = np.ptp(levels.mean(0)) / (levels.shape[1] - 1)  # the mean level spacing
    width = np.mean([np.std(lv - np.polyval(np.polyfit(t, lv, 1), t)) for lv in levels.T]) / spacing
    diffusion = np.mean(np.var(np.diff(levels, axis=0) / np.sqrt(0.05), axis=0, ddof=1)) / (2 * spacing**2)
    with open(Path(logger.log_dir) / "metrics.csv") as fh:
        row = [r for r in csv.DictReader(fh) if r.get("rmt/dyson/noise_temperature")][-1]
    assert float(row["rmt/layers.0.weight/dyson_level_spacing"]) == pytest.approx(spacing, rel=1e-5)
    assert float(row["rmt/layers.0.weight/dyson_width"]) == pytest.approx(width, rel=1e-4)
    assert float(row["rmt/layers.0.weight/dyson_diffusion"]) == pytest.approx(diffusion, rel=1e-4)
    assert 1e-3 < float(row["rmt/layers.0.weight/dyson_width"]) < 1e3  # a number a chart can show


def test_conv_kernels_are_no_ensemble_and_lazy_layers_are_recorded_once_built(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(64, 2, 5, 5, generator=g), torch.randn(64, 3, generator=g))
    logged = _fit(
        Toy(conv=nn.Conv2d(2, 6, 3), flat=nn.Flatten(), head=nn.LazyLinear(3), activation=None),
        DysonMonitor(log_every_n_steps=4, window=4, overhead_budget=None),
        DataLoader(data, batch_size=8),
        tmp_path,
        max_steps=8,
    )
    assert "rmt/conv.weight/dyson_width" in logged and "rmt/head.weight/dyson_width" in logged
    assert not [k for k in logged if "ensemble" in k]


def test_selection_excludes_and_filters_like_spectrum_monitor(tmp_path: Path) -> None:
    for name, kwargs, kept in (
        ("exclude", {"exclude": ["layers.1.*"]}, {"layers.0.weight"}),
        ("filter", {"param_filter": lambda n, p: p.shape[0] == 5}, {"layers.1.weight"}),
    ):
        logged = _fit(
            _net([(6, 8), (8, 5)], _sgd(0.05)),
            DysonMonitor(log_every_n_steps=4, window=4, overhead_budget=None, **kwargs),
            DataLoader(_data(), batch_size=8),
            tmp_path / name,
            max_steps=4,
        )
        assert {k.split("/")[1] for k in logged if k.endswith("/dyson_width")} == kept, name


def test_no_logger_records_nothing_and_says_so(tmp_path: Path) -> None:
    monitor = DysonMonitor()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_trainer(logger=False, callbacks=[monitor], max_steps=5).fit(
            _net([(6, 5)], _sgd(0.05)), DataLoader(_data(), batch_size=8)
        )
    assert len([w for w in caught if "no logger" in str(w.message)]) == 1
    assert monitor._snapshots == {} and monitor._clocks.groups == {}  # not one decomposition


def test_a_run_shorter_than_the_window_logs_its_final_estimates_and_says_so(tmp_path: Path) -> None:
    for steps, logs in ((5, True), (1, False)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            monitor, loader = DysonMonitor(overhead_budget=None), DataLoader(_data(), batch_size=8)
            logged = _fit(_net([(6, 5)], _sgd(0.05)), monitor, loader, tmp_path / str(steps), max_steps=steps)
        said = [str(w.message) for w in caught if "before" not in str(w.message) and "window=100" in str(w.message)]
        assert len(said) == 1, said
        assert ("rmt/layers.0.weight/dyson_width" in logged) is logs
        if logs:
            assert list(logged["rmt/layers.0.weight/dyson_width"]) == [5]  # the final weights' window
        else:
            assert "no width nor diffusion was logged" in said[0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"every_n_train_steps": None}, "every_n_train_steps"),
        ({"every_n_train_steps": 2.0}, "every_n_train_steps"),
        ({"every_n_train_steps": 0}, "every_n_train_steps"),
        ({"log_every_n_steps": None}, "log_every_n_steps"),
        ({"window": None}, "window"),
        ({"window": 1}, "window"),
        ({"window": 2}, "window"),  # a straight line fits 2 snapshots exactly: no width
        ({"lr": 0.0}, "lr"),
        ({"lr": -1.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"lr": "0.1"}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 8.0}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"jump_tolerance": float("inf")}, "jump_tolerance"),
        ({"jump_tolerance": 0}, "jump_tolerance"),
        ({"overhead_budget": 0}, "overhead_budget"),
        ({"overhead_budget": "fast"}, "overhead_budget"),
        ({"include": "layers.*"}, "include"),  # a bare string, a common slip for a one-item list
        ({"exclude": "layers.*"}, "exclude"),
        ({"param_filter": 3}, "param_filter"),
    ],
)
def test_bad_arguments_raise_at_construction(kwargs: dict, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        DysonMonitor(**kwargs)


def test_numpy_numbers_from_a_config_are_accepted() -> None:
    monitor = DysonMonitor(
        every_n_train_steps=np.int64(2), window=np.int32(10), lr=np.float32(0.1), batch_size=np.int64(16)
    )
    assert (monitor.every_n_train_steps, monitor.window, monitor.batch_size) == (2, 10, 16)


def test_frozen_layers_are_skipped_with_a_reason(tmp_path: Path) -> None:
    """A layer out of the optimizer, and one with requires_grad=False inside it, never move: no widths of 1e-31."""

    def first_only(m: Toy) -> torch.optim.Optimizer:
        m.layers[2].weight.requires_grad_(False)
        return torch.optim.SGD([*m.layers[0].parameters(), m.layers[2].weight], lr=0.05)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logged = _fit(
            _net([(6, 8), (8, 8), (8, 5)], first_only),
            DysonMonitor(log_every_n_steps=4, window=4, overhead_budget=None),
            DataLoader(_data(), batch_size=8),
            tmp_path,
            max_steps=8,
        )
    assert {k.split("/")[1] for k in logged if k.endswith("/dyson_width")} == {"layers.0.weight"}
    skipped = sorted(str(w.message) for w in caught if "no optimizer updates it" in str(w.message))
    assert len(skipped) == 2 and "'layers.1.weight'" in skipped[0] and "'layers.2.weight'" in skipped[1]


def test_dampening_counts_only_with_momentum_and_lbfgs_closures_are_one_update(tmp_path: Path) -> None:
    logged = _fit(
        _net([(6, 5)], _sgd(0.05, dampening=0.5)),  # torch ignores dampening without momentum: the step is α g
        DysonMonitor(log_every_n_steps=4, window=4, overhead_budget=None),
        DataLoader(_data(), batch_size=16),
        tmp_path / "dampening",
        max_steps=8,
    )
    assert logged["rmt/dyson/noise_temperature"] == pytest.approx({4: 0.05 / 16, 8: 0.05 / 16})
    monitor = DysonMonitor(log_every_n_steps=4, window=4, overhead_budget=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _fit(
            _net([(6, 5)], lambda m: torch.optim.LBFGS(m.parameters(), lr=0.1, max_iter=5)),
            monitor,
            DataLoader(_data(), batch_size=16),
            tmp_path / "lbfgs",
            max_steps=8,
        )
    assert monitor._clocks.groups[(0, 0)].updates == 8  # not 5 closure evaluations per step
    assert monitor._clocks.groups[(0, 0)].time == pytest.approx(8 * 0.1)


def test_a_second_fit_starts_a_new_window_and_a_momentum_schedule_is_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def one_cycle(m: Toy) -> dict:
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
        schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=12)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    monitor = DysonMonitor(log_every_n_steps=4, window=20, overhead_budget=None)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        _fit(_net([(6, 5)], one_cycle), monitor, DataLoader(_data(), batch_size=8), tmp_path / "a", max_steps=12)
    assert [s.step for s in monitor._snapshots["layers.0.weight"]] == list(range(1, 13))
    assert len([r for r in caplog.records if "SGD with momentum" in r.getMessage()]) == 1  # μ cycles every step
    assert len([w for w in caught if "jumped" in str(w.message)]) == 1
    _fit(_net([(6, 5)], _sgd(0.05)), monitor, DataLoader(_data(), batch_size=8), tmp_path / "b", max_steps=5)
    assert [s.step for s in monitor._snapshots["layers.0.weight"]] == [1, 2, 3, 4, 5]  # none of the first model's


class Changing(Toy):
    """``grow`` is trained and reshaped at step 4 (the same Parameter, new data); ``gone`` is deleted at step 4."""

    def __init__(self) -> None:
        super().__init__(fc=nn.Linear(6, 5))
        self.grow, self.gone = nn.Linear(6, 4, bias=False), nn.Linear(6, 4)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, _ = batch
        loss = super().training_step(batch, batch_idx) + 1e-2 * self.grow(x).pow(2).mean()
        return loss + (1e-2 * self.gone(x).pow(2).mean() if hasattr(self, "gone") else 0.0)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.global_step == 4:  # the module's hook runs after the callbacks': the monitor saw step 4 as it was
            self.grow.weight.data = torch.randn(7, 6)
            del self.gone


def test_a_reshaped_parameter_starts_a_new_window_and_a_removed_one_ends(tmp_path: Path) -> None:
    monitor = DysonMonitor(log_every_n_steps=1, window=10, overhead_budget=None)
    logged = _fit(Changing(), monitor, DataLoader(_data(), batch_size=8), tmp_path, max_steps=10)
    assert list(logged["rmt/fc.weight/dyson_width"]) == list(range(3, 11))
    assert list(logged["rmt/grow.weight/dyson_width"]) == [3, 4, 7, 8, 9, 10]  # 3 new snapshots from step 5
    assert list(logged["rmt/gone.weight/dyson_width"]) == [3, 4]  # its window ended with it
    assert monitor._snapshots["grow.weight"][0].levels.shape == (6,) and "gone.weight" not in monitor._snapshots
