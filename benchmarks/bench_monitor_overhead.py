r"""Training wall time with and without ``SpectrumMonitor`` or ``DysonMonitor`` (issue 6, item 2).

Reference CPU workload: an MLP of ``--layers`` (default 4) square ``nn.Linear(768, 768)`` layers with ReLUs,
MSE regression on a fixed synthetic batch of ``--batch-size`` (default 64) rows, SGD, ``--steps`` optimizer
steps through a real ``Trainer`` with a ``CSVLogger`` (the monitor analyses nothing without a logger; both arms
log to one). Arms, run interleaved after one warm-up each, median of ``--repeats``:

* ``no monitor``: the baseline;
* ``default``: ``SpectrumMonitor()``: the default cadence (every 50 optimizer steps), all default analyses and
  figures, on a background thread, paced by ``overhead_budget="auto"`` (2 %: deferred analyses stretch it);
* ``every 50``: ``SpectrumMonitor(every_n_train_steps=50)``: an explicit cadence, analysed at every due step on the
  background thread (a late one only when two are pending);
* ``every 50, in the hook``: ``SpectrumMonitor(every_n_train_steps=50, background=False)``: the synchronous path.

Every arm also analyses the final weights at train end and draws the end-of-training figures.

With ``--monitor dyson`` the arms are ``no monitor``, ``dyson default`` (``DysonMonitor()``: a snapshot of every
layer every step, synchronously, its stride doubled while a snapshot costs more than ``overhead_budget=0.02`` of
the training time between snapshots) and ``dyson, no budget`` (``DysonMonitor(overhead_budget=None)``: every
step, whatever it costs; use few ``--steps``, or ``--skip "dyson, no budget"``). The ``analyses`` column then
shows the final stride.

The overhead ratio is wall time over the baseline's; ``analyses`` counts what each arm really ran. Targets: ≤ 1.03
at the defaults, ≤ 1.10 with an analysis every 50 steps. The table also prints the time of one training step and
of one bare ``analyze`` of the same layers: a synchronous monitor costs about analyses × analysis time on top of
steps × step time; the background one hides what a free core can take.

Usage: ``.venv/bin/python benchmarks/bench_monitor_overhead.py [--quick] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, Dataset

from rmt_callbacks import DysonMonitor, SpectrumMonitor
from rmt_callbacks.analysis import analyze


class _Repeat(Dataset[int]):
    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> int:
        return index


class ReferenceMLP(pl.LightningModule):
    """``layers`` × Linear(width, width) regressing a fixed random target; one fixed batch per step."""

    def __init__(self, layers: int = 4, width: int = 768, batch_size: int = 64, steps: int = 200) -> None:
        super().__init__()
        torch.manual_seed(0)  # benchmark script: one fixed model and batch for every arm
        mods: list[nn.Module] = []
        for i in range(layers):
            mods += [nn.Linear(width, width)] + ([nn.ReLU()] if i < layers - 1 else [])
        self.net = nn.Sequential(*mods)
        self.register_buffer("x", torch.randn(batch_size, width))  # (B, width)
        self.register_buffer("y", torch.randn(batch_size, width))  # (B, width)
        self.steps = steps

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return nn.functional.mse_loss(self.net(self.x), self.y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=1e-3)

    def train_dataloader(self) -> DataLoader[int]:
        return DataLoader(_Repeat(self.steps), batch_size=None)


def fit(args: argparse.Namespace, callbacks: list[pl.Callback], logdir: str) -> tuple[float, int]:
    """Wall seconds of ``trainer.fit`` for ``args.steps`` steps (model built outside the timed region), and the
    number of analyses the monitor ran."""
    model = ReferenceMLP(args.layers, args.width, args.batch_size, args.steps)
    trainer = pl.Trainer(
        max_steps=args.steps,
        accelerator=args.device,
        devices=1,
        callbacks=callbacks,
        logger=CSVLogger(logdir),
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        log_every_n_steps=50,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model)
    if args.device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return seconds, sum(getattr(c, "_num_analyses", 0) + getattr(c, "_stride", 0) for c in callbacks)


def analysis_seconds(args: argparse.Namespace, repeats: int = 3) -> float:
    model = ReferenceMLP(args.layers, args.width, args.batch_size, args.steps).to(args.device)
    analyze(model)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        analyze(model)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="100 steps, 2 repeats")
    p.add_argument("--device", default="cpu")
    p.add_argument("--monitor", choices=("spectrum", "dyson"), default="spectrum")
    p.add_argument("--skip", action="append", default=[], help="leave this arm out (repeatable)")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=None, help="default 500 (100 with --quick)")
    p.add_argument("--repeats", type=int, default=None, help="default 3 (2 with --quick)")
    p.add_argument(
        "--threads", type=int, default=None, help="training's intra-op threads (default: torch's, all cores)"
    )
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # fewer than the cores leaves one free for the background analysis
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)  # no per-fit banners in the table
    args.steps = args.steps or (100 if args.quick else 500)
    repeats = args.repeats or (2 if args.quick else 3)
    arms: dict[str, Callable[[], list[pl.Callback]]] = {"no monitor": list}
    if args.monitor == "spectrum":
        arms["default"] = lambda: [SpectrumMonitor()]
        arms["every 50"] = lambda: [SpectrumMonitor(every_n_train_steps=50)]
        arms["every 50, in the hook"] = lambda: [SpectrumMonitor(every_n_train_steps=50, background=False)]
    else:
        arms["dyson default"] = lambda: [DysonMonitor()]
        arms["dyson, no budget"] = lambda: [DysonMonitor(overhead_budget=None)]
    arms = {name: make for name, make in arms.items() if name not in args.skip or name == "no monitor"}
    load0 = os.getloadavg()
    times: dict[str, list[float]] = {k: [] for k in arms}
    counts: dict[str, list[int]] = {k: [] for k in arms}
    with tempfile.TemporaryDirectory() as logdir:
        for make in arms.values():  # warm-up
            fit(argparse.Namespace(**{**vars(args), "steps": 5}), make(), logdir)
        for _ in range(repeats):
            for name, make in arms.items():
                seconds, analyses = fit(args, make(), logdir)
                times[name].append(seconds)
                counts[name].append(analyses)
                print(f"# {name}: {seconds:.2f} s, {analyses} analyses", file=sys.stderr, flush=True)
    t_analysis = analysis_seconds(args)
    load1 = os.getloadavg()
    base = statistics.median(times["no monitor"])
    print(
        f"# bench_monitor_overhead: {args.layers} x Linear({args.width}, {args.width}), batch {args.batch_size}, "
        f"{args.steps} steps, device={args.device}, torch {torch.__version__}, threads={torch.get_num_threads()}, "
        f"repeats={repeats} (median)"
    )
    print(f"# load average before {load0[0]:.2f}, after {load1[0]:.2f} (1-min)")
    print(f"{'arm':<24}{'analyses':>9}{'median s':>10}{'min s':>9}{'ratio':>8}")
    for name, ts in times.items():
        n = statistics.median(counts[name])
        print(f"{name:<24}{n:>9g}{statistics.median(ts):>10.2f}{min(ts):>9.2f}{statistics.median(ts) / base:>8.3f}")
    print(f"one training step (baseline): {1e3 * base / args.steps:.1f} ms; one analyze(): {t_analysis:.2f} s")
    print(f"=> one analysis costs {t_analysis / (base / args.steps):.0f} training steps")
    print("targets: default <= 1.03; every 50 steps <= 1.10")


if __name__ == "__main__":
    main()
