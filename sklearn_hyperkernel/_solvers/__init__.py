"""Private layer of sklearn_hyperkernel (docs/architecture.md).

Until 0.1.0 this name was a module; its names are re-exported here so that a
pickle of 0.1.0 that refers to them (``sklearn_hyperkernel._solvers.<name>``) loads.
"""

from .iterative import (
    CGResult,
    LowRankPreconditioner,
    conjugate_gradient,
    pivoted_cholesky,
)

__all__ = [
    "CGResult",
    "LowRankPreconditioner",
    "conjugate_gradient",
    "pivoted_cholesky",
]
