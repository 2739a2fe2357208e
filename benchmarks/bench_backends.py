"""Benchmark: the same recursions on numpy arrays and on torch CPU tensors.

The recursions in ``sklearn_hyperkernel.recursions`` accept either. This times
f's and g's recursions (f_depth=3, g_depth=2, the elementwise part of a
HyperKernel Gram) over N^2 / 2 entries in chunks of 2^17, as the Gram
evaluation does, and prints the torch/numpy ratio. It is the measurement
behind torch being an optional dependency (docs/performance.md).

    .venv/bin/python benchmarks/bench_backends.py [--n 5000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from sklearn_hyperkernel.recursions import hyper_correlations, mlp_correlations


def run(chunks: list, copy) -> float:
    start = time.perf_counter()
    for rho_x, rho_z in chunks:
        rho_f, ntk_f, _, _ = mlp_correlations(copy(rho_x), 3)
        g = hyper_correlations(rho_f, copy(rho_z), 2, need_nngp=False)
        g.ntk_g * ntk_f
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = max(1, (1 << 17) // args.n)
    n_chunks = max(1, args.n * args.n // 2 // (rows * args.n))
    base = [rng.uniform(-1, 1, size=(rows, args.n)) for _ in range(2)]
    chunks_np = [(base[0], base[1])] * n_chunks
    chunks_torch = [(torch.from_numpy(base[0]), torch.from_numpy(base[1]))] * n_chunks
    t_np = min(run(chunks_np, np.copy) for _ in range(args.repeats))
    default_threads = torch.get_num_threads()
    timings = {}
    for threads in sorted({1, default_threads}):
        torch.set_num_threads(threads)
        timings[threads] = min(run(chunks_torch, torch.clone) for _ in range(args.repeats))
    torch.set_num_threads(default_threads)
    print(
        f"N = {args.n}: {n_chunks} chunks of {rows} x {args.n}, torch {torch.__version__}, "
        f"numpy {np.__version__} (numpy's ufuncs use one thread)"
    )
    print("| backend | seconds | ratio to numpy |")
    print("|---|---|---|")
    print(f"| numpy | {t_np:.3f} | 1.00 |")
    for threads, seconds in timings.items():
        print(f"| torch CPU, {threads} thread(s) | {seconds:.3f} | {seconds / t_np:.2f} |")


if __name__ == "__main__":
    main()
