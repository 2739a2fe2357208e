"""Kernel ridge regression by preconditioned conjugate gradients on a Gram operator.

``HyperKernelRegressor(solver="cg")``: the system ``(K + r_j I) c_j = y_j``
(one ridge ``r_j`` per target) is solved without ever holding ``K``. Each
iteration asks the :class:`~._operator.GramOperator` for ``K @ V`` on the
search directions of all targets at once; the preconditioner is
``(L L^T + r I)^-1`` with ``L`` a partial pivoted Cholesky factor of rank
``cg_rank`` built from ``cg_rank`` rows of ``K``. The algorithms themselves are
pure and live in :mod:`._solvers.iterative`; this module sets them up for kernel ridge
regression: the sample weights, the preconditioner's stopping rule, the
progress lines and the warnings.

With ``s = sqrt(sample_weight)`` the weighted system is
``(S K S + r I) c' = S y`` and ``c = S c'``, as in the dense solve.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from .._operator.gram_operator import GramOperator, check_finite_kernel
from ..config import get_config
from ..progress import log
from .dense import unweighted_coefficients
from .iterative import LowRankPreconditioner, conjugate_gradient, pivoted_cholesky

__all__ = ["CGFit", "fit_cg"]


@dataclass
class CGFit:
    """Outcome of :func:`fit_cg`.

    Attributes
    ----------
    dual_coef : ndarray of shape (n_rows, n_targets)
        In the units of the unweighted problem.
    n_iter : int
        CG iterations (block products ``K @ V``).
    residual : float
        Largest relative residual ``|y_j - (K + r_j I) c_j| / |y_j|``.
    rank : int
        Rank of the preconditioner built.
    """

    dual_coef: np.ndarray
    n_iter: int
    residual: float
    rank: int


def fit_cg(
    operator: GramOperator,
    targets: np.ndarray,
    ridges: np.ndarray,
    sample_weight: np.ndarray | None,
    *,
    tol: float,
    max_iter: int,
    rank: int,
    verbose: int = 0,
    source: str = "HyperKernelRegressor",
) -> CGFit:
    """Dual coefficients of kernel ridge regression by preconditioned CG.

    Parameters
    ----------
    operator : GramOperator
        The training Gram ``K``; asked for its diagonal, ``rank`` rows and one
        ``K @ V`` per iteration.
    targets : ndarray of shape (n_rows, n_targets)
    ridges : ndarray of shape (n_targets,)
        Positive ridge per target, in the kernel's units.
    sample_weight : ndarray of shape (n_rows,) or None
    tol : float
        Each target stops when its relative residual is at most ``tol``.
    max_iter : int
    rank : int
        Largest rank of the preconditioner; 0 runs plain CG.
    verbose : int, default=0
        A line when the preconditioner is built, every 10 iterations (every
        one at ``verbose >= 2``) and at the end.
    source : str, default="HyperKernelRegressor"
        Who speaks in the lines (:func:`sklearn_hyperkernel.progress.log`).

    Returns
    -------
    CGFit

    Warns
    -----
    ConvergenceWarning
        When a target did not reach ``tol``: after ``max_iter`` iterations, or
        on a non-positive curvature (``K + r I`` not positive definite at
        working precision).

    Raises
    ------
    ValueError
        When ``K @ V`` or the coefficients are not finite.
    """
    diagonal = operator.diagonal
    root_weight = None if sample_weight is None else np.sqrt(sample_weight)
    weighted_diagonal = diagonal if root_weight is None else diagonal * sample_weight

    def weighted_column(index: int) -> np.ndarray:
        column = operator.row(index)
        if root_weight is not None:
            column *= root_weight * root_weight[index]
        return column

    def weighted_matvec(vectors: np.ndarray) -> np.ndarray:
        if root_weight is None:
            product = operator.matvec(vectors)
        else:
            product = operator.matvec(vectors * root_weight[:, None])
            product *= root_weight[:, None]
        check_finite_kernel(product)
        return product

    started = time.perf_counter()
    factor = pivoted_cholesky(
        weighted_diagonal,
        weighted_column,
        rank,
        stop_trace=get_config()["cg_preconditioner_trace_fraction"] * float(np.min(ridges)),
    )
    preconditioner = LowRankPreconditioner(factor)
    del factor
    if verbose:
        log(
            source,
            f"pivoted Cholesky preconditioner of rank {preconditioner.rank} "
            f"built in {time.perf_counter() - started:.1f}s",
        )

    every = 1 if verbose >= 2 else 10

    def report(iteration: int, relative_residuals: np.ndarray) -> None:
        if verbose and (iteration % every == 0 or iteration == 1):
            log(
                source,
                f"CG iteration {iteration}: relative residual "
                f"{float(np.max(relative_residuals)):.3e} (tol {tol:g}), "
                f"{time.perf_counter() - started:.1f}s",
            )

    rhs = targets if root_weight is None else targets * root_weight[:, None]
    result = conjugate_gradient(
        weighted_matvec,
        rhs,
        ridges,
        preconditioner=preconditioner,
        tol=tol,
        max_iter=max_iter,
        callback=report,
    )
    residual = float(np.max(result.relative_residuals, initial=0.0))
    if verbose:
        log(
            source,
            f"CG {'converged' if result.converged else 'stopped'} after "
            f"{result.n_iter} iteration(s), relative residual "
            f"{residual:.3e}, {time.perf_counter() - started:.1f}s",
        )
    _warn_unless_converged(
        result.converged, result.breakdown, result.n_iter, residual, tol, max_iter
    )
    dual_coef = unweighted_coefficients(
        result.solution,
        root_weight,
        "The CG solve produced non-finite coefficients; the kernel matrix "
        "may not be positive semi-definite. Increase alpha.",
    )
    return CGFit(dual_coef, result.n_iter, residual, preconditioner.rank)


def _warn_unless_converged(
    converged: bool, breakdown: bool, n_iter: int, residual: float, tol: float, max_iter: int
) -> None:
    """The :class:`~sklearn.exceptions.ConvergenceWarning` of a CG that stopped early."""
    if converged:
        return
    if breakdown:
        message = (
            f"CG stopped after {n_iter} iteration(s) at a relative residual "
            f"of {residual:.3e} (tol={tol:g}): K + alpha*I is not "
            "positive definite at working precision (a non-positive or non-finite "
            "curvature). Increase alpha, rescale X, or use solver='cholesky', "
            "which falls back to a jitter or an eigen-solve."
        )
    else:
        message = (
            f"CG did not reach tol={tol:g} in {n_iter} iteration(s) "
            f"(max_iter={max_iter}); relative residual {residual:.3e}. "
            "Increase max_iter or cg_rank, or increase alpha."
        )
    # the caller of the estimator's fit: this, fit_cg, the estimator's _fit_cg and fit, it
    warnings.warn(message, ConvergenceWarning, stacklevel=5)
