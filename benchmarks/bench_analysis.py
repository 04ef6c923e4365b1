r"""Analysis cost against the bare eigensolver, and its peak memory (issue 6, items 1 and 5).

Workload: an MLP of ``--layers`` square ``nn.Linear(width, width)`` layers (default 6 × 1024). Measured side by
side, interleaved, after a warm-up, the median of ``--repeats`` runs:

* ``eigvalsh(gram)``: the baseline, one batched ``torch.linalg.eigvalsh`` of the ``(L, N, N)`` float64 Gram
  matrices :math:`X = W^\top W / M`, formed beforehand (the eigensolver alone);
* ``eigvalsh(gram)+(sym)``: the same plus one batched ``eigvalsh`` of the ``(L, N, N)`` symmetric parts
  :math:`(W + W^\top)/2`: the floor for the default analyses, which need both spectra of a square matrix;
* ``eigvalsh([gram; sym])``: both stacks in one call ``(2L, N, N)`` (is one call cheaper than two?);
* ``eigvalsh(gram) f32``: the baseline in float32 (what float64 costs);
* ``gram + eigvalsh``: the baseline, forming the float64 Gram matrices from the weights inside the timed region;
* ``eigh(gram) scipy``: the baseline's matrices through scipy's LAPACK (``scipy.linalg.eigh``, eigenvalues only,
  the same ``syevd``), one matrix at a time: the other solver the analysis may use on a CPU;
* ``analyze(model)``: :func:`rmt_callbacks.analyze` with its defaults (summary, Marchenko–Pastur, spacings, power law:
  everything the monitor does per analysis at its defaults; one decomposition per matrix), its CPU solver chosen
  by the size rule of ``solver="auto"`` (:mod:`rmt_callbacks.eigensolver`);
* ``analyze, torch solver``: the same with ``solver="torch"`` (torch's ``eigvalsh`` only);
* ``analyze(+semicircle)``: every analysis, the semicircle fit of the symmetric parts included (two
  decompositions per square matrix);
* ``weightwatcher.analyze()``: WeightWatcher's ``analyze()`` on the same model, when ``weightwatcher`` is
  importable (it is not a dependency: ``pip install --no-deps --target .ww weightwatcher powerlaw safetensors
  matplotlib-inline traitlets`` and run with ``PYTHONPATH=.ww``), with numpy/scipy's BLAS at ``--threads`` like
  every other case (``weightwatcher, k thr``) and at its defaults, all cores (``weightwatcher.analyze()``).

``--threads`` sets torch's intra-op threads and, through ``threadpoolctl``, numpy's and scipy's BLAS threads for the
whole run (the analysis offers scipy's solver only where the two counts are equal).

Target: ``analyze`` ≤ 1.25 × ``eigvalsh(gram)``. Peak memory is measured in a fresh subprocess per case
(torch's CPU allocations are invisible to ``tracemalloc``): the growth of the resident set over its value before
the call, sampled every 0.5 ms from ``/proc/self/statm``; or ``torch.cuda.max_memory_allocated`` on CUDA. On a
CPU it is measured twice: with ``MALLOC_MMAP_THRESHOLD_=131072`` (*held*: every allocation over 128 KiB is a
mapping of its own, returned when freed, so the resident set follows the bytes the analysis holds) and with
glibc's defaults (*RSS*: its dynamic threshold moves freed multi-MiB blocks to the heap, so the resident set
also shows the allocator's reuse and fragmentation). It is printed in MiB and in float64 copies of the largest
analysed matrix (one :math:`N \times N` layer), from the held bytes. ``--stack-bytes`` sets
:data:`rmt_callbacks.spectral.stacks.STACK_BYTES` (the float64 bytes of one ``eigvalsh`` stack) for the speed/memory
trade-off; ``--profile`` prints the cProfile hot spots of one analysis.

Usage: ``.venv/bin/python benchmarks/bench_analysis.py [--quick] [--threads 1] [--stack-bytes B] [--device cuda]
[--profile]``.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import os
import pstats
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import scipy.linalg  # loaded before threadpoolctl limits its BLAS (it limits the libraries loaded so far)
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from rmt_callbacks.analysis import ANALYSES, analyze
from rmt_callbacks.spectral import stacks


def build_model(layers: int, width: int, device: str) -> nn.Module:
    """``layers`` square Linear layers with ReLUs, default (Kaiming-uniform) initialisation, float32."""
    torch.manual_seed(0)  # benchmark script, not library code: a fixed model
    mods: list[nn.Module] = []
    for _ in range(layers):
        mods += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*mods).to(device)


def weights_of(model: nn.Module) -> torch.Tensor:
    """The stacked weights ``(L, M, N)`` as float64."""
    return torch.stack([m.weight.detach() for m in model.modules() if isinstance(m, nn.Linear)]).double()


def gram_of(w: torch.Tensor) -> torch.Tensor:
    """``(L, N, N)`` Gram matrices :math:`W^\\top W / M`."""
    return w.mT @ w / w.shape[-2]


def sym_of(w: torch.Tensor) -> torch.Tensor:
    """``(L, N, N)`` symmetric parts :math:`(W + W^\\top)/2`."""
    return 0.5 * (w + w.mT)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(cases: dict[str, Callable[[], object]], repeats: int, device: str) -> dict[str, list[float]]:
    """Seconds per call of each case: one warm-up each, then ``repeats`` rounds, cases in turn within a round."""
    for fn in cases.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def weightwatcher_cases(model: nn.Module, threads: int) -> dict[str, Callable[[], object]]:
    """WeightWatcher's ``analyze()`` with its SVDs' BLAS at ``threads`` like the other cases, and at its defaults
    (all cores); none if it is not installed."""
    try:
        import weightwatcher  # optional, not a dependency
    except ImportError:
        return {}
    logging.getLogger("weightwatcher").setLevel(logging.WARNING)  # one INFO line per layer otherwise
    watcher = weightwatcher.WeightWatcher(model=model)

    def all_cores() -> object:
        with threadpool_limits(limits=os.cpu_count(), user_api="blas"):
            return watcher.analyze()

    return {f"weightwatcher, {threads} thr": lambda: watcher.analyze(), "weightwatcher.analyze()": all_cores}


def scipy_eigh(x: object) -> object:
    return scipy.linalg.eigh(x, eigvals_only=True, driver="evd", check_finite=False)


def analyze_with_torch_solver(model: nn.Module) -> object:
    return analyze(model, solver="torch")


MEMORY_CASES = ("gram + eigvalsh", "analyze", "analyze, torch solver", "analyze(+semicircle)")


def memory_child(kind: str, layers: int, width: int, device: str) -> None:
    """Run in a fresh process: print the peak-memory growth (bytes) of one ``kind`` call as JSON."""
    # lazy imports (scipy) and solver start-up (both LAPACKs' first calls) are not the analysis' memory: done on a
    # model of the same shape, then freed
    analyze(build_model(layers, width, device))
    model = build_model(layers, width, device)  # every kind starts from the float32 model alone
    fn = {
        "gram + eigvalsh": lambda: torch.linalg.eigvalsh(gram_of(weights_of(model))),
        "analyze": lambda: analyze(model),
        "analyze, torch solver": lambda: analyze_with_torch_solver(model),
        "analyze(+semicircle)": lambda: analyze(model, analyses=ANALYSES),
    }[kind]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        rss0, samples, done = _rss(), [0], threading.Event()

        def sample() -> None:
            while not done.is_set():
                samples.append(_rss())
                time.sleep(0.0005)

        thread = threading.Thread(target=sample)
        thread.start()
        fn()
        done.set()
        thread.join()
        print(json.dumps({"kind": kind, "peak_bytes": max(samples) - rss0}))
        return
    print(json.dumps({"kind": kind, "peak_bytes": peak}))


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory(kind: str, args: argparse.Namespace, stack_bytes: int, *, held: bool) -> float:
    """MiB of peak growth of one ``kind`` call in a fresh process; ``held``: with a fixed mmap threshold."""
    cmd = [sys.executable, __file__, "--memory-child", kind, "--layers", str(args.layers), "--width", str(args.width)]
    cmd += ["--device", args.device, "--threads", str(args.threads), "--stack-bytes", str(stack_bytes)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"} if held else None
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_bytes"] / 2**20


def profile(model: nn.Module, top: int = 15) -> None:
    prof = cProfile.Profile()
    prof.runcall(analyze, model)
    print(f"\ncProfile of one analyze(model), top {top} by cumulative time:")
    pstats.Stats(prof).sort_stats("cumulative").print_stats(top)
    print(f"top {top} by own time:")
    pstats.Stats(prof).sort_stats("tottime").print_stats(top)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="width 512 (unless --width), 3 repeats")
    p.add_argument("--device", default="cpu")
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--width", type=int, default=None, help="default 1024 (512 with --quick)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--stack-bytes", type=int, default=stacks.STACK_BYTES, help="stacks.STACK_BYTES")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--memory-child", choices=MEMORY_CASES, help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    blas = threadpool_limits(limits=args.threads, user_api="blas")  # noqa: F841  (held for the whole run)
    stacks.STACK_BYTES = args.stack_bytes
    args.width = args.width or (512 if args.quick else 1024)
    if args.memory_child:
        memory_child(args.memory_child, args.layers, args.width, args.device)
        return
    repeats = args.repeats or (3 if args.quick else 5)
    model = build_model(args.layers, args.width, args.device)
    w = weights_of(model)
    gram, sym = gram_of(w), sym_of(w)
    both, gram32 = torch.cat([gram, sym]), gram.float()
    cases: dict[str, Callable[[], object]] = {
        "eigvalsh(gram)": lambda: torch.linalg.eigvalsh(gram),
        "eigvalsh(gram)+(sym)": lambda: (torch.linalg.eigvalsh(gram), torch.linalg.eigvalsh(sym)),
        "eigvalsh([gram; sym])": lambda: torch.linalg.eigvalsh(both),
        "eigvalsh(gram) f32": lambda: torch.linalg.eigvalsh(gram32),
        "gram + eigvalsh": lambda: torch.linalg.eigvalsh(gram_of(weights_of(model))),
        "analyze(model)": lambda: analyze(model),
        "analyze, torch solver": lambda: analyze_with_torch_solver(model),
        "analyze(+semicircle)": lambda: analyze(model, analyses=ANALYSES),
    }
    if args.device == "cpu":  # the other solver the analysis may use on a CPU
        cases["eigh(gram) scipy"] = lambda: [scipy_eigh(x) for x in gram.numpy()]
    ww = weightwatcher_cases(model, args.threads)
    cases.update(ww)
    load0 = os.getloadavg()
    times = interleaved(cases, repeats, args.device)
    load1 = os.getloadavg()
    print(
        f"# bench_analysis: {args.layers} x Linear({args.width}, {args.width}), device={args.device}, "
        f"torch {torch.__version__}, threads={torch.get_num_threads()}, repeats={repeats} (median), "
        f"STACK_BYTES={stacks.STACK_BYTES}"
    )
    print(f"# load average before {load0[0]:.2f}, after {load1[0]:.2f} (1-min)")
    base = statistics.median(times["eigvalsh(gram)"])
    floor = statistics.median(times["eigvalsh(gram)+(sym)"])
    print(f"{'case':<26}{'median s':>10}{'min s':>10}{'ratio':>8}{'min ratio':>10}")
    base_min = min(times["eigvalsh(gram)"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<26}{med:>10.3f}{min(ts):>10.3f}{med / base:>8.2f}{min(ts) / base_min:>10.2f}")
    if not ww:
        print(f"{'weightwatcher.analyze()':<26}{'not installed':>28}")
    for name in ww:
        ratio = statistics.median(times[name]) / statistics.median(times["analyze(model)"])
        print(f"{name} / analyze(model) = {ratio:.2f} (target >= 4)")
    default, every = statistics.median(times["analyze(model)"]), statistics.median(times["analyze(+semicircle)"])
    print(f"target: analyze(model) / eigvalsh(gram) <= 1.25; measured {default / base:.2f} (defaults); ", end="")
    print(f"with the semicircle {every / base:.2f} of eigvalsh(gram), {every / floor:.2f} of eigvalsh(gram)+(sym)")
    cuda = args.device.startswith("cuda")
    how = "cuda max_memory_allocated" if cuda else "sampled resident set: held (fixed mmap threshold), glibc RSS"
    matrix_mib = args.width * args.width * 8 / 2**20
    print(f"\npeak memory growth over the float32 model (fresh subprocess, {how}):")
    for kind in MEMORY_CASES:
        held = peak_memory(kind, args, stacks.STACK_BYTES, held=True)
        rss = held if cuda else peak_memory(kind, args, stacks.STACK_BYTES, held=False)
        print(f"{kind:<26}{held:>8.1f} MiB held {rss:>8.1f} MiB RSS {held / matrix_mib:>6.1f} x largest matrix")
    print(f"(one float64 {args.width} x {args.width} matrix: {matrix_mib:.1f} MiB; all {args.layers}: ", end="")
    print(f"{args.layers * matrix_mib:.1f} MiB)")
    if args.profile:
        profile(model)


if __name__ == "__main__":
    main()
