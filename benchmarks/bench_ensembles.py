r"""Ensembles at hardware speed: the Gaussian RBM's network-steps per second (issue 6, item 3).

Measured in one run, interleaved after a warm-up, median of ``--repeats``:

* the generator's normal-draw rate, float64 and float32, through an explicit ``torch.Generator`` (the floor:
  one RBM network-step at :math:`|B|` chains draws :math:`|B|(3 N_h + 3 N_v) = 60|B|` normals);
* the vectorised :class:`reference_models.GaussianRBM` (E = ``--networks`` = 400, :math:`|B|` = 32), with and
  without ``float32_noise``, stepped by a raw loop (``training_step`` + backward + ``SGD.step``) and by a real
  ``Trainer`` (:func:`reference_models.fit_reference`, including its start-up);
* a per-network Python loop like the authors' code: one network at a time, the same maths (the same PCD-3 sweep
  on ``(1, |B|, 10)`` chains and the explicit update :math:`W \leftarrow W + \alpha(W K^{-1} - \sigma_h^2 W
  \hat C)`, no autograd), timed on a few networks.

From the vectorised rate it estimates the wall time of ``rmt-reproduce all --full``'s RBM part: 10 settings of
7500 networks × 100 000 steps with :math:`|B| \in \{16 (\times 6), 4, 8, 32, 64\}`, scaling the time per
network-step linearly in :math:`|B|` (noise draws and chain matmuls are linear in it), measured at E = 7500 too.

Usage: ``.venv/bin/python benchmarks/bench_ensembles.py [--quick] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable

import torch

from reference_models import GaussianRBM, fit_reference
from reference_models.gaussian_rbm import chain_covariance, pcd_sweep

FULL_BATCH_SIZES = (16, 16, 16, 16, 16, 16, 4, 8, 32, 64)  # ALPHA_SCAN + BATCH_SCAN of rmt-reproduce
FULL_NETWORKS, FULL_STEPS = 7500, 100_000


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def draw_case(n: int, dtype: torch.dtype, device: str) -> Callable[[], object]:
    gen = torch.Generator(device=device).manual_seed(0)
    return lambda: torch.randn(n, generator=gen, dtype=dtype, device=device)


def raw_loop_case(networks: int, batch: int, steps: int, f32: bool, device: str) -> Callable[[], object]:
    """``steps`` of training_step + backward + SGD, as the Trainer would call them, without the Trainer."""
    rbm = GaussianRBM(networks=networks, lr=0.1, batch_size=batch, seed=0, float32_noise=f32).to(device)
    opt = rbm.configure_optimizers()

    def run() -> None:
        for i in range(steps):
            loss = rbm.training_step(i, i)
            opt.zero_grad()
            loss.backward()
            opt.step()

    return run


def trainer_case(networks: int, batch: int, steps: int, f32: bool, device: str) -> Callable[[], object]:
    def run() -> None:
        rbm = GaussianRBM(networks=networks, lr=0.1, batch_size=batch, seed=0, float32_noise=f32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit_reference(rbm, steps, accelerator=device)

    return run


def per_network_case(networks: int, batch: int, steps: int, device: str) -> Callable[[], object]:
    """The authors' shape of code: a Python loop over networks, each stepped alone with the same maths."""
    ref = GaussianRBM(networks=networks, lr=0.1, batch_size=batch, seed=0).to(device)
    w0, k_inv, hp = ref.weight.detach().clone(), ref.k_inv, ref.hparams
    gen = torch.Generator(device=device).manual_seed(1)

    def run() -> None:
        for e in range(networks):
            w, phi = w0[e : e + 1].clone(), ref.chains[e : e + 1].clone()  # (1, N_h, N_v), (1, B, N_v)
            for _ in range(steps):
                phi = pcd_sweep(phi, w, k=hp.gibbs_steps, mu=hp.mu, sigma_h=hp.sigma_h, generator=gen)
                w += hp.lr * (w @ k_inv - hp.sigma_h**2 * w @ chain_covariance(phi))

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    p.add_argument("--device", default="cpu")
    p.add_argument("--networks", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (rmt-reproduce's default: 1)")
    p.add_argument("--repeats", type=int, default=None, help="default 5 (3 with --quick)")
    args = p.parse_args()
    repeats = args.repeats or (3 if args.quick else 5)
    torch.set_num_threads(args.threads)
    steps = 50 if args.quick else 300
    loop_nets, loop_steps = (4, 50) if args.quick else (10, 200)
    e, b, dev = args.networks, args.batch_size, args.device
    draws = 60 * e * b  # normals per vectorised step
    cases: dict[str, tuple[Callable[[], object], float]] = {  # name: (callable, network-steps per call)
        "randn float64": (draw_case(draws, torch.float64, dev), draws / (60 * b)),
        "randn float32": (draw_case(draws, torch.float32, dev), draws / (60 * b)),
        "raw loop f64 noise": (raw_loop_case(e, b, steps, False, dev), e * steps),
        "raw loop f32 noise": (raw_loop_case(e, b, steps, True, dev), e * steps),
        "Trainer f64 noise": (trainer_case(e, b, steps, False, dev), e * steps),
        "Trainer f32 noise": (trainer_case(e, b, steps, True, dev), e * steps),
        "per-network loop": (per_network_case(loop_nets, b, loop_steps, dev), loop_nets * loop_steps),
        f"raw loop f64, E={FULL_NETWORKS}": (raw_loop_case(FULL_NETWORKS, b, 5, False, dev), FULL_NETWORKS * 5),
    }
    load0 = os.getloadavg()
    for fn, _ in cases.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        for name, (fn, _) in cases.items():
            times[name].append(timed(fn, dev))
    load1 = os.getloadavg()
    rate = {k: cases[k][1] / statistics.median(ts) for k, ts in times.items()}
    print(
        f"# bench_ensembles: GaussianRBM E={e}, |B|={b}, {steps} steps per call, device={dev}, "
        f"torch {torch.__version__}, threads={torch.get_num_threads()}, repeats={repeats} (median)"
    )
    print(f"# load average before {load0[0]:.2f}, after {load1[0]:.2f} (1-min)")
    print(f"{'case':<24}{'median s':>10}{'network-steps/s':>17}{'vs per-network':>16}")
    loop = rate["per-network loop"]
    for name, ts in times.items():
        print(f"{name:<24}{statistics.median(ts):>10.3f}{rate[name]:>17.0f}{rate[name] / loop:>15.1f}x")
    for dtype in ("float64", "float32"):
        print(f"randn {dtype}: {draws / statistics.median(times[f'randn {dtype}']) / 1e6:.1f} M normals/s")
    floor = rate["randn float64"] / rate["raw loop f64 noise"]
    print(f"f64 step time / its float64 draws alone: {floor:.2f} (1.0 = pure RNG bound)")
    per_ns = 1.0 / rate[f"raw loop f64, E={FULL_NETWORKS}"]  # s per network-step at |B| = b
    total = sum(FULL_NETWORKS * FULL_STEPS * per_ns * bs / b for bs in FULL_BATCH_SIZES)
    print(
        f"estimate, rmt-reproduce all --full RBM part (10 settings x {FULL_NETWORKS} nets x {FULL_STEPS} steps, "
        f"float64 noise, raw-loop rate at E={FULL_NETWORKS} scaled by |B|/{b}): {total / 3600:.1f} h"
    )
    print("target: vectorised (Trainer) >= 10x the per-network loop")


if __name__ == "__main__":
    main()
