"""What a new user gets from the default call of each estimator, side by side with baselines.

Every figure is a test-set score of an estimator constructed with its defaults (only
``random_state`` set), next to the mean predictor (regression) or the majority class and
scikit-learn's MLP (classification). Tasks:

* ``mnist``: the package's pixel task, ``pixel_regression`` with its defaults on 100 offline
  MNIST training images x 20 random pixels (2,000 rows); test = every pixel of 20 held-out images.
* ``readme``: the README quick-start data (x: 3 standard-normal columns, z: 2; y = sin(x_0)
  cos(2 z_0) + noise), 200 training and 200 held-out rows.
* ``pipeline``: ``make_pipeline(StandardScaler(), HyperKernelRegressor())`` on the mnist task,
  5-fold cross-validation grouped by image.
* ``classifier``: the mnist task with labels ``pixel > 0.5`` (pixel on/off).

Run from the repository root::

    python benchmarks/bench_defaults.py            # all of it, about a minute on 2 cores
    python benchmarks/bench_defaults.py --skip-networks
    python benchmarks/bench_defaults.py --length-scales 0.25 0.5 1.0
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from sklearn.dummy import DummyRegressor
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import WhiteKernel
from sklearn.model_selection import GroupKFold, cross_val_score
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_hyperkernel import (
    HyperKernelRegressor,
    HyperNNGP,
    HypernetworkClassifier,
    HypernetworkRegressor,
)
from sklearn_hyperkernel.datasets import load_mnist, pixel_regression


def mnist_task():
    images, _ = load_mnist(120, random_state=0)
    U, y = pixel_regression(images[:100], pixels_per_image=20, random_state=0)
    U_test, y_test = pixel_regression(images[100:120])
    return U, y, U_test, y_test


def readme_task():
    rng = np.random.default_rng(0)
    U = rng.normal(size=(400, 5))
    y = np.sin(U[:, 0]) * np.cos(2 * U[:, 3]) + 0.05 * rng.normal(size=400)
    return U[:200], y[:200], U[200:], y[200:]


def digits_task():
    """../shared/tools/default_call.py's task: 60 digits x 20 pixels, every pixel of 20 others."""
    from sklearn.datasets import load_digits

    images = load_digits().images
    pick = np.random.RandomState(2024).permutation(len(images))
    U, y = pixel_regression(images[pick[:60]], pixels_per_image=20, random_state=1)
    U_test, y_test = pixel_regression(images[pick[60:80]])
    return U, y, U_test, y_test


def sweep_length_scales(length_scales) -> None:
    tasks = {"mnist": mnist_task(), "digits": digits_task(), "readme": readme_task()}
    print("| length_scale | " + " | ".join(tasks) + " |")
    print("|---|" + "---|" * len(tasks))
    for length_scale in length_scales:
        ratios = []
        for U, y, U_test, y_test in tasks.values():
            prediction, _ = timed(HyperKernelRegressor(length_scale=length_scale), U, y, U_test)
            ratios.append(np.mean((prediction - y_test) ** 2) / np.mean((y_test - y.mean()) ** 2))
        print(f"| {length_scale:g} | " + " | ".join(f"{r:.2f}" for r in ratios) + " |")


def timed(estimator, U, y, U_test):
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prediction = estimator.fit(U, y).predict(U_test)
    return prediction, time.perf_counter() - started


def regression_rows(task, U, y, U_test, y_test, estimators):
    mean_mse = float(np.mean((y_test - y.mean()) ** 2))
    print(f"| {task} | mean predictor | {mean_mse:.4f} | 1.00 | |")
    for name, estimator in estimators:
        prediction, seconds = timed(estimator, U, y, U_test)
        mse = float(np.mean((prediction - y_test) ** 2))
        print(f"| {task} | {name} | {mse:.4f} | {mse / mean_mse:.2f} | {seconds:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-networks", action="store_true", help="only the kernel estimators")
    parser.add_argument(
        "--length-scales", type=float, nargs="*", default=None, metavar="L",
        help="instead: HyperKernelRegressor(length_scale=L) for each L on the mnist, digits and "
        "readme tasks (how the default length scale was chosen)",
    )
    args = parser.parse_args()
    if args.length_scales:
        sweep_length_scales(args.length_scales)
        return

    print("| task | estimator (defaults) | test MSE | / mean predictor | fit+predict s |")
    print("|---|---|---|---|---|")
    U, y, U_test, y_test = mnist_task()
    estimators = [
        ("HyperKernelRegressor()", HyperKernelRegressor()),
        ("HyperKernelRegressor(kernel='nngp')", HyperKernelRegressor(kernel="nngp")),
        ("GPR(HyperNNGP() + WhiteKernel())", GaussianProcessRegressor(HyperNNGP() + WhiteKernel(), normalize_y=True)),
    ]
    if not args.skip_networks:
        estimators += [
            ("HypernetworkRegressor()", HypernetworkRegressor(random_state=0)),
            ("MLPRegressor()", MLPRegressor(random_state=0)),
        ]
    regression_rows("mnist", U, y, U_test, y_test, estimators)
    U_r, y_r, U_r_test, y_r_test = readme_task()
    estimators = [("HyperKernelRegressor()", HyperKernelRegressor())]
    if not args.skip_networks:
        estimators.append(("HypernetworkRegressor()", HypernetworkRegressor(random_state=0)))
    regression_rows("readme", U_r, y_r, U_r_test, y_r_test, estimators)

    groups = np.repeat(np.arange(100), 20)
    folds = GroupKFold(n_splits=5)
    cv_mean = -cross_val_score(
        make_pipeline(StandardScaler(), DummyRegressor()), U, y, groups=groups, cv=folds,
        scoring="neg_mean_squared_error",
    ).mean()
    started = time.perf_counter()
    cv_mse = -cross_val_score(
        make_pipeline(StandardScaler(), HyperKernelRegressor()), U, y, groups=groups, cv=folds,
        scoring="neg_mean_squared_error",
    ).mean()
    seconds = time.perf_counter() - started
    print(f"| pipeline (5-fold CV) | mean predictor | {cv_mean:.4f} | 1.00 | |")
    print(
        f"| pipeline (5-fold CV) | StandardScaler + HyperKernelRegressor() | {cv_mse:.4f} | "
        f"{cv_mse / cv_mean:.2f} | {seconds:.1f} |"
    )

    if args.skip_networks:
        return
    labels, labels_test = y > 0.5, y_test > 0.5
    print()
    print("| task | estimator (defaults) | test accuracy | fit+predict s |")
    print("|---|---|---|---|")
    majority = max(labels_test.mean(), 1 - labels_test.mean())
    print(f"| pixel on/off | majority class | {majority:.3f} | |")
    for name, estimator in [
        ("HypernetworkClassifier()", HypernetworkClassifier(random_state=0)),
        ("MLPClassifier()", MLPClassifier(random_state=0)),
    ]:
        prediction, seconds = timed(estimator, U, labels, U_test)
        print(f"| pixel on/off | {name} | {np.mean(prediction == labels_test):.3f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
