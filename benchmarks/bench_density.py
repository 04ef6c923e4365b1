"""Spectral-density estimate vs exact diagonalisation: accuracy (L1) and cost, same run, same machine.

For each size ``n`` (the Gram dimension) and each test matrix, times the exact path a monitor takes below
``DENSE_LIMIT`` (``X = W.T @ W / M`` then ``torch.linalg.eigvalsh``, in the weight's float32) against
:func:`rmt_callbacks.spectral.density.estimate_density`, each the median of ``--repeats`` runs, and prints the
L1 distance of the estimate to the exact histogram on the estimate's edges and the cost ratio
estimate / exact (target: L1 <= 0.05 and ratio <= 0.10 at n = 4096; ``n`` is ``min(M, N)``). ``ratio_eig`` compares with
``eigvalsh`` alone (the Gram product excluded), the stricter reading. The ratio depends on the thread count: the
exact path's BLAS3 and LAPACK gain from every core, the estimate's panel products (``k`` rows each) far less, so
``--threads 1`` compares the two on equal terms and more threads favour the exact path.

Run: ``.venv/bin/python benchmarks/bench_density.py [--large | --sizes 4096] [--repeats 3] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import time

import torch

from rmt_callbacks.spectral.density import _DEFAULT_STEPS, SpectralDensity, density_l1, estimate_density, exact_density

_DEFAULTS = {name: p.default for name, p in inspect.signature(estimate_density).parameters.items()}


def _matrices(n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Test matrices with ``min(M, N) = n``: Marchenko–Pastur q = 1, 0.5, 2 and a spiked non-MP bulk."""
    scales = torch.rand(n, generator=generator) + 0.5
    scales[:3] = torch.tensor([4.0, 3.0, 2.5])
    return {
        "mp q=1": torch.randn(n, n, generator=generator),
        "mp q=0.5": torch.randn(2 * n, n, generator=generator),
        "mp q=2": torch.randn(n, 2 * n, generator=generator),
        "spiked": torch.randn(n, n, generator=generator) * scales,
    }


def _exact(w: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """Exact eigenvalues, time of Gram product + ``eigvalsh``, time of ``eigvalsh`` alone.

    As the project convention has it, the smaller Gram matrix is diagonalised and padded with zeros.
    """
    rows, cols = w.shape
    start = time.perf_counter()
    gram = w.mT @ w / rows if cols <= rows else w @ w.mT / rows
    mid = time.perf_counter()
    eigs = torch.linalg.eigvalsh(gram)
    end = time.perf_counter()
    return torch.cat([eigs.new_zeros(max(cols - rows, 0)), eigs]), end - start, end - mid


def _estimate(w: torch.Tensor, args: argparse.Namespace) -> tuple[SpectralDensity, float]:
    """The estimate (probe seed 0) and its time."""
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    est = estimate_density(
        w, bins=args.bins, method=args.method, num_vectors=args.num_vectors, num_steps=args.num_steps, generator=gen
    )
    return est, time.perf_counter() - start


def _compare(w: torch.Tensor, args: argparse.Namespace, repeats: int) -> tuple[float, float, float, float]:
    """Median times (exact, eigvalsh, estimate), interleaved so that machine load hits both alike, and L1."""
    exact, eig, estim = [], [], []
    for _ in range(repeats):
        eigs, t_exact, t_eig = _exact(w)
        est, t_est = _estimate(w, args)
        exact.append(t_exact)
        eig.append(t_eig)
        estim.append(t_est)
    l1 = density_l1(est, exact_density(eigs, est.edges))
    return statistics.median(exact), statistics.median(eig), statistics.median(estim), l1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="also n = 8192 (minutes on a CPU)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="sizes n to run (overrides --large)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--method", choices=("slq", "kpm"), default="slq")
    parser.add_argument("--num-vectors", type=int, default=None, help="default: the library's")
    parser.add_argument("--num-steps", type=int, default=None, help="default: the library's")
    parser.add_argument("--bins", type=int, default=100)
    parser.add_argument("--threads", type=int, default=0, help="torch threads for both paths (0: torch's default)")
    args = parser.parse_args()
    args.num_vectors = args.num_vectors or _DEFAULTS["num_vectors"]
    args.num_steps = args.num_steps or _DEFAULTS["num_steps"] or _DEFAULT_STEPS[args.method]
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    sizes = args.sizes or ((2048, 4096, 8192) if args.large else (2048, 4096))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, method={args.method}, "
        f"k={args.num_vectors}, m={args.num_steps}, bins={args.bins}, median of {args.repeats}, "
        f"load average {os.getloadavg()[0]:.2f} (1-min)"
    )
    header = (
        f"{'n':>5} {'matrix':>9} {'exact s':>8} {'eig s':>8} {'estim s':>8} {'ratio':>6} {'ratio_eig':>9} {'L1':>6}"
    )
    print(header)
    print("-" * len(header))
    for n in sizes:
        repeats = 1 if n > 4096 else args.repeats
        for name, w in _matrices(n, torch.Generator().manual_seed(n)).items():
            t_exact, t_eig, t_est, l1 = _compare(w, args, repeats)
            print(
                f"{n:>5} {name:>9} {t_exact:8.2f} {t_eig:8.2f} {t_est:8.3f} {t_est / t_exact:6.3f} "
                f"{t_est / t_eig:9.3f} {l1:6.3f}",
                flush=True,
            )
    print(f"load average at the end {os.getloadavg()[0]:.2f} (1-min)")


if __name__ == "__main__":
    main()
