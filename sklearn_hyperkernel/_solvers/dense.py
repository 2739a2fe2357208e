"""The exact kernel ridge solve on a dense Gram matrix, guarded against non-PD matrices.

``HyperKernelRegressor(solver="cholesky")`` forms the ``n x n`` training Gram
``K`` and solves ``(K + r_j I) c_j = y_j`` for each target ``j`` with its
ridge ``r_j`` (the weighted problem through ``diag(s) K diag(s)``,
``s = sqrt(sample_weight)``). The solve (:func:`solve_dense`) works in place
on ``K``:

1. a Cholesky factorisation guarded by its condition number
   (:func:`._utils.linalg.guarded_cholesky`);
2. if ``K + r I`` is not numerically positive definite, a jitter growing
   from ``1e-10`` to ``1e-4`` times the mean of the diagonal, with a
   :class:`~sklearn.exceptions.ConvergenceWarning` that states it;
3. past that, a symmetric eigen-solve that drops the non-positive
   eigenvalues, also with a warning.

Between attempts ``K`` is restored from its strictly lower triangle, which
the factorisation leaves untouched. Above
``one_blas_thread_above`` rows (:mod:`sklearn_hyperkernel.config`) LAPACK runs on one BLAS thread.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg
from sklearn.exceptions import ConvergenceWarning

from .._operator.gram_operator import GramOperator, check_finite_kernel
from .._utils.linalg import blas_threads, guarded_cholesky, symmetrize

__all__ = ["solve_dense", "training_gram", "unweighted_coefficients"]

#: The first diagonal jitter tried, relative to the mean of the diagonal.
FIRST_RELATIVE_JITTER = 1e-10
#: The largest diagonal jitter tried before falling back to an eigen-solve.
MAX_RELATIVE_JITTER = 1e-4
#: Factor by which the jitter grows between two Cholesky attempts.
JITTER_GROWTH = 10.0


def training_gram(operator: GramOperator) -> np.ndarray:
    """The training Gram of ``operator``, checked: float64, writeable, owned by the caller.

    Raises
    ------
    ValueError
        When the kernel returns a matrix of the wrong shape or non-finite values.
    """
    K = operator.gram()
    n = operator.n_rows
    if K.shape != (n, n):
        raise ValueError(f"The kernel returned a Gram matrix of shape {K.shape} for {n} rows.")
    check_finite_kernel(K)
    return K


def solve_dense(
    gram: np.ndarray,
    targets: np.ndarray,
    ridges: np.ndarray,
    sample_weight: np.ndarray | None,
) -> np.ndarray:
    """Dual coefficients ``c`` minimising the weighted kernel ridge loss.

    With ``s = sqrt(sample_weight)`` the weighted problem is the unweighted one
    on ``diag(s) K diag(s)`` and ``diag(s) y``, and ``c = diag(s) c_scaled``.
    Targets that share a ridge are solved with one factorisation.

    Parameters
    ----------
    gram : ndarray of shape (n_samples, n_samples)
        Training Gram matrix, symmetric, C- or Fortran-ordered; overwritten.
    targets : ndarray of shape (n_samples, n_targets)
    ridges : ndarray of shape (n_targets,)
        Positive ridge per target.
    sample_weight : ndarray of shape (n_samples,) or None
        Non-negative weights.

    Returns
    -------
    dual_coef : ndarray of shape (n_samples, n_targets)

    Raises
    ------
    ValueError
        When the coefficients are not finite (the Gram is too ill-conditioned
        for the ridge).
    """
    with blas_threads(gram.shape[0]):
        return _solve(gram, targets, ridges, sample_weight)


def _solve(
    gram: np.ndarray, targets: np.ndarray, ridges: np.ndarray, sample_weight: np.ndarray | None
) -> np.ndarray:
    # Work on a C-ordered matrix; for a symmetric F-ordered one the transpose is it.
    gram_c = gram if gram.flags.c_contiguous else gram.T
    if not gram_c.flags.c_contiguous:
        gram_c = np.ascontiguousarray(gram)
    if sample_weight is not None:
        root_weight = np.sqrt(sample_weight)
        gram_c *= root_weight[:, None]
        gram_c *= root_weight[None, :]
        targets = targets * root_weight[:, None]
    diagonal = np.diagonal(gram_c).copy()

    dual_coef = np.empty_like(targets, dtype=np.float64)
    distinct_ridges = np.unique(ridges)
    for index, ridge in enumerate(distinct_ridges):
        if index > 0:
            _restore(gram_c, diagonal)
        columns = np.flatnonzero(ridges == ridge)
        dual_coef[:, columns] = _solve_one_ridge(
            gram_c, diagonal, targets[:, columns], float(ridge)
        )
    return unweighted_coefficients(
        dual_coef,
        None if sample_weight is None else root_weight,
        "The kernel ridge solve produced non-finite coefficients; the Gram "
        "matrix is too ill-conditioned for alpha. Increase alpha.",
    )


def unweighted_coefficients(
    dual_coef: np.ndarray, root_weight: np.ndarray | None, failure: str
) -> np.ndarray:
    """The dual coefficients of the weighted system mapped back, refused when not finite.

    The solvers solve ``(W^1/2 K W^1/2 + r I) c_w = W^1/2 y`` (``W`` the
    sample weights); the coefficients of ``K`` are ``c = W^1/2 c_w``.

    Parameters
    ----------
    dual_coef : ndarray of shape (n_samples, n_targets)
        ``c_w``; overwritten.
    root_weight : ndarray of shape (n_samples,) or None
        ``sqrt(sample_weight)``; None: no weights.
    failure : str
        The message of the error.

    Returns
    -------
    ndarray of shape (n_samples, n_targets)

    Raises
    ------
    ValueError
        ``failure``, when a coefficient is not finite.
    """
    if root_weight is not None:
        dual_coef *= root_weight[:, None]
    if not np.all(np.isfinite(dual_coef)):
        raise ValueError(failure)
    return dual_coef


def _restore(gram_c: np.ndarray, diagonal: np.ndarray) -> None:
    """Undo a factorisation attempt: rebuild the upper triangle and the diagonal."""
    symmetrize(gram_c, "lower")
    np.fill_diagonal(gram_c, diagonal)


def _cholesky_solve(gram_c: np.ndarray, targets: np.ndarray) -> np.ndarray | None:
    """``gram_c^-1 targets`` by a guarded Cholesky factorisation in place, or None."""
    factor, _ = guarded_cholesky(gram_c, overwrite=True)
    if factor is None:
        return None
    return linalg.cho_solve((factor, True), targets, check_finite=False)


def _eigen_solve(gram_c: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, int]:
    """Least-squares solve on the positive eigen-space of a symmetric matrix."""
    eigenvalues, eigenvectors = linalg.eigh(
        gram_c, lower=True, overwrite_a=True, check_finite=False
    )
    tolerance = max(abs(eigenvalues[-1]), abs(eigenvalues[0])) * gram_c.shape[0]
    tolerance *= np.finfo(float).eps
    kept = eigenvalues > tolerance
    projected = eigenvectors[:, kept].T @ targets
    projected /= eigenvalues[kept][:, None]
    return eigenvectors[:, kept] @ projected, int(np.count_nonzero(~kept))


def _solve_one_ridge(
    gram_c: np.ndarray, diagonal: np.ndarray, targets: np.ndarray, ridge: float
) -> np.ndarray:
    """Solve ``(K + ridge I) c = targets``: Cholesky, then jitter, then an eigen-solve.

    ``gram_c`` holds ``K`` in its strictly lower triangle and ``diagonal`` its
    diagonal; it is overwritten (:func:`_restore` gets ``K`` back).
    """
    np.fill_diagonal(gram_c, diagonal + ridge)
    solution = _cholesky_solve(gram_c, targets)
    if solution is not None:
        return solution

    mean_diagonal = float(np.mean(np.abs(diagonal + ridge)))
    if not mean_diagonal > 0:
        mean_diagonal = 1.0
    relative_jitter = FIRST_RELATIVE_JITTER
    while relative_jitter <= MAX_RELATIVE_JITTER * (1 + 1e-12):
        jitter = relative_jitter * mean_diagonal
        _restore(gram_c, diagonal + ridge + jitter)
        solution = _cholesky_solve(gram_c, targets)
        if solution is not None:
            warnings.warn(
                "K + alpha*I is not numerically positive definite (alpha="
                f"{ridge:g}); added a jitter of {jitter:.3e} "
                f"({relative_jitter:.0e} x the mean diagonal {mean_diagonal:.3e}) "
                "to its diagonal. Consider a larger alpha or removing duplicated "
                "rows.",
                ConvergenceWarning,
                stacklevel=6,
            )
            return solution
        relative_jitter *= JITTER_GROWTH

    _restore(gram_c, diagonal + ridge)
    solution, n_dropped = _eigen_solve(gram_c, targets)
    warnings.warn(
        "K + alpha*I is not positive definite even with a jitter of "
        f"{MAX_RELATIVE_JITTER:.0e} x its mean diagonal (alpha={ridge:g}); "
        "solved by a symmetric eigen-decomposition, dropping "
        f"{n_dropped} non-positive eigenvalue(s). Check that the kernel is "
        "positive semi-definite.",
        ConvergenceWarning,
        stacklevel=6,
    )
    return solution
