"""The examples in the public docstrings run and print what they say."""

import doctest
import importlib

import pytest

MODULES = [
    "sklearn_hyperkernel.recursions",
    "sklearn_hyperkernel.kernels",
    "sklearn_hyperkernel.kernel_ridge",
    "sklearn_hyperkernel.hypernetwork",
    "sklearn_hyperkernel.network",
    "sklearn_hyperkernel.datasets",
    "sklearn_hyperkernel.config",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"no docstring examples found in {name}"
    assert result.failed == 0, (
        f"{result.failed} of {result.attempted} docstring examples failed in {name}"
    )
