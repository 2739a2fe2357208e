"""The paper's Fig. 2: rotation prediction with trained hypernetworks.

Task (:func:`sklearn_hyperkernel.datasets.make_rotation_task`, the paper's
Sec. 5.2): x is a randomly rotated image, z a further rotated copy, the class
is the nearest multiple of 30 degrees of the extra rotation (12 classes). A
:class:`~sklearn_hyperkernel.HypernetworkClassifier` (``f`` of depth 4 and
width 200, ``g`` of each depth and width of the grid) is trained by SGD
(learning rate 0.01, batch 100, no momentum), one :meth:`partial_fit` epoch at
a time, and its test accuracy recorded after every epoch; every configuration
is run for ``--seeds`` random splits, and the figure shows the mean and the
standard deviation over them.

The defaults are the paper's settings: f 4 x 200, g depth 3, 6, 8 and width
10, 50, 100, SGD at 0.01 with batch 100, 100 epochs, 100 runs per
configuration. The paper trains on 10,000 MNIST images; the offline MNIST has
5,000, of which ``--test-images`` (1,000) are held out for the test rows and
the others are the training images: each epoch draws one freshly rotated row
per training image (``--n-train`` changes that number), like the authors' data
loader.

Two choices make the network learn at the paper's learning rate (with the
package's earlier defaults it stayed at chance level):

* ``--parameterization standard`` (default): weights ``N(0, 1/fan_in)`` and
  no layer multiplier, as the ``torch.nn.Linear`` layers of the authors'
  code. Under the NTK parameterisation an SGD step at learning rate ``lr`` is
  a standard step at ``lr / fan_in`` in each layer of ``f``, so 0.01 leaves it
  at chance level for many epochs.
* Fresh rotations every epoch (default; ``--fixed-rotations`` turns it off).

``--architecture authors`` trains the finite model of the authors' code
instead (a 100-unit layer before ``f``'s output, biases, ``g`` with one relu
and no ``1/sqrt(fan_in)``), whose steps grow with ``g``'s width.

Any image array can be used instead of MNIST (CIFAR-10 in the paper, which
cannot be had offline): ``main([options], images=array)`` (or
``run(args, images=array)``) with ``array`` of shape ``(n_images, height,
width)`` or ``(n_images, height, width, channels)``, values in ``[0, 1]``.

Run ``python -m sklearn_hyperkernel.experiments fig2 --help``.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
from sklearn.utils import check_random_state

from ..datasets import load_images, make_rotation_task
from ._common import Clock, base_parser, parse_command, pyplot, save_figure, write_json

__all__ = ["main", "rotation_rows", "run"]


def _parser():
    parser = base_parser(__doc__.split("\n")[0], "fig2")
    add = parser.add_argument
    add("--source", default="mnist", choices=("mnist", "digits"))
    add(
        "--n-train",
        type=int,
        default=None,
        help="Training rows (freshly rotated) per epoch; default one per training image.",
    )
    add("--test-images", type=int, default=1000, help="Images held out for the test rows.")
    add("--n-test", type=int, default=None, help="Test rows; default one per test image.")
    add("--epochs", type=int, default=100, help="The paper's.")
    add("--seeds", type=int, default=100, help="Runs (random splits and initialisations).")
    add("--first-seed", type=int, default=0, help="Seeds run: first-seed, ..., +seeds-1.")
    add("--g-depths", type=int, nargs="+", default=[3, 6, 8], help="The paper's.")
    add("--g-widths", type=int, nargs="+", default=[10, 50, 100], help="The paper's (MNIST).")
    add("--f-depth", type=int, default=4, help="The paper's.")
    add("--f-width", type=int, default=200, help="The paper's.")
    add("--learning-rate", type=float, default=0.01, help="SGD step (the paper's).")
    add("--momentum", type=float, default=0.0, help="SGD momentum (the paper: plain SGD).")
    add("--batch-size", type=int, default=100, help="The paper's.")
    add(
        "--parameterization",
        default="standard",
        choices=("standard", "ntk"),
        help="Parameterisation of f. 'standard' (N(0, 1/fan_in) weights, as torch.nn.Linear "
        "in the authors' code) learns at lr 0.01; under 'ntk' an SGD step moves the network "
        "about fan_in times less per layer and lr 0.01 stays at chance.",
    )
    add(
        "--fixed-rotations",
        action="store_true",
        help="Draw the training rotations once; by default every epoch draws new random "
        "angles for the training images (as the authors' data loader does), so the network "
        "sees new rows each epoch instead of memorising a fixed set.",
    )
    add(
        "--architecture",
        default="package",
        choices=("package", "authors"),
        help="'package': HypernetworkClassifier (the paper's model: relu in every layer of g, "
        "each layer of g divided by sqrt(fan_in)); 'authors': the authors' code's finite "
        "model (f with biases and a 100-unit layer before its output, g with a relu after its "
        "first layer only and no 1/sqrt(fan_in), inputs (pixel - 0.1307) / 0.3081), trained "
        "by torch.optim.SGD.",
    )
    add(
        "--raw-inputs",
        action="store_true",
        help="Feed raw pixels; by default x and z are each rescaled to norm sqrt(n_pixels), "
        "so that z.z'/m0 is of order 1 (with raw pixels the logits start near zero and SGD "
        "barely moves).",
    )
    return parser


def _quick_overrides(args) -> None:
    """CI size: one seed, 8 epochs of 2,000 fresh rows, f width 100, g 3 x 10 and 6 x 10.

    Plain SGD at lr 0.01 needs a few hundred steps to leave chance level; the
    quick run has 160, so it adds momentum 0.9 (the paper: none) to learn
    within seconds.
    """
    args.n_train = 2000
    args.n_test = 300
    args.test_images = 300
    args.epochs = 8
    args.seeds = 1
    args.g_depths = [3, 6]
    args.g_widths = [10]
    args.f_width = 100
    args.momentum = 0.9


def _rescale(U: np.ndarray, z_dim: int) -> np.ndarray:
    """Scale the x part and the z part of each row to norm ``sqrt(z_dim)``."""
    scaled = []
    for part in (U[:, :-z_dim], U[:, -z_dim:]):
        norms = np.linalg.norm(part, axis=1, keepdims=True)
        scaled.append(
            np.divide(
                part * np.sqrt(part.shape[1]), norms, out=np.zeros_like(part), where=norms > 0
            )
        )
    return np.hstack(scaled)


def rotation_rows(images, n_rows: int, random_state=None) -> tuple[np.ndarray, np.ndarray]:
    """Rotation-task rows of grey or colour images.

    Parameters
    ----------
    images : array-like of shape (n_images, height, width) or (n_images, height, width, channels)
        Values in ``[0, 1]``.
    n_rows : int
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    U : ndarray of shape (n_rows, 2 * height * width * channels)
        ``[x | z]``, each flattened channel after channel; ``z_dim`` is half
        the columns.
    y : ndarray of shape (n_rows,)
        Angle class in ``0..11``.

    Raises
    ------
    ValueError
        If ``images`` is not 3- or 4-dimensional.

    Notes
    -----
    Grey images go to :func:`~sklearn_hyperkernel.datasets.make_rotation_task`;
    for colour images each channel goes to it with the same random state, so
    every channel of a row is rotated by the same angles.
    """
    images = np.asarray(images, dtype=float)
    if images.ndim == 3:
        return make_rotation_task(images, n_rows, random_state=random_state)
    if images.ndim != 4:
        raise ValueError(
            f"images must have shape (n_images, height, width[, channels]); got {images.shape}."
        )
    rng = np.random.RandomState(check_random_state(random_state).randint(2**31 - 1))
    state = rng.get_state()
    parts = []
    for channel in range(images.shape[3]):
        rng.set_state(state)
        parts.append(make_rotation_task(images[..., channel], n_rows, random_state=rng))
    y = parts[0][1]
    n_pixels = images.shape[1] * images.shape[2]
    x = np.hstack([U[:, :n_pixels] for U, _ in parts])
    z = np.hstack([U[:, n_pixels:] for U, _ in parts])
    return np.hstack([x, z]), y


def _authors_trainer(args, g_depth: int, g_width: int, z_dim: int, seed: int):
    """``(train_epoch, score)`` of the finite model of the authors' code (its ``Hypernet``).

    ``f``: ``Linear(x, f_width)``, ``f_depth - 2`` layers ``Linear(f_width, f_width)``,
    ``Linear(f_width, 100)``, each with a relu, then ``Linear(100, n_generated)``; torch's
    default initialisation, biases. ``g``: relu after its first layer only, linear after,
    no ``1/sqrt(fan_in)``. Plain ``torch.optim.SGD`` on the cross-entropy, as their code.
    """
    import torch

    class Network(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            n_generated = z_dim * g_width + (g_depth - 2) * g_width**2 + g_width * 12
            widths = [z_dim] + [args.f_width] * (args.f_depth - 1) + [100]
            layers = []
            for fan_in, fan_out in itertools.pairwise(widths):
                layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.ReLU()]
            self.f = torch.nn.Sequential(*layers, torch.nn.Linear(100, n_generated))

        def forward(self, x, z):
            weights, start, a = self.f(x), 0, z
            shapes = [(g_width, z_dim)] + [(g_width, g_width)] * (g_depth - 2) + [(12, g_width)]
            for layer, (rows, cols) in enumerate(shapes):
                matrix = weights[:, start : start + rows * cols].reshape(-1, rows, cols)
                a = torch.bmm(matrix, a.unsqueeze(-1)).squeeze(-1)
                a = torch.relu(a) if layer == 0 else a
                start += rows * cols
            return a

    torch.manual_seed(seed)
    network = Network()
    optimizer = torch.optim.SGD(network.parameters(), lr=args.learning_rate, momentum=args.momentum)

    def train_epoch(U, y):
        U, y = torch.from_numpy(U), torch.from_numpy(y)
        order = torch.randperm(len(y))
        for start in range(0, len(y), args.batch_size):
            batch = order[start : start + args.batch_size]
            optimizer.zero_grad()
            logits = network(U[batch, :-z_dim], U[batch, -z_dim:])
            torch.nn.functional.cross_entropy(logits, y[batch]).backward()
            optimizer.step()

    def score(U, y):
        with torch.no_grad():
            logits = network(torch.from_numpy(U[:, :-z_dim]), torch.from_numpy(U[:, -z_dim:]))
        return float(np.mean(logits.argmax(1).numpy() == y))

    return train_epoch, score


def _model(args, g_depth: int, g_width: int, z_dim: int, seed: int):
    from ..hypernetwork import HypernetworkClassifier

    return HypernetworkClassifier(
        z_dim=z_dim,
        f_depth=args.f_depth,
        f_width=args.f_width,
        g_depth=g_depth,
        g_width=g_width,
        optimizer="sgd",
        learning_rate=args.learning_rate,
        momentum=args.momentum,
        batch_size=args.batch_size,
        parameterization=args.parameterization,
        # the paper's g reads the rotated image itself; rows are already rescaled
        z_encoding="linear",
        normalize_x=False,
        dtype="float32",
        random_state=seed,
        device="cpu",
        n_jobs=1,
    )


def run(args, images=None, checkpoint=None) -> dict:
    """Train every (g depth, g width) for every seed; test accuracy after each epoch.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed options of the command (``_parser().parse_args([...])``).
    images : array-like of shape (n_images, height, width[, channels]), default=None
        Images with values in ``[0, 1]``, e.g. CIFAR-10 as the paper's second
        data set; ``None`` loads ``args.source``. Seed ``s`` shuffles them with
        ``RandomState(s)``, holds out the first ``args.test_images`` for the
        test rows and trains on the others.
    checkpoint : callable or None, default=None
        Called with the results so far after every finished run.

    Returns
    -------
    dict
        ``accuracy``: for each ``"<g depth>x<g width>"`` a list (one per seed)
        of test accuracies per epoch; ``run_seconds`` the same shape, one
        number per run; ``seconds``, ``z_dim``, ``n_train``, ``n_test``,
        ``seeds``.

    Raises
    ------
    ValueError
        If ``images`` has fewer images than ``args.test_images`` + 1.
    """
    clock = Clock()
    if images is None:
        images, _ = load_images(args.source)
    images = np.asarray(images, dtype=float)
    if len(images) <= args.test_images:
        raise ValueError(
            f"test_images={args.test_images} leaves no training image of {len(images)}."
        )
    z_dim = int(np.prod(images.shape[1:]))
    n_train = args.n_train or len(images) - args.test_images
    n_test = args.n_test or args.test_images
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    results = {"accuracy": {}, "run_seconds": {}, "z_dim": z_dim, "n_train": n_train}
    results.update(n_test=n_test, seeds=seeds, n_images=len(images))

    def rows(pool, n_rows, random_state):
        U, y = rotation_rows(pool, n_rows, random_state=random_state)
        if args.architecture == "authors":  # their data loader's normalisation
            return ((U - 0.1307) / 0.3081).astype(np.float32), y
        return (U if args.raw_inputs else _rescale(U, z_dim)).astype(np.float32), y

    print(
        f"{clock} {len(images)} images, {args.test_images} held out; {n_train} training rows "
        f"per epoch ({'fixed' if args.fixed_rotations else 'fresh'} rotations), {n_test} "
        f"test rows, z_dim={z_dim}, seeds {seeds}",
        flush=True,
    )
    # seed by seed, so that a run stopped early has the same number of runs of every g
    for seed in seeds:
        order = np.random.RandomState(seed).permutation(len(images))
        test_pool = images[order[: args.test_images]]
        train_pool = images[order[args.test_images :]]
        U_test, y_test = rows(test_pool, n_test, seed + 1)
        for g_depth, g_width in itertools.product(args.g_depths, args.g_widths):
            key = f"{g_depth}x{g_width}"
            start = Clock()
            if args.architecture == "authors":
                train_epoch, score = _authors_trainer(args, g_depth, g_width, z_dim, seed)
            else:
                model = _model(args, g_depth, g_width, z_dim, seed)
                score = model.score

                def train_epoch(U, y, model=model):
                    model.partial_fit(U, y, classes=np.arange(12))

            # epoch e's rotations come from one stream seeded by the seed, the same
            # for every configuration (epoch 0 alone with --fixed-rotations)
            stream = np.random.RandomState(seed)
            curve = []
            for epoch in range(args.epochs):
                if epoch == 0 or not args.fixed_rotations:
                    U, y = rows(train_pool, n_train, stream)
                train_epoch(U, y)
                curve.append(float(score(U_test, y_test)))
            seconds = float(str(start).strip("[]s"))
            results["accuracy"].setdefault(key, []).append(curve)
            results["run_seconds"].setdefault(key, []).append(seconds)
            results["seconds"] = float(str(clock).strip("[]s"))
            print(
                f"{clock} g {key} seed {seed} ({seconds:.0f} s): accuracy per epoch "
                + " ".join(f"{a:.3f}" for a in curve),
                flush=True,
            )
            if checkpoint is not None:
                checkpoint(results)
    return results


def reduction_note(args, results: dict) -> str:
    """What this run used, against the paper's setting."""
    rotations = (
        "fixed rotations drawn once" if args.fixed_rotations else "fresh rotations each epoch"
    )
    if args.architecture == "authors":
        model = "the authors' finite model, inputs (pixel - 0.1307) / 0.3081"
    else:
        inputs = "raw" if args.raw_inputs else "rescaled to norm sqrt(n_pixels)"
        model = f"{args.parameterization} parameterisation, inputs {inputs}"
    return (
        f"{results['n_train']} training rows per epoch ({rotations})"
        f" from the {results['n_images'] - args.test_images} training images, "
        f"{results['n_test']} test rows from {args.test_images} held-out images "
        f"(source: {args.source}), {args.epochs} epochs, {len(results['seeds'])} seed(s) "
        f"per configuration, f depth {args.f_depth} width {args.f_width}, SGD lr "
        f"{args.learning_rate} momentum {args.momentum} batch {args.batch_size}, {model}. "
        "The paper: 10,000 training images (fresh rotations each epoch), 100 epochs, "
        "100 runs per configuration."
    )


def _summary(curves) -> tuple[np.ndarray, np.ndarray]:
    curves = np.asarray(curves)
    return curves.mean(axis=0), curves.std(axis=0)


def plot(results: dict, args, path: str) -> None:
    """Accuracy per epoch, one panel per g depth (as the paper), one line per g width.

    The band is one standard deviation over the seeds.
    """
    plt = pyplot()
    depths = [d for d in args.g_depths if any(k.startswith(f"{d}x") for k in results["accuracy"])]
    fig, axes = plt.subplots(
        1, len(depths), figsize=(3.6 * len(depths), 3.0), squeeze=False, sharey=True
    )
    for axis, g_depth in zip(axes[0], depths, strict=True):
        for g_width in args.g_widths:
            curves = results["accuracy"].get(f"{g_depth}x{g_width}")
            if not curves:
                continue
            mean, std = _summary(curves)
            epochs = np.arange(1, len(mean) + 1)
            (line,) = axis.plot(epochs, mean, label=f"width {g_width} ({len(curves)} runs)")
            axis.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        axis.axhline(1 / 12, color="grey", linestyle=":", label="chance")
        axis.set_title(f"g depth {g_depth}", fontsize=9)
        axis.set_xlabel("epoch")
        axis.set_ylabel("test accuracy")
        axis.legend(fontsize=7)
    fig.suptitle("rotation prediction: mean and std over seeds", fontsize=9)
    save_figure(fig, path)


def markdown(results: dict, args) -> str:
    """Table of mean ± std over seeds at a few epochs."""
    n_epochs = args.epochs
    shown = sorted({1, 2, 5, *range(10, n_epochs + 1, 10), n_epochs} & set(range(1, n_epochs + 1)))
    lines = [
        "# Fig. 2: rotation prediction, test accuracy (mean ± std over seeds)",
        "",
        reduction_note(args, results),
        "",
        "| g depth | g width | runs | s per run | "
        + " | ".join(f"epoch {e}" for e in shown)
        + " |",
        "|" + "---|" * (len(shown) + 4),
    ]
    for key, curves in results["accuracy"].items():
        mean, std = _summary(curves)
        g_depth, g_width = key.split("x")
        spread = len(curves) > 1  # one run: no spread to show
        cells = [f"{mean[e - 1]:.3f}" + (f" ± {std[e - 1]:.3f}" if spread else "") for e in shown]
        seconds = np.mean(results["run_seconds"][key])
        lines.append(
            f"| {g_depth} | {g_width} | {len(curves)} | {seconds:.0f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, images=None) -> int:
    """Command line entry point; writes fig2.md, fig2.json and fig2_accuracy.png.

    ``fig2.json`` is rewritten after every finished run, so an interrupted
    command leaves the runs it finished.

    Parameters
    ----------
    argv : list of str, default=None
        The command's options (``None``: ``sys.argv``).
    images : array-like of shape (n_images, height, width[, channels]), default=None
        Images to use instead of ``--source`` (e.g. CIFAR-10), values in
        ``[0, 1]``; see :func:`run`.
    """
    args, out = parse_command(_parser(), _quick_overrides, argv)

    def checkpoint(results):
        write_json(os.path.join(out, "fig2.json"), {"args": vars(args), **results})

    results = run(args, images=images, checkpoint=checkpoint)
    text = markdown(results, args)
    with open(os.path.join(out, "fig2.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    write_json(
        os.path.join(out, "fig2.json"),
        {"args": vars(args), "note": reduction_note(args, results), **results},
    )
    plot(results, args, os.path.join(out, "fig2_accuracy.png"))
    print(text)
    print(f"wrote {out}/fig2.md, fig2.json, fig2_accuracy.png in {results['seconds']:.0f} s")
    return 0
