"""Matrix-free solvers for shifted symmetric positive semi-definite systems.

Pure numpy: nothing here knows about estimators or kernels. The operator is a
callable ``matvec(V) -> K @ V`` on blocks of vectors, so ``K`` itself need
never exist; the systems solved are ``(K + shift_j I) x_j = b_j``, one shift per
column ``j`` of the right-hand side.

Two pieces:

* :func:`pivoted_cholesky` -- a greedy, partial pivoted Cholesky factor
  ``K ~ L L^T`` of low rank, built from the diagonal of ``K`` and the columns it
  pivots on (one column of ``K`` per rank).
* :func:`conjugate_gradient` -- preconditioned conjugate gradients run on all
  columns at once (one ``matvec`` on a block of vectors per iteration, each
  column with its own step sizes), with the low-rank preconditioner
  ``(L L^T + shift I)^-1`` applied through an orthonormal basis of ``L``
  (:class:`LowRankPreconditioner`), in ``O(n r)`` per column.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CGResult",
    "LowRankPreconditioner",
    "conjugate_gradient",
    "pivoted_cholesky",
]


def pivoted_cholesky(
    diagonal: np.ndarray,
    column: Callable[[int], np.ndarray],
    max_rank: int,
    *,
    stop_trace: float = 0.0,
) -> np.ndarray:
    """Greedy partial pivoted Cholesky factor of a PSD matrix given column by column.

    At each step the row with the largest remaining diagonal of
    ``K - L L^T`` is chosen, its column of ``K`` requested, and the factor
    extended by one column (the algorithm of Harbrecht, Peters and Schneider,
    2012, also used by GPyTorch's preconditioner).

    Parameters
    ----------
    diagonal : ndarray of shape (n,)
        Diagonal of ``K``.
    column : callable
        ``column(i)`` returns ``K[:, i]`` as an array of shape (n,).
    max_rank : int
        Largest number of columns of the factor.
    stop_trace : float, default=0.0
        Stop early once the trace of the remainder ``K - L L^T`` is at most
        this (the remainder's norm is bounded by its trace). The factor also
        stops when the remaining diagonal is at the level of rounding.

    Returns
    -------
    factor : ndarray of shape (n, rank)
        ``L`` with ``rank <= max_rank``.
    """
    diagonal = np.asarray(diagonal, dtype=np.float64)
    n = diagonal.shape[0]
    max_rank = int(min(max_rank, n))
    # stored transposed: the rows of ``factor_t`` (columns of L) built so far
    # are one contiguous block
    factor_t = np.zeros((max_rank, n))
    remainder = diagonal.copy()
    floor = max(float(np.max(diagonal, initial=0.0)), 0.0) * n * np.finfo(float).eps
    rank = 0
    while rank < max_rank:
        pivot = int(np.argmax(remainder))
        pivot_value = float(remainder[pivot])
        if pivot_value <= floor or float(np.sum(np.maximum(remainder, 0.0))) <= stop_trace:
            break
        new_column = np.array(column(pivot), dtype=np.float64).reshape(n)
        if rank:
            new_column = new_column - factor_t[:rank, pivot] @ factor_t[:rank]
        new_column /= np.sqrt(pivot_value)
        factor_t[rank] = new_column
        remainder -= new_column**2
        remainder[pivot] = 0.0
        rank += 1
    return factor_t[:rank].T


class LowRankPreconditioner:
    """Apply ``(L L^T + shift I)^-1`` for one or several shifts.

    With ``L = U S W^T`` (thin SVD, ``U`` orthonormal)::

        (L L^T + s I)^-1 r = U diag(1 / (S^2 + s)) U^T r + (r - U U^T r) / s

    which is the Woodbury identity written without its cancellation for small
    shifts ``s``.

    Parameters
    ----------
    factor : ndarray of shape (n, rank)
        ``L``; ``rank`` may be 0, giving ``r / s``.
    """

    def __init__(self, factor: np.ndarray) -> None:
        factor = np.asarray(factor, dtype=np.float64)
        self.n_samples, self.rank = factor.shape
        if self.rank:
            basis, triangle = np.linalg.qr(factor)
            small_left, singular_values, _ = np.linalg.svd(triangle)
            self.basis = basis @ small_left
            self.squared_singular_values = singular_values**2
        else:
            self.basis = np.zeros((self.n_samples, 0))
            self.squared_singular_values = np.zeros(0)

    def apply(self, residuals: np.ndarray, shifts: np.ndarray) -> np.ndarray:
        """Return ``(L L^T + shift_j I)^-1 residuals[:, j]`` for every column j.

        Parameters
        ----------
        residuals : ndarray of shape (n, k)
        shifts : ndarray of shape (k,)
            Positive shifts, one per column.

        Returns
        -------
        ndarray of shape (n, k)
        """
        projected = self.basis.T @ residuals  # (rank, k)
        result = residuals - self.basis @ projected
        result /= shifts[None, :]
        projected /= self.squared_singular_values[:, None] + shifts[None, :]
        result += self.basis @ projected
        return result


@dataclass
class CGResult:
    """Outcome of :func:`conjugate_gradient`.

    Attributes
    ----------
    solution : ndarray of shape (n, k)
    n_iter : int
        Iterations (block matvecs) done; the largest over the columns.
    relative_residuals : ndarray of shape (k,)
        ``|b_j - A_j x_j| / |b_j|`` per column, from the CG recurrence (0 for a
        zero right-hand side).
    converged : bool
        Whether every column reached the tolerance.
    breakdown : bool
        Whether some column stopped on a non-positive curvature ``p^T A p`` or
        a non-finite value: the operator is not positive definite (at working
        precision) or overflowed.
    """

    solution: np.ndarray
    n_iter: int
    relative_residuals: np.ndarray
    converged: bool
    breakdown: bool = False


def conjugate_gradient(
    matvec: Callable[[np.ndarray], np.ndarray],
    rhs: np.ndarray,
    shifts: np.ndarray,
    *,
    preconditioner: LowRankPreconditioner | None = None,
    tol: float = 1e-6,
    max_iter: int = 1000,
    callback: Callable[[int, np.ndarray], None] | None = None,
) -> CGResult:
    """Solve ``(K + shift_j I) x_j = rhs[:, j]`` for all j by preconditioned CG.

    The columns are independent CG runs that share each ``matvec``: one call
    per iteration on the block of search directions of the columns not yet
    converged.

    Parameters
    ----------
    matvec : callable
        ``matvec(V)`` returns ``K @ V`` for ``V`` of shape (n, m), ``m <= k``.
        ``K`` must be symmetric positive semi-definite.
    rhs : ndarray of shape (n, k)
    shifts : ndarray of shape (k,)
        Positive shift per column.
    preconditioner : LowRankPreconditioner, default=None
        ``None`` runs CG preconditioned by ``1 / shift`` only (plain CG).
    tol : float, default=1e-6
        A column stops when ``|residual| <= tol * |rhs column|``.
    max_iter : int, default=1000
    callback : callable, default=None
        Called as ``callback(iteration, relative_residuals)`` after each
        iteration.

    Returns
    -------
    CGResult
    """
    rhs = np.asarray(rhs, dtype=np.float64)
    n, k = rhs.shape
    shifts = np.broadcast_to(np.asarray(shifts, dtype=np.float64), (k,)).copy()
    if preconditioner is None:
        preconditioner = LowRankPreconditioner(np.zeros((n, 0)))

    solution = np.zeros((n, k))
    residual = rhs.copy()
    rhs_norms = np.linalg.norm(rhs, axis=0)
    safe_norms = np.where(rhs_norms > 0, rhs_norms, 1.0)
    relative = np.where(rhs_norms > 0, 1.0, 0.0)
    active = relative > tol

    preconditioned = preconditioner.apply(residual, shifts)
    direction = preconditioned.copy()
    rho = np.einsum("ij,ij->j", residual, preconditioned)
    n_iter = 0
    breakdown = False
    while np.any(active) and n_iter < max_iter:
        cols = np.flatnonzero(active)
        p = direction[:, cols]
        ap = matvec(p)
        ap += shifts[cols][None, :] * p
        curvature = np.einsum("ij,ij->j", p, ap)
        step = rho[cols] / curvature
        solution[:, cols] += step[None, :] * p
        r = residual[:, cols] - step[None, :] * ap
        residual[:, cols] = r
        relative[cols] = np.linalg.norm(r, axis=0) / safe_norms[cols]
        n_iter += 1
        if callback is not None:
            callback(n_iter, relative.copy())
        still = relative[cols] > tol
        # a non-positive curvature or a non-finite value ends that column: the
        # operator is not positive definite there (or overflowed)
        broken = ~np.isfinite(relative[cols]) | ~(curvature > 0)
        still &= ~broken
        breakdown |= bool(np.any(broken & (relative[cols] > tol)))
        active[cols] = still
        keep = cols[still]
        if keep.size == 0:
            break
        z = preconditioner.apply(residual[:, keep], shifts[keep])
        rho_new = np.einsum("ij,ij->j", residual[:, keep], z)
        beta = rho_new / rho[keep]
        direction[:, keep] = z + beta[None, :] * direction[:, keep]
        rho[keep] = rho_new
    return CGResult(
        solution=solution,
        n_iter=n_iter,
        relative_residuals=relative,
        converged=bool(np.all(relative <= tol)),
        breakdown=breakdown,
    )
