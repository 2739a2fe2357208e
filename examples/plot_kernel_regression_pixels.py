"""
Pixel regression on digits with the hyperkernel
===============================================

The paper's image tasks feed a hypernetwork the image ``x`` and the primary
network a pixel coordinate ``z``; the target is the pixel's value. Here each of
a handful of 8x8 ``load_digits`` images gives 64 rows
``u = [image (64 values, unit norm) | (row, col) scaled to [-1, 1]]`` and
``HyperKernelRegressor`` (kernel regression with the infinite-width
hyperkernel, the paper's Eq. 18) predicts

* the held-out half of the pixels of the training images, and
* every pixel of images it has not seen,

compared with predicting the mean and with ``KernelRidge(kernel="rbf")`` on the
same rows. Nothing is downloaded; it runs in a few seconds, prints a table and
plots it (``kernel_regression_pixels.png``).

With ``z_encoding="linear"`` the kernel is positively homogeneous in ``z``
(scaling ``z`` scales it), so it cannot fit a general function of a 2-D
coordinate; a constant third ``z`` column (a bias of the primary network's
first layer) or the Fourier encoding of ``z`` fixes that.

Run::

    python examples/plot_kernel_regression_pixels.py [output directory]
"""

import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.kernel_ridge import KernelRidge

from sklearn_hyperkernel import HyperKernelRegressor

OUTPUT_DIR = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()


def pixel_rows(images: np.ndarray, bias_column: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``[image | coordinate (| 1)]`` and pixel values, one row per pixel."""
    n_images, height, width = images.shape
    flat = images.reshape(n_images, -1)
    flat = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    coords = [2.0 * rows.ravel() / (height - 1) - 1.0, 2.0 * cols.ravel() / (width - 1) - 1.0]
    if bias_column:
        coords.append(np.ones(height * width))
    z = np.column_stack(coords)
    X = np.hstack([np.repeat(flat, height * width, axis=0), np.tile(z, (n_images, 1))])
    return X, images.reshape(-1)


def relative_mse(model, X: np.ndarray, y: np.ndarray, train: np.ndarray) -> float:
    """Test MSE of the model divided by the test MSE of the training mean."""
    model.fit(X[train], y[train])
    mse = np.mean((model.predict(X[~train]) - y[~train]) ** 2)
    return mse / np.mean((y[train].mean() - y[~train]) ** 2)


# %%
# Twelve digits; two training masks, the same for every model: a random half
# of all pixels, and every pixel of the first nine images.
images = load_digits().images[:12] / 16.0
n_train_images = 9
n_rows = images.shape[0] * images[0].size
train_half_pixels = np.random.default_rng(0).random(n_rows) < 0.5
train_first_images = np.arange(n_rows) < n_train_images * images[0].size

# %%
# Each model (and whether its rows carry a constant third ``z`` column).
models = {
    "hyperkernel (NTK), Fourier z, l=0.5": (
        HyperKernelRegressor(kernel="ntk", z_encoding="fourier", length_scale=0.5),
        False,
    ),
    "hyper-NNGP, Fourier z, l=0.3": (
        HyperKernelRegressor(kernel="nngp", z_encoding="fourier", length_scale=0.3),
        False,
    ),
    "hyperkernel (NTK), linear z + constant": (
        HyperKernelRegressor(kernel="ntk", z_dim=3, z_encoding="linear"),
        True,
    ),
    "hyperkernel (NTK), linear z": (
        HyperKernelRegressor(kernel="ntk", z_encoding="linear"),
        False,
    ),
    "KernelRidge rbf (gamma=1/n_features)": (KernelRidge(kernel="rbf", alpha=1e-3), False),
}

print(f"{len(images)} digits, {images[0].size} pixels each; test MSE / MSE of the mean")
print(f"{'model':<42} {'held-out pixels':>16} {'held-out images':>16}")
scores = {}
for name, (model, bias_column) in models.items():
    X, y = pixel_rows(images, bias_column)
    pixels = relative_mse(model, X, y, train_half_pixels)
    unseen = relative_mse(model, X, y, train_first_images)
    scores[name] = (pixels, unseen)
    print(f"{name:<42} {pixels:>16.3f} {unseen:>16.3f}")

# %%
# The same table as a chart: below 1 beats the mean predictor.
fig, axis = plt.subplots(figsize=(7, 3.4))
positions = np.arange(len(scores))
for offset, (label, column) in zip(
    (-0.2, 0.2), (("held-out pixels", 0), ("held-out images", 1)), strict=True
):
    values = [value[column] for value in scores.values()]
    axis.barh(positions + offset, values, height=0.4, label=label)
axis.axvline(1.0, color="grey", linestyle=":", label="mean predictor")
axis.set_yticks(positions, list(scores), fontsize=8)
axis.invert_yaxis()
axis.set_xlabel("test MSE / MSE of the training mean")
axis.legend(fontsize=8)
fig.tight_layout()
path = OUTPUT_DIR / "kernel_regression_pixels.png"
fig.savefig(path, dpi=100)
print(f"wrote {path.name}")
plt.show()
