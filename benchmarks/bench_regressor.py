"""Benchmark HyperKernelRegressor against KernelRidge(kernel="rbf") and measure predict memory.

Three measurements, printed as one table of ratios:

1. fit + predict time at N training rows and N test rows whose x (784 columns)
   are all distinct, against ``KernelRidge(kernel="rbf", alpha=1e-3)`` on the
   same data (target: ratio <= 2);
2. the same when the rows come from 50 distinct images, many pixel coordinates
   each, which the hyperkernel's x-factorisation exploits (target: ratio <= 1);
3. the peak memory that ``predict`` allocates on many test rows (200k by
   default), relative to the memory of the N x N training Gram matrix
   (target: ratio < 2). It is measured twice: with :mod:`tracemalloc` (numpy
   allocations during ``predict``) and with the resident-set peak
   (``ru_maxrss``) of a fresh subprocess that loads the fitted model and the
   test rows first, so its baseline holds neither the Gram nor the fit.

Run::

    python benchmarks/bench_regressor.py            # N = 5000, 200k test rows
    python benchmarks/bench_regressor.py --quick    # N = 1000, 20k test rows
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

import joblib
import numpy as np
from sklearn.kernel_ridge import KernelRidge
from threadpoolctl import threadpool_limits

from sklearn_hyperkernel.kernel_ridge import HyperKernelRegressor

N_X_COLUMNS = 784
Z_DIM = 2


def make_rows(
    n_rows: int, n_images: int | None, rng: np.random.Generator, images: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``[x | z]`` with x of 784 columns in [0, 1] and z in [-1, 1]^2.

    ``n_images=None`` gives every row its own random x; otherwise the rows are
    spread evenly over ``n_images`` images (``images`` if given, else random).
    The rows are written in chunks into one array, so that building them
    allocates little beyond the result (the RSS measurement relies on it).
    """
    if n_images is not None and images is None:
        images = rng.random((n_images, N_X_COLUMNS))
    X = np.empty((n_rows, N_X_COLUMNS + Z_DIM))
    chunk = 1024
    for start in range(0, n_rows, chunk):
        stop = min(start + chunk, n_rows)
        if n_images is None:
            X[start:stop, :N_X_COLUMNS] = rng.random((stop - start, N_X_COLUMNS))
        else:
            X[start:stop, :N_X_COLUMNS] = images[np.arange(start, stop) % n_images]
        X[start:stop, N_X_COLUMNS:] = rng.uniform(-1.0, 1.0, size=(stop - start, Z_DIM))
    z = X[:, N_X_COLUMNS:]
    y = np.sin(3.0 * z[:, 0]) * X[:, :10].mean(axis=1) + 0.3 * z[:, 1]
    return X, y


def best_time(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


@dataclass
class Row:
    measurement: str
    ours: float
    reference: float
    unit: str
    target: float

    @property
    def ratio(self) -> float:
        return self.ours / self.reference

    def format(self) -> str:
        verdict = "ok" if self.ratio <= self.target else "OVER"
        return (
            f"{self.measurement:<46} {self.ours:>10.3f} {self.reference:>10.3f} {self.unit:<4}"
            f" {self.ratio:>7.3f} {'<= ' + format(self.target, 'g'):>7}  {verdict}"
        )


def time_fit_predict(
    n_train: int, n_test: int, n_images: int | None, repeats: int, seed: int
) -> tuple[float, float, dict[str, float]]:
    rng = np.random.default_rng(seed)
    images = None if n_images is None else rng.random((n_images, N_X_COLUMNS))
    X, y = make_rows(n_train, n_images, rng, images)
    X_test, _ = make_rows(n_test, n_images, rng, images)
    stages: dict[str, float] = {}

    def record(name: str, seconds: float) -> None:
        stages[name] = min(seconds, stages.get(name, np.inf))

    def ours() -> None:
        start = time.perf_counter()
        model = HyperKernelRegressor("ntk", alpha=1e-3, length_scale=0.5).fit(X, y)
        fitted = time.perf_counter()
        model.predict(X_test)
        record("hyper fit", fitted - start)
        record("hyper predict", time.perf_counter() - fitted)

    def reference() -> None:
        start = time.perf_counter()
        model = KernelRidge(kernel="rbf", alpha=1e-3).fit(X, y)
        fitted = time.perf_counter()
        model.predict(X_test)
        record("rbf fit", fitted - start)
        record("rbf predict", time.perf_counter() - fitted)

    ours_time = best_time(ours, repeats)
    reference_time = best_time(reference, repeats)
    return ours_time, reference_time, stages


_RSS_CHILD = r"""
import resource, sys, time
import joblib, numpy as np
sys.path[:0] = sys.argv[4:]
from bench_regressor import make_rows


def status_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


model = joblib.load(sys.argv[1])
n_test, n_images = int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(1)
X_test, _ = make_rows(n_test, n_images, rng, model.X_fit_[:n_images, :-2].copy())
model.predict(X_test[:10])  # import-time allocations and thread pools out of the way
try:
    # Linux >= 4.0: reset the peak RSS (VmHWM) to the current RSS.
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    before, peak_field = status_kib("VmRSS"), "VmHWM"
except OSError:
    before, peak_field = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, None
start = time.perf_counter()
model.predict(X_test)
elapsed = time.perf_counter() - start
after = status_kib(peak_field) if peak_field else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before, after, elapsed, peak_field or "ru_maxrss")
"""


def predict_memory(
    n_train: int, n_test: int, n_images: int, seed: int
) -> tuple[float, float, float, float]:
    """Predict's peak allocation (tracemalloc, RSS) and the Gram's size, in MiB."""
    rng = np.random.default_rng(seed)
    images = rng.random((n_images, N_X_COLUMNS))
    X, y = make_rows(n_train, n_images, rng, images)
    model = HyperKernelRegressor("ntk", alpha=1e-3, length_scale=0.5).fit(X, y)
    gram_mib = 8 * n_train * n_train / 2**20

    X_test, _ = make_rows(n_test, n_images, rng, images)
    model.predict(X_test[:10])
    tracemalloc.start()
    start = time.perf_counter()
    model.predict(X_test)
    elapsed = time.perf_counter() - start
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    del X_test

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.joblib")
        joblib.dump(model, path)
        here = os.path.dirname(os.path.abspath(__file__))
        output = subprocess.run(
            [sys.executable, "-c", _RSS_CHILD, path, str(n_test), str(n_images), here, *sys.path],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
    before_kib, after_kib = int(output[0]), int(output[1])
    unit = 1024 if platform.system() != "Darwin" else 1  # ru_maxrss: KiB on Linux, B on macOS
    rss_peak = (after_kib - before_kib) * unit / 2**20
    return traced_peak, rss_peak, gram_mib, elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="N=1000, 1000 test rows, 20k rows for memory"
    )
    parser.add_argument("--n-train", type=int, default=None, help="training rows (default 5000)")
    parser.add_argument(
        "--n-test", type=int, default=None, help="test rows timed (default = n-train)"
    )
    parser.add_argument(
        "--n-memory", type=int, default=None, help="test rows for memory (default 200000)"
    )
    parser.add_argument(
        "--n-images", type=int, default=50, help="distinct images in the shared-x case"
    )
    parser.add_argument("--repeats", type=int, default=1, help="best of this many timings")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=None,
        help="limit BLAS threads (threadpoolctl) for both estimators; on a shared machine "
        "1 gives stabler timings",
    )
    args = parser.parse_args(argv)
    if args.blas_threads is not None:
        limits = threadpool_limits(limits=args.blas_threads, user_api="blas")
        os.environ["OPENBLAS_NUM_THREADS"] = str(args.blas_threads)  # the RSS subprocess
        os.environ["OMP_NUM_THREADS"] = str(args.blas_threads)
        os.environ["MKL_NUM_THREADS"] = str(args.blas_threads)
    else:
        limits = None

    n_train = args.n_train or (1000 if args.quick else 5000)
    n_test = args.n_test or n_train
    n_memory = args.n_memory or (20_000 if args.quick else 200_000)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"load average {load:.2f} at start (other work on the machine skews timings); "
        f"best of {args.repeats} per timing; BLAS threads: "
        f"{args.blas_threads if args.blas_threads is not None else 'library default'}"
    )
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, "
        f"{os.cpu_count()} CPUs; N={n_train} train rows, {n_test} test rows, "
        f"x: {N_X_COLUMNS} columns, z: {Z_DIM}"
    )
    # Warm up imports, BLAS thread pools and caches so the first timing is fair.
    time_fit_predict(200, 200, None, 1, args.seed)
    rows: list[Row] = []
    details: list[str] = []

    ours, reference, stages = time_fit_predict(n_train, n_test, None, args.repeats, args.seed)
    rows.append(Row("fit+predict, all x distinct  vs KernelRidge rbf", ours, reference, "s", 2.0))
    details.append("all distinct: " + ", ".join(f"{k} {v:.2f}s" for k, v in stages.items()))

    ours, reference, stages = time_fit_predict(
        n_train, n_test, args.n_images, args.repeats, args.seed
    )
    rows.append(
        Row(f"fit+predict, {args.n_images} images  vs KernelRidge rbf", ours, reference, "s", 1.0)
    )
    details.append(
        f"{args.n_images} images: " + ", ".join(f"{k} {v:.2f}s" for k, v in stages.items())
    )

    traced, rss, gram, elapsed = predict_memory(n_train, n_memory, args.n_images, args.seed)
    rows.append(Row(f"predict {n_memory} rows, tracemalloc peak vs Gram", traced, gram, "MiB", 2.0))
    rows.append(Row(f"predict {n_memory} rows, RSS peak growth vs Gram", rss, gram, "MiB", 2.0))
    details.append(f"predict on {n_memory} rows ({args.n_images} images): {elapsed:.2f}s")

    header = (
        f"{'measurement':<46} {'ours':>10} {'reference':>10} {'unit':<4} {'ratio':>7} {'target':>7}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(row.format())
    for line in details:
        print("  " + line)
    if limits is not None:
        limits.restore_original_limits()


if __name__ == "__main__":
    main()
