"""Full weights on rank zero under DDP, FSDP1 and FSDP2: the snapshot equals the unsharded model, bit for bit.

Each distributed test spawns two CPU processes (gloo) that train the same small model (Linear, Conv1d, multi-head
attention) with a real Lightning ``Trainer`` on identical batches, so every step's weights equal those of one
process training alone (the averaged gradient of two equal gradients is exact). A callback calls the snapshot on
every rank at every step; rank zero records it, and the test compares it with the parameters of the
single-process run (names, order, values, and the matrix views ``resolve_views`` builds from it).

Lightning refuses ``FSDPStrategy`` on CPU (a GPU-only check on the exact class, and ``device_id=None`` on CPU,
which FSDP1 rejects); the FSDP1 tests therefore subclass the strategy and wrap the submodules themselves in
``configure_model`` with ``device_id=cpu`` (Lightning leaves a model that already holds FSDP modules as is). FSDP2
runs through Lightning's ``ModelParallelStrategy`` unchanged, with ``fully_shard`` in ``configure_model``.
Marked slow: each distributed run takes tens of seconds on a small machine.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
import torch.multiprocessing as mp
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, ModelParallelStrategy
from torch import nn

from rmt_callbacks.analysis import resolve_views
from rmt_callbacks.monitors._gather import is_sharded, snapshot_module, user_name

from scaffold import Toy, quiet_trainer, random_loader

MAX_STEPS = 3
TIMEOUT_S = 600  # a hung collective fails the test instead of hanging the suite


class Net(Toy):
    """A Linear, a Conv1d and a multi-head attention, sharded in ``configure_model`` according to ``layout``."""

    def __init__(self, layout: str = "local") -> None:
        super().__init__(
            fc=nn.Linear(6, 5), conv=nn.Conv1d(1, 2, 3), attn=nn.MultiheadAttention(4, 2, batch_first=True), lr=0.1
        )
        self.layout = layout

    def configure_model(self) -> None:
        parts = ("fc", "conv", "attn")
        if self.layout.startswith("fsdp1"):
            from torch.distributed.fsdp import FullyShardedDataParallel

            orig = self.layout == "fsdp1"  # "fsdp1_flat": use_orig_params=False, flat parameters only
            for part in parts:
                wrapped = FullyShardedDataParallel(
                    getattr(self, part), device_id=torch.device("cpu"), use_orig_params=orig
                )
                setattr(self, part, wrapped)
        elif self.layout == "fsdp2":
            from torch.distributed.fsdp import fully_shard

            mesh = self.device_mesh["data_parallel"]
            for part in parts:
                fully_shard(getattr(self, part), mesh=mesh)
            fully_shard(self, mesh=mesh)

    def training_step(self, batch: tuple[torch.Tensor], batch_idx: int) -> torch.Tensor:
        (x,) = batch  # (B, 6)
        h = self.conv(x.unsqueeze(1)).flatten(1)  # (B, 2 * 4)
        q = x[:, :4].reshape(-1, 1, 4)  # (B, 1, 4)
        a, _ = self.attn(q, q, q)  # (B, 1, 4)
        return self.fc(x).pow(2).mean() + h.pow(2).mean() + a.pow(2).mean()


class Record(pl.Callback):
    """Every rank snapshots at train start and after every batch; rank zero keeps names, values and views."""

    def __init__(self, direct: bool = False) -> None:
        self.direct = direct  # also record named_parameters() itself (only meaningful unsharded)
        self.steps: dict[int, dict[str, object]] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: object) -> None:
        self._record(trainer, pl_module)

    def _record(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        model = snapshot_module(trainer, pl_module)  # every rank: a collective under FSDP
        names = ["fc.weight", "attn.in_proj_weight"] if trainer.is_global_zero else None  # rank zero's choice only
        subset = snapshot_module(trainer, pl_module, names=names)  # a second collective: rank zero picks the names
        if not trainer.is_global_zero:
            assert model is None and subset is None
            return
        layout = getattr(pl_module, "layout", "local")
        assert is_sharded(pl_module, trainer.strategy.model) == (layout not in ("local", "ddp"))
        entry: dict[str, object] = {
            "params": {n: p.detach().clone() for n, p in model.named_parameters()},
            "views": [(v.name, v.source, tuple(v.matrix.shape)) for v in resolve_views(model)],
            "subset": {n: p.detach().clone() for n, p in subset.named_parameters()},
        }
        if self.direct:
            entry["direct"] = {n: p.detach().clone() for n, p in pl_module.named_parameters()}
        self.steps[trainer.global_step] = entry


def _fit(layout: str, devices: int, tmp: Path, callback: Record) -> None:
    torch.manual_seed(0)  # the same initial weights in every process
    data = random_loader(16, 6, batch_size=8, seed=1)  # every rank: the same batches
    strategies = {
        "local": lambda: "auto",
        "ddp": lambda: DDPStrategy(process_group_backend="gloo"),
        "fsdp1": lambda: _CPUFSDPStrategy(process_group_backend="gloo"),
        "fsdp1_flat": lambda: _CPUFSDPStrategy(process_group_backend="gloo"),
        "fsdp2": lambda: ModelParallelStrategy(data_parallel_size=devices, tensor_parallel_size=1),
    }
    trainer = quiet_trainer(
        max_steps=MAX_STEPS, default_root_dir=tmp, callbacks=[callback], devices=devices,
        strategy=strategies[layout](), use_distributed_sampler=False,
    )  # fmt: skip
    trainer.fit(Net(layout), data)


class _CPUFSDPStrategy(FSDPStrategy):
    """Lightning's FSDPStrategy past its GPU-only accelerator check (the check compares the exact class)."""


def _worker(rank: int, world: int, layout: str, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank),
        NODE_RANK="0",
    )  # fmt: skip  # processes launched here: Lightning joins them instead of launching its own
    torch.set_num_threads(1)
    callback = Record()
    _fit(layout, world, Path(out).parent / f"rank{rank}", callback)
    if rank == 0:
        torch.save(callback.steps, out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_processes(layout: str, tmp: Path) -> dict[int, dict[str, object]]:
    tmp.mkdir(parents=True, exist_ok=True)
    out = tmp / "steps.pt"
    context = mp.start_processes(
        _worker, args=(2, layout, _free_port(), str(out)), nprocs=2, join=False, start_method="spawn"
    )
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not context.join(timeout=max(deadline - time.monotonic(), 0.0)):  # False while any rank still runs
            assert time.monotonic() < deadline, f"{layout}: the ranks did not finish (hang?)"
    finally:
        for process in context.processes:  # only the two processes started here
            if process.is_alive():
                process.kill()
    return torch.load(out, weights_only=True)


def _unsharded(tmp: Path) -> dict[int, dict[str, object]]:
    callback = Record(direct=True)
    _fit("local", 1, tmp, callback)
    return callback.steps


def test_one_process_snapshot_is_a_copy_of_named_parameters(tmp_path: Path) -> None:
    steps = _unsharded(tmp_path)
    assert sorted(steps) == list(range(MAX_STEPS + 1))
    for entry in steps.values():
        direct, params = entry["direct"], entry["params"]
        assert list(params) == list(direct)  # the same names, in named_parameters() order
        assert all(torch.equal(params[n], direct[n]) and params[n].device.type == "cpu" for n in direct)
        assert list(entry["subset"]) == ["fc.weight", "attn.in_proj_weight"]
        assert [v[:2] for v in entry["views"]] == [
            ("fc.weight", "linear"), ("conv.weight", "conv"), ("attn.in_proj_weight.q", "attention"),
            ("attn.in_proj_weight.k", "attention"), ("attn.in_proj_weight.v", "attention"),
            ("attn.out_proj.weight", "linear"),
        ]  # fmt: skip
    assert not torch.equal(steps[0]["params"]["fc.weight"], steps[MAX_STEPS]["params"]["fc.weight"])  # copies


def _one_process(model: object, rank_zero: bool = True) -> SimpleNamespace:
    """The two things ``snapshot_module`` reads of a trainer: ``strategy.model`` and ``is_global_zero``."""
    return SimpleNamespace(strategy=SimpleNamespace(model=model), is_global_zero=rank_zero)


def test_copies_do_not_follow_the_live_parameters() -> None:
    net = nn.Sequential(nn.Linear(3, 2))
    copies = dict(snapshot_module(_one_process(net), net).named_parameters())
    with torch.no_grad():
        net[0].weight.add_(1.0)
    assert not torch.equal(copies["0.weight"], net[0].weight)
    assert list(snapshot_module(_one_process(net), net, names=["nothing"]).parameters()) == []
    assert snapshot_module(_one_process(net, rank_zero=False), net) is None  # unsharded: the other ranks skip at once


def test_wrapper_levels_are_not_part_of_the_name() -> None:
    assert user_name("fc._fsdp_wrapped_module.weight") == "fc.weight"
    assert user_name("_orig_mod.blocks.0._checkpoint_wrapped_module.attn.in_proj_weight") == (
        "blocks.0.attn.in_proj_weight"
    )
    assert user_name("my_fsdp_wrapped_module_x.weight") == "my_fsdp_wrapped_module_x.weight"


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: snapshot_module(_one_process(None), "net"), TypeError, "pl_module must be an nn.Module, got str"),
        (
            lambda: snapshot_module(_one_process(None), nn.Linear(2, 2), names="weight"),
            TypeError,
            "names must be None or a sequence",
        ),
    ],
)
def test_errors_name_the_argument(call, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["ddp", "fsdp1", "fsdp1_flat", "fsdp2"])
def test_two_gloo_processes_snapshot_the_unsharded_weights(layout: str, tmp_path: Path) -> None:
    sharded = _run_two_processes(layout, tmp_path / layout)
    reference = _unsharded(tmp_path / "one")
    assert sorted(sharded) == sorted(reference) == list(range(MAX_STEPS + 1))
    for step, entry in sharded.items():
        want = reference[step]
        assert list(entry["params"]) == list(want["direct"]), (layout, step)  # user-visible names, same order
        for name, value in want["direct"].items():
            assert torch.equal(entry["params"][name], value), (layout, step, name)
        assert entry["views"] == want["views"], (layout, step)  # owners' types survive the unwrapping
        assert list(entry["subset"]) == ["fc.weight", "attn.in_proj_weight"]
        assert all(torch.equal(v, want["direct"][n]) for n, v in entry["subset"].items())


def _fit_monitored(layout: str, devices: int, tmp: Path, budget: float | None) -> None:
    """``Net`` under ``layout`` with a SpectrumMonitor analysing every step, logging to a CSV file in ``tmp``."""
    from lightning.pytorch.loggers import CSVLogger

    from rmt_callbacks import DysonMonitor, SpectrumMonitor

    torch.manual_seed(0)
    strategies = {
        "local": lambda: "auto",
        "fsdp1": lambda: _CPUFSDPStrategy(process_group_backend="gloo"),
        "fsdp2": lambda: ModelParallelStrategy(data_parallel_size=devices, tensor_parallel_size=1),
    }
    monitor = SpectrumMonitor(  # in the hook: every due step exactly (in the background a busy worker may delay one)
        every_n_train_steps=1, overhead_budget=budget, analyses=["summary", "marchenko_pastur"], background=False
    )
    dyson = DysonMonitor(every_n_train_steps=1, log_every_n_steps=1, window=4, overhead_budget=budget)
    trainer = quiet_trainer(
        max_steps=MAX_STEPS, default_root_dir=tmp, logger=CSVLogger(tmp, name="csv", version=0), callbacks=[monitor],
        devices=devices, strategy=strategies[layout](), use_distributed_sampler=False,
    )  # fmt: skip
    trainer.callbacks.append(dyson)
    trainer.fit(Net(layout), random_loader(16, 6, batch_size=8, seed=1))


def _monitor_worker(rank: int, world: int, layout: str, port: int, out: str, budget: float | None) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank),
        NODE_RANK="0",
    )  # fmt: skip
    torch.set_num_threads(1)
    _fit_monitored(layout, world, Path(out), budget)


def _csv_metrics(tmp: Path) -> dict[int, dict[str, float]]:
    import csv

    out: dict[int, dict[str, float]] = {}
    with open(tmp / "csv" / "version_0" / "metrics.csv") as f:
        for row in csv.DictReader(f):
            values = {k: float(v) for k, v in row.items() if v and k != "step" and "rmt/monitor/" not in k}  # timings
            out.setdefault(int(row["step"]), {}).update(values)
    return out


def _run_monitored(layout: str, tmp: Path, budget: float | None) -> dict[int, dict[str, float]]:
    context = mp.start_processes(
        _monitor_worker, args=(2, layout, _free_port(), str(tmp), budget), nprocs=2, join=False, start_method="spawn"
    )
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not context.join(timeout=max(deadline - time.monotonic(), 0.0)):  # False while any rank still runs
            assert time.monotonic() < deadline, f"{layout}: the ranks did not finish (hang?)"
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    return _csv_metrics(tmp)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["fsdp1", "fsdp2"])
def test_monitors_under_fsdp_log_what_one_process_logs(layout: str, tmp_path: Path) -> None:
    """SpectrumMonitor and DysonMonitor on the gathered weights every step: the same keys and values (1e-9) as
    the unsharded run."""
    sharded = _run_monitored(layout, tmp_path / layout, budget=None)
    _fit_monitored("local", 1, tmp_path / "one", budget=None)
    reference = _csv_metrics(tmp_path / "one")
    assert sorted(sharded) == sorted(reference) == list(range(MAX_STEPS + 1))
    assert "rmt/fc.weight/dyson_width" in reference[MAX_STEPS] and "rmt/dyson/noise_temperature" in reference[MAX_STEPS]
    for step, want in reference.items():
        rmt = {k: v for k, v in want.items() if k.startswith("rmt/")}
        assert "rmt/fc.weight/lambda_max" in rmt and "rmt/attn.in_proj_weight.q/lambda_max" in rmt
        got = {k: v for k, v in sharded[step].items() if k.startswith("rmt/")}
        assert got.keys() == rmt.keys(), (layout, step)
        rmt = {k: v * _data_parallel_factor(k) for k, v in rmt.items()}
        assert all(abs(got[k] - v) <= 1e-9 * max(1.0, abs(v)) for k, v in rmt.items()), (layout, step)


def _data_parallel_factor(key: str) -> float:
    """Two data-parallel processes double the global batch |B| and halve α/|B|: what that does to ``key``."""
    if key.endswith("batch_size"):
        return 2.0
    if key.endswith("noise_temperature"):
        return 0.5
    if key.endswith("diffusion_normalized"):
        return 2.0
    return 2.0**0.5 if key.endswith("width_normalized") else 1.0


@pytest.mark.slow
def test_a_deferral_on_rank_zero_is_followed_by_every_rank(tmp_path: Path) -> None:
    """With a budget of 1e-9 rank zero defers every analysis after the second, and DysonMonitor stretches its
    stride at its second snapshot; the other ranks, which measure nothing, must follow both (a rank entering a
    gather alone would hang until the timeout)."""
    sharded = _run_monitored("fsdp2", tmp_path, budget=1e-9)
    # the first analysis (warm-up) does not count against the budget, the second defers the rest; the final
    # weights are analysed at train end whatever the budget
    assert [s for s, m in sorted(sharded.items()) if "rmt/fc.weight/lambda_max" in m] == [0, 1, MAX_STEPS]
    strides = [m["rmt/dyson/stride"] for _, m in sorted(sharded.items()) if "rmt/dyson/stride" in m]
    assert strides == [1.0] + [1024.0] * (MAX_STEPS - 1)  # snapshots at steps 1 and 2, then every 1024 steps
