"""``python -m sklearn_hyperkernel.experiments NAME [options]``."""

from __future__ import annotations

import importlib
import sys

from . import EXPERIMENTS


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the experiment named by the first argument."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in EXPERIMENTS:
        print(
            "usage: python -m sklearn_hyperkernel.experiments {"
            + ",".join(EXPERIMENTS)
            + "} [--quick] [--out DIR] [options]\n"
            "Run `python -m sklearn_hyperkernel.experiments NAME --help` for the options."
        )
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(f".{argv[0]}", __package__)
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
