"""The paper's Table 1 and Fig. 3: pixel regression on MNIST.

For each seed the MNIST subset is shuffled, ``n_test`` images are held out and
the first N of the others are the training images. Each training image gives
``pixels_per_image`` random pixels (rows ``[x | pixel coordinate]``, target
the pixel value); every model predicts all pixels of the held-out images and
the test MSE is their mean squared error.

Protocol (the authors' code, each choice an option): x is the unit-norm image
("representation") or its top half ("inpainting"); with the convolutional f
(``--f-architecture conv``, the authors' own f) inpainting's x is instead the
whole image with its unobserved bottom half set to 0 (their "sparse image
containing the context points"), read as an image of the data's shape with
``filter_size`` x ``filter_size`` filters; the Fourier z kernel is a
Gaussian of raw integer pixel coordinates with length scale ``sqrt(2)``; the
ridge is ``1e-9`` times the Gram diagonal; each kernel prediction averages
``draws`` regressions fitted on independent pixel draws. With
``--combine-draws union`` the same draws are instead the rows of one
regression (``draws * pixels_per_image`` pixels of every training image, the
pixels the averaged regressions see together), solved exactly: Cholesky up to
the configuration's ``auto_cholesky_max_gram_bytes``, conjugate gradients
(``--cg-tol``, ``--cg-rank``) beyond it.

The "selected" rows choose depths, filter size (conv f), length scale and ridge on the
training images only, never on a test image: "selected-cv" by K-fold cross-validation
with folds grouped by image, "selected-ml" (hyper-NNGP only) by the Gaussian
process log marginal likelihood of ``c * HyperNNGP + noise`` (the grid point
with the highest likelihood, the scale ``c`` profiled out, the noise ``c``
times the ridge). Each is chosen separately for every N, on the first
``min(N, select_images)`` training images, then refit on all N training images
to predict the test images. With ``select_ridge_images`` above
``select_images`` the ridge alone is then chosen again (same method, the other
values kept) on the first ``min(N, select_ridge_images)`` training images, so
that a ridge chosen on few images does not regularise many too strongly.

Run ``python -m sklearn_hyperkernel.experiments table1 --help``.
"""

from __future__ import annotations

import itertools
import math
import os

import numpy as np
from scipy.linalg import eigh
from sklearn.model_selection import GroupKFold

from ..datasets import load_images, pixel_regression
from ..kernel_ridge import HyperKernelRegressor, cholesky_fits
from ..kernels import HyperKernel, HyperNNGP
from ._common import Clock, base_parser, f_options, parse_command, pyplot, write_json

__all__ = ["PAPER_TABLE1", "log_marginal_likelihoods", "main", "run"]

PAPER_SIZES = (50, 100, 200, 500)
#: The paper's Table 1 (test MSE), keyed by (model, task), one value per N in PAPER_SIZES.
PAPER_TABLE1 = {
    ("hyperkernel", "representation"): (0.055, 0.050, 0.043, 0.032),
    ("hyperkernel", "inpainting"): (0.057, 0.051, 0.047, 0.038),
    ("hyper-nngp", "representation"): (0.051, 0.045, 0.037, 0.026),
    ("hyper-nngp", "inpainting"): (0.054, 0.047, 0.043, 0.034),
    ("hypernetwork", "representation"): (0.12, 0.08, 0.052, 0.041),
    ("hypernetwork", "inpainting"): (0.16, 0.098, 0.066, 0.49),
}
KERNEL_NAMES = {"ntk": "hyperkernel", "nngp": "hyper-nngp"}
TASKS = ("representation", "inpainting")
SELECT_METHODS = ("cv", "ml")
PARAM_NAMES = ("f_depth", "g_depth", "length_scale", "ridge", "filter_size")
F_ARCHITECTURES = ("dense", "conv")
COMBINE_DRAWS = ("average", "union")
#: Default selection grid: every value the previous, narrower grid picked lies inside it.
SELECT_F_DEPTHS = [1, 2, 3, 4]
SELECT_G_DEPTHS = [1, 2, 3]
SELECT_LENGTH_SCALES = [math.sqrt(2.0), 2.0, 2.0 * math.sqrt(2.0), 4.0, 4.0 * math.sqrt(2.0)]
SELECT_RIDGES = [1e-9, 1e-6, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0]


def _parser():
    parser = base_parser(__doc__.split("\n")[0], "table1")
    add = parser.add_argument
    add("--seeds", type=int, default=20, help="Number of random splits (mean +- std over them).")
    add("--first-seed", type=int, default=0, help="Seeds run: first-seed, ..., +seeds-1.")
    add("--sizes", type=int, nargs="+", default=list(PAPER_SIZES), help="Training images N.")
    add("--n-test", type=int, default=100, help="Held-out test images per seed.")
    add("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    add("--source", default="mnist", choices=("mnist", "digits"), help="digits: 8x8 fallback.")
    add("--pixels-per-image", type=int, default=20, help="Random training pixels per image.")
    add("--coordinates", default="pixel", choices=("pixel", "scaled"), help="scaled: [-1, 1].")
    add("--encodings", nargs="+", default=["linear", "fourier"], choices=("linear", "fourier"))
    add("--length-scale", type=float, default=math.sqrt(2.0), help="Fourier length scale of z.")
    add("--f-depth", type=int, default=3)
    add(
        "--f-architecture",
        default="dense",
        choices=F_ARCHITECTURES,
        help="f of every model: dense, or conv (reads x as an image; inpainting's x is then "
        "the whole image with its bottom half set to 0).",
    )
    add("--filter-size", type=int, default=3, help="conv f: odd filter size.")
    add("--g-depth", type=int, default=2)
    add("--ridge", type=float, default=1e-9, help="Ridge, relative to the Gram diagonal.")
    add("--draws", type=int, default=5, help="Pixel draws per kernel prediction.")
    add(
        "--combine-draws",
        default="average",
        choices=COMBINE_DRAWS,
        help="average: one regression per draw, predictions averaged (the authors' code); "
        "union: one regression on the rows of all draws (the same pixels; the selection then "
        "also draws --draws times).",
    )
    add("--cg-tol", type=float, default=1e-3, help="union: CG tolerance beyond the Cholesky size.")
    add("--cg-rank", type=int, default=1000, help="union: rank of CG's preconditioner.")
    add("--no-fixed", action="store_true", help="Skip the rows at fixed (the paper's) settings.")
    add(
        "--kernels",
        nargs="+",
        default=list(KERNEL_NAMES),
        choices=list(KERNEL_NAMES),
        help="Kernels of the fixed and selected rows: ntk (the hyperkernel), nngp (hyper-NNGP; "
        "the only kernel of the ml selection).",
    )
    add("--hn-epochs", type=int, default=100, help="Hypernetwork epochs (0: skip it).")
    add("--hn-f-width", type=int, default=256)
    add("--hn-g-width", type=int, default=32)
    add("--hn-learning-rate", type=float, default=1e-3)
    add("--hn-optimizer", default="adam", choices=("adam", "sgd"))
    add("--no-select", action="store_true", help="Skip the model-selected rows.")
    add(
        "--select-methods",
        nargs="+",
        default=list(SELECT_METHODS),
        choices=SELECT_METHODS,
        help="cv: grouped K-fold cross-validation (both kernels); ml: GP log marginal "
        "likelihood (hyper-NNGP only).",
    )
    add("--select-images", type=int, default=50, help="Selection on the first min(N, this).")
    add(
        "--select-ridge-images",
        type=int,
        default=0,
        help="If above --select-images: re-choose the ridge alone (same method, the other values "
        "kept) on the first min(N, this) training images (0: off).",
    )
    add("--select-folds", type=int, default=3, help="Folds (grouped by image) of the CV selection.")
    add("--select-f-depths", type=int, nargs="+", default=SELECT_F_DEPTHS)
    add("--select-g-depths", type=int, nargs="+", default=SELECT_G_DEPTHS)
    add(
        "--select-filter-sizes",
        type=int,
        nargs="+",
        default=None,
        help="conv f: filter sizes of the grid (default: --filter-size alone).",
    )
    add("--select-length-scales", type=float, nargs="+", default=SELECT_LENGTH_SCALES)
    add("--select-ridges", type=float, nargs="+", default=SELECT_RIDGES, help="ml: noise/scale.")
    return parser


def _quick_overrides(args) -> None:
    """Shrink everything to CI size (seconds)."""
    args.seeds = min(args.seeds, 2)
    args.sizes = [10, 20]
    args.n_test = 4
    args.draws = 2 if args.combine_draws == "union" else 1  # a union of one draw is no union
    args.hn_epochs = min(args.hn_epochs, 5)
    args.hn_f_width = 16
    args.hn_g_width = 8
    args.hn_learning_rate = 1e-2
    args.select_images = 10
    args.select_folds = 2
    args.select_f_depths = [1, 3]
    args.select_g_depths = [2]
    args.select_length_scales = [math.sqrt(2.0), 4.0]
    args.select_ridges = [1e-9, 1e-1]


def _check_args(args) -> None:
    """ValueError naming a bad f, draw or CG option (the estimators check the rest)."""
    if args.f_architecture not in F_ARCHITECTURES:
        raise ValueError(
            f"f_architecture must be one of {F_ARCHITECTURES}; got {args.f_architecture!r}."
        )
    for name, value, low in (("draws", args.draws, 1), ("cg_rank", args.cg_rank, 0)):
        if value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value}.")
    if not args.cg_tol > 0:
        raise ValueError(f"cg_tol must be positive; got {args.cg_tol}.")
    for size in [args.filter_size, *(args.select_filter_sizes or [])]:
        if size < 1 or size % 2 == 0:
            raise ValueError(f"filter_size must be a positive odd integer; got {size}.")


def _filter_sizes(args) -> list[int]:
    """The filter sizes of the selection grid (conv f; one placeholder for the dense f)."""
    if args.f_architecture != "conv":
        return [args.filter_size]
    return list(args.select_filter_sizes or [args.filter_size])


def _pixel_rows(images, task, args, **options):
    """:func:`pixel_regression` rows of ``images``; the conv f reads inpainting's x masked."""
    inpainting_x = "masked" if args.f_architecture == "conv" else "top-half"
    return pixel_regression(
        images, task=task, coordinates=args.coordinates, inpainting_x=inpainting_x, **options
    )


def _training_rows(images, task, args, random_state):
    """``pixels_per_image`` random pixels of each image: rows ``[x | z]`` and their values."""
    return _pixel_rows(
        images, task, args, pixels_per_image=args.pixels_per_image, random_state=random_state
    )


def _draw_states(args, seed) -> list[int]:
    """The random states of a split's ``draws`` training pixel draws."""
    return [1000 * seed + draw for draw in range(args.draws)]


def _union_rows(images, task, args, random_states):
    """The rows of one draw per entry of ``random_states``, stacked draw after draw."""
    draws = [_training_rows(images, task, args, state) for state in random_states]
    return np.vstack([U for U, _ in draws]), np.concatenate([y for _, y in draws])


def _selection_rows(images, task, args, random_state):
    """Rows a selection scores: one draw, or with ``--combine-draws union`` ``draws``
    draws stacked (the first the one-draw case's, the others seeded apart from it)."""
    if args.combine_draws != "union":
        return _training_rows(images, task, args, random_state)
    states = [random_state + 100_000 * draw for draw in range(args.draws)]
    return _union_rows(images, task, args, states)


def _fit_predict_kernel(train_images, test_images, task, kernel, encoding, params, args, seed):
    """The kernel regression prediction of all test pixels from ``draws`` pixel draws:
    the mean of one regression per draw, or one regression on all draws' rows
    (``--combine-draws union``)."""
    U_test, y_test = _pixel_rows(test_images, task, args)
    f_kwargs = f_options(args, train_images.shape[1:], params["filter_size"])
    states = _draw_states(args, seed)
    if args.combine_draws == "union":
        U, y = _union_rows(train_images, task, args, states)
        model = _regressor(kernel, encoding, params, f_kwargs, _solver_options(len(y), args))
        return model.fit(U, y).predict(U_test), y_test
    predictions = []
    for state in states:
        U, y = _training_rows(train_images, task, args, state)
        model = _regressor(kernel, encoding, params, f_kwargs)
        predictions.append(model.fit(U, y).predict(U_test))
    return np.mean(predictions, axis=0), y_test


def _solver_options(n_rows: int, args) -> dict:
    """The exact solver for ``n_rows``: the estimator's default (Cholesky) while the Gram
    fits ``auto_cholesky_max_gram_bytes``, preconditioned CG beyond it (never Nystrom's
    approximation, which ``solver="auto"`` would choose there)."""
    if cholesky_fits(n_rows):
        return {}
    return {"solver": "cg", "tol": args.cg_tol, "cg_rank": args.cg_rank}


def _cached(cache, data, kernel, encoding, params, args, seed):
    """``_fit_predict_kernel``, once per distinct (kernel, encoding, values) in ``cache``;
    at f depth = g depth = 1 the two kernels are the same (tested), fitted once; at f depth 1
    the conv f is its dense readout, whatever the filter size."""
    same = params["f_depth"] == params["g_depth"] == 1
    values = {**params, "filter_size": params["filter_size"] if params["f_depth"] > 1 else 0}
    key = ("nngp" if same else kernel, encoding) + tuple(values[name] for name in PARAM_NAMES)
    if key not in cache:
        cache[key] = _fit_predict_kernel(*data, kernel, encoding, params, args, seed)
    return cache[key]


def _regressor(kernel, encoding, params, f_kwargs, solver_kwargs=None):
    """The paper's kernel regression: ridge ``params['ridge']`` times the mean Gram diagonal,
    raw x and targets (``normalize_x=False, normalize_y=False``), no biases; f as in
    ``f_kwargs`` (:func:`._common.f_options`), the solver as in ``solver_kwargs``."""
    return HyperKernelRegressor(
        kernel,
        alpha=params["ridge"],
        alpha_scale="relative",
        z_dim=2,
        f_depth=params["f_depth"],
        g_depth=params["g_depth"],
        z_encoding=encoding,
        length_scale=params["length_scale"],
        f_bias_variance=0.0,
        g_bias_variance=0.0,
        normalize_x=False,
        normalize_y=False,
        **f_kwargs,
        **(solver_kwargs or {}),
    )


def _kernel(kernel, encoding, f_depth, g_depth, length_scale, f_kwargs):
    kernel_class = HyperKernel if kernel == "ntk" else HyperNNGP
    return kernel_class(
        z_dim=2,
        f_depth=f_depth,
        g_depth=g_depth,
        z_encoding=encoding,
        length_scale=length_scale,
        f_bias_variance=0.0,
        g_bias_variance=0.0,
        normalize_x=False,
        **f_kwargs,
    )


def _grid_grams(U, kernel, encoding, args, image_shape):
    """(f_depth, g_depth, length_scale, filter_size) of the grid and the Gram of ``U`` under
    each; the filter size varies only for the conv f deeper than 1 (at f depth 1 it is unused)."""
    length_scales = args.select_length_scales if encoding == "fourier" else [1.0]
    for f_depth, g_depth, length_scale in itertools.product(
        args.select_f_depths, args.select_g_depths, length_scales
    ):
        for filter_size in _filter_sizes(args) if f_depth > 1 else _filter_sizes(args)[:1]:
            f_kwargs = f_options(args, image_shape, filter_size)
            gram = _kernel(kernel, encoding, f_depth, g_depth, length_scale, f_kwargs)(U)
            point = (f_depth, g_depth, length_scale, filter_size)
            yield point, np.asarray(gram, dtype=np.float64)


def log_marginal_likelihoods(gram, y, ridges):
    """GP log marginal likelihood of ``y`` under ``c * gram + c * r * d * I``, c profiled out.

    ``d`` is the mean of the Gram diagonal and ``r`` runs over ``ridges``; the
    scale ``c`` takes its maximum-likelihood value ``y' (gram + r d I)^-1 y / n``.
    The value for each ridge equals sklearn's ``GaussianProcessRegressor``
    (``normalize_y=False``) log marginal likelihood with the kernel
    ``ConstantKernel(c) * K + WhiteKernel(c * r * d)``, whose posterior mean is
    the kernel ridge regression with relative ridge ``r``.
    """
    n = len(y)
    eigenvalues, vectors = eigh(gram)
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    projections = vectors.T @ y
    diagonal = float(np.mean(np.diag(gram)))
    values = []
    for ridge in ridges:
        shifted = eigenvalues + ridge * diagonal
        scale = float(np.sum(projections**2 / shifted)) / n
        values.append(
            -0.5 * n * math.log(scale)
            - 0.5 * float(np.sum(np.log(shifted)))
            - 0.5 * n * (1.0 + math.log(2.0 * math.pi))
        )
    return np.array(values)


def _cv_errors(gram, y, folds, ridges):
    """Grouped-CV MSE of kernel ridge regression, one per relative ridge."""
    errors = np.zeros(len(ridges))
    for train, valid in folds:
        train_gram = gram[np.ix_(train, train)]
        eigenvalues, vectors = eigh(train_gram)
        eigenvalues = np.clip(eigenvalues, 0.0, None)
        projections = vectors.T @ y[train]
        cross = gram[np.ix_(valid, train)] @ vectors
        diagonal = float(np.mean(np.diag(train_gram)))
        for i, ridge in enumerate(ridges):
            prediction = cross @ (projections / (eigenvalues + ridge * diagonal))
            errors[i] += np.mean((prediction - y[valid]) ** 2) / len(folds)
    return errors


def _ridge_scores(gram, y, n_images, method, args):
    """Score of each ridge of ``args.select_ridges`` (higher is better) on one Gram.

    ``method="cv"``: minus the grouped-CV MSE, folds of whole images (the rows of
    an image are consecutive, ``pixels_per_image`` each, and with
    ``--combine-draws union`` the draws follow each other in the same image
    order); ``method="ml"``: the GP log marginal likelihood.
    """
    if method == "ml":
        return log_marginal_likelihoods(gram, y, args.select_ridges)
    groups = np.repeat(np.arange(n_images), args.pixels_per_image)
    groups = np.tile(groups, len(y) // len(groups))  # union rows: draw after draw
    splitter = GroupKFold(n_splits=min(args.select_folds, n_images))
    folds = list(splitter.split(gram, y, groups))
    return -_cv_errors(gram, y, folds, args.select_ridges)


def _select(train_images, task, kernel, encoding, method, args, seed):
    """Grid point chosen on (at most ``select_images``) training images, and its score.

    ``method="cv"``: the lowest grouped-CV MSE (folds = whole images);
    ``method="ml"``: the highest GP log marginal likelihood. With
    ``args.select_ridge_images`` above ``select_images``, the ridge alone is
    then chosen again, by the same method with the other values kept, on the
    first ``min(N, select_ridge_images)`` training images (a ridge chosen on
    few images can be too large for many); ``n_ridge_images`` records how
    many; ``ridge_on_select_images`` the ridge it replaced.
    """
    chosen = _select_on_grid(train_images, task, kernel, encoding, method, args, seed)
    return _reselect_ridge(train_images, task, kernel, encoding, method, args, seed, chosen)


def _select_on_grid(train_images, task, kernel, encoding, method, args, seed):
    """The grid point of :func:`_select`, on the first ``select_images`` training images."""
    images = train_images[: args.select_images]
    U, y = _selection_rows(images, task, args, 10_000 + seed)
    best = None
    grid = _grid_grams(U, kernel, encoding, args, images.shape[1:])
    for (f_depth, g_depth, length_scale, filter_size), gram in grid:
        scores = _ridge_scores(gram, y, len(images), method, args)
        i = int(np.argmax(scores))
        if best is None or scores[i] > best[0]:
            params = {
                "f_depth": f_depth,
                "g_depth": g_depth,
                "length_scale": length_scale,
                "ridge": args.select_ridges[i],
                "filter_size": filter_size,
            }
            best = (float(scores[i]), params)
    return {**best[1], "score": best[0], "n_images": len(images), "n_ridge_images": len(images)}


def _reselect_ridge(train_images, task, kernel, encoding, method, args, seed, chosen):
    """``chosen`` (of :func:`_select_on_grid`) with the ridge chosen again on the first
    ``select_ridge_images`` training images, if they are more than it was chosen on."""
    chosen = dict(chosen)
    ridge_images = train_images[: args.select_ridge_images]
    if len(ridge_images) > chosen["n_images"]:
        U, y = _selection_rows(ridge_images, task, args, 20_000 + seed)
        f_kwargs = f_options(args, ridge_images.shape[1:], chosen["filter_size"])
        values = [chosen[name] for name in ("f_depth", "g_depth", "length_scale")]
        gram = np.asarray(_kernel(kernel, encoding, *values, f_kwargs)(U), dtype=np.float64)
        scores = _ridge_scores(gram, y, len(ridge_images), method, args)
        chosen["ridge_on_select_images"] = chosen["ridge"]
        chosen["ridge"] = args.select_ridges[int(np.argmax(scores))]
        chosen["n_ridge_images"] = len(ridge_images)
    return chosen


def paper_hypernetwork(args, random_state, image_shape=None):
    """The trained hypernetwork of the table: the paper's network on the raw rows.

    With ``args.f_architecture == "conv"`` f is convolutional (``args.hn_f_width``
    channels, ``args.filter_size`` filters) on images of ``image_shape``.
    """
    from ..hypernetwork import HypernetworkRegressor

    return HypernetworkRegressor(
        z_dim=2,
        f_depth=args.f_depth,
        f_width=args.hn_f_width,
        g_depth=args.g_depth,
        g_width=args.hn_g_width,
        z_encoding="fourier",
        length_scale=args.length_scale,
        n_fourier_features=256,
        parameterization="ntk",
        normalize_x=False,
        normalize_y=False,
        dtype="float32",
        optimizer=args.hn_optimizer,
        learning_rate=args.hn_learning_rate,
        batch_size=100,
        max_epochs=args.hn_epochs,
        n_iter_no_change=max(args.hn_epochs, 1),
        random_state=random_state,
        device="cpu",
        **f_options(args, image_shape, args.filter_size),
    )


def _fit_predict_hypernetwork(train_images, test_images, task, args, seed):
    """The trained hypernetwork's prediction: trained once, on the first draw's rows, or on
    all draws' rows with ``--combine-draws union``."""
    if args.combine_draws == "union":
        U, y = _union_rows(train_images, task, args, _draw_states(args, seed))
    else:
        U, y = _training_rows(train_images, task, args, _draw_states(args, seed)[0])
    U_test, y_test = _pixel_rows(test_images, task, args)
    model = paper_hypernetwork(args, seed, train_images.shape[1:])
    model.fit(U, y)
    return np.clip(model.predict(U_test), 0.0, 1.0), y_test


def run(args) -> dict:
    """Run the experiment described by parsed ``args``; returns the results dictionary."""
    _check_args(args)
    clock = Clock()
    images, _ = load_images(args.source)
    n_needed = max(args.sizes) + args.n_test
    if n_needed > len(images):
        raise ValueError(f"{n_needed} images needed, the source has {len(images)}.")
    base = {
        "f_depth": args.f_depth,
        "g_depth": args.g_depth,
        "length_scale": args.length_scale,
        "ridge": args.ridge,
        "filter_size": args.filter_size,
    }
    errors: dict[str, list] = {}
    selected_params: dict[str, list] = {}
    pictures = {}
    methods = [] if args.no_select else list(args.select_methods)

    def record(key, value):
        errors.setdefault(key, []).append(float(value))

    for seed in range(args.first_seed, args.first_seed + args.seeds):
        order = np.random.RandomState(seed).permutation(len(images))
        test_images = images[order[: args.n_test]]
        pool = images[order[args.n_test :]]
        for task in args.tasks:
            selections = {}  # (kernel, method, images used) -> chosen values
            for n_train in args.sizes:
                train_images = pool[:n_train]
                show = seed == args.first_seed and n_train == max(args.sizes)  # Fig. 3
                # (kernel, encoding, values) -> prediction: a selected point equal to
                # the fixed one, or to the other method's, is fitted once
                cache = {}
                data = (train_images, test_images, task)
                mean_mse = np.mean((train_images.mean() - test_images) ** 2)
                record(f"{task}|mean-predictor|-|{n_train}", mean_mse)
                if show:
                    pictures[(task, "mean predictor")] = np.full(
                        test_images.size, train_images.mean()
                    )
                fixed = [] if args.no_fixed else args.encodings
                for kernel, encoding in itertools.product(args.kernels, fixed):
                    prediction, y_test = _cached(cache, data, kernel, encoding, base, args, seed)
                    record(
                        f"{task}|{KERNEL_NAMES[kernel]}|{encoding}|{n_train}",
                        np.mean((prediction - y_test) ** 2),
                    )
                    if show and encoding == "fourier":
                        pictures[(task, KERNEL_NAMES[kernel])] = prediction
                for kernel, method in itertools.product(args.kernels, methods):
                    if method == "ml" and kernel != "nngp":
                        continue
                    # the grid's choice on min(N, select_images) images, then its ridge on
                    # min(N, select_ridge_images): each computed once per distinct count
                    grid_key = (kernel, method, min(n_train, args.select_images))
                    if grid_key not in selections:
                        selections[grid_key] = _select_on_grid(
                            train_images, task, kernel, "fourier", method, args, seed
                        )
                    key = (*grid_key, min(n_train, args.select_ridge_images))
                    if key not in selections:
                        selections[key] = _reselect_ridge(
                            train_images,
                            task,
                            kernel,
                            "fourier",
                            method,
                            args,
                            seed,
                            selections[grid_key],
                        )
                    chosen = selections[key]
                    selected_params.setdefault(
                        f"{task}|{KERNEL_NAMES[kernel]}|selected-{method}|{n_train}", []
                    ).append(chosen)
                    prediction, y_test = _cached(cache, data, kernel, "fourier", chosen, args, seed)
                    if show:
                        pictures[(task, f"{KERNEL_NAMES[kernel]}, selected-{method}")] = prediction
                    record(
                        f"{task}|{KERNEL_NAMES[kernel]}|selected-{method}|{n_train}",
                        np.mean((prediction - y_test) ** 2),
                    )
                if args.hn_epochs > 0:
                    prediction, y_test = _fit_predict_hypernetwork(
                        train_images, test_images, task, args, seed
                    )
                    record(
                        f"{task}|hypernetwork|fourier|{n_train}",
                        np.mean((prediction - y_test) ** 2),
                    )
                    if show:
                        pictures[(task, "hypernetwork")] = prediction
                done = ", ".join(
                    f"{key.split('|')[1]} {key.split('|')[2]} {values[-1]:.4f}"
                    for key, values in errors.items()
                    if key.startswith(f"{task}|") and key.endswith(f"|{n_train}")
                )
                print(f"{clock} seed {seed} {task} N={n_train} done: {done}", flush=True)
        if seed == args.first_seed:
            pictures["test_images"] = test_images
    return {
        "errors": errors,
        "selected_params": selected_params,
        "pictures": pictures,
        "seconds": float(str(clock).strip("[]s")),
    }


def _f_label(args) -> str:
    """``dense``, or ``conv k x k`` with the filter size."""
    if args.f_architecture != "conv":
        return "dense"
    return f"conv {args.filter_size}x{args.filter_size}"


def _draws_label(args) -> str:
    """How the draws' pixels make a prediction."""
    if args.combine_draws == "union":
        return "one regression on all draws' pixels"
    return "predictions averaged"


def _chosen_label(chosen: dict, args) -> str:
    """``(f_depth,g_depth,length scale,ridge[,filter size])`` of one selection."""
    values = f"{chosen['f_depth']},{chosen['g_depth']},{chosen['length_scale']:.3g}"
    values += f",{chosen['ridge']:g}"
    if args.f_architecture == "conv":
        values += f",{chosen['filter_size']}"
    return f"({values})"


def _cell(values) -> str:
    """``mean ± std`` over seeds; a single value has no spread to show."""
    values = np.asarray(values)
    if values.size == 1:
        return f"{values.mean():.4f}"
    return f"{values.mean():.4f} ± {values.std():.4f}"


def _same_row_note(results: dict, keys: list[str], earlier: str | None, task: str) -> str:
    """The note of a table row whose every value equals the ``earlier`` row's ('' if none).

    Selections that all chose f_depth = g_depth = 1 say why: there the
    hyperkernel and the hyper-NNGP are the same kernel (docs/results.md).
    """
    if earlier is None:
        return ""
    model, method = earlier.split(" ")
    chosen = [
        choice
        for key in keys + [f"{task}|{model}|{method}|{key.rsplit('|', 1)[1]}" for key in keys]
        for choice in results["selected_params"].get(key, [None])
    ]
    if all(c is not None and (c["f_depth"], c["g_depth"]) == (1, 1) for c in chosen):
        return f"= {earlier} (all chose depth (1, 1), where the two kernels are one)"
    return f"= {earlier}"


def _fixed_label(args) -> str:
    """The fixed settings the run used: those of the kernel rows at fixed settings and of the
    trained hypernetwork (the same length scale and depths); none when neither ran."""
    shared = (
        f"Fourier length scale={args.length_scale:.4g}, "
        f"f_depth={args.f_depth}, g_depth={args.g_depth}, "
    )
    if not args.no_fixed:
        return shared + f"ridge={args.ridge:g} x diag, "
    if args.hn_epochs > 0:
        return "no kernel rows at fixed settings, the hypernetwork's " + shared
    return "no rows at fixed settings, "


def markdown_table(results: dict, args) -> str:
    """Markdown of our MSEs (mean ± std over seeds) beside the paper's."""
    errors = results["errors"]
    lines = [
        f"Test MSE over all pixels of {args.n_test} held-out images, "
        + (
            f"mean ± std over {args.seeds} seeds "
            if args.seeds > 1
            else "one seed (no error bars) "
        )
        + f"(source={args.source}, {args.pixels_per_image} pixels per training image, "
        f"coordinates={args.coordinates}, f={_f_label(args)}, {_fixed_label(args)}"
        + f"draws={args.draws} ({_draws_label(args)}), hypernetwork epochs={args.hn_epochs}).",
        "",
    ]
    for task in args.tasks:
        header = "| model | z encoding | " + " | ".join(f"N={n}" for n in args.sizes) + " | note |"
        lines += [f"### {task}", "", header, "|" + "---|" * (len(args.sizes) + 3)]
        columns = args.encodings + [f"selected-{m}" for m in SELECT_METHODS]
        rows = [("mean-predictor", "-"), *itertools.product(KERNEL_NAMES.values(), columns)]
        rows += [("hypernetwork", "fourier")]
        shown: dict[tuple, str] = {}  # the values of each row -> its name
        for model, encoding in rows:
            keys = [f"{task}|{model}|{encoding}|{n}" for n in args.sizes]
            if keys[0] not in errors:
                continue
            cells = [_cell(errors[key]) for key in keys]
            values = tuple(tuple(errors[key]) for key in keys)
            note = _same_row_note(results, keys, shown.get(values), task)
            shown.setdefault(values, f"{model} {encoding}")
            lines.append(f"| {model} | {encoding} | " + " | ".join(cells) + f" | {note} |")
        for model in ("hyperkernel", "hyper-nngp", "hypernetwork"):
            paper = dict(zip(PAPER_SIZES, PAPER_TABLE1[(model, task)], strict=True))
            if any(n in paper for n in args.sizes):
                cells = [f"{paper[n]:g}" if n in paper else "" for n in args.sizes]
                lines.append(f"| paper: {model} | | " + " | ".join(cells) + " | |")
        paper = "; ".join(
            f"{model} " + "/".join(f"{v:g}" for v in PAPER_TABLE1[(model, task)])
            for model in ("hyperkernel", "hyper-nngp", "hypernetwork")
        )
        lines += ["", f"The paper's Table 1 ({task}, N = 50/100/200/500): {paper}.", ""]
    if results["selected_params"]:
        lines += [
            "Selected values (per seed; on the first min(N, "
            f"{args.select_images}) training images only, never a test image; "
            f"cv: {args.select_folds}-fold CV grouped by image, ml: GP log marginal likelihood) "
            f"over f_depth {args.select_f_depths}, g_depth {args.select_g_depths}, "
            f"length scale {[round(v, 4) for v in args.select_length_scales]}, "
            f"relative ridge {args.select_ridges}"
            + (
                f", filter size {_filter_sizes(args)}, as (f_depth, g_depth, length scale, "
                "ridge, filter size):"
                if args.f_architecture == "conv"
                else ", as (f_depth, g_depth, length scale, ridge):"
            ),
            "",
        ]
        for key, chosen in results["selected_params"].items():
            summary = ", ".join(_chosen_label(p, args) for p in chosen)
            lines.append(f"- {key.replace('|', ', ')}: {summary}")
        lines.append("")
    return "\n".join(lines)


def _picture_columns(results: dict, task: str, n_train: int) -> list[tuple[str, np.ndarray, float]]:
    """The reconstructions of ``task`` to show: ``(title, prediction, test MSE)`` each.

    The mean predictor, both kernels at the paper's settings, each *distinct*
    selected model (a selection that predicted exactly what a column already
    shows is a line ``= ...`` in that column's title, not a column of its own)
    and the hypernetwork; the MSE is the first seed's over every pixel of the
    test images.
    """
    pictures, errors = results["pictures"], results["errors"]
    columns: list[list] = []

    def add(name, key, *lines):
        if (task, name) in pictures and key in errors:
            columns.append([list(lines), pictures[(task, name)], errors[key][0]])

    add("mean predictor", f"{task}|mean-predictor|-|{n_train}", "mean predictor")
    for kernel in KERNEL_NAMES.values():
        add(kernel, f"{task}|{kernel}|fourier|{n_train}", kernel, "(paper's settings)")
    for kernel, method in itertools.product(KERNEL_NAMES.values(), SELECT_METHODS):
        name, key = f"{kernel}, selected-{method}", f"{task}|{kernel}|selected-{method}|{n_train}"
        if (task, name) not in pictures:
            continue
        chosen = results["selected_params"][key][0]
        depths = (chosen["f_depth"], chosen["g_depth"])
        values = f"({depths[0]}, {depths[1]}, {chosen['length_scale']:.3g}, {chosen['ridge']:g})"
        same = [c for c in columns if np.array_equal(c[1], pictures[(task, name)])]
        if same:
            same[0][0].append(f"= {kernel} {method.upper()}-selected")
            continue
        lines = [f"{kernel} {method.upper()}-selected", values]
        if depths == (1, 1):
            lines.append("(depth 1: both kernels equal)")
        add(name, key, *lines)
    add("hypernetwork", f"{task}|hypernetwork|fourier|{n_train}", "trained hypernetwork")
    return [("\n".join(lines), prediction, mse) for lines, prediction, mse in columns]


def plot_reconstructions(results: dict, args, path: str, n_show: int = 4) -> None:
    """Fig. 3, explained: what each model predicts for held-out images, with its error.

    Per task, ``n_show`` test images (rows): the ground truth, the input of f
    (the whole image, or its top half for inpainting), then each model's
    reconstruction of all pixels (:func:`_picture_columns`), its test MSE in
    the column's title and the image's own MSE under each panel. One colour
    scale (pixel intensity 0 to 1) with its colour bar for every panel.
    """
    plt = pyplot()
    pictures, n_train = results["pictures"], max(args.sizes)
    truth = pictures["test_images"][:n_show]
    shape, half = truth.shape[1:], truth.shape[1] // 2
    tasks = {task: _picture_columns(results, task, n_train) for task in args.tasks}
    n_cols = 2 + max(len(columns) for columns in tasks.values())
    n_rows = len(args.tasks) * len(truth)
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(1.45 * n_cols + 1.0, 1.55 * n_rows + 1.2),
        squeeze=False,
        layout="constrained",
    )
    image = None
    for t, task in enumerate(args.tasks):
        seen = "the whole image" if task == "representation" else "the top half"
        for i in range(len(truth)):
            row = axes[t * len(truth) + i]
            f_input = truth[i]
            if task != "representation":
                f_input = np.vstack([truth[i][:half], np.zeros_like(truth[i][half:])])
            panels = [("ground truth", truth[i], None), (f"input of f\n({seen})", f_input, None)]
            baseline = tasks[task][0][2] if tasks[task] else float("nan")  # the mean predictor's
            for title, prediction, mse in tasks[task]:
                panel = np.clip(prediction.reshape(-1, *shape)[i], 0.0, 1.0)
                own = float(np.mean((prediction.reshape(-1, *shape)[i] - truth[i]) ** 2))
                panels.append((f"{title}\nMSE {mse:.4f} = {mse / baseline:.2f} x mean", panel, own))
            for column, axis in enumerate(row):
                axis.set_xticks([])
                axis.set_yticks([])
                if column >= len(panels):
                    axis.set_axis_off()
                    continue
                title, panel, own = panels[column]
                image = axis.imshow(panel, cmap="gray", vmin=0.0, vmax=1.0)
                if own is not None:
                    axis.set_xlabel(f"this image {own:.3f}", fontsize=6)
                if i == 0:
                    axis.set_title(title, fontsize=6.5)
                if column == 0:
                    axis.set_ylabel(f"{task}\ntest image {i + 1}", fontsize=7)
    fig.colorbar(image, ax=axes, shrink=0.5, label="pixel intensity (0 black, 1 white)")
    fig.suptitle(
        f"Held-out MNIST images: each model learned from N={n_train} training images, "
        f"{args.pixels_per_image} random pixels each, and predicts all {truth[0].size} pixels\n"
        f"of images it never saw. Titles: test MSE over every pixel of the {args.n_test} test "
        f"images (seed {args.first_seed}; lower is better), and as a multiple of the mean "
        "predictor's,\nwhich paints every pixel the training images' mean; under each panel, "
        "that image's MSE. A selected model's values (f_depth, g_depth, length scale, ridge)\n"
        "were chosen on the training images only; a column that several selections predicted "
        "alike names them all.",
        fontsize=7.5,
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; writes table1.md, table1.json and table1_reconstructions.png."""
    args, out = parse_command(_parser(), _quick_overrides, argv)
    results = run(args)
    table = markdown_table(results, args)
    with open(os.path.join(out, "table1.md"), "w", encoding="utf-8") as handle:
        handle.write(f"# Table 1: pixel regression on {args.source}\n\n" + table)
    write_json(
        os.path.join(out, "table1.json"),
        {
            "args": vars(args),
            "errors": results["errors"],
            "selected_params": results["selected_params"],
            "seconds": results["seconds"],
        },
    )
    plot_reconstructions(results, args, os.path.join(out, "table1_reconstructions.png"))
    print(table)
    print(
        f"wrote {out}/table1.md, table1.json, table1_reconstructions.png "
        f"in {results['seconds']:.0f} s"
    )
    return 0
