"""The authors' reply, Fig. I: interpolating kernel feature vectors between two digits.

Source: the authors' reply to the reviewers of *On Infinite-Width
Hypernetworks* (NeurIPS 2020), answer to R4 and its Fig. I: "interpolating
between ``[Theta^h(u, u_1), ..., Theta^h(u, u_N)]`` and ``[Theta^h(v, u_1),
..., Theta^h(v, u_N)]`` for two images u and v in Eq. 16" (the kernel
regression formula is the paper's Eq. 18), "between 7 -> 5 and 5 -> 6 using
hyperkernel (rows 1, 3) and hypernetwork (rows 2, 4). Both methods used merely
200 samples for training", as in the interpolations of Klocek et al.,
*Hypernetwork functional image representation* (ICANN 2019, arXiv 1902.10404).

What this command computes (the paper's representation task, Sec. 5.3):

1. Training rows: ``n_train`` MNIST images (offline subset,
   :func:`~sklearn_hyperkernel.datasets.load_images`), ``pixels_per_image``
   random pixels each (:func:`~sklearn_hyperkernel.datasets.pixel_regression`,
   raw integer coordinates), rows ``u_i = [unit-norm image | pixel]``, target
   the pixel value; N (the reply's "samples") is the number of images, as in
   the ``table1`` command.
2. Two kernels ``K`` on these rows: the hyperkernel ``Theta^h``
   (:class:`~sklearn_hyperkernel.HyperKernel`, the paper's settings of
   ``table1``: depths 3 and 2, Fourier ``z`` with length scale ``sqrt(2)``,
   raw rows), and the empirical NTK ``J J^T`` of a finite hypernetwork
   *after training* on the same rows
   (:meth:`~sklearn_hyperkernel.HypernetworkRegressor.empirical_ntk`; the
   network and its training are those of ``table1``).
3. Decoder, Eq. 18: ``r(k) = k . (K(U, U) + eps I)^-1 Y`` for a kernel row
   ``k`` of length N (``eps`` = ``ridge`` times the mean Gram diagonal). The
   kernel feature vector of a pixel ``z`` of an image ``a`` is
   ``k_a(z) = [K((a, z), u_1), ..., K((a, z), u_N)]``; ``r(k_a(z))`` over all
   784 pixels is the kernel's reconstruction of ``a``. The endpoint images
   are held out (never among the training images): the first image of each
   digit in the shuffled order.
4. Interpolation: ``k_t(z) = (1 - t) k_a(z) + t k_b(z)`` for ``t`` in
   ``[0, 1]``, decoded with the same ``r``, for each pair ``(a, b)``.

Because ``r`` is linear in ``k``, the decoded interpolant is exactly the
pixel-wise blend ``(1 - t) r(k_a) + t r(k_b)`` of the two reconstructions
(the JSON records the largest deviation from it, rounding only); the kernels
differ in how well they reconstruct the endpoints, which is what the figure
compares (the reply: "the hypernetwork trained with sgd clearly
underperforms in this low data regime"). ``f`` is fully connected by default;
``--f-architecture conv`` makes it convolutional, the reply's f (x read as the
image, ``filter_size`` x ``filter_size`` filters), for the hyperkernel and the
hypernetwork alike. The hypernetwork rows decode with its empirical NTK, not
with the network's own output (whose endpoint errors the JSON reports beside);
``--hn-epochs 0`` leaves the hypernetwork out.

Outputs in ``--out``: ``interpolation.png`` (per pair, one row per kernel:
the held-out image ``a``, the interpolants from ``t = 0`` to ``1``, image
``b``) and ``interpolation.json`` (the settings, the images used, endpoint
reconstruction errors and the linearity check).

Run ``python -m sklearn_hyperkernel.experiments interpolation --help``.
"""

from __future__ import annotations

import math
import os

import numpy as np
from scipy.linalg import eigh

from .. import HyperKernelRegressor
from ..datasets import load_images, pixel_regression
from ._common import (
    Clock,
    base_parser,
    f_options,
    parse_command,
    pyplot,
    report,
    save_figure,
    write_json,
)
from .table1 import paper_hypernetwork

__all__ = ["decode", "interpolate", "main", "run"]

KERNEL_LABELS = {"hyperkernel": "hyperkernel", "hypernetwork": "hypernetwork (eNTK)"}


def _pair(text: str) -> tuple[int, int]:
    """``"7,5"`` -> ``(7, 5)``."""
    parts = text.replace("->", ",").split(",")
    if len(parts) != 2:
        raise ValueError(f"a pair is two digits 'a,b'; got {text!r}.")
    return int(parts[0]), int(parts[1])


def _parser():
    parser = base_parser(__doc__.split("\n")[0], "interpolation")
    add = parser.add_argument
    add("--source", default="mnist", choices=("mnist", "digits"))
    add("--n-train", type=int, default=200, help="Training images N.")
    add("--pixels-per-image", type=int, default=20, help="Random training pixels per image.")
    add(
        "--pairs",
        type=_pair,
        nargs="+",
        default=[(7, 5), (5, 6)],
        help="Digit pairs a,b interpolated from a (t=0) to b (t=1).",
    )
    add("--steps", type=int, default=8, help="Interpolants per pair, t = 0 ... 1.")
    add(
        "--coordinates",
        default="pixel",
        choices=("pixel", "scaled"),
        help="z = raw integer pixel coordinates, or scaled to [-1, 1].",
    )
    add("--f-depth", type=int, default=3)
    add(
        "--f-architecture",
        default="dense",
        choices=("dense", "conv"),
        help="f of both kernels: dense, or conv (reads x as the image).",
    )
    add("--filter-size", type=int, default=3, help="conv f: odd filter size.")
    add("--g-depth", type=int, default=2)
    add("--length-scale", type=float, default=math.sqrt(2.0), help="Fourier length scale of z.")
    add("--ridge", type=float, default=1e-9, help="eps of Eq. 18, relative to the Gram diagonal.")
    add(
        "--hn-epochs",
        type=int,
        default=100,
        help="Training epochs of the hypernetwork (0: leave it out).",
    )
    add("--hn-f-width", type=int, default=256)
    add("--hn-g-width", type=int, default=32)
    add("--hn-learning-rate", type=float, default=1e-3)
    add("--hn-optimizer", default="adam", choices=("adam", "sgd"))
    add("--seed", type=int, default=0, help="Shuffles the images, draws pixels and weights.")
    return parser


def _quick_overrides(args) -> None:
    """CI size (seconds): 20 training images, a small network trained for 3 epochs.

    The quick network barely leaves its initialisation (its fit warns that it
    did not learn); the quick run checks the computation, not the picture. A
    conv f gets 2 channels (its readout of the 28 x 28 feature map to g's
    weights is then the widest layer, and the empirical NTK stays small).
    """
    args.n_train = 20
    args.steps = 5
    args.hn_epochs = min(args.hn_epochs, 3)
    args.hn_f_width = 2 if args.f_architecture == "conv" else 32
    args.hn_g_width = 8


def decode(features: np.ndarray, dual_coef: np.ndarray, intercept: float = 0.0) -> np.ndarray:
    """Eq. 18 applied to kernel rows: ``features @ dual_coef + intercept``.

    Parameters
    ----------
    features : ndarray of shape (..., n_train)
        Kernel rows ``[K(u, u_1), ..., K(u, u_N)]``.
    dual_coef : ndarray of shape (n_train,)
        ``(K(U, U) + eps I)^-1 (Y - intercept)``.
    intercept : float, default=0.0

    Returns
    -------
    ndarray of shape features.shape[:-1]
    """
    return features @ dual_coef + intercept


def interpolate(features_a: np.ndarray, features_b: np.ndarray, ts) -> np.ndarray:
    """Kernel feature vectors ``(1 - t) features_a + t features_b`` for each ``t``.

    Parameters
    ----------
    features_a, features_b : ndarray of shape (n_pixels, n_train)
        Kernel rows of every pixel of the two endpoint images.
    ts : array-like of shape (n_steps,)

    Returns
    -------
    ndarray of shape (n_steps, n_pixels, n_train)

    Raises
    ------
    ValueError
        If the two feature arrays differ in shape.
    """
    if features_a.shape != features_b.shape:
        raise ValueError(
            f"features_a and features_b must have one shape; got {features_a.shape} "
            f"and {features_b.shape}."
        )
    ts = np.asarray(ts, dtype=float)[:, None, None]
    return (1.0 - ts) * features_a[None] + ts * features_b[None]


def _dual_coefficients(gram: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
    """``(gram + ridge * mean(diag) I)^-1 y`` by eigendecomposition (negative
    rounding-level eigenvalues of a float32 empirical kernel clipped to 0)."""
    eigenvalues, vectors = eigh(gram)
    shifted = np.clip(eigenvalues, 0.0, None) + ridge * float(np.mean(np.diag(gram)))
    return vectors @ ((vectors.T @ y) / shifted)


def _choose_images(labels: np.ndarray, digits, n_train: int, seed: int):
    """Held-out endpoint index per digit (first in the shuffled order) and training indices."""
    order = np.random.RandomState(seed).permutation(len(labels))
    endpoints = {}
    for index in order:
        digit = int(labels[index])
        if digit in digits and digit not in endpoints:
            endpoints[digit] = int(index)
    missing = set(digits) - set(endpoints)
    if missing:
        raise ValueError(f"pairs name digits the source does not have: {sorted(missing)}.")
    train = np.array([i for i in order if i not in endpoints.values()][:n_train])
    if len(train) < n_train:
        raise ValueError(f"n_train={n_train} images needed, the source has {len(train)} left.")
    return endpoints, train


def run(args) -> dict:
    """Fit both kernels, decode the interpolants of every pair; returns arrays and numbers.

    Returns
    -------
    dict with ``ts`` (n_steps,), ``digits``, ``image_index`` (digit -> index
    into the source), ``truth`` (digit -> image in [0, 1]), ``features`` and
    ``dual_coef`` and ``intercept`` (per kernel), ``interpolants`` (kernel ->
    pair ``"a,b"`` -> array (n_steps, height, width)), ``endpoint_mse``,
    ``linearity_gap``, ``models`` (the fitted estimators), ``rows`` (the
    training rows and targets) and ``seconds``.
    """
    if args.steps < 2:
        raise ValueError(f"steps must be at least 2 (t = 0 and t = 1); got {args.steps}.")
    clock = Clock()
    images, labels = load_images(args.source)
    shape = images.shape[1:]
    digits = sorted({d for pair in args.pairs for d in pair})
    endpoints, train = _choose_images(labels, digits, args.n_train, args.seed)
    U, y = pixel_regression(
        images[train],
        pixels_per_image=args.pixels_per_image,
        coordinates=args.coordinates,
        random_state=args.seed,
    )
    queries, truth = {}, {}
    for digit in digits:
        queries[digit], values = pixel_regression(
            images[endpoints[digit]][None], coordinates=args.coordinates
        )
        truth[digit] = values.reshape(shape)
    report(
        "interpolation",
        clock,
        f"{len(train)} training images x {args.pixels_per_image} pixels = {len(y)} rows; "
        f"held-out endpoint image per digit: {endpoints}",
    )

    hyperkernel = HyperKernelRegressor(
        "ntk",
        alpha=args.ridge,
        alpha_scale="relative",
        z_dim=2,
        f_depth=args.f_depth,
        g_depth=args.g_depth,
        z_encoding="fourier",
        length_scale=args.length_scale,
        f_bias_variance=0.0,
        g_bias_variance=0.0,
        normalize_x=False,
        normalize_y=False,
        **f_options(args, shape, args.filter_size),
    ).fit(U, y)
    features = {"hyperkernel": {d: hyperkernel.kernel_(queries[d], U) for d in digits}}
    dual_coef = {"hyperkernel": hyperkernel.dual_coef_}
    intercept = {"hyperkernel": float(hyperkernel.intercept_)}
    report("interpolation", clock, "hyperkernel: Gram, solve and feature vectors done")

    network = None
    if args.hn_epochs > 0:
        report("interpolation", clock, f"training the hypernetwork ({args.hn_epochs} epochs)")
        network = paper_hypernetwork(args, args.seed, shape).fit(U, y)
        report("interpolation", clock, "hypernetwork trained")
        features["hypernetwork"] = {d: network.empirical_ntk(queries[d], U) for d in digits}
        dual_coef["hypernetwork"] = _dual_coefficients(network.empirical_ntk(U), y, args.ridge)
        intercept["hypernetwork"] = 0.0
        report("interpolation", clock, "empirical NTK: Gram, solve and feature vectors done")

    ts = np.linspace(0.0, 1.0, args.steps)
    interpolants = {name: {} for name in features}
    endpoint_mse = {name: {} for name in features}
    gap = 0.0
    for name in features:
        decoded = {d: decode(features[name][d], dual_coef[name], intercept[name]) for d in digits}
        for d in digits:
            endpoint_mse[name][str(d)] = float(np.mean((decoded[d] - truth[d].ravel()) ** 2))
        for a, b in args.pairs:
            path = decode(
                interpolate(features[name][a], features[name][b], ts),
                dual_coef[name],
                intercept[name],
            )
            blend = (1.0 - ts)[:, None] * decoded[a] + ts[:, None] * decoded[b]
            scale = max(float(np.max(np.abs(blend))), 1e-300)
            gap = max(gap, float(np.max(np.abs(path - blend))) / scale)
            interpolants[name][f"{a},{b}"] = path.reshape((args.steps,) + shape)
    if network is not None:
        endpoint_mse["hypernetwork-output"] = {
            str(d): float(np.mean((network.predict(queries[d]) - truth[d].ravel()) ** 2))
            for d in digits
        }
    endpoint_mse["mean-predictor"] = {
        str(d): float(np.mean((np.mean(y) - truth[d]) ** 2)) for d in digits
    }
    return {
        "ts": ts,
        "digits": digits,
        "image_index": endpoints,
        "truth": truth,
        "features": features,
        "dual_coef": dual_coef,
        "intercept": intercept,
        "interpolants": interpolants,
        "endpoint_mse": endpoint_mse,
        "linearity_gap": gap,
        "models": {"hyperkernel": hyperkernel, "hypernetwork": network},
        "rows": (U, y, queries),
        "seconds": clock.seconds,
    }


def plot(results: dict, args, path: str) -> None:
    """Per pair, one row per kernel: image a, the interpolants (t = 0 ... 1), image b."""
    plt = pyplot()
    names = list(results["interpolants"])
    n_rows = len(args.pairs) * len(names)
    n_cols = args.steps + 2
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(1.05 * n_cols + 1.2, 1.15 * n_rows + 0.5), squeeze=False
    )
    for p, (a, b) in enumerate(args.pairs):
        for k, name in enumerate(names):
            row = axes[p * len(names) + k]
            pictures = [results["truth"][a], *results["interpolants"][name][f"{a},{b}"]]
            pictures.append(results["truth"][b])
            for column, (axis, picture) in enumerate(zip(row, pictures, strict=True)):
                axis.imshow(np.clip(picture, 0.0, 1.0), cmap="gray", vmin=0.0, vmax=1.0)
                axis.set_xticks([])
                axis.set_yticks([])
                if p == 0 and k == 0:
                    if column in (0, n_cols - 1):
                        axis.set_title("held-out image", fontsize=7)
                    else:
                        axis.set_title(f"t = {results['ts'][column - 1]:.2f}", fontsize=7)
            row[0].set_ylabel(f"{KERNEL_LABELS[name]}\n{a} -> {b}", fontsize=7)
    f_name = "dense f"
    if args.f_architecture == "conv":
        f_name = f"conv f, {args.filter_size}x{args.filter_size} filters"
    fig.suptitle(
        f"Interpolating kernel feature vectors, decoded by Eq. 18 (N = {args.n_train} "
        f"images x {args.pixels_per_image} pixels, {f_name})",
        fontsize=9,
    )
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; writes interpolation.png and interpolation.json."""
    args, out = parse_command(_parser(), _quick_overrides, argv)
    results = run(args)
    plot(results, args, os.path.join(out, "interpolation.png"))
    summary = {
        "args": {**vars(args), "pairs": [list(pair) for pair in args.pairs]},
        "ts": results["ts"].tolist(),
        "image_index": {str(d): i for d, i in results["image_index"].items()},
        "n_train_rows": int(len(results["rows"][1])),
        "endpoint_mse": results["endpoint_mse"],
        "linearity_gap": results["linearity_gap"],
        "seconds": results["seconds"],
    }
    write_json(os.path.join(out, "interpolation.json"), summary)
    print("test MSE of each held-out endpoint's reconstruction (Eq. 18):")
    for name, errors in results["endpoint_mse"].items():
        print(f"  {name:<20} " + "  ".join(f"{d}: {e:.4f}" for d, e in errors.items()))
    print(
        f"largest relative deviation of an interpolant from the blend of the endpoint "
        f"reconstructions: {results['linearity_gap']:.1e}"
    )
    print(f"wrote {out}/interpolation.png, interpolation.json in {results['seconds']:.0f} s")
    return 0
