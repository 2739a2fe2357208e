"""
Training a finite hypernetwork on digit pixels
==============================================

x is a digit image (64 values), z a pixel coordinate; the target is the pixel's
value. The hypernetwork f turns the image into the weights of a small network
g of the coordinate. ``HypernetworkRegressor`` trains it with torch; the
script prints and plots its training loss per epoch (``loss_curve_``) and its
error on held-out pixels (``hypernetwork_training.png``).

Run::

    python examples/plot_hypernetwork_training.py [output directory]

``SKHK_EXAMPLE_QUICK=1`` trains for a few epochs only.
"""

import os
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator
from sklearn.datasets import load_digits

from sklearn_hyperkernel import HypernetworkRegressor
from sklearn_hyperkernel.datasets import pixel_regression

QUICK = os.environ.get("SKHK_EXAMPLE_QUICK", "") not in ("", "0")
OUTPUT_DIR = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()

# %%
# Every pixel of 20 digits; 70 % of the rows train, the others are held out.
U, y = pixel_regression(load_digits().images[:20])
train = np.random.default_rng(0).random(y.shape[0]) < 0.7

# %%
# The defaults learn as they are (Adam, standard parameterisation, Fourier features
# of z with length scale 0.5, normalised x and y); only the number of epochs is set.
# The paper's network is parameterization="ntk", optimizer="sgd", z_encoding="linear".
model = HypernetworkRegressor(
    max_epochs=5 if QUICK else 40,
    random_state=0,
    device="cpu",
).fit(U[train], y[train])

print("epoch  training MSE (normalised targets: the mean predictor's is 1)")
for epoch, loss in enumerate(model.loss_curve_, start=1):
    if epoch == 1 or epoch % 5 == 0:
        print(f"{epoch:5d}  {loss:.5f}")

mse = np.mean((model.predict(U[~train]) - y[~train]) ** 2)
baseline = np.mean((y[train].mean() - y[~train]) ** 2)
print(f"held-out pixels: MSE {mse:.4f}, mean predictor {baseline:.4f}, ratio {mse / baseline:.2f}")

# %%
# The loss curve: mean training loss of each epoch, on the normalised targets.
fig, axis = plt.subplots(figsize=(5, 3.2))
epochs = np.arange(1, len(model.loss_curve_) + 1)
axis.plot(epochs, model.loss_curve_, "o-", label="training loss")
axis.axhline(1.0, color="grey", linestyle=":", label="mean predictor")
axis.set_xlabel("epoch")
axis.xaxis.set_major_locator(MaxNLocator(integer=True))
axis.set_ylabel("training MSE (normalised targets)")
axis.set_title(f"held-out MSE / mean predictor's: {mse / baseline:.2f}", fontsize=10)
axis.legend()
fig.tight_layout()
path = OUTPUT_DIR / "hypernetwork_training.png"
fig.savefig(path, dpi=100)
print(f"wrote {path.name}")
plt.show()
