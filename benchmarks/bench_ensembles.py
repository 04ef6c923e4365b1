r"""Ensembles at hardware speed: the Gaussian RBM's network-steps per second (issue 6, item 3).

Measured in one run, interleaved after a warm-up, median of ``--repeats``:

* the generator's normal-draw rate, float64 and float32, through an explicit ``torch.Generator`` into a
  preallocated buffer (as the sweep draws). One RBM network-step at :math:`|B|` chains draws
  :math:`k(N_h + N_v)|B| = 60|B|` normals, so ``rate / (60|B|)`` is the **draw bound** in network-steps/s: no
  step can beat it. Float32 normals are the fastest draws adequate for the model's noise (their tail is cut
  near 5.8σ, probability < 1e-8 per draw; see ``GaussianRBM(float32_noise=...)``). Drawn at both ensemble sizes
  (the buffer's size changes the rate), each timed over as many steps as the model, so both see the same load;
  "of f32 bound" compares medians, "(paired)" is the median over rounds of the ratio within a round (the two
  ran seconds apart, so it is less sensitive to a shared machine's changing load);
* the vectorised :class:`reference_models.GaussianRBM` (E = ``--networks`` = 400, :math:`|B|` = 32), with and
  without ``float32_noise``, stepped by a raw loop (``training_step`` + backward + ``SGD.step``) and by a real
  ``Trainer`` (:func:`reference_models.fit_reference`); the Trainer rate is its steady state, timed by a callback
  from the 5th step to the end, and its start-up (construction to first step) is printed apart;
* a per-network Python loop like the authors' code (one ``SRBM`` object per network, float64, run one after the
  other): the same maths on one network at a time (the same PCD-3 sweep on ``(1, |B|, 10)`` chains with a reused
  workspace, the explicit update :math:`W \leftarrow W + \alpha(W K^{-1} - \sigma_h^2 W \hat C)`, no autograd),
  timed on a few networks; also with the float32 sweep, for a like-for-like ratio.

From the steady Trainer rates at E = 7500 (the papers' ensemble) it estimates the wall time of
``rmt-reproduce all --full``'s RBM part: 10 settings of 7500 networks × 100 000 steps with
:math:`|B| \in \{16 (\times 6), 4, 8, 32, 64\}`, scaling the time per network-step linearly in :math:`|B|`
(noise draws and chain matmuls are linear in it).

Usage: ``.venv/bin/python benchmarks/bench_ensembles.py [--quick] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch

from reference_models import GaussianRBM, fit_reference
from reference_models.gaussian_rbm import chain_covariance, pcd_sweep

FULL_BATCH_SIZES = (16, 16, 16, 16, 16, 16, 4, 8, 32, 64)  # ALPHA_SCAN + BATCH_SCAN of rmt-reproduce
FULL_NETWORKS, FULL_STEPS = 7500, 100_000
TRAINER_SKIP = 5  # Trainer steps left out of its steady-state timing

Case = Callable[[], float]  # runs once, returns the seconds to count


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def wall(fn: Callable[[], object], device: str) -> Case:
    def run() -> float:
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        return time.perf_counter() - start

    return run


def draw_case(n: int, dtype: torch.dtype, steps: int, device: str) -> Case:
    """``steps`` fills of an n-element buffer: as long a run as the model's, so both see the same load."""
    gen = torch.Generator(device=device).manual_seed(0)
    buf = torch.empty(n, dtype=dtype, device=device)

    def run() -> None:
        for _ in range(steps):
            buf.normal_(generator=gen)

    return wall(run, device)


def raw_loop_case(networks: int, batch: int, steps: int, f32: bool, device: str, per: int = 16) -> Case:
    """``steps`` of training_step + backward + SGD, as the Trainer would call them, without the Trainer."""
    rbm = GaussianRBM(
        networks=networks, lr=0.1, batch_size=batch, seed=0, float32_noise=f32, networks_per_stream=per
    ).to(device)
    opt = rbm.configure_optimizers()

    def run() -> None:
        for i in range(steps):
            loss = rbm.training_step(i, i)
            opt.zero_grad()
            loss.backward()
            opt.step()

    return wall(run, device)


class _SteadyClock(pl.Callback):
    """Seconds from the start of batch ``skip`` to the end of training, and from ``fit`` to the first batch."""

    def __init__(self, skip: int, device: str) -> None:
        self.skip, self.device = skip, device
        self.created = time.perf_counter()
        self.first = self.start = self.end = 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx == 0:
            self.first = time.perf_counter()
        if batch_idx == self.skip:
            sync(self.device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        sync(self.device)
        self.end = time.perf_counter()


def trainer_case(
    networks: int, batch: int, steps: int, f32: bool, device: str, startup: list[float], per: int = 16
) -> Case:
    """Steady-state seconds of ``steps - TRAINER_SKIP`` Trainer steps; the start-up goes to ``startup``."""

    def run() -> float:
        clock = _SteadyClock(TRAINER_SKIP, device)
        rbm = GaussianRBM(
            networks=networks, lr=0.1, batch_size=batch, seed=0, float32_noise=f32, networks_per_stream=per
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit_reference(rbm, steps, callbacks=[clock], accelerator=device)
        startup.append(clock.first - clock.created)
        return clock.end - clock.start

    return run


def per_network_case(networks: int, batch: int, steps: int, f32: bool, device: str) -> Case:
    """The authors' shape of code: a Python loop over networks, each trained alone with the same maths."""
    ref = GaussianRBM(networks=networks, lr=0.1, batch_size=batch, seed=0).to(device)
    w0, k_inv, hp = ref.weight.detach().clone(), ref.k_inv, ref.hparams
    gen = torch.Generator(device=device).manual_seed(1)
    dtype = torch.float32 if f32 else torch.float64
    ws = torch.empty(batch * (hp.gibbs_steps + 1) * (hp.n_hidden + hp.n_sites), dtype=dtype, device=device)

    def run() -> None:
        for e in range(networks):
            w, phi = w0[e : e + 1].clone(), ref.chains[e : e + 1].clone()  # (1, N_h, N_v), (1, B, N_v)
            for _ in range(steps):
                phi = pcd_sweep(
                    phi,
                    w,
                    k=hp.gibbs_steps,
                    mu=hp.mu,
                    sigma_h=hp.sigma_h,
                    generator=gen,
                    noise_dtype=dtype,
                    workspace=ws,
                ).clone()  # the next sweep overwrites the workspace
                w += hp.lr * (w @ k_inv - hp.sigma_h**2 * w @ chain_covariance(phi))

    return wall(run, device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    p.add_argument("--device", default="cpu")
    p.add_argument("--networks", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--networks-per-stream", type=int, default=16, help="the models' random-stream block size")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (rmt-reproduce's default: 1)")
    p.add_argument("--repeats", type=int, default=None, help="default 5 (3 with --quick)")
    args = p.parse_args()
    repeats = args.repeats or (3 if args.quick else 5)
    torch.set_num_threads(args.threads)
    steps = 50 if args.quick else 300
    loop_nets, loop_steps = (4, 100) if args.quick else (10, 200)
    full_steps = TRAINER_SKIP + (5 if args.quick else 20)  # Trainer steps at E = FULL_NETWORKS
    e, b, dev, per = args.networks, args.batch_size, args.device, args.networks_per_stream
    per_step = 60 * b  # normals per network-step (k (N_h + N_v) |B| with k = 3, N_h = N_v = 10)
    draws = per_step * e  # normals per vectorised step
    startup: dict[str, list[float]] = {"f64": [], "f32": [], "full": []}
    cases: dict[str, tuple[Case, float]] = {  # name: (callable, network-steps per call)
        "randn float64": (draw_case(draws, torch.float64, steps, dev), e * steps),
        "randn float32": (draw_case(draws, torch.float32, steps, dev), e * steps),
        "raw loop f64 noise": (raw_loop_case(e, b, steps, False, dev, per), e * steps),
        "raw loop f32 noise": (raw_loop_case(e, b, steps, True, dev, per), e * steps),
        "Trainer f64 noise": (trainer_case(e, b, steps, False, dev, startup["f64"], per), e * (steps - TRAINER_SKIP)),
        "Trainer f32 noise": (trainer_case(e, b, steps, True, dev, startup["f32"], per), e * (steps - TRAINER_SKIP)),
        "per-network loop f64": (per_network_case(loop_nets, b, loop_steps, False, dev), loop_nets * loop_steps),
        "per-network loop f32": (per_network_case(loop_nets, b, loop_steps, True, dev), loop_nets * loop_steps),
        f"randn float64, E={FULL_NETWORKS}": (
            draw_case(per_step * FULL_NETWORKS, torch.float64, full_steps - TRAINER_SKIP, dev),
            FULL_NETWORKS * (full_steps - TRAINER_SKIP),
        ),
        f"randn float32, E={FULL_NETWORKS}": (
            draw_case(per_step * FULL_NETWORKS, torch.float32, full_steps - TRAINER_SKIP, dev),
            FULL_NETWORKS * (full_steps - TRAINER_SKIP),
        ),
        f"Trainer f64, E={FULL_NETWORKS}": (
            trainer_case(FULL_NETWORKS, b, full_steps, False, dev, startup["full"], per),
            FULL_NETWORKS * (full_steps - TRAINER_SKIP),
        ),
        f"Trainer f32, E={FULL_NETWORKS}": (
            trainer_case(FULL_NETWORKS, b, full_steps, True, dev, startup["full"], per),
            FULL_NETWORKS * (full_steps - TRAINER_SKIP),
        ),
    }
    load0 = os.getloadavg()
    for fn, _ in cases.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        for name, (fn, _) in cases.items():
            times[name].append(fn())
    load1 = os.getloadavg()
    rate = {k: cases[k][1] / statistics.median(ts) for k, ts in times.items()}

    def paired(name: str, bound: str) -> float:  # median over rounds of (rate / bound rate) in the same round
        return statistics.median(
            (cases[name][1] / t) / (cases[bound][1] / tb) for t, tb in zip(times[name], times[bound], strict=True)
        )

    def bounds(name: str) -> tuple[str, str]:  # the draw cases at the same E: network-steps/s of the draws alone
        suffix = f", E={FULL_NETWORKS}" if name.endswith(f"E={FULL_NETWORKS}") else ""
        return f"randn float64{suffix}", f"randn float32{suffix}"

    loop = rate["per-network loop f64"]
    print(
        f"# bench_ensembles: GaussianRBM E={e}, |B|={b}, networks_per_stream={per}, {steps} steps per call, "
        f"device={dev}, torch {torch.__version__}, threads={torch.get_num_threads()}, repeats={repeats} (median)"
    )
    print(f"# load average before {load0[0]:.2f}, after {load1[0]:.2f} (1-min)")
    print(
        f"{'case':<26}{'median s':>10}{'best s':>9}{'network-steps/s':>17}{'vs loop f64':>13}"
        f"{'of f64 bound':>14}{'of f32 bound':>14}{'(paired)':>10}"
    )
    for name, ts in times.items():
        r, (b64, b32) = rate[name], bounds(name)
        print(
            f"{name:<26}{statistics.median(ts):>10.4f}{min(ts):>9.4f}{r:>17.0f}{r / loop:>12.1f}x"
            f"{r / rate[b64]:>13.0%}{r / rate[b32]:>14.0%}{paired(name, b32):>10.0%}"
        )
    for dtype in ("float64", "float32"):
        for suffix in ("", f", E={FULL_NETWORKS}"):
            print(f"randn {dtype}{suffix}: {rate[f'randn {dtype}{suffix}'] * per_step / 1e6:.1f} M normals/s")
    bound64, bound32 = rate["randn float64"], rate["randn float32"]
    print(
        f"draw bound / per-network loop f64: float64 {bound64 / loop:.1f}x, float32 {bound32 / loop:.1f}x "
        f"(10x the loop is reachable only where this is >= 10)"
    )
    print(f"per-network loop f32 / f64: {rate['per-network loop f32'] / loop:.2f}")
    for key in ("f64", "f32"):
        print(f"Trainer start-up ({key} noise), construction to first step: {statistics.median(startup[key]):.2f} s")
        overhead = statistics.median(times[f"Trainer {key} noise"]) / (steps - TRAINER_SKIP)
        overhead -= statistics.median(times[f"raw loop {key} noise"]) / steps
        print(f"Trainer minus raw loop, {key} noise: {overhead * 1e3:+.2f} ms per step (Lightning's per-step work)")
    for key, label in (("f64", "float64 noise (the --full setting)"), ("f32", "float32 noise")):
        per_ns = 1.0 / rate[f"Trainer {key}, E={FULL_NETWORKS}"]  # s per network-step at |B| = b
        total = sum(FULL_NETWORKS * FULL_STEPS * per_ns * bs / b for bs in FULL_BATCH_SIZES)
        print(
            f"estimate, rmt-reproduce all --full RBM part (10 settings x {FULL_NETWORKS} nets x {FULL_STEPS} "
            f"steps, {label}, Trainer rate at E={FULL_NETWORKS} scaled by |B|/{b}): {total / 3600:.1f} h"
        )
    print("targets: vectorised >= 1/2 of the draw bound of the fastest adequate draws (float32), >= 10x the loop")


if __name__ == "__main__":
    main()
