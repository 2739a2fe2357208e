"""Benchmark: a HyperKernel Gram on a torch device against the numpy path.

Computes ``HyperKernel(z_encoding="fourier")(U)`` for ``N`` rows with every x
distinct (784 values, the paper's MNIST images) and z of 2 columns, on

* numpy (the default ``device=None``) with ``n_jobs=-1`` threads, and
* torch on ``--device`` (default: ``cuda`` when available, else ``cpu``) in
  float64 and float32,

and prints wall times, the speed-up over numpy, the peak GPU memory
(``torch.cuda.max_memory_allocated``) and the largest difference from the
numpy result. The Gram itself is a float64 numpy array of ``8 N^2`` bytes on
the host (20 GB at N = 50,000): the device holds a few panels at a time.

    python benchmarks/bench_gpu.py                      # N = 50,000 on CUDA
    python benchmarks/bench_gpu.py --n 3000 --device cpu
    python benchmarks/bench_gpu.py --skip-numpy         # device timings only
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import torch

from sklearn_hyperkernel import HyperKernel


def timed(function) -> tuple[float, np.ndarray]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = function()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-numpy", action="store_true", help="skip the numpy reference")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    U = np.hstack([rng.uniform(size=(args.n, 784)), rng.uniform(-1.0, 1.0, size=(args.n, 2))])
    gram_gib = 8 * args.n**2 / 2**30
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(
        f"# bench_gpu: N={args.n}, x 784 (all distinct), z 2, HyperKernel fourier, "
        "f_depth 3, g_depth 2; "
        f"Gram {gram_gib:.1f} GiB float64 on the host; device {args.device} ({name}); "
        f"{os.cpu_count()} CPU cores; "
        f"torch {torch.__version__}"
    )
    reference = None
    rows = []
    if not args.skip_numpy:
        seconds, reference = timed(lambda: HyperKernel(z_encoding="fourier", n_jobs=-1)(U))
        rows.append(("numpy float64, n_jobs=-1", seconds, None, 0.0))
    for dtype in ("float64", "float32"):
        kernel = HyperKernel(z_encoding="fourier", device=args.device, dtype=dtype)
        kernel(U[:1000])  # warm-up: CUDA context and kernels
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        seconds, K = timed(lambda kernel=kernel: kernel(U))
        peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else None
        error = (
            None
            if reference is None
            else float(np.max(np.abs(K - reference)) / np.max(np.abs(reference)))
        )
        rows.append((f"torch {args.device} {dtype}", seconds, peak, error))
        del K
    numpy_seconds = rows[0][1] if reference is not None else None
    print(
        "| path | seconds | speed-up over numpy | peak device memory (GiB) "
        "| max relative difference |"
    )
    print("|---|---|---|---|---|")
    for label, seconds, peak, error in rows:
        speedup = "-" if numpy_seconds is None else f"{numpy_seconds / seconds:.1f}x"
        print(
            f"| {label} | {seconds:.2f} | {speedup} | {'-' if peak is None else f'{peak:.2f}'} | "
            f"{'-' if error is None else f'{error:.1e}'} |"
        )
    print(
        "peak resident memory of the process: "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB"
    )


if __name__ == "__main__":
    main()
