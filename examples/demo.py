"""Placeholder demo: checks that the package imports (to be replaced by the real demo)."""

import sklearn_hyperkernel

print(f"sklearn_hyperkernel {sklearn_hyperkernel.__version__}")
