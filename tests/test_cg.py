"""Tests of the conjugate-gradient solver: the pure algorithms (``_solvers``), their set-up
for kernel ridge regression (``_cg.fit_cg``) and ``HyperKernelRegressor(solver="cg")``.

References: ``numpy.linalg.solve`` on dense matrices, and the exact Cholesky solve of the
package (itself tested against ``numpy.linalg.solve`` in test_kernel_ridge.py).
"""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process.kernels import RBF, ConstantKernel
from test_kernel_ridge import KERNEL_CASES, PAPER, regression_rows

from sklearn_hyperkernel import HyperKernelRegressor
from sklearn_hyperkernel._operator.gram_operator import gram_operator
from sklearn_hyperkernel._solvers.cg import fit_cg
from sklearn_hyperkernel._solvers.iterative import (
    LowRankPreconditioner,
    conjugate_gradient,
    pivoted_cholesky,
)
from sklearn_hyperkernel.datasets import pixel_regression

# the NTK (the iteration counts below were measured on it), not the regressor's default NNGP
PIXEL_PARAMS = {"kernel": "ntk", "z_encoding": "fourier", "length_scale": 0.5, **PAPER}


@pytest.fixture(scope="module")
def pixel_task() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """640 training rows (20 digits, 32 pixels each) and 160 rows of 5 other digits."""
    images = load_digits().images
    X, y = pixel_regression(images[:20], pixels_per_image=32, random_state=0)
    X_test, _ = pixel_regression(images[20:25], pixels_per_image=32, random_state=1)
    return X, y, X_test


@pytest.fixture
def regression_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return regression_rows()


def _fit_quietly(model, X, y, **fit_params):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        return model.fit(X, y, **fit_params)


# ------------------------------------------------------------ the pure algorithms


def _random_psd(n: int, rank: int, seed: int) -> np.ndarray:
    A = np.random.default_rng(seed).normal(size=(n, rank))
    return A @ A.T / rank


def test_conjugate_gradient_solves_shifted_systems():
    K = _random_psd(60, 40, 0)
    B = np.random.default_rng(1).normal(size=(60, 3))
    shifts = np.array([1e-2, 1.0, 1e-2])
    result = conjugate_gradient(lambda V: K @ V, B, shifts, tol=1e-12, max_iter=500)
    assert result.converged and result.n_iter <= 60 + 5
    for j in range(3):
        expected = np.linalg.solve(K + shifts[j] * np.eye(60), B[:, j])
        assert_allclose(result.solution[:, j], expected, rtol=1e-8, atol=1e-10)
        operator = K + shifts[j] * np.eye(60)
        true_residual = np.linalg.norm(B[:, j] - operator @ result.solution[:, j])
        assert true_residual <= 1e-10 * np.linalg.norm(B[:, j])


def test_pivoted_cholesky_and_exact_preconditioner():
    K = _random_psd(50, 8, 2)
    factor = pivoted_cholesky(np.diag(K), lambda i: K[:, i], max_rank=30)
    assert factor.shape[1] == 8  # stops at the rank of K
    assert_allclose(factor @ factor.T, K, atol=1e-10)
    partial = pivoted_cholesky(np.diag(K), lambda i: K[:, i], max_rank=3)
    assert partial.shape == (50, 3)
    # the residual of a partial factor stays PSD with a smaller trace
    remainder = K - partial @ partial.T
    assert np.linalg.eigvalsh(remainder).min() > -1e-10
    assert np.trace(remainder) < np.trace(K)

    preconditioner = LowRankPreconditioner(factor)
    R = np.random.default_rng(3).normal(size=(50, 2))
    shifts = np.array([1e-3, 0.5])
    applied = preconditioner.apply(R, shifts)
    for j in range(2):
        expected = np.linalg.solve(K + shifts[j] * np.eye(50), R[:, j])
        assert_allclose(applied[:, j], expected, rtol=1e-7)
    # with the exact factor as preconditioner CG needs one iteration
    B = R.copy()
    result = conjugate_gradient(lambda V: K @ V, B, shifts, preconditioner=preconditioner, tol=1e-8)
    assert result.converged and result.n_iter <= 2


def test_conjugate_gradient_reports_a_breakdown():
    scales = np.arange(1.0, 6.0)[:, None]
    result = conjugate_gradient(lambda V: -scales * V, np.ones((5, 1)), np.array([0.5]))
    assert result.breakdown and not result.converged and result.n_iter == 1


# ------------------------------------------------------- kernel ridge regression by CG


def test_fit_cg_solves_the_weighted_kernel_ridge_system(regression_data):
    """``c = S (S K S + r I)^-1 S y`` for every target, from a Gram operator alone."""
    X, y, _ = regression_data
    operator = gram_operator(RBF(1.5), X, block_size=17)
    Y = np.column_stack([y, np.cos(X[:, -1])])
    ridges = np.array([1e-2, 1e-1])
    weights = np.random.default_rng(0).uniform(0.0, 2.0, size=X.shape[0])
    result = fit_cg(operator, Y, ridges, weights, tol=1e-12, max_iter=500, rank=20)
    K, root = RBF(1.5)(X), np.sqrt(weights)
    for j in range(2):
        system = root[:, None] * K * root + ridges[j] * np.eye(X.shape[0])
        scaled = np.linalg.solve(system, root * Y[:, j])
        assert_allclose(result.dual_coef[:, j], root * scaled, rtol=1e-7, atol=1e-9)
    assert result.rank == 20 and result.residual <= 1e-12 and 0 < result.n_iter < 120


# (data, targets, sample weights, parameters, tolerance of the predictions, most iterations,
# rank built): the same model as Cholesky's, for every kernel, several targets with their
# own ridges, and sample weights
CG_CASES = [
    pytest.param(
        "pixel_task", "y", False, {"tol": 1e-10, **PIXEL_PARAMS}, (0, 1e-6), 100, 300, id="pixel"
    ),
    pytest.param(
        "pixel_task",
        "four",
        False,
        {"tol": 1e-10, "alpha": [1e-3, 1e-1, 1e-2, 1e-3], **PIXEL_PARAMS},
        (0, 1e-6),
        100,
        300,
        id="pixel-targets-and-ridges",
    ),
    pytest.param(
        "pixel_task",
        "y",
        True,
        {"tol": 1e-10, **PIXEL_PARAMS},
        (0, 1e-6),
        100,
        None,
        id="pixel-weights",
    ),
    *[
        pytest.param(
            "regression_data",
            "y",
            False,
            {"alpha": 1e-2, "tol": 1e-12, "cg_rank": 10, **case.values[0]},
            (1e-8, 1e-9),
            None,
            None,
            id=f"kernel-{case.id}",
        )
        for case in KERNEL_CASES
    ],
]


@pytest.mark.parametrize(
    ("data", "targets", "weighted", "params", "tolerance", "most_iterations", "rank"), CG_CASES
)
def test_cg_equals_cholesky(
    request, data, targets, weighted, params, tolerance, most_iterations, rank
):
    X, y, X_test = request.getfixturevalue(data)
    if targets == "four":  # a zero target needs no iteration
        y = np.column_stack([y, 1.0 - y, np.sin(3 * X[:, -1]), np.zeros_like(y)])
    fit_params = {}
    if weighted:
        weights = np.random.default_rng(0).uniform(0.0, 3.0, size=X.shape[0])
        weights[::7] = 0.0
        fit_params["sample_weight"] = weights
    exact_params = {key: value for key, value in params.items() if key not in ("tol", "cg_rank")}
    cholesky = HyperKernelRegressor(solver="cholesky", **exact_params).fit(X, y, **fit_params)
    cg = _fit_quietly(HyperKernelRegressor(solver="cg", **params), X, y, **fit_params)
    assert cg.solver_ == "cg" and cholesky.solver_ == "cholesky"
    assert cholesky.n_iter_ == 1 and cholesky.cg_residual_ is None and cholesky.cg_rank_ is None
    assert 0 < cg.n_iter_ < (most_iterations or cg.max_iter + 1)
    assert cg.cg_residual_ <= params["tol"]
    if rank is not None:
        assert cg.cg_rank_ == rank
    assert cg.dual_coef_.shape == cholesky.dual_coef_.shape
    rtol, atol = tolerance
    assert_allclose(cg.predict(X_test), cholesky.predict(X_test), rtol=rtol, atol=atol)
    if data == "pixel_task" and not weighted and targets == "y":
        assert_allclose(cg.predict(X), cholesky.predict(X), rtol=rtol, atol=atol)
    if targets == "four":
        assert_array_equal(cg.dual_coef_[:, 3], 0.0)
    if weighted:
        assert_array_equal(cg.dual_coef_[::7], 0.0)


def test_cg_targets_are_independent_runs(pixel_task):
    """The columns are independent CG runs: a column alone takes the same path."""
    X, y, X_test = pixel_task
    Y = np.column_stack([y, 1.0 - y, np.sin(3 * X[:, -1]), np.zeros_like(y)])
    alphas = [1e-3, 1e-1, 1e-2, 1e-3]
    joint = _fit_quietly(
        HyperKernelRegressor(solver="cg", alpha=alphas, tol=1e-10, **PIXEL_PARAMS), X, Y
    )
    single = _fit_quietly(
        HyperKernelRegressor(solver="cg", alpha=1e-1, tol=1e-10, **PIXEL_PARAMS), X, Y[:, 1]
    )
    assert_allclose(single.predict(X_test), joint.predict(X_test)[:, 1], atol=1e-8)


def test_preconditioner_cuts_cg_iterations(pixel_task):
    # measured on these 640 rows at tol=1e-10: 12 iterations with rank 300,
    # 32 with rank 30, 53 without a preconditioner
    X, y, _ = pixel_task
    iterations = {}
    for rank in [300, 30, 0]:
        model = HyperKernelRegressor(solver="cg", tol=1e-10, cg_rank=rank, **PIXEL_PARAMS)
        iterations[rank] = _fit_quietly(model, X, y).n_iter_
    assert iterations[300] <= 20
    assert iterations[300] < iterations[30] < iterations[0]
    assert iterations[0] >= 40


def test_cg_never_holds_the_gram():
    X, y = pixel_regression(load_digits().images[:20])  # 1280 rows
    model = HyperKernelRegressor(solver="cg", block_size=16, cg_rank=50, **PIXEL_PARAMS)
    tracemalloc.start()
    try:
        _fit_quietly(model, X, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    gram_bytes = 8 * X.shape[0] ** 2  # 13 MB
    # blocks of 16 x 1280 and their temporaries (a few per worker thread), the rank-50 factor
    assert peak < gram_bytes / 3
    assert model.cg_residual_ <= model.tol


def test_cg_max_iter_warns(pixel_task):
    X, y, _ = pixel_task
    model = HyperKernelRegressor(solver="cg", cg_rank=0, max_iter=3, **PIXEL_PARAMS)
    with pytest.warns(ConvergenceWarning, match="CG did not reach tol"):
        model.fit(X, y)
    assert model.n_iter_ == 3
    assert model.cg_residual_ > model.tol
    assert np.all(np.isfinite(model.predict(X[:5])))


def test_cg_verbose_logs_progress(pixel_task, capsys):
    X, y, _ = pixel_task
    HyperKernelRegressor(solver="cg", tol=1e-10, cg_rank=0, verbose=1, **PIXEL_PARAMS).fit(X, y)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[HyperKernelRegressor] pivoted Cholesky preconditioner of rank 0")
    progress = [line for line in lines if "CG iteration" in line]
    assert progress[0].startswith("[HyperKernelRegressor] CG iteration 1: relative residual")
    assert "CG iteration 10:" in progress[1] and "CG iteration 20:" in progress[2]
    assert "CG converged after" in lines[-1]
    HyperKernelRegressor(solver="cg", tol=1e-10, cg_rank=0, verbose=2, **PIXEL_PARAMS).fit(X, y)
    assert "CG iteration 2:" in capsys.readouterr().out
    HyperKernelRegressor(solver="cg", **PIXEL_PARAMS).fit(X, y)
    assert capsys.readouterr().out == ""


def test_cg_on_indefinite_kernel_warns_of_breakdown(regression_data):
    X, y, _ = regression_data
    negative_kernel = ConstantKernel(-1.0) * RBF()  # negative definite
    model = HyperKernelRegressor(kernel=negative_kernel, solver="cg", cg_rank=0)
    with pytest.warns(ConvergenceWarning, match="not positive definite at working precision"):
        model.fit(X, y)
