"""Tests of the exact kernel ridge solve on a dense Gram (``_dense_solver``, ``solver="cholesky"``).

References: ``numpy.linalg.solve`` on the same matrices, and the estimator's own
behaviour on ill-conditioned and indefinite kernels.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Kernel
from test_kernel_ridge import random_rows, regression_rows

from sklearn_hyperkernel import HyperKernel, HyperKernelRegressor, set_config
from sklearn_hyperkernel._operator.gram_operator import gram_operator
from sklearn_hyperkernel._solvers.dense import solve_dense, training_gram


@pytest.fixture
def regression_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return regression_rows()


def _psd(n: int, seed: int = 0) -> np.ndarray:
    A = np.random.default_rng(seed).normal(size=(n, n))
    return A @ A.T


def test_solves_each_target_with_its_ridge_and_restores_the_matrix_between():
    K = _psd(40)
    Y = np.random.default_rng(1).normal(size=(40, 3))
    ridges = np.array([1e-2, 3.0, 1e-2])
    coef = solve_dense(K.copy(), Y, ridges, None)
    for target, ridge in enumerate(ridges):
        expected = np.linalg.solve(K + ridge * np.eye(40), Y[:, target])
        assert_allclose(coef[:, target], expected, rtol=1e-9)


@pytest.mark.parametrize("order", ["C", "F"])
def test_sample_weight_is_the_weighted_loss(order):
    """``c = S (S K S + r I)^-1 S y`` minimises ``sum_i w_i (y_i - (K c)_i)^2 + r c^T K c``."""
    K = _psd(30, seed=2)
    y = np.random.default_rng(3).normal(size=(30, 1))
    weights = np.random.default_rng(4).uniform(0.0, 2.0, size=30)
    coef = solve_dense(np.array(K, order=order), y, np.array([0.5]), weights)
    # the normal equations of the weighted loss: K (W K + r I) c = K W y
    W = np.diag(weights)
    assert_allclose(K @ (W @ K + 0.5 * np.eye(30)) @ coef, K @ W @ y, rtol=1e-8, atol=1e-10)
    assert_allclose(coef, np.linalg.solve(W @ K + 0.5 * np.eye(30), W @ y), rtol=1e-8, atol=1e-12)


def test_duplicated_rows_and_tiny_alpha_warn_and_stay_finite(regression_data):
    X, y, X_test = regression_data
    X_dup, y_dup = np.vstack([X, X, X]), np.concatenate([y, y, y])
    with pytest.warns(ConvergenceWarning, match="added a jitter of"):
        model = HyperKernelRegressor(alpha=1e-16).fit(X_dup, y_dup)
    assert np.all(np.isfinite(model.dual_coef_))
    prediction = model.predict(X_test)
    assert np.all(np.isfinite(prediction))
    assert model.score(X, y) > 0.99


def test_indefinite_kernel_falls_back_to_eigen_solve(regression_data):
    X, y, X_test = regression_data
    negative_kernel = ConstantKernel(-1.0) * RBF()  # negative definite
    with pytest.warns(ConvergenceWarning, match="eigen-decomposition"):
        model = HyperKernelRegressor(kernel=negative_kernel).fit(X, y)
    assert np.all(np.isfinite(model.predict(X_test)))


def test_eigen_fallback_is_the_least_squares_solve_on_the_positive_eigenspace():
    rng = np.random.default_rng(5)
    basis, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    values = np.concatenate([np.linspace(1.0, 5.0, 15), -np.linspace(1.0, 2.0, 5)])
    K = (basis * values) @ basis.T
    y = rng.normal(size=(20, 1))
    with pytest.warns(ConvergenceWarning, match="dropping 5 non-positive eigenvalue"):
        coef = solve_dense(K.copy(), y, np.array([1e-3]), None)
    kept = basis[:, :15]
    expected = kept @ ((kept.T @ y) / (values[:15] + 1e-3)[:, None])
    assert_allclose(coef, expected, rtol=1e-10, atol=1e-12)


def test_large_dense_solves_run_lapack_on_one_blas_thread(monkeypatch):
    """Above one_blas_thread_above rows the Cholesky runs on one BLAS thread: the pinned
    OpenBLAS crashed (SIGSEGV) in multi-threaded dpotrf from 16,000 rows on the development
    machine. The solution does not change."""
    from scipy.linalg import lapack
    from threadpoolctl import threadpool_info

    rng = np.random.default_rng(0)
    A = rng.normal(size=(60, 60))
    K, y = A @ A.T, rng.normal(size=(60, 1))
    expected = np.linalg.solve(K + 0.1 * np.eye(60), y)
    threads = []
    factorise = lapack.dpotrf

    def spy(*args, **kwargs):
        threads.append(max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"))
        return factorise(*args, **kwargs)

    monkeypatch.setattr(lapack, "dpotrf", spy)
    set_config(one_blas_thread_above=50)
    solution = solve_dense(K.copy(), y, np.array([0.1]), None)
    assert threads == [1]
    assert_allclose(solution, expected, rtol=1e-10)
    threads.clear()
    set_config(one_blas_thread_above=100)
    solve_dense(K.copy(), y, np.array([0.1]), None)
    assert threads and threads[0] == max(
        i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"
    )


class _WrongShape(Kernel):
    """A kernel whose Gram has one row too many."""

    def __call__(self, X, Y=None, eval_gradient=False):
        return np.ones((X.shape[0] + 1, X.shape[0]))

    def diag(self, X):
        return np.ones(X.shape[0])

    def is_stationary(self):
        return False


class _Infinite(_WrongShape):
    """A kernel whose Gram has an infinite entry."""

    def __call__(self, X, Y=None, eval_gradient=False):
        K = np.eye(X.shape[0])
        K[0, 1] = K[1, 0] = np.inf
        return K


def test_training_gram_is_the_kernel_matrix_and_checks_it():
    X = random_rows(n_images=3, pixels_per_image=4)
    K = training_gram(gram_operator(HyperKernel(), X))
    assert_allclose(K, HyperKernel()(X), rtol=1e-14)
    assert K.flags.writeable and (K.flags.c_contiguous or K.flags.f_contiguous)
    with pytest.raises(ValueError, match=r"Gram matrix of shape \(13, 12\) for 12 rows"):
        training_gram(gram_operator(_WrongShape(), X))
    with pytest.raises(ValueError, match="non-finite values"):
        training_gram(gram_operator(_Infinite(), X))
    # a hypernetwork kernel refuses rows whose values would overflow before any Gram
    huge = X.copy()
    huge[:, :-2] *= 1e200
    with pytest.raises(ValueError, match="would overflow to infinity"):
        training_gram(gram_operator(HyperKernel(normalize_x=False), huge))


def test_unweighted_coefficients_map_back_and_refuse_non_finite():
    """The one mapping of the weighted system's coefficients (dense and CG solvers):
    ``c = sqrt(w) c_w``, and a non-finite coefficient is the solver's named error."""
    from sklearn_hyperkernel._solvers.dense import unweighted_coefficients

    weighted = np.array([[1.0, -2.0], [3.0, 0.5], [0.0, 4.0]])
    root_weight = np.sqrt(np.array([4.0, 0.25, 9.0]))
    expected = np.array([[2.0, -4.0], [1.5, 0.25], [0.0, 12.0]])
    np.testing.assert_array_equal(
        unweighted_coefficients(weighted.copy(), root_weight, "unused"), expected
    )
    np.testing.assert_array_equal(unweighted_coefficients(weighted.copy(), None, "x"), weighted)
    weighted[1, 0] = np.nan
    with pytest.raises(ValueError, match="the CG solve failed"):
        unweighted_coefficients(weighted, root_weight, "the CG solve failed")
