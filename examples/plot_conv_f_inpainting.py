"""
A convolutional f: inpainting MNIST digits from their top half
==============================================================

The paper's own hypernetwork ``f`` was a convolutional network reading a
sparse image of the context pixels (the authors' reply to the reviewers).
Here ``f`` reads a 28 x 28 MNIST digit whose bottom half is set to zero
(``pixel_regression(..., task="inpainting", inpainting_x="masked")``), the
primary network ``g`` reads a pixel coordinate, and the model predicts every
pixel, top and bottom. Each training digit contributes 20 random pixels.

The same kernel regression is fitted twice on the same rows, once with the
dense ``f`` (an MLP on the flattened image) and once with a convolutional
``f`` (``f_architecture="conv"``, ``image_shape=(28, 28)``, ``filter_size=3``:
two 3 x 3 convolutions and a dense readout, in the infinite-channel limit).
The script prints each model's test MSE over all pixels of unseen digits and
over their hidden half, and draws the ground truth, the input of ``f`` and
both reconstructions (``conv_f_inpainting.png``). Which ``f`` is better on
this task, and by how much at the paper's sizes, is measured in
docs/results.md ("The convolutional f").

Run::

    python examples/plot_conv_f_inpainting.py [output directory]

``SKHK_EXAMPLE_QUICK=1`` runs a reduced version (fewer digits) in seconds.
"""

import os
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from sklearn_hyperkernel import HyperKernelRegressor
from sklearn_hyperkernel.datasets import load_images, pixel_regression

QUICK = os.environ.get("SKHK_EXAMPLE_QUICK", "") not in ("", "0")
OUTPUT_DIR = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()
N_TRAIN_IMAGES = 30 if QUICK else 200
N_TEST_IMAGES = 6 if QUICK else 50
N_SHOWN = 6
PIXELS_PER_IMAGE = 20

# %%
# Rows ``[masked image | pixel coordinate]``: x is the whole 28 x 28 image with
# its bottom half zero, so that a convolutional f can read it as an image.
images, _ = load_images("mnist", n_samples=N_TRAIN_IMAGES + N_TEST_IMAGES, random_state=0)
train_images, test_images = images[:N_TRAIN_IMAGES], images[N_TRAIN_IMAGES:]
height, width = images.shape[1:]
rows = dict(task="inpainting", inpainting_x="masked")
U, y = pixel_regression(train_images, pixels_per_image=PIXELS_PER_IMAGE, random_state=0, **rows)
U_test, y_test = pixel_regression(test_images, **rows)  # every pixel, row-major
hidden = np.tile(np.arange(height * width) >= (height // 2) * width, N_TEST_IMAGES)

# %%
# The dense f and the convolutional f, everything else the regressor's defaults.
models = {
    "dense f": HyperKernelRegressor(kernel="ntk"),
    "conv f (3 x 3)": HyperKernelRegressor(
        kernel="ntk", f_architecture="conv", image_shape=(height, width), filter_size=3
    ),
}
print(f"{N_TRAIN_IMAGES} training digits x {PIXELS_PER_IMAGE} pixels = {len(y)} rows")
print(f"{'model':<16} {'test MSE, all pixels':>21} {'hidden half':>12} {'seconds':>8}")
predictions = {}
for name, model in models.items():
    start = time.perf_counter()
    predictions[name] = model.fit(U, y).predict(U_test)
    seconds = time.perf_counter() - start
    error = (predictions[name] - y_test) ** 2
    print(f"{name:<16} {error.mean():>21.4f} {error[hidden].mean():>12.4f} {seconds:>8.1f}")
error = (y.mean() - y_test) ** 2
print(f"{'training mean':<16} {error.mean():>21.4f} {error[hidden].mean():>12.4f}")

# %%
# Ground truth, what f sees, and both reconstructions of unseen digits.
shape = (N_TEST_IMAGES, height, width)
truth = y_test.reshape(shape)
pictures = {"ground truth": truth, "input of f": U_test[:: height * width, :-2].reshape(shape)}
for name, value in predictions.items():
    pictures[name] = np.clip(value, 0.0, 1.0).reshape(shape)
fig, axes = plt.subplots(len(pictures), N_SHOWN, figsize=(1.3 * N_SHOWN, 1.4 * len(pictures)))
for row, (title, values) in enumerate(pictures.items()):
    for column in range(N_SHOWN):
        axes[row, column].imshow(values[column], cmap="gray", vmin=0.0, vmax=values.max())
        axes[row, column].set_xticks([])
        axes[row, column].set_yticks([])
    axes[row, 0].set_ylabel(title, fontsize=7)
fig.suptitle("Inpainting MNIST: a dense f and a convolutional f")
fig.tight_layout()
OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
path = OUTPUT_DIR / "conv_f_inpainting.png"
fig.savefig(path, dpi=100)
print(f"wrote {path.name}")
plt.show()
