"""Helpers shared by the experiment commands."""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from ..progress import ProgressLog, log


def base_parser(description: str, prog: str) -> argparse.ArgumentParser:
    """Parser with the options every experiment takes (``--quick``, ``--out``)."""
    parser = argparse.ArgumentParser(
        prog=f"python -m sklearn_hyperkernel.experiments {prog}",
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="CI-sized run (seconds).")
    parser.add_argument("--out", default="results", help="Directory for the outputs.")
    return parser


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def parse_command(
    parser: argparse.ArgumentParser, quick_overrides, argv: list[str] | None
) -> tuple[argparse.Namespace, str]:
    """Parse an experiment's arguments, apply its ``--quick`` sizes, make ``--out``."""
    args = parser.parse_args(argv)
    if args.quick:
        quick_overrides(args)
    return args, prepare_out(args.out)


def f_options(args: argparse.Namespace, image_shape, filter_size: int) -> dict:
    """The estimators' f parameters for ``args.f_architecture``.

    ``{}`` for the dense f (the estimators' default); for ``"conv"``,
    ``f_architecture``, ``image_shape`` (x's columns are the image flattened
    row-major) and ``filter_size``.
    """
    if args.f_architecture != "conv":
        return {}
    return {
        "f_architecture": "conv",
        "image_shape": tuple(int(n) for n in image_shape),
        "filter_size": int(filter_size),
    }


def save_figure(fig, path: str) -> None:
    """Lay out, write as PNG and close a matplotlib figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)


def prepare_out(path: str) -> str:
    """Create the output directory; returns it."""
    os.makedirs(path, exist_ok=True)
    return path


def write_json(path: str, payload: Any) -> None:
    """Write ``payload`` as indented JSON."""
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, default=float)


def progress(name: str, total: int, unit: str) -> ProgressLog:
    """Progress of an experiment's long loop: a bar on a terminal, nothing in a log.

    Call ``.step()`` once per unit done; report results with :func:`report`,
    which prints above the bar.
    """
    return ProgressLog(f"[{name}]", total, verbose=1, unit=unit, count_lines=False)


def report(name: str, clock: Clock, message: str) -> None:
    """One line ``[name] [elapsed s] message``, above any progress bar."""
    log(name, f"{clock} {message}")


class Clock:
    """Seconds since creation, for progress lines: ``str(clock)`` is ``"[   12.3s]"``."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        """Seconds elapsed since the clock was made."""
        return time.perf_counter() - self.start

    def __str__(self) -> str:
        return f"[{self.seconds:7.1f}s]"
