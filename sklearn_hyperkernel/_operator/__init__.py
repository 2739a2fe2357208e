"""Private layer of sklearn_hyperkernel (docs/architecture.md).

Until 0.1.0 this name was a module; its names are re-exported here so that a
pickle of 0.1.0 that refers to them (``sklearn_hyperkernel._operator.<name>``) loads.
"""

from .gram_operator import (
    FactorizedGramOperator,
    FactorizingKernel,
    GramOperator,
    block_partition,
    check_finite_kernel,
    gram_operator,
)

__all__ = [
    "FactorizingKernel",
    "check_finite_kernel",
    "FactorizedGramOperator",
    "GramOperator",
    "block_partition",
    "gram_operator",
]
