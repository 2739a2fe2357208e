"""
Signed distances of new shapes from their codes
===============================================

A hypernetwork reads a shape's code x and outputs a network of the point z,
as DeepSDF-style shape models do. Here the code is a box's three
half-extents and its centre (``datasets.make_sdf_shapes(kind="box")``), z a
3-D point and the target the exact signed distance from z to the box. Unlike
an image, a code's norm carries information (a size), which is why
``HyperKernelRegressor``'s defaults keep it: biases in f and g
(``f_bias_variance=1``, ``g_bias_variance=0.1``) and one scale fitted on the
training codes (``normalize_x="scale"``) instead of putting each code on the
sphere; the hyper-NNGP (``kernel="nngp"``) with a Fourier length scale fitted
to the points' spread (``length_scale="scale"``) keeps the model smooth in the
code and the point.

The default ``HyperKernelRegressor(z_dim=3)``, with no tuning, is set against
an RBF ``KernelRidge`` whose ``alpha`` and ``gamma`` a ``GridSearchCV``
chose on folds grouped by shape. Both predict the signed distance on a
horizontal slice through the centre of boxes they have never seen; the picture
(``shape_sdf.png``) shows the truth and each model's slice, with the surface
(distance 0) drawn as a black line, and the script prints both models' test
errors on 40 new boxes (on which the tuned RBF can be the better one: the
default's measured ratios on the sphere and box families, against the tuned
RBF, are in docs/performance.md, "Defaults").

Run::

    python examples/plot_shape_sdf.py [output directory]

``SKHK_EXAMPLE_QUICK=1`` runs a reduced version (fewer shapes) in seconds.
"""

import os
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import TwoSlopeNorm
from sklearn.kernel_ridge import KernelRidge
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_hyperkernel import HyperKernelRegressor
from sklearn_hyperkernel.datasets import make_sdf_shapes, sdf_values

QUICK = os.environ.get("SKHK_EXAMPLE_QUICK", "") not in ("", "0")
OUTPUT_DIR = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()
N_SHAPES = 40 if QUICK else 100
POINTS_PER_SHAPE = 20
GRID = 40 if QUICK else 60

# %%
# Training rows ``[code | point]``: random points around each training box.
U, y = make_sdf_shapes(N_SHAPES, POINTS_PER_SHAPE, "box", random_state=0)
groups = np.repeat(np.arange(N_SHAPES), POINTS_PER_SHAPE)
U_new, y_new = make_sdf_shapes(40, POINTS_PER_SHAPE, "box", random_state=1)  # new shapes

# %%
# The default hyperkernel regressor, and an RBF kernel ridge tuned by grouped
# cross-validation (a new shape in each validation fold, as at test time).
hyperkernel = HyperKernelRegressor(z_dim=3).fit(U, y)
rbf = GridSearchCV(
    make_pipeline(StandardScaler(), KernelRidge(kernel="rbf")),
    {"kernelridge__alpha": [1e-5, 1e-4, 1e-3], "kernelridge__gamma": [0.01, 0.03, 0.1]},
    cv=GroupKFold(n_splits=3),
    scoring="neg_mean_squared_error",
).fit(U, y, groups=groups)
baseline = np.mean((y_new - y.mean()) ** 2)
for name, model in (("default HyperKernelRegressor", hyperkernel), ("tuned RBF", rbf)):
    mse = np.mean((model.predict(U_new) - y_new) ** 2)
    print(f"{name}: test MSE {mse:.4f} = {mse / baseline:.3f} x the mean predictor's")
print(f"tuned RBF's parameters: {rbf.best_params_}")

# %%
# A horizontal slice through the centre of three new boxes: the points
# ``(a, b, c_z)`` for ``a, b`` on a grid around the centre ``c``.
codes = U_new[:: POINTS_PER_SHAPE * 13, :-3][:3]
a, b = np.meshgrid(np.linspace(-1.5, 1.5, GRID), np.linspace(-1.5, 1.5, GRID))
fig, axes = plt.subplots(len(codes), 3, figsize=(8.4, 2.8 * len(codes)), squeeze=False)
for row, code in enumerate(codes):
    centre = code[3:]
    points = np.column_stack([a.ravel(), b.ravel(), np.zeros(a.size)]) + centre
    rows = np.hstack([np.tile(code, (len(points), 1)), points])
    truth = sdf_values("box", rows[:, :-3], points)
    slices = {
        "truth": truth,
        "default hyperkernel": hyperkernel.predict(rows),
        "tuned RBF": rbf.predict(rows),
    }
    norm = TwoSlopeNorm(vmin=truth.min(), vcenter=0.0, vmax=truth.max())
    for column, (title, values) in enumerate(slices.items()):
        ax = axes[row, column]
        image = values.reshape(a.shape)
        ax.imshow(
            image,
            extent=(-1.5, 1.5, -1.5, 1.5),
            origin="lower",
            cmap="RdBu_r",
            norm=norm,
        )
        ax.contour(a, b, image, levels=[0.0], colors="black", linewidths=1.0)
        error = np.mean((values - truth) ** 2)
        label = title if column == 0 else f"{title}\nslice MSE {error:.4f}"
        ax.set_title(label if row == 0 or column > 0 else "", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[row, 0].set_ylabel("half-extents " + ", ".join(f"{h:.2f}" for h in code[:3]), fontsize=9)
fig.suptitle("Signed distance on a slice through new boxes (blue inside, black: surface)")
fig.tight_layout()
OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
fig.savefig(OUTPUT_DIR / "shape_sdf.png", dpi=90)
print(f"wrote {OUTPUT_DIR / 'shape_sdf.png'}")
