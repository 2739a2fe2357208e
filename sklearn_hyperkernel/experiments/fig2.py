"""The paper's Fig. 2 at CPU scale: rotation prediction with trained hypernetworks.

Task (:func:`sklearn_hyperkernel.datasets.make_rotation_task`, the paper's
Sec. 5.2): x is a randomly rotated MNIST image, z a further rotated copy, the
class is the nearest multiple of 30 degrees of the extra rotation (12
classes). A :class:`~sklearn_hyperkernel.HypernetworkClassifier` (``f`` of
depth 4 and width 200, ``g`` of each depth and width of the grid) is trained
by SGD (learning rate 0.01, batch 100), one :meth:`partial_fit` epoch at a
time, and its test accuracy recorded after every epoch.

The paper trains on the full MNIST training set for many epochs on a GPU;
this command uses the 5,000-image offline subset, fewer rows and epochs, and
states what it used in its output (``fig2.md``).

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
    add("--n-train", type=int, default=5000, help="Training rows (rotated pairs).")
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
    args.n_train = 400
    args.n_test = 200
    args.test_images = 200
    args.epochs = 2
    args.g_depths = [3, 6]
    args.g_widths = [10]
    args.f_width = 32


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
    U, y = make_rotation_task(train_pool, args.n_train, random_state=args.seed)
    U_test, y_test = make_rotation_task(test_pool, args.n_test, random_state=args.seed + 1)
    z_dim = U.shape[1] // 2
    if not args.raw_inputs:
        U, U_test = _rescale(U, z_dim), _rescale(U_test, z_dim)
    print(
        f"{clock} data: {U.shape[0]} training rows, {U_test.shape[0]} test rows, z_dim={z_dim}",
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
                random_state=args.seed,
                device="cpu",
            )
            curve = []
            for _ in range(args.epochs):
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
        f"Reduced to fit a CPU: {args.n_train} training rows and {args.n_test} test rows "
        "built from the "
        f"5,000-image offline MNIST subset ({args.test_images} images held out for the test rows), "
        f"{args.epochs} epochs, one run (seed {args.seed}) per configuration, "
        f"f depth {args.f_depth} width {args.f_width}, SGD lr {args.learning_rate} "
        f"momentum {args.momentum} batch {args.batch_size}, "
        f"inputs {'raw' if args.raw_inputs else 'rescaled to norm sqrt(n_pixels)'}. "
        "The paper trains on the full MNIST training set for many more epochs on a GPU."
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
