"""Benchmark Nyström kernel ridge regression (``HyperKernelRegressor(solver="nystrom")``).

The task is the paper's pixel regression on the offline MNIST subset: rows
``[image | pixel coordinate]`` (x on the unit sphere, coordinates in
``[-1, 1]``), the defaults of ``HyperKernelRegressor`` otherwise (hyperkernel,
Fourier z with ``length_scale=0.5``, ``alpha=1e-3`` relative, ``normalize_y``).

Two runs:

**(a) N = 20,000** (default): 1,000 images x 20 random pixels; test = all
784 pixels of 50 held-out images (39,200 rows). Side by side, each in a fresh
subprocess (fit wall time, predict wall time, test MSE, the process's peak
RSS):

* the exact solve (``solver="cholesky"``);
* Nyström at the recommended ``m`` (``--n-components``) with each centre rule;
* scikit-learn's ``make_pipeline(Nystroem(kernel=HyperKernel(...same
  kernel...), n_components=m), Ridge(alpha=ridge, fit_intercept=False))`` with
  the same centres (same ``random_state``) and the same ridge, on the same
  standardised targets: the same problem (their predictions agree to
  rounding; the table says by how much), so the times compare the
  implementations; and the pipeline as it comes, ``Ridge()`` (``alpha=1``,
  ``fit_intercept=True``, raw targets), for its test error;
* the mean predictor, for scale.

**(b) ``--n-rows 1000000``**: 5,000 images x 200 random pixels (N = 1,000,000
rows, 6.3 GB of float64), Nyström only; fit, then predict 100,000 rows (20
other pixels of every image), reporting wall times, the test MSE and the
growth of the peak RSS over the process's RSS once the input is built
(``resource.getrusage`` and ``psutil``). The input is built in place, one
image at a time, so that building it leaves no peak above it.

Run from the repository root::

    python benchmarks/bench_nystrom.py                     # (a), about 5 minutes on 2 cores
    python benchmarks/bench_nystrom.py --quick             # (a) at N = 2,000
    python benchmarks/bench_nystrom.py --n-rows 1000000    # (b)

Prints markdown tables (and writes them to ``--output`` when given).
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

import numpy as np

from sklearn_hyperkernel import HyperKernel
from sklearn_hyperkernel.datasets import load_mnist
from sklearn_hyperkernel.kernel_ridge import HyperKernelRegressor

GIB = 2**30
N_IMAGES_1M = 5000

#: The regressor's kernel in these figures: the NTK with the kernels' length scale, as
#: documented (the regressor's defaults are now the NNGP and a length scale fitted to z).
NTK = {"kernel": "ntk", "length_scale": 0.5}


def _peak_rss_bytes() -> int:
    # ru_maxrss is in KiB on Linux, bytes on macOS
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _current_rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:  # pragma: no cover
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def unit_images(n_images: int, seed: int) -> np.ndarray:
    images, _ = load_mnist(n_samples=n_images, random_state=seed)
    flat = images.reshape(images.shape[0], -1)
    return images, flat / np.linalg.norm(flat, axis=1, keepdims=True)


def pixel_rows(
    flat: np.ndarray, images: np.ndarray, pixels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``[x | row | col]`` and targets for ``pixels[i]`` of image ``i``, built in place."""
    n_images, per_image = pixels.shape
    height, width = images.shape[1:]
    X = np.empty((n_images * per_image, flat.shape[1] + 2))
    y = np.empty(n_images * per_image)
    rows, cols = np.divmod(pixels, width)
    scale = float(images.max()) or 1.0
    for i in range(n_images):
        block = slice(i * per_image, (i + 1) * per_image)
        X[block, : flat.shape[1]] = flat[i]
        X[block, -2] = 2.0 * rows[i] / (height - 1) - 1.0
        X[block, -1] = 2.0 * cols[i] / (width - 1) - 1.0
        y[block] = images[i].reshape(-1)[pixels[i]] / scale
    return X, y


def task_20k(n_train_images: int, n_test_images: int, pixels: int, seed: int):
    images, flat = unit_images(n_train_images + n_test_images, seed)
    rng = np.random.default_rng(seed)
    n_pixels = images.shape[1] * images.shape[2]
    train_pixels = np.stack(
        [rng.choice(n_pixels, pixels, replace=False) for _ in range(n_train_images)]
    )
    X, y = pixel_rows(flat[:n_train_images], images[:n_train_images], train_pixels)
    test_pixels = np.tile(np.arange(n_pixels), (n_test_images, 1))
    X_test, y_test = pixel_rows(flat[n_train_images:], images[n_train_images:], test_pixels)
    return X, y, X_test, y_test


# ------------------------------------------------------------------- (a)
def run_method(args: argparse.Namespace, method: str, output: str) -> None:
    """Fit one method in this process and write its figures as JSON."""
    X, y, X_test, y_test = task_20k(args.images, args.test_images, args.pixels, args.seed)
    baseline_rss = _current_rss_bytes()
    result = {"method": method, "n": X.shape[0], "n_test": X_test.shape[0]}
    started = time.perf_counter()
    if method == "exact":
        if args.exact_images is not None:  # the first images only; the same test rows
            X, y = X[: args.exact_images * args.pixels], y[: args.exact_images * args.pixels]
            result["n"] = X.shape[0]
        model = HyperKernelRegressor(solver="cholesky", n_jobs=args.n_jobs, **NTK).fit(X, y)
    elif method.startswith("nystrom-"):
        _, rule, m = method.split("-")
        model = HyperKernelRegressor(
            **NTK,
            solver="nystrom",
            n_components=int(m),
            component_selection=rule,
            random_state=args.seed,
            n_jobs=args.n_jobs,
            verbose=1,
        ).fit(X, y)
    elif method.startswith("sklearn-"):
        from sklearn.kernel_approximation import Nystroem
        from sklearn.linear_model import Ridge
        from sklearn.pipeline import make_pipeline

        kernel = HyperKernel(
            z_encoding="fourier", length_scale=0.5, normalize_x=True, n_jobs=args.n_jobs
        )
        nystroem = Nystroem(
            kernel=kernel, n_components=int(method.split("-")[-1]), random_state=args.seed
        )
        if method.startswith("sklearn-defaults-"):
            # what make_pipeline(Nystroem(...), Ridge()) gives as it is
            mean, std = 0.0, 1.0
            pipeline = make_pipeline(nystroem, Ridge()).fit(X, y)
        else:
            # the same problem as the regressor: its relative ridge, standardised targets
            ridge = 1e-3 * float(np.mean(kernel.diag(X)))
            mean, std = y.mean(), y.std()
            pipeline = make_pipeline(nystroem, Ridge(alpha=ridge, fit_intercept=False)).fit(
                X, (y - mean) / std
            )
    elif method == "mean":
        mean = y.mean()
    else:
        raise ValueError(method)
    result["fit_s"] = time.perf_counter() - started
    started = time.perf_counter()
    if method.startswith("sklearn-"):
        prediction = pipeline.predict(X_test) * std + mean
    elif method == "mean":
        prediction = np.full(X_test.shape[0], mean)
    else:
        prediction = model.predict(X_test)
    result["predict_s"] = time.perf_counter() - started
    result["mse"] = float(np.mean((prediction - y_test) ** 2))
    result["peak_rss_growth_gib"] = (_peak_rss_bytes() - baseline_rss) / GIB
    np.save(output + ".npy", prediction)
    with open(output, "w") as handle:
        json.dump(result, handle)


def side_by_side(args: argparse.Namespace) -> str:
    methods = ["exact"] if not args.skip_exact else []
    first_m = args.n_components[0]
    methods += [f"nystrom-{rule}-{first_m}" for rule in args.component_selection]
    if not args.skip_sklearn:
        methods += [f"sklearn-{first_m}", f"sklearn-defaults-{first_m}"]
    methods += [f"nystrom-{args.component_selection[0]}-{m}" for m in args.n_components[1:]]
    methods.append("mean")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for method in methods:
            output = os.path.join(folder, method + ".json")
            command = [sys.executable, __file__, "--run-one", method, "--output", output]
            command += [
                "--images", str(args.images), "--test-images", str(args.test_images),
                "--pixels", str(args.pixels),
                *(() if args.exact_images is None else ("--exact-images", str(args.exact_images))),
                "--seed", str(args.seed),
            ]  # fmt: skip
            if args.n_jobs is not None:
                command += ["--n-jobs", str(args.n_jobs)]
            for attempt in range(1, 5):
                # OpenBLAS has crashed with SIGSEGV inside large multi-threaded
                # calls on the development machine (dpotrf on the 20,000 x 20,000
                # Gram of the exact solve; dgemm of the same size), not every
                # time: try again, the last time with single-threaded BLAS, and
                # say so in the table
                env = dict(os.environ, OPENBLAS_NUM_THREADS="1") if attempt == 4 else None
                print(f"running {method} ...", flush=True)
                completed = subprocess.run(command, env=env)
                if completed.returncode == 0:
                    break
                print(
                    f"  {method} exited with {completed.returncode} (attempt {attempt} of 4)",
                    flush=True,
                )
            else:
                raise SystemExit(f"{method} failed four times")
            with open(output) as handle:
                results[method] = json.load(handle)
            results[method]["attempts"] = attempt
            results[method]["prediction"] = np.load(output + ".npy")
            print(
                f"  {method}: fit {results[method]['fit_s']:.2f} s, predict "
                f"{results[method]['predict_s']:.2f} s, MSE {results[method]['mse']:.5f}",
                flush=True,
            )
    first = results[methods[0]]
    exact_rows = ""
    if args.exact_images is not None and "exact" in results:
        exact_rows = f"; the exact solve on the first {results['exact']['n']:,}"
    lines = [
        f"N = {args.images * args.pixels:,} training rows ({args.images} images x "
        f"{args.pixels} pixels{exact_rows}), {first['n_test']:,} test rows "
        f"(all pixels of {args.test_images} held-out "
        f"images), m = {', '.join(map(str, args.n_components))}, n_jobs = {args.n_jobs}; "
        "load average at the end "
        f"{os.getloadavg()[0]:.1f} ({platform.machine()}, {os.cpu_count()} CPUs)",
        "",
        "| method | fit (s) | predict (s) | test MSE | MSE / exact | fit / exact | "
        "fit / Nystroem | "
        "peak RSS growth (GiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    exact = results.get("exact")
    ours = results.get(f"nystrom-{args.component_selection[0]}-{first_m}")
    for method in methods:
        r = results[method]
        mse_ratio = f"{r['mse'] / exact['mse']:.4f}" if exact else "-"
        fit_ratio = f"{r['fit_s'] / exact['fit_s']:.3f}" if exact and method != "mean" else "-"
        ours_ratio = f"{r['fit_s'] / ours['fit_s']:.2f}" if ours and method != "mean" else "-"
        lines.append(
            f"| {method} | {r['fit_s']:.2f} | {r['predict_s']:.2f} | {r['mse']:.5f} | "
            f"{mse_ratio} | "
            f"{fit_ratio} | {ours_ratio} | {r['peak_rss_growth_gib']:.3f} |"
        )
    crashed = [
        f"{method} ({r['attempts'] - 1} crash(es)"
        f"{'; BLAS on one thread' if r['attempts'] == 4 else ''})"
        for method, r in results.items()
        if r["attempts"] > 1
    ]
    if crashed:
        lines.append("")
        lines.append(
            "Runs repeated after a crash of the process (SIGSEGV in OpenBLAS): "
            + ", ".join(crashed)
            + "."
        )
    if ours is not None and f"sklearn-{first_m}" in results:
        difference = np.max(
            np.abs(results[f"sklearn-{first_m}"]["prediction"] - ours["prediction"])
        )
        lines.append("")
        lines.append(
            "Largest difference between the predictions of Nystroem "
            f"({args.component_selection[0]}) and the scikit-learn pipeline (same components, "
            f"same ridge): {difference:.2e}."
        )
    return "\n".join(lines)


# ------------------------------------------------------------------- (b)
def million_rows(args: argparse.Namespace) -> str:
    n_images = N_IMAGES_1M
    per_image = args.n_rows // n_images
    images, flat = unit_images(n_images, args.seed)
    rng = np.random.default_rng(args.seed)
    n_pixels = images.shape[1] * images.shape[2]
    test_per_image = -(-args.n_test_rows // n_images)
    chosen = np.stack(
        [rng.choice(n_pixels, per_image + test_per_image, replace=False) for _ in range(n_images)]
    )
    X, y = pixel_rows(flat, images, chosen[:, :per_image])
    X_test, y_test = pixel_rows(flat, images, chosen[:, per_image:])
    X_test, y_test = X_test[: args.n_test_rows], y_test[: args.n_test_rows]
    input_bytes = X.nbytes + X_test.nbytes + y.nbytes
    baseline_rss = _current_rss_bytes()
    baseline_peak = _peak_rss_bytes()
    print(
        f"built X {X.shape} ({X.nbytes / 1e9:.2f} GB), X_test {X_test.shape}; "
        f"RSS {baseline_rss / GIB:.2f} GiB "
        f"(peak so far {baseline_peak / GIB:.2f} GiB)",
        flush=True,
    )
    model = HyperKernelRegressor(
        **NTK,
        solver="nystrom",
        n_components=args.n_components[0],
        component_selection=args.component_selection[0],
        random_state=args.seed,
        n_jobs=args.n_jobs,
        verbose=2,
    )
    started = time.perf_counter()
    model.fit(X, y)
    fit_s = time.perf_counter() - started
    peak_after_fit = _peak_rss_bytes()
    started = time.perf_counter()
    prediction = model.predict(X_test)
    predict_s = time.perf_counter() - started
    mse = float(np.mean((prediction - y_test) ** 2))
    mean_mse = float(np.mean((y_test - y.mean()) ** 2))
    peak = _peak_rss_bytes()
    lines = [
        f"N = {X.shape[0]:,} training rows ({n_images} images x {per_image} pixels, "
        f"{X.nbytes / 1e9:.2f} GB float64), {X_test.shape[0]:,} predicted rows, "
        f"m = {model.n_components_} "
        f"({args.component_selection[0]}), n_jobs = {args.n_jobs}; load average at the end "
        f"{os.getloadavg()[0]:.1f}",
        "",
        "| fit (s) | predict (s) | total (s) | test MSE | mean predictor MSE | "
        "RSS with the input (GiB) | "
        "peak RSS (GiB) | peak growth over the input (GiB) |",
        "|---|---|---|---|---|---|---|---|",
        f"| {fit_s:.1f} | {predict_s:.1f} | {fit_s + predict_s:.1f} | {mse:.5f} | {mean_mse:.5f} | "
        f"{baseline_rss / GIB:.2f} | {peak / GIB:.2f} | {(peak - baseline_rss) / GIB:.2f} "
        f"(fit alone {(peak_after_fit - baseline_rss) / GIB:.2f}) |",
        "",
        f"Input arrays: {input_bytes / GIB:.2f} GiB (X, X_test, y).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--n-rows", type=int, default=None, help="run (b) with this many rows (5,000 images)"
    )
    parser.add_argument("--n-test-rows", type=int, default=100_000, help="rows predicted in (b)")
    parser.add_argument("--images", type=int, default=1000, help="training images of (a)")
    parser.add_argument("--test-images", type=int, default=50, help="held-out images of (a)")
    parser.add_argument("--pixels", type=int, default=20, help="pixels per training image of (a)")
    parser.add_argument(
        "--exact-images",
        type=int,
        default=None,
        help="fit the exact solve of (a) on the first this many training images only (the "
        "other methods on all; the same test rows), to compare at equal time",
    )
    parser.add_argument(
        "--n-components", type=int, nargs="+", default=None,
        help="m (default: the regressor's); in (a), more values add Nystroem rows at those m",
    )  # fmt: skip
    parser.add_argument(
        "--component-selection",
        nargs="+",
        default=["uniform", "rpcholesky"],
        choices=["uniform", "rpcholesky"],
    )
    parser.add_argument(
        "--n-jobs", type=int, default=None, help="the estimators' n_jobs (default: theirs, None)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-exact", action="store_true")
    parser.add_argument("--skip-sklearn", action="store_true")
    parser.add_argument(
        "--quick", action="store_true", help="(a) at N = 2,000 (100 images), m = 500"
    )
    parser.add_argument("--output", default=None)
    parser.add_argument("--run-one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.n_components is None:
        from sklearn_hyperkernel.kernel_ridge import NYSTROM_DEFAULT_COMPONENTS

        args.n_components = [NYSTROM_DEFAULT_COMPONENTS]
    if args.quick:
        args.images, args.test_images, args.n_components = 100, 10, [500, 1000]
    if args.run_one is not None:
        run_method(args, args.run_one, args.output)
        return
    table = million_rows(args) if args.n_rows is not None else side_by_side(args)
    print()
    print(table)
    if args.output:
        with open(args.output, "w") as handle:
            handle.write(table + "\n")


if __name__ == "__main__":
    main()
