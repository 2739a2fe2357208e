"""The package's one progress and logging mechanism, for every ``verbose`` option.

Long computations (Gram matrices, conjugate-gradient solves, training epochs,
the experiments) report through :class:`ProgressLog`; one-off messages go
through :func:`log`. Both write to ``sys.stdout``, as scikit-learn's verbose
estimators do, and adapt to it:

* on a terminal (``sys.stdout.isatty()``), :class:`ProgressLog` draws a
  `tqdm <https://tqdm.github.io>`_ progress bar and :func:`log` prints above it
  (``tqdm.write``), so a message never breaks a bar;
* anywhere else (a file, a pipe, a notebook's captured output, pytest), plain
  lines that stay greppable, such as
  ``[HyperKernel] Gram 23 x 23: 5/5 blocks (100%), 0.0 s``; at ``verbose=1``
  at most one every ``min_interval`` seconds (plus the last), so a Gram of
  thousands of blocks does not flood a log.

``verbose=0`` prints nothing in either case.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

__all__ = ["ProgressLog", "format_log_line", "log", "on_terminal"]


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default ``sys.stdout``) is an interactive terminal."""
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def format_log_line(source: str, message: str) -> str:
    """The one-line format of :func:`log`: ``"[source] message"``."""
    return f"[{source}] {message}"


def log(source: str, message: str) -> None:
    """Print one line ``[source] message`` to ``sys.stdout``, above any progress bar.

    Parameters
    ----------
    source : str
        What speaks, usually the class name (``"HyperKernelRegressor"``).
    message : str
        The message, one line.
    """
    tqdm.write(format_log_line(source, message), file=sys.stdout)
    sys.stdout.flush()


class ProgressLog:
    """Progress of a computation of ``total`` steps: a bar on a terminal, lines elsewhere.

    At ``verbose=1`` a computation shorter than ``min_interval`` seconds shows
    nothing (no bar, no line), so many small Grams (the blocks of a
    prediction) stay quiet; ``verbose >= 2`` shows every step. The bar closes
    itself at the last step; :meth:`close` (or a ``with`` block) closes it
    earlier, e.g. when the computation stops before ``total``. Every loop of
    the package holds its progress in a ``with`` block, so an exception
    (Ctrl-C included) closes the bar even while a REPL keeps the traceback,
    and the next bar starts at the top line.

    Parameters
    ----------
    label : str
        Prefix of every line and the bar's description, e.g.
        ``"[HyperKernel] Gram 10000 x 10000"``.
    total : int
        Number of steps.
    verbose : int
        0 shows nothing; 1 shows the bar (or a line) after ``min_interval``
        seconds, then at most a line every ``min_interval`` seconds and the
        last; 2 and above show every step.
    unit : str, default="blocks"
        Name of a step in the lines and the bar.
    min_interval : float, default=2.0
        Seconds between two lines at ``verbose=1``, and the delay before a
        bar appears.
    count_lines : bool, default=True
        Off a terminal, print the count lines (``"label: 3/5 blocks (60%),
        ..."``). A caller that prints its own lines (see the ``line``
        argument of :meth:`step`), such as the training loop's one line per
        epoch, turns them off.
    leave : bool, default=True
        Keep the finished bar on screen (tqdm's ``leave``).
    """

    def __init__(
        self,
        label: str,
        total: int,
        verbose: int,
        unit: str = "blocks",
        min_interval: float = 2.0,
        *,
        count_lines: bool = True,
        leave: bool = True,
    ) -> None:
        self.label = label
        self.total = max(int(total), 0)
        self.verbose = int(verbose or 0)
        self.unit = unit
        self.min_interval = min_interval
        self.count_lines = count_lines
        self.done = 0
        self.start = time.perf_counter()
        self._last_print = self.start
        self._printed = False
        self._bar = None
        if self.verbose > 0 and self.total > 0 and on_terminal():
            self._bar = tqdm(
                total=self.total,
                desc=label,
                unit=f" {unit}",
                file=sys.stdout,
                leave=leave,
                delay=min_interval if self.verbose == 1 else 0.0,
                dynamic_ncols=True,
            )

    @property
    def shows_bar(self) -> bool:
        """Whether progress is drawn as a bar (a terminal and ``verbose > 0``)."""
        return self._bar is not None

    def step(self, count: int = 1, *, status: str | None = None, line: str | None = None) -> None:
        """Record ``count`` finished steps and show them if due.

        Parameters
        ----------
        count : int, default=1
            Steps finished since the last call (0 only updates ``status``).
        status : str, default=None
            Short state shown after the bar (e.g. ``"loss 0.012"``); unused
            off a terminal.
        line : str, default=None
            Off a terminal (and ``verbose > 0``), printed as it is, every time
            it is given; unused on a terminal, where the bar shows progress.
        """
        self.done += count
        if self.verbose <= 0:
            return
        if self._bar is not None:
            if status is not None:
                self._bar.set_postfix_str(status, refresh=False)
            self._bar.update(count)
            if self.done >= self.total:
                self.close()
            return
        if line is not None:
            print(line, flush=True)
        if self.count_lines and count:
            self._count_line()

    def _count_line(self) -> None:
        now = time.perf_counter()
        last = self.done >= self.total
        due = now - self._last_print >= self.min_interval or (last and self._printed)
        if self.verbose >= 2 or due:
            self._last_print = now
            self._printed = True
            elapsed = now - self.start
            percent = 100.0 * self.done / max(self.total, 1)
            line = (
                f"{self.label}: {self.done}/{self.total} {self.unit} ({percent:.0f}%), "
                f"{elapsed:.1f} s"
            )
            if not last and self.done:
                line += f", about {elapsed * (self.total - self.done) / self.done:.0f} s left"
            print(line, flush=True)

    def close(self) -> None:
        """Close the bar (if any); later steps show nothing more on it."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self.verbose = 0

    def __enter__(self) -> ProgressLog:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
