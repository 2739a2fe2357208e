"""Benchmark: HyperKernel Gram matrices against sklearn's RBF kernel and a naive baseline.

Run from the repository root (after ``make demo`` or ``make test`` made .venv)::

    .venv/bin/python benchmarks/bench_kernels.py            # N = 5000, x of 784 columns
    .venv/bin/python benchmarks/bench_kernels.py --quick    # N = 1000, seconds

Two data layouts, each timed side by side in one run:

* ``distinct``: every row has its own x (N distinct x);
* ``images``: N rows from ``--images`` distinct x, each with N / images pixel
  coordinates z (the paper's pixel-regression layout).

For each, the best of ``--repeats`` wall times (the methods interleaved, one
call of each per round) of

* ``rbf``: ``sklearn.metrics.pairwise.rbf_kernel(U)``, the yardstick;
* ``naive``: a straightforward numpy evaluation of the recursions on all N^2
  pairs (no factorisation, no blocking; written below, independent of the
  package, and checked against it);
* ``HyperKernel`` (``n_jobs=--n-jobs``, default None) on its numpy path
  (``SKLEARN_HYPERKERNEL_FUSED=0``) and with the fused numba pass
  (``SKLEARN_HYPERKERNEL_FUSED=1``; numba, a core dependency), side by side.

Peak memory is measured with tracemalloc (numpy reports its allocations to it;
numba's few tile buffers are not counted) and given as a multiple of the
N x N float64 output. With numba, the time of the first fused call in a fresh
interpreter is measured too: with an empty cache folder (compilation) and
with the cache it left (loading the compiled code).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc

import numpy as np
from sklearn.metrics.pairwise import rbf_kernel

from sklearn_hyperkernel import HyperKernel


def naive_hyperkernel(
    U: np.ndarray, z_dim: int = 2, f_depth: int = 3, g_depth: int = 2
) -> np.ndarray:
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


FUSED_ENV = "SKLEARN_HYPERKERNEL_FUSED"
# the first call of the fused pass in a fresh interpreter (public API only)
FIRST_CALL = """
import time, numpy as np
from sklearn_hyperkernel import HyperKernel
U = np.random.default_rng(0).random((300, 12))
start = time.perf_counter()
HyperKernel()(U)
print(time.perf_counter() - start)
"""


def with_fused(func, setting: str):
    """``func`` run with the environment variable of the fused pass set to ``setting``."""

    def run():
        previous = os.environ.get(FUSED_ENV)
        os.environ[FUSED_ENV] = setting
        try:
            return func()
        finally:
            if previous is None:
                del os.environ[FUSED_ENV]
            else:
                os.environ[FUSED_ENV] = previous

    return run


def best_times(funcs: dict, repeats: int) -> dict:
    """Best wall time of each function, the functions interleaved round by round."""
    best = dict.fromkeys(funcs, np.inf)
    for _ in range(repeats):
        for name, func in funcs.items():
            start = time.perf_counter()
            func()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def first_fused_calls() -> tuple[float, float]:
    """Seconds of a first fused call in fresh interpreters: compiling, then from the cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, FUSED_ENV: "1", "NUMBA_CACHE_DIR": cache}
        run = [sys.executable, "-c", FIRST_CALL]
        times = [
            float(subprocess.run(run, env=env, capture_output=True, text=True, check=True).stdout)
            for _ in range(2)
        ]
    return times[0], times[1]


def peak_memory(func) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    func()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def make_rows(
    layout: str, n_rows: int, x_dim: int, n_images: int, rng: np.random.Generator
) -> np.ndarray:
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
    parser.add_argument("--n-jobs", type=int, default=None, help="HyperKernel's n_jobs")
    parser.add_argument("--quick", action="store_true", help="N = 1000, one repeat")
    parser.add_argument(
        "--first-call",
        action="store_true",
        help="only the first fused call in fresh interpreters (compiling, then cached), "
        "--repeats times",
    )
    args = parser.parse_args()
    if args.first_call:
        for _ in range(args.repeats):
            compiled, cached = first_fused_calls()
            print(f"first fused call: {compiled:.1f} s compiling, {cached:.2f} s from the cache")
        return
    if args.quick:
        args.n, args.repeats = 1000, 1
    rng = np.random.default_rng(0)
    output_bytes = args.n * args.n * 8
    print(
        f"# HyperKernel Gram benchmark: N = {args.n}, x of {args.x_dim} columns, z of 2, "
        "f_depth=3, g_depth=2"
    )
    fused = importlib.util.find_spec("numba") is not None
    machine = platform.processor() or platform.machine()
    print(
        f"# {machine}, numpy {np.__version__}, best of {args.repeats}, "
        f"HyperKernel n_jobs={args.n_jobs}, fused pass: {'numba' if fused else 'no numba'}"
    )
    if fused:
        compiled, cached = first_fused_calls()
        print(
            f"# first fused call in a fresh interpreter: {compiled:.1f} s compiling, "
            f"{cached:.2f} s from the cache"
        )
    print()
    print(
        "| layout | rbf_kernel s | naive s | HK numpy s | HK fused s | numpy/rbf | fused/rbf "
        "| naive/numpy | numpy peak mem / output | fused peak mem / output "
        "| naive peak mem / output |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for layout in ("distinct", "images"):
        U = make_rows(layout, args.n, args.x_dim, args.images, rng)
        # the naive reference's kernel: the linear z encoding (the Fourier one adds an exp per
        # entry) and the paper's raw-row form (no biases, x not normalised), not the defaults
        kernel = HyperKernel(
            z_encoding="linear",
            normalize_x=False,
            f_bias_variance=0.0,
            g_bias_variance=0.0,
            n_jobs=args.n_jobs,
        )
        methods = {
            "rbf": functools.partial(rbf_kernel, U),
            "naive": functools.partial(naive_hyperkernel, U),
            "numpy": with_fused(functools.partial(kernel, U), "0"),
        }
        if fused:
            methods["fused"] = with_fused(functools.partial(kernel, U), "1")
        reference = naive_hyperkernel(U)
        for name in methods.keys() - {"rbf", "naive"}:
            ours = methods[name]()
            # the naive diagonal carries kappa0's rounding at rho ~ 1: compare with rtol 1e-6
            if not np.allclose(ours, reference, rtol=1e-6, atol=1e-9 * np.abs(reference).max()):
                raise AssertionError(f"HyperKernel ({name}) disagrees with the naive recursions")
        del reference, ours
        t = best_times(methods, args.repeats)
        t.setdefault("fused", np.nan)
        memory = {
            name: peak_memory(methods[name]) / output_bytes for name in methods.keys() - {"rbf"}
        }
        memory.setdefault("fused", np.nan)
        print(
            f"| {layout} | {t['rbf']:.3f} | {t['naive']:.3f} | {t['numpy']:.3f} "
            f"| {t['fused']:.3f} | {t['numpy'] / t['rbf']:.2f} | {t['fused'] / t['rbf']:.2f} "
            f"| {t['naive'] / t['numpy']:.2f} "
            f"| {memory['numpy']:.2f} | {memory['fused']:.2f} | {memory['naive']:.2f} |"
        )
    print()
    print(
        "Peak memory counts the output itself (1.00 = only the output); "
        "the extra is the value minus 1."
    )


if __name__ == "__main__":
    main()
