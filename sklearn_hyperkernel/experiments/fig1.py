"""The paper's Fig. 1: the empirical hyperkernel converges to the closed form.

Inputs: ``x(theta) = (cos theta, sin theta)`` and a fixed unit ``z``. For
networks of growing width, the empirical hyperkernel ``J J^T`` (with respect
to ``f``'s weights, :func:`sklearn_hyperkernel.network.empirical_ntk`) is
evaluated at initialisation over several seeds:

* ``fig1_variance.png``: variance over seeds of the kernel value
  ``K(u(0), u(theta0))`` against the width of ``f`` (``g`` fixed) and against
  the width of ``g`` (``f`` fixed), log-log;
* ``fig1_theta.png``: mean +- std over seeds of the empirical kernel
  ``K(u(0), u(theta))`` against ``theta`` for a few widths, with the closed
  form :class:`~sklearn_hyperkernel.HyperKernel`.

Run ``python -m sklearn_hyperkernel.experiments fig1 --help``.
"""

from __future__ import annotations

import math
import os

import numpy as np

from ..kernels import HyperKernel
from ._common import (
    Clock,
    base_parser,
    parse_command,
    progress,
    pyplot,
    report,
    save_figure,
    write_json,
)

__all__ = ["main", "run"]


def _parser():
    parser = base_parser(__doc__.split("\n")[0], "fig1")
    add = parser.add_argument
    add("--f-depth", type=int, default=3)
    add("--g-depth", type=int, default=2)
    add(
        "--widths",
        type=int,
        nargs="+",
        default=[16, 32, 64, 128, 256, 512, 1024],
        help="Widths swept (for f with g fixed, and for g with f fixed).",
    )
    add("--fixed-f-width", type=int, default=512, help="Width of f while the width of g varies.")
    add("--fixed-g-width", type=int, default=64, help="Width of g while the width of f varies.")
    add("--seeds", type=int, default=50, help="Networks drawn per width.")
    add(
        "--theta0",
        type=float,
        default=math.pi / 3,
        help="Angle of the pair whose variance is plotted.",
    )
    add("--n-theta", type=int, default=33, help="Angles in [0, pi] of the theta plot.")
    add(
        "--theta-widths",
        type=int,
        nargs="+",
        default=[32, 256, 1024],
        help="Widths (f and g alike) shown in the theta plot.",
    )
    return parser


def _quick_overrides(args) -> None:
    # the smallest run that still shows the paper's trend (5 seeds at widths 8 and 32 showed
    # the variance rising with f's width: seed noise)
    args.widths = [16, 64, 256]
    args.fixed_f_width = 64
    args.fixed_g_width = 16
    args.seeds = 12
    args.n_theta = 9
    args.theta_widths = [16, 64]


def width_trend(widths, variances) -> float:
    """Slope of log variance against log width (the paper's Fig. 1: negative, about -1)."""
    return float(np.polyfit(np.log(widths), np.log(variances), 1)[0])


def trend_sentence(results: dict, args) -> str:
    """Whether this run shows the paper's trend, said plainly either way."""
    slope = width_trend(results["widths"], results["variance"]["f"])
    if slope < 0:
        return (
            f"variance falls with the width of f (log-log slope {slope:.2f}; about 1/width "
            "expected), as in the paper's Fig. 1"
        )
    return (
        f"variance does NOT fall with the width of f in this run (log-log slope {slope:.2f}), "
        f"unlike the paper's Fig. 1: {args.seeds} seeds per width are too few to show it; "
        "use more --seeds and wider --widths"
    )


def _rows(thetas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x = (cos, sin) of each angle and the same fixed unit z for every row."""
    x = np.column_stack([np.cos(thetas), np.sin(thetas)])
    z = np.tile([[1.0 / math.sqrt(2.0), 1.0 / math.sqrt(2.0)]], (len(thetas), 1))
    return x, z


def _empirical(x_a, z_a, x_b, z_b, f_width, g_width, seed, args) -> np.ndarray:
    import torch

    from ..network import Hypernetwork, empirical_ntk

    generator = torch.Generator().manual_seed(seed)
    model = Hypernetwork(
        x_dim=x_a.shape[1],
        z_dim=z_a.shape[1],
        f_depth=args.f_depth,
        f_width=f_width,
        g_depth=args.g_depth,
        g_width=g_width,
        generator=generator,
        dtype=torch.float64,
    )
    tensor = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    return empirical_ntk(model, tensor(x_a), tensor(z_a), tensor(x_b), tensor(z_b)).numpy()


def run(args) -> dict:
    """Compute the variances and the theta curves; returns a JSON-able dictionary."""
    clock = Clock()
    x0, z0 = _rows(np.array([0.0]))
    x1, z1 = _rows(np.array([args.theta0]))
    limit = HyperKernel(  # the paper's bias-free closed form of the raw rows
        z_dim=2,
        f_depth=args.f_depth,
        g_depth=args.g_depth,
        z_encoding="linear",
        f_bias_variance=0.0,
        g_bias_variance=0.0,
        normalize_x=False,
    )
    limit_value = float(limit(np.hstack([x0, z0]), np.hstack([x1, z1]))[0, 0])
    variance = {"f": [], "g": []}
    mean_value = {"f": [], "g": []}
    n_networks = (2 * len(args.widths) + len(args.theta_widths)) * args.seeds
    with progress("fig1", n_networks, "networks") as networks:  # closed on Ctrl-C too
        for width in args.widths:
            for which, (f_width, g_width) in (
                ("f", (width, args.fixed_g_width)),
                ("g", (args.fixed_f_width, width)),
            ):
                values = []
                for seed in range(args.seeds):
                    values.append(_empirical(x0, z0, x1, z1, f_width, g_width, seed, args)[0, 0])
                    networks.step()
                variance[which].append(float(np.var(values)))
                mean_value[which].append(float(np.mean(values)))
            report(
                "fig1",
                clock,
                f"width {width}: var over f width {variance['f'][-1]:.3g}, "
                f"over g width {variance['g'][-1]:.3g}",
            )
        thetas = np.linspace(0.0, math.pi, args.n_theta)
        xt, zt = _rows(thetas)
        closed_form = limit(np.hstack([x0, z0]), np.hstack([xt, zt]))[0]
        curves = {}
        for width in args.theta_widths:
            rows = []
            for seed in range(args.seeds):
                rows.append(_empirical(x0, z0, xt, zt, width, width, seed, args)[0])
                networks.step()
            values = np.stack(rows)
            curves[width] = {
                "mean": values.mean(axis=0).tolist(),
                "std": values.std(axis=0).tolist(),
            }
            report(
                "fig1",
                clock,
                f"theta curve at width {width}: max |mean - closed form| "
                f"{np.max(np.abs(values.mean(axis=0) - closed_form)):.3g}",
            )
    return {
        "widths": list(args.widths),
        "variance": variance,
        "mean": mean_value,
        "limit_value": limit_value,
        "thetas": thetas.tolist(),
        "closed_form": closed_form.tolist(),
        "curves": {str(k): v for k, v in curves.items()},
        "seconds": clock.seconds,
    }


def plot(results: dict, args, out: str) -> list[str]:
    """Write the two PNGs; returns their paths."""
    plt = pyplot()
    paths = [os.path.join(out, "fig1_variance.png"), os.path.join(out, "fig1_theta.png")]
    fig, axis = plt.subplots(figsize=(5, 4))
    axis.loglog(
        results["widths"],
        results["variance"]["f"],
        "o-",
        label=f"width of f varies (g width {args.fixed_g_width})",
    )
    axis.loglog(
        results["widths"],
        results["variance"]["g"],
        "s-",
        label=f"width of g varies (f width {args.fixed_f_width})",
    )
    axis.set_xlabel("width")
    axis.set_ylabel(f"variance over {args.seeds} seeds")
    axis.set_title(
        f"empirical hyperkernel at theta={args.theta0:.3g} (L={args.f_depth}, H={args.g_depth})",
        fontsize=9,
    )
    axis.legend(fontsize=8)
    save_figure(fig, paths[0])

    fig, axis = plt.subplots(figsize=(5, 4))
    thetas = np.asarray(results["thetas"])
    for width, curve in results["curves"].items():
        mean, std = np.asarray(curve["mean"]), np.asarray(curve["std"])
        (line,) = axis.plot(thetas, mean, label=f"empirical, width {width}")
        axis.fill_between(thetas, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    axis.plot(thetas, results["closed_form"], "k--", label="closed form (HyperKernel)")
    axis.set_xlabel("theta")
    axis.set_ylabel("K(u(0), u(theta))")
    axis.legend(fontsize=8)
    save_figure(fig, paths[1])
    return paths


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; writes fig1.json, fig1_variance.png and fig1_theta.png."""
    args, out = parse_command(_parser(), _quick_overrides, argv)
    results = run(args)
    write_json(os.path.join(out, "fig1.json"), {"args": vars(args), **results})
    paths = plot(results, args, out)
    print(f"closed-form value at theta0: {results['limit_value']:.4g}")
    for which in ("f", "g"):
        pairs = ", ".join(
            f"{w}: {v:.3g}"
            for w, v in zip(results["widths"], results["variance"][which], strict=True)
        )
        print(f"variance vs width of {which}: {pairs}")
    print(trend_sentence(results, args))
    print("wrote " + ", ".join(paths + [os.path.join(out, "fig1.json")]))
    return 0
