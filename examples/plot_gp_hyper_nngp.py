"""
A Gaussian process with the hyper-NNGP kernel on digit pixels
=============================================================

``HyperNNGP`` is the Gaussian-process kernel of an infinitely wide
hypernetwork, and a scikit-learn kernel: here it is the prior of a
``GaussianProcessRegressor``,

    ConstantKernel * HyperNNGP(z_encoding="fourier") + WhiteKernel,

whose output scale, length scale of the pixel coordinate and noise level are
fitted by maximising the marginal likelihood on the training pixels only.

Rows are ``u = [image | pixel coordinate]`` (``pixel_regression``): every
training digit contributes 20 random pixels, and the model predicts all 64
pixels of digits it has not seen. The script prints the fitted kernel and the
test error, and draws the predictive mean and the predictive standard
deviation of a few test digits as images (``gp_hyper_nngp.png``).

Run::

    python examples/plot_gp_hyper_nngp.py [output directory]

``SKHK_EXAMPLE_QUICK=1`` runs a reduced version (fewer digits) in seconds.
"""

import os
import sys
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, WhiteKernel

from sklearn_hyperkernel import HyperNNGP
from sklearn_hyperkernel.datasets import pixel_regression

QUICK = os.environ.get("SKHK_EXAMPLE_QUICK", "") not in ("", "0")
OUTPUT_DIR = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()
N_TRAIN_IMAGES = 20 if QUICK else 80
N_TEST_IMAGES = 6
PIXELS_PER_IMAGE = 20

# %%
# Training rows: 20 random pixels of each training digit; test rows: every
# pixel of digits the model never sees.
digits = load_digits().images
height, width = digits.shape[1:]
train_images = digits[:N_TRAIN_IMAGES]
test_images = digits[1000 : 1000 + N_TEST_IMAGES]
U, y = pixel_regression(train_images, pixels_per_image=PIXELS_PER_IMAGE, random_state=0)
U_test, y_test = pixel_regression(test_images)  # every pixel, row-major

# %%
# Fit the prior's hyperparameters by maximising the marginal likelihood.
# Pixel coordinates lie on a grid of spacing 2/7 in [-1, 1]: below about
# 0.05 the z kernel is already an identity, so that bounds the length scale.
prior = ConstantKernel(1.0) * HyperNNGP(
    z_encoding="fourier", length_scale=0.5, length_scale_bounds=(0.05, 20.0)
) + WhiteKernel(1e-2, noise_level_bounds=(1e-6, 1.0))
gp = GaussianProcessRegressor(prior, normalize_y=True, random_state=0)
with warnings.catch_warnings():
    # x contains the pixel itself here, so the noise may run to its bound
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    gp.fit(U, y)

fitted_nngp = gp.kernel_.k1.k2
print(f"{len(train_images)} training digits x {PIXELS_PER_IMAGE} pixels = {len(y)} rows")
print(f"fitted kernel: {gp.kernel_}")
print(f"fitted length scale of z: {fitted_nngp.length_scale:.4f}")
print(f"fitted noise level: {gp.kernel_.k2.noise_level:.3g}")
print(f"log marginal likelihood: {gp.log_marginal_likelihood_value_:.2f}")

# %%
# Predictive mean and standard deviation of every pixel of the unseen digits.
mean, std = gp.predict(U_test, return_std=True)
mse = np.mean((mean - y_test) ** 2)
baseline = np.mean((y.mean() - y_test) ** 2)
print(f"test MSE over all pixels of {N_TEST_IMAGES} unseen digits: {mse:.4f}")
print(f"test MSE of the training mean: {baseline:.4f}")
inside = np.mean(np.abs(mean - y_test) <= 2 * std)
print(f"fraction of test pixels within 2 predictive std: {inside:.2f}")

shape = (N_TEST_IMAGES, height, width)
rows = {
    "ground truth": y_test.reshape(shape),
    "predictive mean": mean.reshape(shape),
    "predictive std": std.reshape(shape),
}
figsize = (1.6 * N_TEST_IMAGES, 1.7 * len(rows))
fig, axes = plt.subplots(len(rows), N_TEST_IMAGES, figsize=figsize)
for row, (title, images) in enumerate(rows.items()):
    limits = (0.0, float(std.max())) if title == "predictive std" else (0.0, 1.0)
    for column in range(N_TEST_IMAGES):
        axis = axes[row, column]
        colors = "magma" if title == "predictive std" else "gray"
        picture = axis.imshow(images[column], cmap=colors, vmin=limits[0], vmax=limits[1])
        axis.set_xticks([])
        axis.set_yticks([])
    axes[row, 0].set_ylabel(title, fontsize=8)
    if title == "predictive std":
        fig.colorbar(picture, ax=axes[row, :].tolist(), shrink=0.8)
fig.suptitle(
    "GP with ConstantKernel * HyperNNGP(fourier) + WhiteKernel,"
    f" length scale {fitted_nngp.length_scale:.3f}"
)
path = OUTPUT_DIR / "gp_hyper_nngp.png"
fig.savefig(path, dpi=100)
print(f"wrote {path.name}")
plt.show()
