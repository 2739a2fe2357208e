"""Benchmark the matrix-free CG solver of HyperKernelRegressor against Cholesky.

The task is the paper's pixel regression: rows ``[image | pixel coordinate]``
from scikit-learn's digits (8 x 8 images, 64 rows per image, up to 115,008
rows), the Fourier encoding of z (``length_scale=0.5``) and ``alpha=1e-3``.
Each solver fits the same ``N`` rows in a fresh subprocess, which reports

* the fit time (wall clock),
* the peak of numpy/Python allocations during ``fit`` (:mod:`tracemalloc`),
* the peak resident set of the subprocess (``ru_maxrss``, which includes the
  interpreter and the libraries, about 150 MB),

and CG also its iterations, the relative residual reached and the rank of its
preconditioner. The table ends with the ratios CG / Cholesky and the largest
difference of the two models' predictions on 2,000 rows of other images.

Run from the repository root with the package importable (installed, or
``PYTHONPATH=.``)::

    python benchmarks/bench_cg.py              # N = 20,000, both solvers
    python benchmarks/bench_cg.py --quick      # N = 3,000
    python benchmarks/bench_cg.py --n 100000 --alpha 1e-2 --cg-rank 500 --tol 1e-2 \
        --n-jobs 2 --dtype float32
                                               # CG only (the Gram would be 80 GB)

Cholesky is skipped when its Gram would exceed ``--max-gram-gib`` (8 GiB).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc

import numpy as np
from sklearn.datasets import load_digits

from sklearn_hyperkernel.datasets import pixel_regression
from sklearn_hyperkernel.kernel_ridge import HyperKernelRegressor

PIXELS_PER_IMAGE = 64
N_TEST_ROWS = 2000
# the NTK, as the documented figures were measured (the regressor's default is now the NNGP)
MODEL_PARAMS = {"kernel": "ntk", "z_encoding": "fourier", "length_scale": 0.5, "alpha": 1e-3}


def pixel_rows(n_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first ``n_rows`` training rows and ``N_TEST_ROWS`` rows of later images."""
    images = load_digits().images
    n_train_images = -(-n_rows // PIXELS_PER_IMAGE)
    n_test_images = -(-N_TEST_ROWS // PIXELS_PER_IMAGE)
    if n_train_images + n_test_images > images.shape[0]:
        raise SystemExit(
            f"N={n_rows} needs {n_train_images + n_test_images} digits; there are "
            f"{images.shape[0]} (at most {(images.shape[0] - n_test_images) * 64} rows)."
        )
    X, y = pixel_regression(images[:n_train_images])
    X_test, _ = pixel_regression(images[n_train_images : n_train_images + n_test_images])
    return X[:n_rows], y[:n_rows], X_test[:N_TEST_ROWS]


def run_one(
    solver: str,
    n_rows: int,
    cg_rank: int,
    tol: float,
    n_jobs: int,
    dtype: str,
    verbose: int,
    alpha: float,
    output: str,
) -> None:
    """Fit one solver (in this process) and write its figures as JSON."""
    X, y, X_test = pixel_rows(n_rows)
    model = HyperKernelRegressor(
        solver=solver,
        cg_rank=cg_rank,
        tol=tol,
        n_jobs=n_jobs,
        dtype=dtype,
        verbose=verbose if solver == "cg" else 0,
        **{**MODEL_PARAMS, "alpha": alpha},
    )
    tracemalloc.start()
    started = time.perf_counter()
    model.fit(X, y)
    fit_seconds = time.perf_counter() - started
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    prediction = model.predict(X_test)
    figures = {
        "solver": solver,
        "n": n_rows,
        "fit_s": fit_seconds,
        "traced_peak_bytes": traced_peak,
        "maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "n_iter": model.n_iter_,
        "cg_residual": model.cg_residual_,
        "cg_rank": model.cg_rank_,
        "prediction": prediction.tolist(),
    }
    with open(output, "w") as handle:
        json.dump(figures, handle)


def run_in_subprocess(solver: str, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        output = os.path.join(folder, "figures.json")
        command = [
            sys.executable,
            __file__,
            "--worker",
            solver,
            "--n",
            str(args.n),
            "--cg-rank",
            str(args.cg_rank),
            "--tol",
            str(args.tol),
            "--n-jobs",
            str(args.n_jobs),
            "--dtype",
            args.dtype,
            "--verbose",
            str(args.verbose),
            "--alpha",
            str(args.alpha),
            "--output",
            output,
        ]
        subprocess.run(command, check=True)
        with open(output) as handle:
            return json.load(handle)


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.3f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=None, help="training rows (default 20000)")
    parser.add_argument("--quick", action="store_true", help="N = 3000")
    parser.add_argument("--cg-rank", type=int, default=300, help="preconditioner rank")
    parser.add_argument("--tol", type=float, default=1e-6, help="CG relative residual")
    parser.add_argument(
        "--n-jobs", type=int, default=1, help="threads over Gram panels (both solvers)"
    )
    parser.add_argument(
        "--dtype", choices=["float64", "float32"], default="float64", help="kernel precision"
    )
    parser.add_argument("--verbose", type=int, default=1, help="CG's verbose (2: every iteration)")
    parser.add_argument("--alpha", type=float, default=MODEL_PARAMS["alpha"], help="ridge")
    parser.add_argument(
        "--solvers", nargs="+", choices=["cholesky", "cg"], default=["cholesky", "cg"]
    )
    parser.add_argument("--max-gram-gib", type=float, default=8.0, help="skip Cholesky beyond")
    parser.add_argument("--worker", choices=["cholesky", "cg"], help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.n is None:
        args.n = 3000 if args.quick else 20000
    if args.worker:
        run_one(
            args.worker,
            args.n,
            args.cg_rank,
            args.tol,
            args.n_jobs,
            args.dtype,
            args.verbose,
            args.alpha,
            args.output,
        )
        return

    print(
        f"# bench_cg: N={args.n} pixel rows (digits, Fourier z), alpha={args.alpha}, "
        f"tol={args.tol}, cg_rank={args.cg_rank}, n_jobs={args.n_jobs}, dtype={args.dtype}; "
        f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, numpy {np.__version__}; load average "
        f"{os.getloadavg()[0]:.1f} (other work on the machine slows both solvers)",
        flush=True,
    )
    gram_bytes = 8 * args.n**2
    results = {}
    for solver in args.solvers:
        if solver == "cholesky" and gram_bytes > args.max_gram_gib * 2**30:
            print(f"cholesky: skipped, its Gram would take {gib(gram_bytes)}", flush=True)
            continue
        results[solver] = run_in_subprocess(solver, args)
        figures = results[solver]
        line = (
            f"{solver:>8}: fit {figures['fit_s']:.1f} s, traced peak "
            f"{gib(figures['traced_peak_bytes'])}, max RSS {gib(figures['maxrss_bytes'])}"
        )
        if solver == "cg":
            line += (
                f", {figures['n_iter']} iterations, relative residual "
                f"{figures['cg_residual']:.2e}, preconditioner rank {figures['cg_rank']}"
            )
        print(line, flush=True)
    print(f"float64 Gram at N={args.n}: {gib(gram_bytes)}; load average {os.getloadavg()[0]:.1f}")
    if len(results) == 2:
        cg, cholesky = results["cg"], results["cholesky"]
        difference = np.max(np.abs(np.subtract(cg["prediction"], cholesky["prediction"])))
        print(f"time ratio CG / Cholesky:        {cg['fit_s'] / cholesky['fit_s']:.2f}")
        print(
            "peak memory ratio CG / Cholesky: "
            f"{cg['traced_peak_bytes'] / cholesky['traced_peak_bytes']:.3f} (tracemalloc), "
            f"{cg['maxrss_bytes'] / cholesky['maxrss_bytes']:.3f} (max RSS)"
        )
        print(f"largest prediction difference on {N_TEST_ROWS} test rows: {difference:.2e}")
    elif "cg" in results:
        cg = results["cg"]
        print(f"CG traced peak / Gram: {cg['traced_peak_bytes'] / gram_bytes:.4f}")


if __name__ == "__main__":
    main()
