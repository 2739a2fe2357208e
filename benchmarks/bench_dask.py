"""Benchmark: HyperKernel blocks on a Dask cluster against local joblib threads.

Times, on the same machine and the same rows, the two operations that can be
sent to a cluster:

* the symmetric Gram ``HyperKernel()(U)`` (every panel's entries travel back
  from a worker to the client), and
* one product ``K @ v`` (``HyperKernel.gram_matvec``, what each CG iteration
  does; only a vector per panel travels back),

once with joblib threads (``n_jobs`` = number of workers) and once inside
``joblib.parallel_config(backend="dask")`` on a ``LocalCluster`` of the same
number of single-threaded worker processes on loopback. It prints the times,
the Dask / local ratios and the largest difference between the two results.

Rows are the paper's kind: ``--images`` random "images" of 784 values, each
with ``N / images`` pixel coordinates (``--images 0`` makes every x distinct).

    python benchmarks/bench_dask.py              # N = 10,000, 2 workers
    python benchmarks/bench_dask.py --n 2000 --repeats 1
    python benchmarks/bench_dask.py --scheduler tcp://host:8786   # your cluster
    python benchmarks/bench_dask.py --dask-malloc     # Dask's default allocator settings

The local cluster's workers start with glibc's mmap threshold raised to 64 MiB
(``MALLOC_MMAP_THRESHOLD_``, through Dask's ``distributed.nanny.pre-spawn-environ``):
Dask sets ``MALLOC_TRIM_THRESHOLD_``, which freezes glibc's mmap threshold at
128 KiB, so every 1 MiB temporary of the recursions would be a fresh mmap and
page-faulted in again; that alone made the workers ~1.5x slower here.
"""

from __future__ import annotations

import argparse
import os
import time

import joblib
import numpy as np

from sklearn_hyperkernel import HyperKernel


def make_rows(n: int, n_images: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if n_images <= 0:
        x = rng.uniform(size=(n, 784))
    else:
        x = np.repeat(rng.uniform(size=(n_images, 784)), -(-n // n_images), axis=0)[:n]
    z = rng.uniform(-1.0, 1.0, size=(n, 2))
    return np.hstack([x, z])


def best_time(function, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="rows (default 10000)")
    parser.add_argument("--images", type=int, default=0, help="distinct x rows; 0: all distinct")
    parser.add_argument("--workers", type=int, default=2, help="local threads = Dask workers")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler")
    parser.add_argument("--dask-malloc", action="store_true", help="keep Dask's allocator settings")
    args = parser.parse_args()

    import dask
    from distributed import Client, LocalCluster

    if not args.dask_malloc:
        dask.config.set(
            {
                "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": str(2**30),
                "distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": str(2**26),
            }
        )

    U = make_rows(args.n, args.images)
    kernel = HyperKernel(z_encoding="fourier", n_jobs=args.workers)
    rows = kernel.factorize_rows(U)
    v = np.random.default_rng(1).normal(size=U.shape[0])

    t_gram_local, K_local = best_time(lambda: kernel(U), args.repeats)
    t_mv_local, mv_local = best_time(lambda: kernel.gram_matvec(rows, v), args.repeats)

    if args.scheduler:
        cluster = None
        client = Client(args.scheduler)
    else:
        cluster = LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
        client = Client(cluster)
    try:
        dask_kernel = kernel.set_params(n_jobs=-1)
        with joblib.parallel_config(backend="dask"):
            # the first call also ships the rows to the workers: timed apart
            start = time.perf_counter()
            dask_kernel.gram_matvec(rows, v)
            t_first = time.perf_counter() - start
            t_gram_dask, K_dask = best_time(lambda: dask_kernel(U), args.repeats)
            t_mv_dask, mv_dask = best_time(lambda: dask_kernel.gram_matvec(rows, v), args.repeats)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()

    where = args.scheduler or (
        f"LocalCluster of {args.workers} single-threaded worker processes (loopback), "
        + ("Dask's allocator settings" if args.dask_malloc else "mmap threshold 64 MiB")
    )
    print(
        f"# bench_dask: N={args.n} rows, x of 784 values "
        f"({'every x distinct' if args.images <= 0 else f'{args.images} distinct x'}), z of 2, "
        f"HyperKernel fourier, f_depth 3, g_depth 2; {os.cpu_count()} cores; "
        f"load average {os.getloadavg()[0]:.1f}; Dask: {where}; "
        f"local: joblib threads, n_jobs={args.workers}; "
        f"best of {args.repeats}"
    )
    print("| operation | local joblib (s) | Dask (s) | Dask / local | max relative difference |")
    print("|---|---|---|---|---|")
    gram_diff = np.max(np.abs(K_dask - K_local)) / np.max(np.abs(K_local))
    mv_diff = np.max(np.abs(mv_dask - mv_local)) / np.max(np.abs(mv_local))
    print(
        f"| Gram {args.n} x {args.n} | {t_gram_local:.2f} | {t_gram_dask:.2f} | "
        f"{t_gram_dask / t_gram_local:.2f} | {gram_diff:.1e} |"
    )
    print(
        f"| K @ v (one CG product) | {t_mv_local:.2f} | {t_mv_dask:.2f} | "
        f"{t_mv_dask / t_mv_local:.2f} | {mv_diff:.1e} |"
    )
    print(f"first K @ v on the cluster (includes sending the rows): {t_first:.2f} s")


if __name__ == "__main__":
    main()
