"""Private layer of sklearn_hyperkernel (docs/architecture.md).

Until 0.1.0 this name was a module: the operators a fitted HyperKernelRegressor
holds are re-exported here, so that its pickles
(``sklearn_hyperkernel._operator.FactorizedGramOperator``) load.
"""

from .gram_operator import FactorizedGramOperator, GramOperator

__all__ = ["FactorizedGramOperator", "GramOperator"]
