"""Tests of the small dense helpers of the solvers (``_linalg``), against numpy and scipy."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from threadpoolctl import threadpool_info

from sklearn_hyperkernel import set_config
from sklearn_hyperkernel._utils.linalg import (
    blas_threads,
    guarded_cholesky,
    max_abs_row_sum,
    symmetrize,
)


def _blas_threads() -> int:
    return max(info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas")


@pytest.mark.parametrize("n", [1, 7, 512, 1100])  # one chunk, and chunks of 512 rows with a rest
@pytest.mark.parametrize("filled", ["lower", "upper"])
def test_symmetrize_copies_one_triangle_onto_the_other(n, filled):
    rng = np.random.default_rng(n)
    A = rng.normal(size=(n, n))
    kept = np.tril(A) if filled == "lower" else np.triu(A)
    expected = kept + kept.T - np.diag(np.diag(A))
    out = symmetrize(A, filled)
    assert out is A
    assert_array_equal(A, expected)


def test_max_abs_row_sum_is_the_infinity_norm():
    A = np.random.default_rng(0).normal(size=(1300, 40))
    assert max_abs_row_sum(A) == pytest.approx(np.linalg.norm(A, np.inf), rel=1e-14)
    assert max_abs_row_sum(np.zeros((0, 3))) == 0.0


def test_guarded_cholesky_factorises_a_positive_definite_matrix():
    A = np.random.default_rng(1).normal(size=(30, 30))
    K = A @ A.T + 30 * np.eye(30)
    factor, rcond = guarded_cholesky(K)
    lower = np.tril(factor)
    assert_allclose(lower @ lower.T, K, rtol=1e-12, atol=1e-12)
    # dpocon's estimate is within a small factor of the true reciprocal condition number
    true = 1.0 / (np.linalg.norm(K, 1) * np.linalg.norm(np.linalg.inv(K), 1))
    assert true / 3 <= rcond <= 3 * true
    assert guarded_cholesky(np.zeros((0, 0)))[1] == 1.0


def test_guarded_cholesky_in_place_keeps_the_strict_lower_triangle():
    A = np.random.default_rng(2).normal(size=(20, 20))
    K = A @ A.T + np.eye(20)
    work = K.copy()
    factor, _ = guarded_cholesky(work, overwrite=True)
    assert np.shares_memory(factor, work)
    assert_array_equal(np.tril(work, -1), np.tril(K, -1))  # a failed attempt could be undone
    lower = np.tril(factor)
    assert_allclose(lower @ lower.T, K, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "matrix",
    [
        np.diag([1.0, -1.0, 2.0]),  # indefinite: the factorisation fails
        np.array([[1.0, 1.0], [1.0, 1.0 + 1e-17]]),  # singular to rounding: rcond below n eps
    ],
    ids=["indefinite", "singular"],
)
def test_guarded_cholesky_refuses_matrices_that_are_not_numerically_positive_definite(matrix):
    factor, rcond = guarded_cholesky(matrix.copy())
    assert factor is None
    assert rcond < matrix.shape[0] * np.finfo(float).eps


def test_blas_threads_limits_large_and_small_factorisations():
    default = _blas_threads()
    set_config(one_blas_thread_above=100)
    with blas_threads(101):
        assert _blas_threads() == 1
    with blas_threads(100):
        assert _blas_threads() == default
    with blas_threads(50, one_thread_up_to=50):
        assert _blas_threads() == 1
    assert _blas_threads() == default
