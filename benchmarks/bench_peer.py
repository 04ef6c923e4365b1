r"""``analyze`` against WeightWatcher's ``analyze()``, the power-law fit included on both sides (issue 15).

Two models, float32, default initialisation: ``mlp``, 6 × ``Linear(1024, 1024)``; ``transformer``, 2 blocks of a
transformer-like stack (q, k, v, o ``Linear(768, 768)``, ``Linear(768, 3072)``, ``Linear(3072, 768)``: 8 square
768 matrices, 2 of 3072 × 768 and 2 of 768 × 3072). Measured side by side, interleaved (one warm-up each, then
``--repeats`` rounds), BLAS at ``--threads`` for every case (torch's intra-op threads and, through
``threadpoolctl``, numpy's and scipy's BLAS):

* ``ours``: :func:`rmt_callbacks.analyze` with its default analyses, the HTSR power-law fit of every matrix
  included (the ``"power_law"`` analysis; on a version without it, :func:`rmt_callbacks.fits.fit_power_law` on
  each result's Gram levels, inside the timer);
* ``ours, without the power law`` (the other default analyses) and ``ours, power-law fits only``
  (:func:`~rmt_callbacks.fits.fit_power_law` on levels computed beforehand): where the time goes;
* ``weightwatcher, k thr``: WeightWatcher's ``analyze()`` (its defaults: one float64 SVD per layer, then its
  power-law fit), BLAS at ``--threads`` like ours; ``weightwatcher, all cores``: the same at its own defaults;
* ``float32 Gram eigh + fits (inexact floor)``: per layer a float32 Gram matrix, scipy's float32 ``syevd`` and
  :func:`~rmt_callbacks.fits.fit_power_law`, nothing else: the fastest route measured (not exact enough to
  adopt, ``--routes``), a bound on what any analysis with a power-law fit could reach this way;
* ``scipy svd f64 (WW's floor)``: the bare float64 ``scipy.linalg.svd(compute_uv=False)`` of every layer, what
  WeightWatcher's decomposition costs.

WeightWatcher is not a dependency: ``pip install --no-deps --target .ww weightwatcher==0.7.7 powerlaw safetensors
matplotlib-inline traitlets`` and run with ``PYTHONPATH=.ww``.

``--routes`` instead measures exact routes to the Gram levels of one matrix per shape (interleaved with today's
float64 route, ``stacks.stacked_levels``), and their accuracy against float64 singular values on Gaussian, spiked
and Student-t matrices: the relative error of :math:`\lambda_{\max}` and the largest error of a level divided by the
local mean spacing (over ±5 levels of the reference), for the 10 smallest levels and for the rest.

Usage: ``PYTHONPATH=.ww .venv/bin/python benchmarks/bench_peer.py [--model mlp|transformer|both] [--repeats 5]
[--threads 1] [--routes]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import scipy.linalg  # loaded before threadpoolctl limits its BLAS (it limits the libraries loaded so far)
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from rmt_callbacks.analysis import ANALYSES, DEFAULT_ANALYSES, analyze
from rmt_callbacks.fits import fit_power_law
from rmt_callbacks.spectral import stacks

ROUTE_SHAPES = ((1024, 1024), (768, 3072), (3072, 768), (512, 512), (256, 1024))


def build_model(kind: str) -> nn.Module:
    """The benchmark's models (fixed seed, float32, default initialisation)."""
    torch.manual_seed(0)  # benchmark script, not library code: a fixed model
    if kind == "mlp":
        return nn.Sequential(*[m for _ in range(6) for m in (nn.Linear(1024, 1024), nn.ReLU())])
    mods: list[nn.Module] = []
    for _ in range(2):  # q, k, v, o, then the feed-forward pair
        mods += [nn.Linear(768, 768) for _ in range(4)] + [nn.Linear(768, 3072), nn.ReLU(), nn.Linear(3072, 768)]
    return nn.Sequential(*mods)


def interleaved(cases: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each case: one warm-up each, then ``repeats`` rounds, cases in turn within a round."""
    for fn in cases.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def ours(model: nn.Module) -> list[object]:
    """``analyze`` with its defaults and the power-law fit of every matrix (a default analysis where it exists)."""
    if "power_law" in DEFAULT_ANALYSES:
        return analyze(model)
    if "power_law" in ANALYSES:
        return analyze(model, analyses=(*DEFAULT_ANALYSES, "power_law"))
    return [fit_power_law(r.spectra["gram"]) for r in analyze(model)]


WITHOUT_POWER_LAW = tuple(a for a in DEFAULT_ANALYSES if a != "power_law")


def _gram32(a: np.ndarray) -> torch.Tensor:
    """Levels from a float32 Gram matrix and scipy's float32 ``syevd``: the fastest route measured, not exact
    enough at the hard edge of a spiked square matrix (``--routes``); a floor, not something ``analyze`` does."""
    m, n = a.shape
    x = a.T @ a if n <= m else a @ a.T
    eigs = scipy.linalg.eigh(x, eigvals_only=True, driver="evd", check_finite=False, overwrite_a=True)
    return torch.from_numpy(eigs).double().clamp_min(0) / m


def peer_cases(model: nn.Module, threads: int) -> dict[str, Callable[[], object]]:
    levels = [r.spectra["gram"] for r in analyze(model, analyses=("summary",))]
    weights = [m.weight.detach().double().numpy() for m in model.modules() if isinstance(m, nn.Linear)]
    weights32 = [w.astype(np.float32) for w in weights]
    cases: dict[str, Callable[[], object]] = {
        "ours (analyze + power law)": lambda: ours(model),
        "ours, without the power law": lambda: analyze(model, analyses=WITHOUT_POWER_LAW),
        "ours, power-law fits only": lambda: [fit_power_law(x) for x in levels],
        "scipy svd f64 (WW's floor)": lambda: [scipy.linalg.svd(w, compute_uv=False) for w in weights],
        "float32 Gram eigh + fits (inexact floor)": lambda: [fit_power_law(_gram32(w)) for w in weights32],
    }
    try:
        import weightwatcher  # optional, not a dependency
    except ImportError:
        return cases
    logging.getLogger("weightwatcher").setLevel(logging.WARNING)  # one INFO line per layer otherwise
    watcher = weightwatcher.WeightWatcher(model=model)

    def all_cores() -> object:
        with threadpool_limits(limits=os.cpu_count(), user_api="blas"):
            return watcher.analyze()

    cases[f"weightwatcher, {threads} thr"] = lambda: watcher.analyze()
    cases["weightwatcher, all cores"] = all_cores
    return cases


def run_peer(kind: str, args: argparse.Namespace) -> None:
    model = build_model(kind)
    shapes = sorted({tuple(m.weight.shape) for m in model.modules() if isinstance(m, nn.Linear)})
    cases = peer_cases(model, args.threads)
    load0 = os.getloadavg()
    times = interleaved(cases, args.repeats)
    load1 = os.getloadavg()
    print(f"\n# {kind}: weight shapes {shapes}, threads={torch.get_num_threads()}, repeats={args.repeats}")
    print(f"# load average (1-min) before {load0[0]:.2f}, after {load1[0]:.2f}; power law in analyze: ", end="")
    print("power_law" in DEFAULT_ANALYSES, f"(defaults: {', '.join(DEFAULT_ANALYSES)})")
    ref = statistics.median(times["ours (analyze + power law)"])
    ref_min = min(times["ours (analyze + power law)"])
    print("| case | median s | min s | / ours (median) | / ours (min) |\n|---|---:|---:|---:|---:|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med:.3f} | {min(ts):.3f} | {med / ref:.2f} | {min(ts) / ref_min:.2f} |")
    if not any(k.startswith("weightwatcher") for k in times):
        print("weightwatcher not installed (PYTHONPATH=.ww)")
    for name in (k for k in times if k.startswith("weightwatcher")):
        print(f"{name} / ours = {statistics.median(times[name]) / ref:.2f} (median), ", end="")
        print(f"{min(times[name]) / ref_min:.2f} (min); target >= 4")


def _test_matrices(m: int, n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Gaussian, spiked (8 rank-one spikes of strength 3..30) and Student-t (2.5 dof) ``m x n``, float32."""
    gauss = torch.randn(m, n, generator=g, dtype=torch.float64) / m**0.5
    u = torch.linalg.qr(torch.randn(m, 8, generator=g, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(n, 8, generator=g, dtype=torch.float64))[0]
    spikes = u @ torch.diag(torch.linspace(3, 30, 8, dtype=torch.float64)) @ v.T
    t = torch.distributions.StudentT(torch.tensor(2.5, dtype=torch.float64)).sample((m, n))
    return {"gaussian": gauss.float(), "spiked": (gauss + spikes).float(), "student-t": (t / m**0.5).float()}


def _routes(w: torch.Tensor) -> dict[str, Callable[[], torch.Tensor]]:
    """Each route's ascending non-structural levels :math:`s^2/M` of ``w`` ``(M, N)`` as float64."""
    m, n = w.shape
    a = w.numpy()

    def from_sv(s: object) -> torch.Tensor:
        return torch.as_tensor(s).double().flip(0).square() / m

    def scipy_sv(driver: str) -> torch.Tensor:
        return from_sv(scipy.linalg.svd(a, compute_uv=False, check_finite=False, lapack_driver=driver))

    def gram32(solver: str) -> torch.Tensor:
        x = a.T @ a if n <= m else a @ a.T
        if solver == "torch":
            return torch.linalg.eigvalsh(torch.from_numpy(x)).double().clamp_min(0) / m
        eigs = scipy.linalg.eigh(x, eigvals_only=True, driver="evd", check_finite=False, overwrite_a=True)
        return torch.from_numpy(eigs).double().clamp_min(0) / m

    return {
        "float64 Gram, eigvalsh (today)": lambda: stacks.stacked_levels([w[None]], "gram")[0][0][-min(m, n) :],
        "torch svdvals f32": lambda: from_sv(torch.linalg.svdvals(w)),
        "scipy svd f32 gesdd": lambda: scipy_sv("gesdd"),
        "scipy svd f32 gesvd": lambda: scipy_sv("gesvd"),
        "float32 Gram, torch eigvalsh": lambda: gram32("torch"),
        "float32 Gram, scipy eigh": lambda: gram32("scipy"),
    }


def _errors(levels: torch.Tensor, ref: torch.Tensor) -> tuple[float, float, float]:
    """Relative error of the largest level; largest error over the local mean spacing (±5 levels of ``ref``),
    over the 10 smallest levels and over the rest."""
    k, h = ref.numel(), 5
    idx = torch.arange(k)
    lo, hi = (idx - h).clamp_min(0), (idx + h).clamp_max(k - 1)
    spacing = (ref[hi] - ref[lo]) / (hi - lo)
    ratio = (levels - ref).abs() / spacing
    return float((levels[-1] - ref[-1]).abs() / ref[-1]), float(ratio[:10].max()), float(ratio[10:].max())


def run_routes(repeats: int) -> None:
    g = torch.Generator().manual_seed(1)
    load0 = os.getloadavg()
    print("| shape | route | median ms | min ms | / today (min) |\n|---|---|---:|---:|---:|")
    for m, n in ROUTE_SHAPES:
        w = (torch.randn(m, n, generator=g) / m**0.5).float()
        times = interleaved(_routes(w), repeats)
        base = min(times["float64 Gram, eigvalsh (today)"])
        for name, ts in times.items():
            med, low = statistics.median(ts) * 1e3, min(ts) * 1e3
            print(f"| {m} × {n} | {name} | {med:.1f} | {low:.1f} | {min(ts) / base:.2f} |")
    print(f"# load average (1-min) before {load0[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    print("\n| shape | matrix | route | rel. err λ_max | err/spacing, 10 smallest | err/spacing, rest |")
    print("|---|---|---|---:|---:|---:|")
    for m, n in ROUTE_SHAPES:
        for kind, w in _test_matrices(m, n, g).items():
            ref = torch.linalg.svdvals(w.double()).flip(0).square() / m  # float64 reference
            for name, route in _routes(w).items():
                rel, low, rest = _errors(route(), ref)
                print(f"| {m} × {n} | {kind} | {name} | {rel:.1e} | {low:.1e} | {rest:.1e} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=("mlp", "transformer", "both"), default="both")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op and BLAS threads (default 1)")
    p.add_argument("--routes", action="store_true", help="time and check exact routes to the Gram levels instead")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    blas = threadpool_limits(limits=args.threads, user_api="blas")  # noqa: F841  (held for the whole run)
    print(f"# torch {torch.__version__}, scipy {scipy.__version__}, threads {args.threads}")
    if args.routes:
        run_routes(args.repeats)
        return
    for kind in ("mlp", "transformer") if args.model == "both" else (args.model,):
        run_peer(kind, args)


if __name__ == "__main__":
    main()
