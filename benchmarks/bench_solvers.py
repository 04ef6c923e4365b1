r"""torch's against scipy's CPU eigensolver per matrix size: the measurement behind ``solver="auto"``'s crossover.

For each dtype (float64: the Gram spectra; float32: the symmetric parts of float32 weights) and matrix size
:math:`n` in ``--sizes`` (default 8, 32, 128, 256, 512, 1024), one stack of :math:`b` Wishart matrices
:math:`X = W^\top W / n` (:math:`b` from 512 at small :math:`n` down to 2 at 1024, about the same flops per stack)
is decomposed by each backend of :func:`rmt_callbacks.spectral._solvers.eigvalsh_stack` (``"torch"``: one batched
``torch.linalg.eigvalsh``, MKL in the x86 wheels; ``"scipy"``: ``scipy.linalg.eigh`` matrix by matrix, the
OpenBLAS of scipy's wheel), each on a fresh copy of the same stack (copied outside the timed region; scipy's works
in place, torch's copies inside its call, which counts). One warm-up each, then ``--repeats`` rounds in which the
two alternate; printed: the median and minimum time per matrix of each, the ratio scipy/torch (baseline: torch's),
and what ``"auto"`` picks for that stack here (:func:`rmt_callbacks.eigensolver.backend_for`). The last line says
from which size scipy's median is the faster and where :data:`rmt_callbacks.eigensolver.SCIPY_FROM` puts the
crossover.

``--threads`` sets torch's intra-op threads and, through ``threadpoolctl``, scipy's BLAS threads (default 1; the
rule offers scipy's only where the two counts are equal, so with unequal ones ``auto`` prints torch everywhere).

Usage: ``.venv/bin/python benchmarks/bench_solvers.py [--threads 1] [--repeats 5] [--sizes 8 32 ...] [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import scipy
import scipy.linalg  # loaded before threadpoolctl limits its BLAS (it limits the libraries loaded so far)
import torch
from threadpoolctl import threadpool_limits

from rmt_callbacks.eigensolver import SCIPY_FROM, backend_for, scipy_blas, scipy_offered
from rmt_callbacks.spectral._solvers import eigvalsh_stack

SIZES = (8, 32, 128, 256, 512, 1024)
DTYPES = (torch.float64, torch.float32)
FLOPS_PER_STACK = 1 << 28  # b n^3 about this: comparable stacks across sizes


def stack_of(n: int, dtype: torch.dtype) -> torch.Tensor:
    """``b`` Wishart matrices ``(b, n, n)`` (fixed seed), ``b`` between 2 and 512."""
    b = max(2, min(512, FLOPS_PER_STACK // n**3))
    w = torch.randn(b, n, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    return (w.mT @ w / n).to(dtype).contiguous()


def per_matrix_seconds(stack: torch.Tensor, backend: str) -> float:
    work = stack.clone()  # scipy's overwrites its stack: each call gets a fresh copy, made outside the timing
    start = time.perf_counter()
    eigvalsh_stack(work, backend)  # type: ignore[arg-type]
    return (time.perf_counter() - start) / stack.shape[0]


def measure(stack: torch.Tensor, repeats: int) -> dict[str, list[float]]:
    """Per-matrix seconds of each backend: one warm-up each, then ``repeats`` alternating rounds."""
    times: dict[str, list[float]] = {"torch": [], "scipy": []}
    for backend in times:
        per_matrix_seconds(stack, backend)
    for i in range(repeats):
        order = ("torch", "scipy") if i % 2 == 0 else ("scipy", "torch")  # neither always goes first
        for backend in order:
            times[backend].append(per_matrix_seconds(stack, backend))
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch's intra-op threads and scipy's BLAS threads")
    p.add_argument("--repeats", type=int, default=5, help="alternating rounds per size (after one warm-up)")
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    p.add_argument("--quick", action="store_true", help="3 repeats")
    args = p.parse_args()
    repeats = 3 if args.quick else args.repeats
    if scipy_blas() is None:
        raise SystemExit("bench_solvers: scipy's bundled OpenBLAS not found (threadpoolctl); nothing to compare")
    torch.set_num_threads(args.threads)
    with threadpool_limits(limits=args.threads, user_api="blas"):
        blas = scipy_blas()
        print(
            f"# bench_solvers: torch {torch.__version__} ({'MKL' if torch.backends.mkl.is_available() else 'no MKL'}), "
            f"scipy {scipy.__version__} ({blas.internal_api} {blas.version}), threads: torch "
            f"{torch.get_num_threads()}, scipy's BLAS {blas.get_num_threads()}; scipy offered: {scipy_offered()}; "
            f"SCIPY_FROM={SCIPY_FROM}; repeats={repeats}"
        )
        load0 = os.getloadavg()
        rows = []
        for dtype in DTYPES:
            for n in args.sizes:
                stack = stack_of(n, dtype)
                times = measure(stack, repeats)
                rows.append((dtype, n, stack.shape[0], times, backend_for("auto", stack)))
        load1 = os.getloadavg()
    print(f"# load average before {load0[0]:.2f}, after {load1[0]:.2f} (1-min)")
    head = f"{'dtype':<9}{'n':>6}{'batch':>7}{'torch µs':>12}{'scipy µs':>12}{'ratio':>8}{'min ratio':>11}{'auto':>8}"
    print(head + "   (µs per matrix, median; ratio = scipy / torch)")
    faster_from: dict[str, int | None] = {}
    for dtype, n, batch, times, auto in rows:
        t, s = statistics.median(times["torch"]), statistics.median(times["scipy"])
        low = min(times["scipy"]) / min(times["torch"])
        name = str(dtype).removeprefix("torch.")
        print(f"{name:<9}{n:>6}{batch:>7}{t * 1e6:>12.1f}{s * 1e6:>12.1f}{s / t:>8.2f}{low:>11.2f}{auto:>8}")
        if s < t:
            faster_from.setdefault(name, n)
        else:
            faster_from.pop(name, None)  # the crossover: from here on scipy's is the faster, up to the largest size
    for name in (str(d).removeprefix("torch.") for d in DTYPES):
        where = faster_from.get(name)
        said = f"n >= {where}" if where is not None else "none of these sizes"
        print(f"# {name}: scipy's median faster from {said}; auto takes scipy's from n >= {SCIPY_FROM} where offered")


if __name__ == "__main__":
    main()
