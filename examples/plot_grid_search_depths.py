"""
Choosing depths and ridge by cross-validation, folds grouped by image
=====================================================================

``HyperKernelRegressor`` is an ordinary scikit-learn estimator, so
``GridSearchCV`` can choose the depth of the hypernetwork ``f``
(``f_depth``), the depth of the primary network ``g`` (``g_depth``) and the
ridge ``alpha`` on the training images alone.

Every image contributes many rows (one per pixel), and rows of one image share
their ``x``: a random split would validate on pixels of images the model was
fitted on. ``GroupKFold`` with the image index as groups keeps each image's
pixels in one fold, so the validation score measures what the test measures:
pixels of unseen images.

The script prints the best parameters, the cross-validated and the test MSE,
and plots the cross-validated MSE over the grid (``grid_search_depths.png``).

Run::

    python examples/plot_grid_search_depths.py [output directory]

``SKHK_EXAMPLE_QUICK=1`` searches a smaller grid on fewer digits.
"""

import os
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, GroupKFold

from sklearn_hyperkernel import HyperKernelRegressor
from sklearn_hyperkernel.datasets import pixel_regression

QUICK = os.environ.get("SKHK_EXAMPLE_QUICK", "") not in ("", "0")
OUTPUT_DIR = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()
N_TRAIN_IMAGES = 20 if QUICK else 80
N_TEST_IMAGES = 20 if QUICK else 100
PIXELS_PER_IMAGE = 20
PARAM_GRID = {
    "f_depth": [2, 3] if QUICK else [2, 3, 4],
    "g_depth": [1, 2] if QUICK else [1, 2, 3],
    "alpha": [1e-4, 1e-2] if QUICK else [1e-5, 1e-4, 1e-3],
}

# %%
# Inpainting rows (``f`` sees the top half of each digit), and the image each
# row comes from: the groups of ``GroupKFold``.
digits = load_digits().images
U, y = pixel_regression(
    digits[:N_TRAIN_IMAGES],
    task="inpainting",
    pixels_per_image=PIXELS_PER_IMAGE,
    random_state=0,
)
image_of_row = np.repeat(np.arange(N_TRAIN_IMAGES), PIXELS_PER_IMAGE)
U_test, y_test = pixel_regression(digits[1000 : 1000 + N_TEST_IMAGES], task="inpainting")

# %%
# The search, with folds grouped by image.
search = GridSearchCV(
    HyperKernelRegressor(kernel="ntk", z_encoding="fourier", length_scale=0.4),
    PARAM_GRID,
    scoring="neg_mean_squared_error",
    cv=GroupKFold(n_splits=4),
)
search.fit(U, y, groups=image_of_row)

n_candidates = len(search.cv_results_["params"])
print(
    f"{N_TRAIN_IMAGES} training digits (inpainting: f sees the top half), {len(y)} rows, "
    f"{n_candidates} candidates x 4 folds grouped by image"
)
print(f"best parameters: {search.best_params_}")
print(f"cross-validated MSE of the best: {-search.best_score_:.4f}")
test_mse = np.mean((search.predict(U_test) - y_test) ** 2)
print(f"test MSE over all pixels of {N_TEST_IMAGES} unseen digits: {test_mse:.4f}")

# %%
# The best ridge for each pair of depths, and its cross-validated error.
print("best alpha per depth pair (cross-validated MSE)")
print(f"{'f_depth':>7} {'g_depth':>7} {'alpha':>8} {'CV MSE':>8}")
results = search.cv_results_
cv_mse = -results["mean_test_score"]
grid = np.full((len(PARAM_GRID["f_depth"]), len(PARAM_GRID["g_depth"])), np.nan)
for i, f_depth in enumerate(PARAM_GRID["f_depth"]):
    for j, g_depth in enumerate(PARAM_GRID["g_depth"]):
        mask = (results["param_f_depth"] == f_depth) & (results["param_g_depth"] == g_depth)
        best = np.flatnonzero(mask)[np.argmin(cv_mse[mask])]
        grid[i, j] = cv_mse[best]
        alpha = results["param_alpha"][best]
        print(f"{f_depth:>7} {g_depth:>7} {alpha:>8.0e} {cv_mse[best]:>8.4f}")

fig, axis = plt.subplots(figsize=(4.5, 4))
picture = axis.imshow(grid, cmap="viridis_r", origin="lower")
axis.set_xticks(range(len(PARAM_GRID["g_depth"])), PARAM_GRID["g_depth"])
axis.set_yticks(range(len(PARAM_GRID["f_depth"])), PARAM_GRID["f_depth"])
axis.set_xlabel("g_depth")
axis.set_ylabel("f_depth")
low, high = np.nanmin(grid), np.nanmax(grid)
for (i, j), value in np.ndenumerate(grid):
    # dark text on the bright (low-error) end of viridis_r, white on the dark end
    bright = (value - low) <= 0.5 * (high - low)
    color = "black" if bright else "white"
    axis.text(j, i, f"{value:.4f}", ha="center", va="center", fontsize=9, color=color)
fig.colorbar(picture, ax=axis, label="cross-validated MSE (best alpha)")
axis.set_title("GridSearchCV, GroupKFold by image", fontsize=10)
fig.tight_layout()
path = OUTPUT_DIR / "grid_search_depths.png"
fig.savefig(path, dpi=100)
print(f"wrote {path.name}")
plt.show()
