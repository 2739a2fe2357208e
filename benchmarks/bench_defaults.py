"""What a new user gets from the default call of each estimator, side by side with baselines.

Every figure is a test-set score of an estimator constructed with its defaults (only
``random_state`` set), next to the mean predictor (regression), the majority class and
scikit-learn's MLPs. Tasks:

* ``mnist``: the package's pixel task, ``pixel_regression`` with its defaults on 100 offline
  MNIST training images x 20 random pixels (2,000 rows); test = every pixel of 20 held-out images.
* ``digits``: the same on 8x8 digits, 60 images x 20 pixels (``../shared/tools/default_call.py``).
* ``readme``: the README quick-start data (x: 3 standard-normal columns, z: 2; y = sin(x_0)
  cos(2 z_0) + noise), 200 training and 200 held-out rows.
* ``pipeline``: ``make_pipeline(StandardScaler(), HyperKernelRegressor())`` on the mnist task,
  5-fold cross-validation grouped by image.
* ``pixel on/off``: the mnist task with labels ``pixel > 0.5``.
* ``shapes`` (``--shapes``): ``datasets.make_sdf_shapes`` (x = a shape's code, z = a 3-D point,
  y = the signed distance), 120 training shapes x 20 points, 40 new shapes x 20 points for the
  test, for the sphere, box and torus families (the torus seen by no test): the default
  ``HyperKernelRegressor(z_dim=3)``, the same with ``normalize_x=True`` (x on the sphere) and
  with the paper's settings, ``GridSearchCV``-tuned RBF ``KernelRidge`` s (alpha, gamma; on the
  raw and on standardised columns), the hyperkernel tuned by ``GridSearchCV`` (bias variances,
  length scale, alpha; folds grouped by shape) and a GP with the hyper-NNGP, which learns the
  variances.
* ``--compare``: candidate defaults of ``HyperKernelRegressor`` side by side on every task
  (mnist, digits, readme, the three shape families), with the raw-column tuned RBF of each
  shape family: how the defaults were chosen.

Run from the repository root::

    python benchmarks/bench_defaults.py                    # everything, a few minutes on 2 cores
    python benchmarks/bench_defaults.py --skip-networks    # the kernel estimators, seconds
    python benchmarks/bench_defaults.py --length-scales 0.25 0.5 1.0   # how 0.5 was chosen
    python benchmarks/bench_defaults.py --ablation         # the networks' defaults, one at a time
    python benchmarks/bench_defaults.py --predict-rows 200000          # + predict's peak memory
    python benchmarks/bench_defaults.py --shapes           # instead: the shape-code rows
    python benchmarks/bench_defaults.py --compare          # instead: candidate defaults
"""

from __future__ import annotations

import argparse
import resource
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.dummy import DummyRegressor
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, WhiteKernel
from sklearn.kernel_ridge import KernelRidge
from sklearn.model_selection import GridSearchCV, GroupKFold, cross_val_score
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_hyperkernel import (
    HyperKernelRegressor,
    HypernetworkClassifier,
    HypernetworkRegressor,
    HyperNNGP,
)
from sklearn_hyperkernel.datasets import load_mnist, make_sdf_shapes, pixel_regression

# The networks' defaults, each changed alone (--ablation); "x_scale" multiplies x itself.
OLD_DEFAULTS = {
    "parameterization": "ntk",
    "optimizer": "sgd",
    "learning_rate": 0.01,
    "z_encoding": "linear",
    "n_fourier_features": 256,
    "normalize_x": False,
    "normalize_y": False,
    "dtype": "float32",
    "max_epochs": 100,
    "n_iter_no_change": 10,
}
ABLATIONS = {
    "defaults": {},
    "x times 255": {"x_scale": 255.0},
    "x times 255, normalize_x=False": {"x_scale": 255.0, "normalize_x": False},
    "the old defaults (before issue 10)": OLD_DEFAULTS,
    "the paper's network (ntk, SGD 0.01)": {
        "parameterization": "ntk",
        "optimizer": "sgd",
        "learning_rate": 0.01,
    },
    "parameterization='ntk'": {"parameterization": "ntk"},
    "z_encoding='linear'": {"z_encoding": "linear"},
    "normalize_x=False": {"normalize_x": False},
    "normalize_y=False": {"normalize_y": False},
    "dtype='float32'": {"dtype": "float32"},
    "n_fourier_features=256": {"n_fourier_features": 256},
}


def mnist_task():
    images, _ = load_mnist(120, random_state=0)
    U, y = pixel_regression(images[:100], pixels_per_image=20, random_state=0)
    U_test, y_test = pixel_regression(images[100:120])
    return U, y, U_test, y_test


def digits_task():
    images = load_digits().images
    pick = np.random.RandomState(2024).permutation(len(images))
    U, y = pixel_regression(images[pick[:60]], pixels_per_image=20, random_state=1)
    U_test, y_test = pixel_regression(images[pick[60:80]])
    return U, y, U_test, y_test


def readme_task():
    rng = np.random.default_rng(0)
    U = rng.normal(size=(400, 5))
    y = np.sin(U[:, 0]) * np.cos(2 * U[:, 3]) + 0.05 * rng.normal(size=400)
    return U[:200], y[:200], U[200:], y[200:]


def shape_task(kind):
    U, y = make_sdf_shapes(120, 20, kind, random_state=11)
    U_test, y_test = make_sdf_shapes(40, 20, kind, random_state=12)
    return U, y, U_test, y_test


SHAPE_FAMILIES = ("sphere", "box", "torus")
#: Candidate defaults of HyperKernelRegressor (``--compare``): the 0.2.0 defaults before
#: issue 18's length scale, each change alone, and the defaults now.
CANDIDATES = {
    "ntk, length_scale=0.5 (before)": {"kernel": "ntk", "length_scale": 0.5},
    "ntk, length_scale=1.0": {"kernel": "ntk", "length_scale": 1.0},
    "ntk, length_scale='scale'": {"kernel": "ntk"},
    "nngp, length_scale=0.5": {"length_scale": 0.5},
    "nngp, length_scale='scale' (defaults)": {},
}


def shape_folds():
    """3 folds of the shape tasks' training rows, grouped by shape."""
    groups = np.repeat(np.arange(120), 20)
    return list(GroupKFold(n_splits=3).split(np.zeros(len(groups)), groups=groups))


def raw_rbf(folds):
    """An RBF ``KernelRidge`` on the raw columns, tuned by ``GridSearchCV``."""
    return GridSearchCV(
        KernelRidge(kernel="rbf"),
        {"alpha": [1e-6, 1e-5, 1e-4, 1e-3], "gamma": [0.1, 0.3, 1.0, 3.0]},
        cv=folds,
        scoring="neg_mean_squared_error",
    )


def compare_candidates() -> None:
    """``--compare``: each candidate default on every task, one ratio per cell."""
    tasks = {"mnist": (mnist_task(), 2), "digits": (digits_task(), 2), "readme": (readme_task(), 2)}
    tasks.update({kind: (shape_task(kind), 3) for kind in SHAPE_FAMILIES})
    print("| HyperKernelRegressor(...) | " + " | ".join(tasks) + " |")
    print("|---|" + "---|" * len(tasks))
    for name, params in CANDIDATES.items():
        cells = []
        for (U, y, U_test, y_test), z_dim in tasks.values():
            prediction, _, _ = timed(HyperKernelRegressor(z_dim=z_dim, **params), U, y, U_test)
            cells.append(f"{ratio(prediction, y, y_test):.3g}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    cells = ["", "", ""]
    for kind in SHAPE_FAMILIES:
        U, y, U_test, y_test = shape_task(kind)
        prediction, _, _ = timed(raw_rbf(shape_folds()), U, y, U_test)
        cells.append(f"{ratio(prediction, y, y_test):.3g}")
    print("| tuned RBF KernelRidge, raw columns | " + " | ".join(cells) + " |")


def shape_rows() -> None:
    """The shape-code rows (``--shapes``); tuned models choose on folds grouped by shape."""
    print("| task | estimator | test MSE | / mean predictor | fit+predict s | warnings |")
    print("|---|---|---|---|---|---|")
    folds = shape_folds()
    raw = raw_rbf(folds)
    rbf = GridSearchCV(
        make_pipeline(StandardScaler(), KernelRidge(kernel="rbf")),
        {
            "kernelridge__alpha": [1e-6, 1e-5, 1e-4, 1e-3, 1e-2],
            "kernelridge__gamma": [0.003, 0.01, 0.03, 0.1, 0.3],
        },
        cv=folds,
        scoring="neg_mean_squared_error",
    )
    tuned = GridSearchCV(
        HyperKernelRegressor(z_dim=3),
        {
            "f_bias_variance": [0.1, 1.0, 10.0],
            "g_bias_variance": [0.1, 1.0],
            "length_scale": ["scale", 0.5, 1.0, 2.0],
            "alpha": [1e-4, 1e-3],
        },
        cv=folds,
        scoring="neg_mean_squared_error",
    )
    gp = GaussianProcessRegressor(
        ConstantKernel() * HyperNNGP(z_dim=3, normalize_x=False) + WhiteKernel(),
        normalize_y=True,
    )
    paper = {
        "kernel": "ntk",
        "length_scale": 0.5,
        "normalize_x": False,
        "f_bias_variance": 0.0,
        "g_bias_variance": 0.0,
    }
    for kind in SHAPE_FAMILIES:
        estimators = [
            ("HyperKernelRegressor(z_dim=3)", HyperKernelRegressor(z_dim=3)),
            (
                "HyperKernelRegressor(z_dim=3, normalize_x=True)",
                HyperKernelRegressor(z_dim=3, normalize_x=True),
            ),
            (
                "HyperKernelRegressor(z_dim=3), paper's settings",
                HyperKernelRegressor(z_dim=3, **paper),
            ),
            ("GridSearchCV(KernelRidge(rbf)), raw columns", raw),
            ("GridSearchCV(StandardScaler + KernelRidge(rbf))", rbf),
            ("GridSearchCV(HyperKernelRegressor(z_dim=3))", tuned),
            ("GPR(C * HyperNNGP(z_dim=3, normalize_x=False) + White)", gp),
        ]
        regression_rows(f"shapes ({kind})", shape_task(kind), estimators)
        print(
            f"|  | tuned RBF: raw {raw.best_params_}, scaled {rbf.best_params_}; "
            f"tuned hyperkernel: {tuned.best_params_}; "
            f"GP: {gp.kernel_} | | | | |"
        )


def timed(estimator, U, y, U_test):
    """Fit and predict; the wall seconds and the warning categories raised by fit."""
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prediction = estimator.fit(U, y).predict(U_test)
    kinds = sorted({w.category.__name__ for w in caught})
    return prediction, time.perf_counter() - started, ", ".join(kinds)


def ratio(prediction, y, y_test) -> float:
    return float(np.mean((prediction - y_test) ** 2) / np.mean((y_test - y.mean()) ** 2))


def regression_rows(task, data, estimators) -> None:
    U, y, U_test, y_test = data
    print(f"| {task} | mean predictor | {np.mean((y_test - y.mean()) ** 2):.4f} | 1.00 | | |")
    for name, estimator in estimators:
        prediction, seconds, kinds = timed(estimator, U, y, U_test)
        mse = float(np.mean((prediction - y_test) ** 2))
        print(
            f"| {task} | {name} | {mse:.4f} | {ratio(prediction, y, y_test):.3g} "
            f"| {seconds:.1f} | {kinds} |"
        )


def sweep_length_scales(length_scales) -> None:
    tasks = {"mnist": mnist_task(), "digits": digits_task(), "readme": readme_task()}
    print("| length_scale | " + " | ".join(tasks) + " |")
    print("|---|" + "---|" * len(tasks))
    for length_scale in length_scales:
        ratios = []
        for U, y, U_test, y_test in tasks.values():
            prediction, _, _ = timed(HyperKernelRegressor(length_scale=length_scale), U, y, U_test)
            ratios.append(ratio(prediction, y, y_test))
        print(f"| {length_scale:g} | " + " | ".join(f"{r:.2f}" for r in ratios) + " |")


def ablation(seeds, only=None) -> None:
    tasks = {"mnist": mnist_task(), "digits": digits_task()}
    print("| HypernetworkRegressor(...) | " + " | ".join(tasks) + " | fit+predict s (mnist) |")
    print("|---|" + "---|" * (len(tasks) + 1))
    for name, params in ABLATIONS.items():
        if only and name not in only:
            continue
        cells, mnist_seconds = [], 0.0
        for task, (U, y, U_test, y_test) in tasks.items():
            values = []
            scale = np.ones(U.shape[1])
            scale[:-2] = params.get("x_scale", 1.0)
            model_params = {k: v for k, v in params.items() if k != "x_scale"}
            for seed in seeds:
                model = HypernetworkRegressor(random_state=seed, **model_params)
                prediction, seconds, _ = timed(model, U * scale, y, U_test * scale)
                values.append(ratio(prediction, y, y_test))
                if task == "mnist":
                    mnist_seconds += seconds / len(seeds)
            cells.append(f"{np.mean(values):.2f}")
        print(f"| {name} | " + " | ".join(cells) + f" | {mnist_seconds:.1f} |")


def predict_memory(n_rows: int) -> None:
    U, y, U_test, _ = mnist_task()
    model = HypernetworkRegressor(random_state=0).fit(U, y)
    big = np.tile(U_test, (-(-n_rows // U_test.shape[0]), 1))[:n_rows]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    model.predict(big)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"HypernetworkRegressor().predict on {big.shape[0]} x {big.shape[1]} rows (X itself "
        f"{big.nbytes / 2**20:.0f} MiB): {time.perf_counter() - started:.1f} s, peak resident "
        f"memory +{after - before:.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--skip-networks", action="store_true", help="only the kernel estimators")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="random_state of the networks"
    )
    parser.add_argument(
        "--length-scales",
        type=float,
        nargs="*",
        default=None,
        metavar="L",
        help="instead: HyperKernelRegressor(length_scale=L) for each L on the mnist, digits and "
        "readme tasks (how the default length scale was chosen)",
    )
    parser.add_argument(
        "--ablation", action="store_true", help="instead: the networks' defaults one at a time"
    )
    parser.add_argument(
        "--shapes", action="store_true", help="instead: the shape-code rows (a few minutes)"
    )
    parser.add_argument(
        "--compare", action="store_true", help="instead: candidate defaults on every task"
    )
    parser.add_argument(
        "--predict-rows", type=int, default=0, help="also: predict's peak memory on this many rows"
    )
    args = parser.parse_args()
    if args.length_scales:
        sweep_length_scales(args.length_scales)
        return
    if args.ablation:
        ablation(args.seeds)
        return
    if args.shapes:
        shape_rows()
        return
    if args.compare:
        compare_candidates()
        return

    print(
        "| task | estimator (defaults) | test MSE | / mean predictor | fit+predict s | warnings |"
    )
    print("|---|---|---|---|---|---|")
    networks = not args.skip_networks
    gp = GaussianProcessRegressor(
        ConstantKernel() * HyperNNGP(normalize_x=True) + WhiteKernel(), normalize_y=True
    )
    for task, data in (
        ("mnist", mnist_task()),
        ("digits", digits_task()),
        ("readme", readme_task()),
    ):
        estimators = [("HyperKernelRegressor()", HyperKernelRegressor())]
        if task != "readme":
            estimators.append(
                ("HyperKernelRegressor(kernel='ntk')", HyperKernelRegressor(kernel="ntk"))
            )
        estimators.append(("GPR(C * HyperNNGP(normalize_x=True) + White)", gp))
        if networks:
            for seed in args.seeds:
                estimators.append(
                    (
                        f"HypernetworkRegressor(random_state={seed})",
                        HypernetworkRegressor(random_state=seed),
                    )
                )
                estimators.append(
                    (f"MLPRegressor(random_state={seed})", MLPRegressor(random_state=seed))
                )
        regression_rows(task, data, estimators)

    U, y, _, _ = mnist_task()
    groups = np.repeat(np.arange(100), 20)
    folds = GroupKFold(n_splits=5)
    scores = {}
    for name, estimator in (
        ("mean predictor", DummyRegressor()),
        ("HyperKernelRegressor()", HyperKernelRegressor()),
    ):
        started = time.perf_counter()
        scores[name] = -cross_val_score(
            make_pipeline(StandardScaler(), estimator),
            U,
            y,
            groups=groups,
            cv=folds,
            scoring="neg_mean_squared_error",
        ).mean()
        seconds = time.perf_counter() - started
        print(
            f"| pipeline (5-fold CV) | StandardScaler + {name} | {scores[name]:.4f} | "
            f"{scores[name] / scores['mean predictor']:.2f} | {seconds:.1f} | |"
        )

    if not networks:
        return
    U, y, U_test, y_test = mnist_task()
    labels, labels_test = y > 0.5, y_test > 0.5
    print()
    print("| task | estimator (defaults) | test accuracy | fit+predict s | warnings |")
    print("|---|---|---|---|---|")
    majority = max(labels_test.mean(), 1 - labels_test.mean())
    print(f"| pixel on/off | majority class | {majority:.3f} | | |")
    for seed in args.seeds:
        for estimator in (
            HypernetworkClassifier(random_state=seed),
            MLPClassifier(random_state=seed),
        ):
            prediction, seconds, kinds = timed(estimator, U, labels, U_test)
            name = f"{type(estimator).__name__}(random_state={seed})"
            print(
                f"| pixel on/off | {name} | {np.mean(prediction == labels_test):.3f} "
                f"| {seconds:.1f} | {kinds} |"
            )
    if args.predict_rows:
        print()
        predict_memory(args.predict_rows)


if __name__ == "__main__":
    main()
