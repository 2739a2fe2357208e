"""Benchmark: HyperKernel Gram matrices against sklearn's RBF kernel and a naive baseline.

Run from the repository root (after ``make demo`` or ``make test`` made .venv)::

    .venv/bin/python benchmarks/bench_kernels.py            # N = 5000, x of 784 columns
    .venv/bin/python benchmarks/bench_kernels.py --quick    # N = 1000, seconds

Two data layouts, each timed side by side in one run:

* ``distinct``: every row has its own x (N distinct x);
* ``images``: N rows from ``--images`` distinct x, each with N / images pixel
  coordinates z (the paper's pixel-regression layout).

For each, the best of ``--repeats`` wall times of

* ``rbf``: ``sklearn.metrics.pairwise.rbf_kernel(U)``, the yardstick;
* ``naive``: a straightforward numpy evaluation of the recursions on all N^2
  pairs (no factorisation, no blocking; written below, independent of the
  package, and checked against it);
* ``HyperKernel`` with ``n_jobs=1`` and ``n_jobs=2``.

Peak memory is measured with tracemalloc (numpy reports its allocations to it)
and given as a multiple of the N x N float64 output.
"""

from __future__ import annotations

import argparse
import platform
import time
import tracemalloc

import numpy as np
from sklearn.metrics.pairwise import rbf_kernel

from sklearn_hyperkernel import HyperKernel


def naive_hyperkernel(U: np.ndarray, z_dim: int = 2, f_depth: int = 3, g_depth: int = 2) -> np.ndarray:
    """The recursions of docs/math.md, literally, on full N x N matrices."""
    x, z = U[:, :-z_dim], U[:, -z_dim:]

    def duals(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        var = np.diag(cov)
        norm = np.sqrt(np.outer(var, var))
        rho = np.clip(cov / norm, -1.0, 1.0)
        theta = np.arccos(rho)
        kappa1 = norm / np.pi * (np.sin(theta) + (np.pi - theta) * np.cos(theta))
        kappa0 = (np.pi - theta) / np.pi
        return kappa1, kappa0

    S = x @ x.T / x.shape[1]
    theta_f = S.copy()
    for _ in range(f_depth - 1):
        S, S_dot = duals(S)
        theta_f = theta_f * S_dot + S
    sigma = z @ z.T / z.shape[1]
    k_g = sigma.copy()
    for _ in range(g_depth - 1):
        sigma, sigma_dot = duals(S * sigma)
        k_g = k_g * S * sigma_dot + sigma
    return theta_f * k_g


def best_time(func, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best


def peak_memory(func) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    func()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def make_rows(layout: str, n_rows: int, x_dim: int, n_images: int, rng: np.random.Generator) -> np.ndarray:
    if layout == "distinct":
        x = rng.random((n_rows, x_dim))
    else:
        x = np.repeat(rng.random((n_images, x_dim)), n_rows // n_images, axis=0)
    z = rng.uniform(-1.0, 1.0, size=(x.shape[0], 2))
    return np.hstack([x, z])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="rows N")
    parser.add_argument("--x-dim", type=int, default=784, help="columns of x")
    parser.add_argument("--images", type=int, default=50, help="distinct x in the 'images' layout")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="N = 1000, one repeat")
    args = parser.parse_args()
    if args.quick:
        args.n, args.repeats = 1000, 1
    rng = np.random.default_rng(0)
    output_bytes = args.n * args.n * 8
    print(f"# HyperKernel Gram benchmark: N = {args.n}, x of {args.x_dim} columns, z of 2, f_depth=3, g_depth=2")
    print(f"# {platform.processor() or platform.machine()}, numpy {np.__version__}, best of {args.repeats}")
    print()
    print("| layout | rbf_kernel s | naive s | HyperKernel s (n_jobs=1) | HyperKernel s (n_jobs=2) "
          "| HK/rbf (1) | HK/rbf (2) | naive/HK (1) | HK peak mem / output | naive peak mem / output |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for layout in ("distinct", "images"):
        U = make_rows(layout, args.n, args.x_dim, args.images, rng)
        # the linear z encoding, as the naive reference (the Fourier one adds an exp per entry)
        kernel_1 = HyperKernel(z_encoding="linear")
        kernel_2 = HyperKernel(z_encoding="linear", n_jobs=2)
        reference = naive_hyperkernel(U)
        ours = kernel_1(U)
        # the naive diagonal carries kappa0's rounding at rho ~ 1: compare with rtol 1e-6
        if not np.allclose(ours, reference, rtol=1e-6, atol=1e-9 * np.abs(reference).max()):
            raise AssertionError("HyperKernel disagrees with the naive recursions")
        del reference, ours
        t_rbf = best_time(lambda: rbf_kernel(U), args.repeats)
        t_naive = best_time(lambda: naive_hyperkernel(U), args.repeats)
        t_one = best_time(lambda: kernel_1(U), args.repeats)
        t_two = best_time(lambda: kernel_2(U), args.repeats)
        mem_ours = peak_memory(lambda: kernel_1(U)) / output_bytes
        mem_naive = peak_memory(lambda: naive_hyperkernel(U)) / output_bytes
        print(
            f"| {layout} | {t_rbf:.3f} | {t_naive:.3f} | {t_one:.3f} | {t_two:.3f} | {t_one / t_rbf:.2f} "
            f"| {t_two / t_rbf:.2f} | {t_naive / t_one:.2f} | {mem_ours:.2f} | {mem_naive:.2f} |"
        )
    print()
    print("Peak memory counts the output itself (1.00 = only the output); the extra is the value minus 1.")


if __name__ == "__main__":
    main()
