"""Log lines for long computations (Gram matrices, CG solves, Dask runs).

scikit-learn estimators report progress as plain lines on stdout when
``verbose`` is set; this does the same, at most one line every
``min_interval`` seconds (plus the first and the last) so that a Gram of
thousands of panels does not flood the console.
"""

from __future__ import annotations

import time


class ProgressLog:
    """Counts finished steps of a known total and prints rate-limited lines.

    At ``verbose=1`` a computation shorter than ``min_interval`` prints
    nothing, so many small Grams (the blocks of a prediction) stay quiet.

    Parameters
    ----------
    label : str
        Prefix of every line, e.g. ``"[HyperKernel] Gram 10000 x 10000"``.
    total : int
        Number of steps.
    verbose : int
        0 prints nothing; 1 prints at most every ``min_interval`` seconds;
        2 and above print every step.
    unit : str
        Name of a step in the lines.
    min_interval : float
        Seconds between two lines at ``verbose=1``.
    """

    def __init__(self, label: str, total: int, verbose: int, unit: str = "blocks", min_interval: float = 2.0) -> None:
        self.label = label
        self.total = max(int(total), 0)
        self.verbose = int(verbose or 0)
        self.unit = unit
        self.min_interval = min_interval
        self.done = 0
        self.start = time.perf_counter()
        self._last_print = self.start
        self._printed = False

    def step(self, count: int = 1) -> None:
        """Record ``count`` finished steps and print a line if one is due."""
        self.done += count
        if self.verbose <= 0:
            return
        now = time.perf_counter()
        last = self.done >= self.total
        due = now - self._last_print >= self.min_interval or (last and self._printed)
        if self.verbose >= 2 or due:
            self._last_print = now
            self._printed = True
            elapsed = now - self.start
            line = f"{self.label}: {self.done}/{self.total} {self.unit} ({100.0 * self.done / max(self.total, 1):.0f}%), {elapsed:.1f} s"
            if not last and self.done:
                line += f", about {elapsed * (self.total - self.done) / self.done:.0f} s left"
            print(line, flush=True)
