"""
Inpainting digits: f sees the top half, g paints every pixel
============================================================

The paper's inpainting task (Sec. 5.3) at the size of scikit-learn's 8x8
digits: the hypernetwork ``f`` reads only the top half of an image (its
bottom half is never shown), the primary network ``g`` reads a pixel
coordinate, and the model predicts the value of every pixel, top and bottom.
Each training digit contributes 20 random pixels.

Compared on the same rows: kernel regression with the hyperkernel (NTK) and
with the hyper-NNGP (``HyperKernelRegressor``, Fourier encoding of the
coordinate), and a finite ``HypernetworkRegressor`` trained with Adam. The
script prints the test MSE of each over all 64 pixels of unseen digits (and
over their hidden bottom half), and draws ground truth, the input of ``f`` and
the reconstructions (``inpainting.png``).

Run::

    python examples/plot_inpainting.py [output directory]

``SKHK_EXAMPLE_QUICK=1`` runs a reduced version (fewer digits and epochs).
"""

import os
import sys
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning

from sklearn_hyperkernel import HyperKernelRegressor, HypernetworkRegressor
from sklearn_hyperkernel.datasets import pixel_regression

QUICK = os.environ.get("SKHK_EXAMPLE_QUICK", "") not in ("", "0")
OUTPUT_DIR = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()
N_TRAIN_IMAGES = 40 if QUICK else 200
N_TEST_IMAGES = 40 if QUICK else 100
N_SHOWN = 8
PIXELS_PER_IMAGE = 20
EPOCHS = 5 if QUICK else 30

# %%
# Rows ``[top half of the image | pixel coordinate]``; the targets cover every
# pixel, so the bottom half is predicted from the top half alone.
digits = load_digits().images
height, width = digits.shape[1:]
train_images = digits[:N_TRAIN_IMAGES]
test_images = digits[1000 : 1000 + N_TEST_IMAGES]
U, y = pixel_regression(
    train_images, task="inpainting", pixels_per_image=PIXELS_PER_IMAGE, random_state=0
)
U_test, y_test = pixel_regression(test_images, task="inpainting")  # every pixel, row-major
hidden = np.tile(np.arange(height * width) >= (height // 2) * width, N_TEST_IMAGES)

# %%
# The three models, fitted on the same rows.
models = {
    "hyperkernel (NTK)": HyperKernelRegressor(
        kernel="ntk", z_encoding="fourier", length_scale=0.4, alpha=1e-4
    ),
    "hyper-NNGP": HyperKernelRegressor(
        kernel="nngp", z_encoding="fourier", length_scale=0.4, alpha=1e-4
    ),
    "hypernetwork (trained)": HypernetworkRegressor(
        f_width=256,
        g_width=32,
        z_encoding="fourier",
        length_scale=0.4,
        n_fourier_features=64,
        optimizer="adam",
        learning_rate=0.003,
        batch_size=64,
        max_epochs=EPOCHS,
        random_state=0,
        device="cpu",
    ),
}
print(
    f"inpainting: {N_TRAIN_IMAGES} training digits x {PIXELS_PER_IMAGE} pixels = "
    f"{len(y)} rows; f sees the top {height // 2} of {height} rows"
)
print(f"{'model':<24} {'test MSE, all pixels':>21} {'hidden bottom half':>19}")
predictions = {}
for name, model in models.items():
    with warnings.catch_warnings():
        # a fixed, short training budget: the network may still be improving
        warnings.filterwarnings("ignore", category=ConvergenceWarning, message=".*max_epochs.*")
        model.fit(U, y)
    predictions[name] = model.predict(U_test)
    error = (predictions[name] - y_test) ** 2
    print(f"{name:<24} {error.mean():>21.4f} {error[hidden].mean():>19.4f}")
error = (y.mean() - y_test) ** 2
print(f"{'training mean':<24} {error.mean():>21.4f} {error[hidden].mean():>19.4f}")

# %%
# Ground truth, what ``f`` sees, and each model's reconstruction of unseen digits.
shape = (N_TEST_IMAGES, height, width)
truth = y_test.reshape(shape)
seen_by_f = truth.copy()
seen_by_f[:, height // 2 :, :] = 0.0
rows = {"ground truth": truth, "input of f": seen_by_f}
for name, value in predictions.items():
    rows[name] = np.clip(value, 0.0, 1.0).reshape(shape)
fig, axes = plt.subplots(len(rows), N_SHOWN, figsize=(1.2 * N_SHOWN, 1.3 * len(rows)))
for row, (title, images) in enumerate(rows.items()):
    for column in range(N_SHOWN):
        axes[row, column].imshow(images[column], cmap="gray", vmin=0.0, vmax=1.0)
        axes[row, column].set_xticks([])
        axes[row, column].set_yticks([])
    axes[row, 0].set_ylabel(title, fontsize=7)
fig.suptitle("Inpainting: f sees the top half, every pixel is predicted")
fig.tight_layout()
path = OUTPUT_DIR / "inpainting.png"
fig.savefig(path, dpi=100)
print(f"wrote {path.name}")
plt.show()
