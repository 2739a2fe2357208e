"""The paper's Fig. 2 at CPU scale: rotation prediction with trained hypernetworks.

Task (:func:`sklearn_hyperkernel.datasets.make_rotation_task`, the paper's
Sec. 5.2): x is a randomly rotated MNIST image, z a further rotated copy, the
class is the nearest multiple of 30 degrees of the extra rotation (12
classes). A :class:`~sklearn_hyperkernel.HypernetworkClassifier` (``f`` of
depth 4 and width 200, ``g`` of each depth and width of the grid) is trained
by SGD (learning rate 0.01, batch 100, no momentum), one :meth:`partial_fit`
epoch at a time, and its test accuracy recorded after every epoch.

Two choices make the network learn at the paper's learning rate (with the
earlier defaults it stayed at chance level):

* ``--parameterization standard`` (default): weights ``N(0, 1/fan_in)`` and
  no layer multiplier, as the ``torch.nn.Linear`` layers of the authors'
  code. Under the NTK parameterisation the same SGD step changes the network
  about ``fan_in`` times less per layer of ``f`` (200 to 784: an NTK step at
  learning rate ``lr`` is a standard step at ``lr / fan_in``), so learning rate
  0.01 leaves it at chance level for many epochs.
* Fresh rotations every epoch (default; ``--fixed-rotations`` turns it off):
  like the authors' data loader, each epoch draws new random angles for the
  training images, so a few thousand images give new rows every epoch instead
  of a fixed set the network memorises.

The paper trains on 10,000 MNIST images for 100 epochs (100 runs per
configuration) on a GPU; this command uses the 5,000-image offline subset,
fewer rows and epochs and one run, and states what it used in its output
(``fig2.md``).

Run ``python -m sklearn_hyperkernel.experiments fig2 --help``.
"""

from __future__ import annotations

import os

import numpy as np

from ..datasets import load_images, make_rotation_task
from ._common import Clock, base_parser, parse_command, pyplot, save_figure, write_json

__all__ = ["main", "run"]


def _parser():
    parser = base_parser(__doc__.split("\n")[0], "fig2")
    add = parser.add_argument
    add("--source", default="mnist", choices=("mnist", "digits"))
    add("--n-train", type=int, default=5000, help="Training rows (rotated pairs) per epoch.")
    add("--n-test", type=int, default=1000, help="Test rows, from held-out images.")
    add("--test-images", type=int, default=1000, help="Images held out for the test rows.")
    add("--epochs", type=int, default=10)
    add("--g-depths", type=int, nargs="+", default=[3, 6, 8])
    add("--g-widths", type=int, nargs="+", default=[10, 50, 100])
    add("--f-depth", type=int, default=4)
    add("--f-width", type=int, default=200)
    add("--learning-rate", type=float, default=0.01)
    add("--momentum", type=float, default=0.0, help="SGD momentum (the paper: plain SGD).")
    add("--batch-size", type=int, default=100)
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
    add("--seed", type=int, default=0)
    add(
        "--raw-inputs",
        action="store_true",
        help="Feed raw pixels; by default x and z are each rescaled to norm sqrt(n_pixels), "
        "so that "
        "z.z'/m0 is of order 1 (with raw pixels the logits start near zero and SGD barely moves).",
    )
    return parser


def _quick_overrides(args) -> None:
    """CI size: 8 epochs of 2,000 fresh rows, f width 100, g width 10, depths 3 and 6.

    Plain SGD at lr 0.01 needs a few hundred steps to leave chance level; the
    quick run has 160, so it adds momentum 0.9 (the paper: none) to learn
    within seconds.
    """
    args.n_train = 2000
    args.n_test = 300
    args.test_images = 300
    args.epochs = 8
    args.g_depths = [3, 6]
    args.g_widths = [10]
    args.f_width = 100
    args.momentum = 0.9


def _rescale(U: np.ndarray, z_dim: int) -> np.ndarray:
    """Scale the x part and the z part of each row to norm ``sqrt(z_dim)``."""
    parts = [U[:, :-z_dim], U[:, -z_dim:]]
    scaled = []
    for part in parts:
        norms = np.linalg.norm(part, axis=1, keepdims=True)
        scaled.append(
            np.divide(
                part * np.sqrt(part.shape[1]), norms, out=np.zeros_like(part), where=norms > 0
            )
        )
    return np.hstack(scaled)


def run(args) -> dict:
    """Train every (g depth, g width); returns accuracies per epoch."""
    from ..hypernetwork import HypernetworkClassifier

    clock = Clock()
    images, _ = load_images(args.source, random_state=args.seed)
    test_pool, train_pool = images[: args.test_images], images[args.test_images :]
    z_dim = images.shape[1] * images.shape[2]

    def rows(pool, n_rows, random_state):
        U, y = make_rotation_task(pool, n_rows, random_state=random_state)
        return (U if args.raw_inputs else _rescale(U, z_dim)), y

    U_test, y_test = rows(test_pool, args.n_test, args.seed + 1)
    print(
        f"{clock} data: {args.n_train} training rows per epoch "
        f"({'fixed' if args.fixed_rotations else 'fresh'} rotations of {len(train_pool)} "
        f"images), {U_test.shape[0]} test rows, z_dim={z_dim}",
        flush=True,
    )
    accuracy = {}
    for g_depth in args.g_depths:
        for g_width in args.g_widths:
            model = HypernetworkClassifier(
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
                random_state=args.seed,
                device="cpu",
            )
            # Same training rows for every configuration: epoch e's rotations come from
            # one random stream seeded by --seed (epoch 0 alone with --fixed-rotations).
            stream = np.random.RandomState(args.seed)
            curve = []
            for epoch in range(args.epochs):
                if epoch == 0 or not args.fixed_rotations:
                    U, y = rows(train_pool, args.n_train, stream)
                model.partial_fit(U, y, classes=np.arange(12))
                curve.append(float(model.score(U_test, y_test)))
            accuracy[f"{g_depth}x{g_width}"] = curve
            print(
                f"{clock} g depth {g_depth} width {g_width}: accuracy per epoch "
                + " ".join(f"{a:.3f}" for a in curve),
                flush=True,
            )
    return {"accuracy": accuracy, "seconds": float(str(clock).strip("[]s")), "z_dim": z_dim}


def reduction_note(args) -> str:
    """What this run used, against the paper's setting."""
    return (
        f"Reduced to fit a CPU: {args.n_train} training rows per epoch and {args.n_test} "
        "test rows built from the "
        + ("5,000-image offline MNIST subset" if args.source == "mnist" else "8x8 digits")
        + f" ({args.test_images} images held out for the test rows), "
        f"{args.epochs} epochs, one run (seed {args.seed}) per configuration, "
        f"f depth {args.f_depth} width {args.f_width}, SGD lr {args.learning_rate} "
        f"momentum {args.momentum} batch {args.batch_size}, "
        f"{args.parameterization} parameterisation, "
        f"{'fixed' if args.fixed_rotations else 'fresh'} training rotations "
        f"{'drawn once' if args.fixed_rotations else 'each epoch'}, "
        f"inputs {'raw' if args.raw_inputs else 'rescaled to norm sqrt(n_pixels)'}. "
        "The paper trains on 10,000 MNIST images (fresh rotations each epoch) for 100 "
        "epochs, 100 runs per configuration, on a GPU."
    )


def plot(results: dict, args, path: str) -> None:
    """Accuracy per epoch, one panel per g width, one line per g depth."""
    plt = pyplot()
    fig, axes = plt.subplots(
        1, len(args.g_widths), figsize=(4 * len(args.g_widths), 3.2), squeeze=False
    )
    epochs = np.arange(1, args.epochs + 1)
    for axis, g_width in zip(axes[0], args.g_widths, strict=True):
        for g_depth in args.g_depths:
            axis.plot(
                epochs,
                results["accuracy"][f"{g_depth}x{g_width}"],
                "o-",
                label=f"g depth {g_depth}",
            )
        axis.axhline(1 / 12, color="grey", linestyle=":", label="chance")
        axis.set_title(f"g width {g_width}", fontsize=9)
        axis.set_xlabel("epoch")
        axis.set_ylabel("test accuracy")
        axis.legend(fontsize=7)
    fig.suptitle("rotation prediction (CPU scale)", fontsize=9)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; writes fig2.md, fig2.json and fig2_accuracy.png."""
    args, out = parse_command(_parser(), _quick_overrides, argv)
    results = run(args)
    note = reduction_note(args)
    lines = [
        "# Fig. 2: rotation prediction, test accuracy per epoch",
        "",
        note,
        "",
        "| g depth | g width | "
        + " | ".join(f"epoch {e}" for e in range(1, args.epochs + 1))
        + " |",
        "|" + "---|" * (args.epochs + 2),
    ]
    for g_depth in args.g_depths:
        for g_width in args.g_widths:
            curve = results["accuracy"][f"{g_depth}x{g_width}"]
            lines.append(
                f"| {g_depth} | {g_width} | " + " | ".join(f"{a:.3f}" for a in curve) + " |"
            )
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "fig2.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    write_json(os.path.join(out, "fig2.json"), {"args": vars(args), "note": note, **results})
    plot(results, args, os.path.join(out, "fig2_accuracy.png"))
    print(text)
    print(f"wrote {out}/fig2.md, fig2.json, fig2_accuracy.png in {results['seconds']:.0f} s")
    return 0
