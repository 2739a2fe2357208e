"""Equality of the kernels with array parameters (issue 21, fault class 6).

scikit-learn's ``Kernel.__eq__`` raised for ``length_scale`` arrays of
different lengths, or not, depending on the hash seed (scikit-learn #31525 /
PR #31528); the package's kernels compare parameters by shape and values.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

from sklearn_hyperkernel import HyperKernel, HyperNNGP


@pytest.mark.parametrize("kernel_class", [HyperKernel, HyperNNGP])
def test_array_parameters_of_different_lengths_are_unequal(kernel_class):
    # numpy arrays: ``!=`` of arrays of lengths 2 and 3 raises (lists compare as lists)
    short = kernel_class(length_scale=np.array([1.0, 2.0]))
    long = kernel_class(length_scale=np.array([1.0, 2.0, 3.0]))
    assert (short == long) is False
    assert (long == short) is False
    assert (short != long) is True
    # inside scikit-learn's kernel operators, which compare their parts with ==
    assert (ConstantKernel() * short + WhiteKernel()) != (ConstantKernel() * long + WhiteKernel())


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        (HyperKernel(length_scale=[1, 2]), HyperKernel(length_scale=(1.0, 2.0)), True),
        (HyperKernel(length_scale=[1, 2]), HyperKernel(length_scale=np.array([1.0, 2.0])), True),
        (HyperKernel(length_scale=[1, 2]), HyperKernel(length_scale=[1, 2.5]), False),
        (HyperKernel(length_scale=0.5), HyperKernel(length_scale=[0.5, 0.5]), False),
        (HyperKernel(length_scale_bounds="fixed"), HyperKernel(), False),
        (HyperKernel(), HyperNNGP(), False),
        (HyperKernel(z_dim=3), HyperKernel(z_dim=3), True),
        (HyperKernel(), RBF(), False),
        (HyperKernel(), "HyperKernel()", False),
    ],
)
def test_equality_values(first, second, expected):
    assert (first == second) is expected
    assert (second == first) is expected


def test_clone_is_equal_and_kernels_stay_unhashable():
    kernel = HyperNNGP(length_scale=[0.3, 0.7], f_depth=2)
    assert clone(kernel) == kernel
    with pytest.raises(TypeError):
        hash(kernel)  # mutable, as scikit-learn's kernels


def test_outcome_does_not_depend_on_the_hash_seed():
    code = (
        "import numpy as np\n"
        "from sklearn_hyperkernel import HyperKernel as H\n"
        "a, b = np.array([1.0, 2.0]), np.array([1.0, 2.0, 3.0])\n"
        "print(H(length_scale=a) == H(length_scale=b),"
        " H(length_scale=a, f_depth=2) == H(length_scale=b, f_depth=4))\n"
    )
    # scikit-learn's __eq__ visits the parameters in a set's order: with f_depth
    # also different it returned False or raised, by the seed
    for seed in ("0", "1", "2", "3"):
        environment = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=environment
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["False", "False"]
