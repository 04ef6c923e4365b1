r"""One prepared script for a GPU machine: is the CUDA path right, and how fast is it (issue 6).

Checks, each printed as ``PASS``/``FAIL`` with its numbers, then timings:

1. ``analyze(model)`` on CUDA equals the CPU result (every metric to relative 1e-6, from float64 Gram spectra;
   the semicircle fit's to 1e-4, from float32 symmetric parts);
2. ``SpectrumMonitor`` in a GPU ``Trainer``: the background path (side-stream snapshot, worker thread) logs the
   same rows as the synchronous one, and its last analysis equals ``analyze`` of the final weights on the CPU;
3. the spectral-density estimate on CUDA at :math:`n = 4096`: L1 distance to the exact density ≤ 0.05, and its
   cost next to ``eigvalsh`` of the same Gram matrix;
4. the vectorised ``GaussianRBM`` on CUDA: finite after a short fit, and network-steps/s at E = 400 and 7500;
5. then the three ratio benchmarks with ``--device cuda --quick`` (their tables are printed as they are).

``--smoke`` runs every check at toy sizes on the CPU (the test suite does, so the script cannot rot); on a GPU
machine run ``python benchmarks/gpu_check.py`` (about 5–8 minutes) and copy the output into RESULTS.md.
Exit status 1 if a check failed.
"""

from __future__ import annotations

import argparse
import csv
import math
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from reference_models import GaussianRBM, fit_reference
from rmt_callbacks import SpectrumMonitor, analyze
from rmt_callbacks.analysis import ANALYSES
from rmt_callbacks.spectral.density import density_l1, estimate_density, exact_density

FAILED: list[str] = []


def report(name: str, ok: bool, detail: str) -> None:
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}", flush=True)
    if not ok:
        FAILED.append(name)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def mlp(width: int, layers: int, seed: int = 0) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)])
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(width))
    return model


def worst_over_tolerance(a: dict[str, float], b: dict[str, float]) -> float:
    """The largest relative difference over its tolerance: 1e-6, 1e-4 for the semicircle fit (float32 levels)."""
    tol = {k: 1e-4 if k.startswith("semicircle_") else 1e-6 for k in b}
    return max((abs(a[k] - b[k]) / max(abs(b[k]), 1e-12) / tol[k] for k in b), default=0.0)


def check_analyze(device: str, width: int) -> None:
    model = mlp(width, 3)
    cpu = {r.name: r.metrics for r in analyze(model, analyses=ANALYSES)}  # the symmetric parts' solver too
    dev = {r.name: r.metrics for r in analyze(model.to(device), analyses=ANALYSES)}
    keys_match = all(set(cpu[n]) == set(dev[n]) for n in cpu)
    worst = max(worst_over_tolerance(dev[n], cpu[n]) for n in cpu)
    report("analyze on device == CPU", keys_match and worst < 1, f"worst relative difference / tolerance {worst:.2g}")


class _Regression(pl.LightningModule):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = mlp(width, 2, seed=1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _monitored_rows(device: str, width: int, tmp: Path, *, background: bool) -> tuple[list[dict], pl.LightningModule]:
    g = torch.Generator().manual_seed(2)
    data = TensorDataset(torch.randn(160, width, generator=g), torch.randn(160, width, generator=g))
    logger = CSVLogger(tmp, name="bg" if background else "inline")
    monitor = SpectrumMonitor(  # one CPU solver in both arms (the worker's thread count may differ): rows to the bit
        every_n_train_steps=5, overhead_budget=None, background=background, analyses=["summary", "marchenko_pastur"],
        solver="torch",
    )  # fmt: skip
    trainer = pl.Trainer(
        max_steps=20, accelerator="gpu" if device.startswith("cuda") else "cpu", devices=1, logger=logger,
        callbacks=[monitor], enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    model = _Regression(width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, DataLoader(data, batch_size=16))
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        rows = [{k: v for k, v in r.items() if v and "rmt/monitor/" not in k} for r in csv.DictReader(f)]  # timings
    return [r for r in rows if len(r) > 1], model.cpu()


def check_monitor(device: str, width: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bg, model = _monitored_rows(device, width, Path(tmp), background=True)
        inline, _ = _monitored_rows(device, width, Path(tmp), background=False)
    merged = {}
    for r in bg:
        merged.setdefault(int(r["step"]), {}).update(r)
    steps = sorted(merged)
    same = sorted(map(str, bg), key=str) == sorted(map(str, inline), key=str)
    report("monitor background == in-hook", same and steps == [0, 5, 10, 15, 20], f"analysed steps {steps}")
    final = {
        f"rmt/{r.name}/{k}": v
        for r in analyze(model, analyses=["summary", "marchenko_pastur"])
        for k, v in r.metrics.items()
    }
    shared = [k for k in final if k in merged[20]]  # constants (shape, flags) are tags and tables, not metrics
    assert any(k.endswith("/lambda_max") for k in shared), sorted(merged[20])
    worst = max(abs(float(merged[20][k]) - final[k]) / max(abs(final[k]), 1e-12) for k in shared)
    report("monitor's last analysis == CPU analyze of the final weights", worst < 1e-5, f"worst relative {worst:.2e}")


def check_density(device: str, n: int) -> None:
    g = torch.Generator(device=device).manual_seed(3)
    w = torch.randn(n, n, generator=g, device=device, dtype=torch.float32)
    estimate_density(w, generator=g)  # warm-up (kernels, allocator)
    sync(device)
    t0 = time.perf_counter()
    est = estimate_density(w, generator=g)
    sync(device)
    t_est = time.perf_counter() - t0
    t0 = time.perf_counter()
    eigs = torch.linalg.eigvalsh((w.double().T @ w.double()) / n)
    sync(device)
    t_exact = time.perf_counter() - t0
    l1 = density_l1(est, exact_density(eigs, est.edges))
    detail = (
        f"L1 {l1:.3f} (≤ 0.05); cost {t_est:.3f} s vs exact {t_exact:.3f} s = {t_est / t_exact:.1%} (target ≤ 10 %)"
    )
    if n < 4096:  # 100 bins of a few hundred exact levels fluctuate by L1 ~ 0.8 sqrt(100 / n): not judged
        print(f"      density estimate at n = {n} (smoke size, not judged): {detail}", flush=True)
        return
    report(f"density estimate at n = {n}", l1 <= 0.05, detail)


def check_rbm(device: str, networks: list[int], steps: int) -> None:
    accelerator = "gpu" if device.startswith("cuda") else "cpu"
    model = GaussianRBM(networks=networks[0], batch_size=32, seed=0)
    fit_reference(model, 5, accelerator=accelerator)
    report("RBM on device: finite weights after 5 steps", bool(torch.isfinite(model.weight).all()), f"E={networks[0]}")
    for e in networks:
        model = GaussianRBM(networks=e, batch_size=32, seed=0)
        fit_reference(model, 3, accelerator=accelerator)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        fit_reference(model, steps, accelerator=accelerator)
        sync(device)
        rate = e * steps / (time.perf_counter() - t0)
        print(f"      RBM E={e}, |B|=32, {steps} steps through a Trainer: {rate:,.0f} network-steps/s", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="toy sizes on the CPU (a test of this script)")
    p.add_argument("--skip-benchmarks", action="store_true", help="only the checks, not the ratio benchmarks")
    args = p.parse_args()
    if args.smoke:
        device, width, n, networks, steps = "cpu", 24, 256, [8], 5
    else:
        if not torch.cuda.is_available():
            sys.exit("gpu_check: no CUDA device (use --smoke for a CPU dry run)")
        device, width, n, networks, steps = "cuda", 512, 4096, [400, 7500], 200
        print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    check_analyze(device, width)
    check_monitor(device, width)
    check_density(device, n)
    check_rbm(device, networks, steps)
    if not args.smoke and not args.skip_benchmarks:
        here = Path(__file__).parent
        monitors = [["bench_monitor_overhead.py"], ["bench_monitor_overhead.py", "--monitor", "dyson"]]
        for script, *extra in [["bench_analysis.py"], *monitors, ["bench_ensembles.py"]]:
            print(f"\n## {script} --device cuda --quick {' '.join(extra)}", flush=True)
            subprocess.run([sys.executable, str(here / script), "--device", "cuda", "--quick", *extra], check=False)
    print(f"\n{len(FAILED)} check(s) failed: {FAILED}" if FAILED else "\nall checks passed")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
