"""Demo: image representation and inpainting on digits with hypernetwork kernels.

The paper's image tasks (Littwin et al. 2020, Sec. 5.3) at the size of
scikit-learn's bundled 8x8 digits (nothing is downloaded): f sees an image
(or, for inpainting, its top half), g a pixel coordinate, and the target is
the pixel's value. Each training image contributes 20 random pixels; the test
error is the MSE over every pixel of held-out images.

Compared, on the same rows:

* HyperKernelRegressor with the hyperkernel (NTK) and with the hyper-NNGP;
* GaussianProcessRegressor with ConstantKernel * HyperNNGP + WhiteKernel, whose
  length scale and noise are fitted by marginal likelihood;
* KernelRidge with an RBF kernel, and predicting the training mean.

Run: ``make demo`` (or ``python examples/demo.py``).
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, WhiteKernel
from sklearn.exceptions import ConvergenceWarning
from sklearn.kernel_ridge import KernelRidge

from sklearn_hyperkernel import HyperKernelRegressor, HyperNNGP
from sklearn_hyperkernel.datasets import pixel_regression

# SKHK_EXAMPLE_QUICK=1: a reduced run (one training size, fewer test digits) for the test suite
QUICK = os.environ.get("SKHK_EXAMPLE_QUICK", "") not in ("", "0")


def models() -> dict:
    # pixel coordinates lie on a grid of spacing 2/7: below ~0.05 the length
    # scale makes the z kernel an identity, so that is its useful lower bound
    gp_kernel = ConstantKernel(1.0) * HyperNNGP(
        z_encoding="fourier", length_scale=0.5, length_scale_bounds=(0.05, 20.0)
    ) + WhiteKernel(1e-2, noise_level_bounds=(1e-6, 1.0))
    return {
        "hyperkernel (NTK)": HyperKernelRegressor(kernel="ntk", z_encoding="fourier", length_scale=0.5),
        "hyper-NNGP": HyperKernelRegressor(kernel="nngp", z_encoding="fourier", length_scale=0.5),
        "GP, hyper-NNGP, fitted": GaussianProcessRegressor(gp_kernel, normalize_y=True, random_state=0),
        "KernelRidge rbf": KernelRidge(kernel="rbf", alpha=1e-3, gamma=1.0),
    }


def main() -> None:
    digits = load_digits().images
    train_images, test_images = digits[:100], digits[1000 : 1020 if QUICK else 1100]
    print(
        f"Test MSE over all 64 pixels of {len(test_images)} held-out digits"
        " (20 random pixels per training image)\n"
    )
    header = f"{'task':<15} {'N images':>8} " + " ".join(f"{name:>23}" for name in [*models(), "mean"])
    print(header)
    print("-" * len(header))
    for task in ("representation", "inpainting"):
        U_test, y_test = pixel_regression(test_images, task=task)
        for n_images in (25,) if QUICK else (25, 50, 100):
            U, y = pixel_regression(train_images[:n_images], task=task, pixels_per_image=20, random_state=0)
            errors = []
            fitted = models()
            for model in fitted.values():
                model.fit(U, y)
                errors.append(np.mean((model.predict(U_test) - y_test) ** 2))
            errors.append(np.mean((y.mean() - y_test) ** 2))
            print(f"{task:<15} {n_images:>8} " + " ".join(f"{e:>23.4f}" for e in errors))
        print(f"  fitted GP kernel ({task}, N={n_images}): {fitted['GP, hyper-NNGP, fitted'].kernel_}")


if __name__ == "__main__":
    # in "representation" x contains the target pixel, so the fitted noise
    # level rightly runs to its lower bound; sklearn warns about that
    warnings.filterwarnings("ignore", category=ConvergenceWarning, message=".*noise_level.*")
    start = time.perf_counter()
    main()
    print(f"\n({time.perf_counter() - start:.1f} s)")
