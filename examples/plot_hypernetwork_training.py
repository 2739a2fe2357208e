"""Train a finite hypernetwork on digit pixels and print its loss curve.

x is a digit image (64 values), z a pixel coordinate; the target is the pixel's
value. The hypernetwork f turns the image into the weights of a small network
g of the coordinate. No plotting library is needed: the loss curve is printed.

Run::

    python examples/plot_hypernetwork_training.py

``SKHK_EXAMPLE_QUICK=1`` trains for a few epochs only.
"""

from __future__ import annotations

import os

import numpy as np
from sklearn.datasets import load_digits

from sklearn_hyperkernel.datasets import pixel_regression
from sklearn_hyperkernel.hypernetwork import HypernetworkRegressor

QUICK = os.environ.get("SKHK_EXAMPLE_QUICK", "") not in ("", "0")

U, y = pixel_regression(load_digits().images[:20])
train = np.random.default_rng(0).random(y.shape[0]) < 0.7

# The defaults learn as they are (Adam, standard parameterisation, Fourier features
# of z with length scale 0.5, normalised x and y); only the number of epochs is set.
# The paper's network is parameterization="ntk", optimizer="sgd", z_encoding="linear".
model = HypernetworkRegressor(
    max_epochs=5 if QUICK else 40, random_state=0, device="cpu",
).fit(U[train], y[train])

print("epoch  training MSE (normalised targets: the mean predictor's is 1)")
for epoch, loss in enumerate(model.loss_curve_, start=1):
    if epoch == 1 or epoch % 5 == 0:
        print(f"{epoch:5d}  {loss:.5f}  {'#' * int(60 * loss / model.loss_curve_[0])}")

mse = np.mean((model.predict(U[~train]) - y[~train]) ** 2)
baseline = np.mean((y[train].mean() - y[~train]) ** 2)
print(f"held-out pixels: MSE {mse:.4f}, mean predictor {baseline:.4f}, ratio {mse / baseline:.2f}")
