"""Sample weights mean repeated rows, whatever the settings (issue 21, fault class 1).

``fit(X, y, sample_weight=w)`` must equal the fit on ``X`` with row ``i``
repeated ``w_i`` times (a weight of 0: the row dropped), for every setting of
:class:`~sklearn_hyperkernel.HyperKernelRegressor` and every solver
(scikit-learn #16298, #17444, PR #29818). Before the fix, the relative ridge
(``alpha_scale="relative"``, the default) took the unweighted mean of the
Gram's diagonal, so any setting whose diagonal is not constant (``normalize_x=
False``, or the linear encoding) failed scikit-learn's own check.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.gaussian_process.kernels import RBF
from sklearn.utils.estimator_checks import check_sample_weight_equivalence_on_dense_data

from sklearn_hyperkernel import HyperKernelRegressor

SOLVERS = ["cholesky", "cg", "nystrom", "auto"]

# every combination of the settings that change how rows and targets are scaled
SETTINGS = [
    pytest.param(
        {"normalize_x": nx, "normalize_y": ny, "alpha_scale": scale, "z_encoding": encoding},
        id=f"nx={nx}-ny={ny}-{scale}-{encoding}",
    )
    for nx, ny, scale, encoding in itertools.product(
        [True, False], [True, False], ["relative", "absolute"], ["fourier", "linear"]
    )
]


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("settings", SETTINGS)
def test_sklearn_sample_weight_equivalence_every_setting(solver, settings):
    # scikit-learn's own check (15 rows of 30 columns, integer weights with zeros)
    estimator = HyperKernelRegressor(z_dim=1, solver=solver, tol=1e-10, random_state=0, **settings)
    check_sample_weight_equivalence_on_dense_data("HyperKernelRegressor", estimator)


def weighted_and_repeated(n_rows=12, n_targets=2, seed=0):
    rng = np.random.default_rng(seed)
    X = np.hstack(
        [
            rng.normal(size=(n_rows, 3)) * rng.uniform(0.5, 3.0, (n_rows, 1)),
            rng.uniform(-1, 1, (n_rows, 2)),
        ]
    )
    y = np.column_stack([np.sin(X[:, 0] + j * X[:, -1]) for j in range(n_targets)])
    weights = rng.integers(0, 4, n_rows)
    weights[:2] = (0, 3)
    return X, y, weights


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize(
    "params",
    [
        pytest.param({}, id="defaults"),
        pytest.param({"normalize_x": False, "alpha": [1e-3, 1e-1]}, id="raw-x-alpha-per-target"),
        pytest.param({"kernel": "nngp", "z_encoding": "linear", "normalize_y": False}, id="nngp"),
        pytest.param({"kernel": RBF(1.3), "alpha": 0.1}, id="rbf"),
    ],
)
def test_multi_output_weights_are_repeated_rows(solver, params):
    X, y, weights = weighted_and_repeated()
    common = dict(solver=solver, tol=1e-12, random_state=0, **params)
    weighted = HyperKernelRegressor(**common).fit(X, y, sample_weight=weights)
    repeated = HyperKernelRegressor(**common).fit(X.repeat(weights, 0), y.repeat(weights, 0))
    assert_allclose(weighted.ridge_, repeated.ridge_, rtol=1e-12)
    assert_allclose(weighted.intercept_, repeated.intercept_, rtol=1e-12, atol=1e-14)
    assert_allclose(weighted.predict(X), repeated.predict(X), rtol=1e-7, atol=1e-9)


def test_relative_ridge_is_the_weighted_mean_diagonal():
    # the value itself: alpha times sum_i w_i K_ii / sum_i w_i
    X, y, weights = weighted_and_repeated(n_targets=1)
    model = HyperKernelRegressor(normalize_x=False, alpha=1e-2).fit(X, y[:, 0], weights)
    diagonal = model.kernel_.diag(X)
    assert np.ptp(diagonal) > 0.1 * diagonal.mean()  # the weights matter here
    assert_allclose(model.ridge_, [1e-2 * np.sum(weights * diagonal) / np.sum(weights)])
