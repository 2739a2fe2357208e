"""Small dense linear-algebra helpers shared by the kernel ridge solvers.

The exact solve (:mod:`._solvers.dense`) and the Nyström solve
(:mod:`._solvers.nystrom_system`) work on symmetric matrices held as one triangle,
factorise them with a Cholesky factorisation guarded by its condition number,
and choose how many BLAS threads LAPACK may use; the Gram engine fills a
symmetric matrix from blocks of its upper block triangle, and the product of
such a matrix with vectors (:func:`upper_triangle_matvec`, the one ``K @ V``
loop: the Gram engine's for the hypernetwork kernels and the operator's for
any other kernel) streams over that triangle without holding it. Each of these
exists once, here. Arrays only (numpy and
scipy; the block product also torch, through the array API): nothing here
knows about kernels or estimators.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from array_api_compat import array_namespace
from array_api_compat import device as array_device
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits

from ..config import get_config
from ..progress import ProgressLog
from .scheduling import run_tasks

__all__ = [
    "blas_threads",
    "block_contribution",
    "guarded_cholesky",
    "max_abs_row_sum",
    "mirror_below",
    "mirror_leading_square",
    "symmetrize",
    "upper_block_product",
    "upper_triangle_matvec",
]


def blas_threads(size: int, *, one_thread_up_to: int = 0) -> threadpool_limits:
    """Context that sets the BLAS threads of a dense factorisation of ``size`` rows.

    One thread above the configuration's ``one_blas_thread_above`` (a crash
    guard: the bundled OpenBLAS crashed in threaded ``dpotrf`` from 16,000
    rows up, see :mod:`sklearn_hyperkernel.config`) and up to
    ``one_thread_up_to`` (where threads are slower, see
    :func:`._solvers.nystrom_system.component_space_threads`); the library's default
    otherwise.
    """
    one = size > get_config()["one_blas_thread_above"] or size <= one_thread_up_to
    return threadpool_limits(limits=1 if one else None, user_api="blas")


def mirror_leading_square(value: np.ndarray) -> None:
    """Copy the upper triangle of a block's leading square onto its lower one, in place.

    ``value`` holds ``K[i:i+m, i:]`` of a symmetric ``K`` (a block of the
    upper block triangle): its leading ``m x m`` square straddles the
    diagonal, and its upper triangle is the part the block owns, so the
    result is exactly symmetric there. The diagonal is left as it is. Works
    on numpy arrays of 2 dimensions, or 3 (a gradient, the last axis one per
    hyperparameter).
    """
    size = value.shape[0]
    lower = np.tril_indices(size, -1)
    square = value[:, :size]
    square[lower] = np.swapaxes(square, 0, 1)[lower]


def upper_block_product(block: Any, vectors: Any, diagonal: Any, out: Any = None) -> Any:
    """Add what one block of the upper block triangle of ``K`` gives to ``K @ V``.

    The one implementation of a product with a symmetric matrix that is
    computed only on its upper block triangle (the engine's
    :func:`._gram.engine.gram_matvec`, and any kernel tiled the same way). With
    ``block = K[i:i+m, i:] = [S | R]`` (``S`` its leading ``m x m`` square,
    straddling the diagonal), ``S`` is taken as its strict upper triangle
    mirrored, with the exact ``diagonal`` written in, as in the matrix a
    symmetric Gram is filled to; then ``S V_own + R V_rest`` is added to the
    block's own rows and ``R^T V_own`` to the rows below. Summing the
    contributions of blocks that tile rows ``0..n`` gives ``K @ V``.

    Parameters
    ----------
    block : array of shape (m, n - i)
        ``K[i:i+m, i:]``; only the strict upper triangle of its leading square
        and the columns after it are read. Not modified.
    vectors : array of shape (n - i, k)
        ``V[i:]``.
    diagonal : array of shape (m,)
        ``diag(K)[i:i+m]``.
    out : array of shape (n - i, k), optional
        ``(K @ V)[i:]`` so far, to which the contribution is added in place;
        None starts from zeros.

    Returns
    -------
    array of shape (n - i, k)
        ``out``. numpy arrays or torch tensors (one namespace and device for
        all), through the array API.
    """
    xp = array_namespace(block, vectors)
    out = xp.zeros_like(vectors) if out is None else out
    size = block.shape[0]
    square = xp.triu(block[:, :size], k=1)
    square = square + square.T
    on_diagonal = xp.arange(size, device=array_device(block))
    square[on_diagonal, on_diagonal] = diagonal
    rest = block[:, size:]
    out[:size] += square @ vectors[:size] + rest @ vectors[size:]
    out[size:] += rest.T @ vectors[:size]
    return out


def block_contribution(
    tiles: Iterable[tuple[slice, Any]], start: int, vectors: Any, diagonal: Any
) -> Any:
    """What one block ``K[i:j, i:]`` of the upper block triangle gives to ``K @ V``.

    The sum of :func:`upper_block_product` over the block's tiles, in their
    order; a tile ``(rows, value)`` holds ``K[rows, rows.start:]`` (its rows
    consecutive, the first at ``start``).

    Parameters
    ----------
    tiles : iterable of (slice, array of shape (len(rows), n - rows.start))
    start : int
        ``i``, the block's first row.
    vectors : array of shape (n - i, k)
        ``V[i:]``.
    diagonal : array of shape (n,)
        ``diag(K)``, all of it.

    Returns
    -------
    array of shape (n - i, k)
        The contribution to ``(K @ V)[i:]``, in the namespace of ``vectors``.
    """
    contribution = array_namespace(vectors).zeros_like(vectors)
    for rows, value in tiles:
        offset = rows.start - start
        upper_block_product(value, vectors[offset:], diagonal[rows], contribution[offset:])
    return contribution


def upper_triangle_matvec(
    task: Callable[..., tuple[int, np.ndarray]],
    calls: list[tuple],
    vectors: np.ndarray,
    n_jobs: int | None,
    *,
    progress: ProgressLog | None = None,
    sequential_locally: bool = False,
) -> np.ndarray:
    """``K @ V`` of a symmetric ``K`` from the blocks of its upper block triangle: the one loop.

    ``task(*call)`` evaluates one block ``K[i:j, i:]`` (the blocks of
    ``calls`` tile the rows ``0..n`` in order) and returns ``(i,
    block_contribution(...))`` as a float64 numpy array. The tasks are run
    by :func:`._utils.scheduling.run_tasks` (threads, Dask) and their
    contributions summed in the order of ``calls``, so the product does not
    depend on the number of workers (on local threads).

    Parameters
    ----------
    task : callable
        A module-level function (see :func:`._utils.scheduling.run_tasks`).
    calls : list of tuple
        The arguments of each block's task, in the order of the blocks.
    vectors : ndarray of shape (n, k)
        ``V``, float64; the product takes its shape.
    n_jobs : int or None
        As :func:`._utils.scheduling.run_tasks`.
    progress : ProgressLog, optional
        Stepped once per block.
    sequential_locally : bool, default=False
        One block at a time unless on Dask (torch parallelises inside a block).

    Returns
    -------
    ndarray of shape (n, k)
    """
    product = np.zeros_like(vectors)

    def consume(result: tuple[int, np.ndarray]) -> None:
        start, contribution = result
        product[start:] += contribution

    run_tasks(
        task,
        calls,
        n_jobs,
        consume,
        progress=progress,
        sequential_locally=sequential_locally,
        ordered=True,
    )
    return product


def symmetrize(matrix: np.ndarray, filled: str = "lower") -> np.ndarray:
    """Copy the ``filled`` triangle of a square C-ordered array onto the other one.

    In place and in chunks of rows, so that no temporary larger than a chunk
    is made; the diagonal is left as it is.

    Parameters
    ----------
    matrix : ndarray of shape (n, n)
        C-ordered; overwritten.
    filled : {"lower", "upper"}
        The triangle that holds the values.

    Returns
    -------
    ndarray
        ``matrix``.
    """
    n, sweep = matrix.shape[0], get_config()["sweep_rows"]
    for start in range(0, n, sweep):
        stop = min(start + sweep, n)
        block = matrix[start:stop, start:stop]
        if filled == "upper":
            mirror_leading_square(matrix[start:stop, start:])
            mirror_below(matrix, slice(start, stop))
            continue
        matrix[start:stop, stop:] = matrix[stop:, start:stop].T
        other = np.triu_indices(stop - start, 1)
        block[other] = block.T[other]
    return matrix


def mirror_below(matrix: np.ndarray, rows: slice) -> None:
    """``matrix[rows.stop:, rows]`` from ``matrix[rows, rows.stop:]``, in place.

    The part of the lower triangle that mirrors the rows ``rows`` of a
    symmetric matrix filled from its upper triangle; a 3-dimensional array (a
    gradient) keeps its last axis.
    """
    matrix[rows.stop :, rows] = np.swapaxes(matrix[rows, rows.stop :], 0, 1)


def max_abs_row_sum(matrix: np.ndarray) -> float:
    """Infinity norm ``max_i sum_j |A_ij|`` (the 1-norm of a symmetric ``A``), by chunks."""
    norm, sweep = 0.0, get_config()["sweep_rows"]
    for start in range(0, matrix.shape[0], sweep):
        chunk = np.abs(matrix[start : start + sweep])
        norm = max(norm, float(chunk.sum(axis=1).max()))
    return norm


def guarded_cholesky(
    matrix: np.ndarray, *, overwrite: bool = False
) -> tuple[np.ndarray | None, float]:
    """Lower Cholesky factor of a symmetric matrix, if it is numerically positive definite.

    LAPACK's ``dpotrf`` factorises, and ``dpocon`` estimates the reciprocal
    condition number in the 1-norm (:func:`max_abs_row_sum` of ``matrix``).
    The matrix counts as numerically positive definite when the factorisation
    succeeds with a finite diagonal and the reciprocal condition number is at
    least ``n`` times the machine epsilon.

    Parameters
    ----------
    matrix : ndarray of shape (n, n)
        Symmetric, both triangles filled (LAPACK reads one: the lower one, or
        the upper one with ``overwrite``).
    overwrite : bool, default=False
        With a C-ordered ``matrix``: factorise in place. The factor is written
        into the upper triangle of ``matrix`` (the lower triangle of its
        Fortran-ordered transpose, which is returned) and the strictly lower
        triangle of ``matrix`` is left as it was, so that a failed attempt
        can be undone (:func:`symmetrize`). Otherwise ``matrix`` is copied.

    Returns
    -------
    factor : ndarray of shape (n, n) or None
        Its lower triangle is the factor (Fortran-ordered; what
        :func:`scipy.linalg.cho_solve` reads with ``lower=True``); None when
        the matrix is not numerically positive definite.
    rcond : float
        The reciprocal condition number estimate (0 when the factorisation
        failed; 1 for an empty matrix).
    """
    n = matrix.shape[0]
    if n == 0:
        return np.zeros((0, 0)), 1.0
    norm = max_abs_row_sum(matrix)
    if overwrite and matrix.flags.c_contiguous:
        factor, info = lapack.dpotrf(matrix.T, lower=1, clean=0, overwrite_a=1)
    else:
        factor, info = lapack.dpotrf(matrix, lower=1, clean=1, overwrite_a=0)
    if info != 0 or not np.all(np.isfinite(np.diagonal(factor))):
        return None, 0.0
    rcond, info = lapack.dpocon(factor, norm, uplo="L")
    if info != 0 or not math.isfinite(rcond) or rcond < n * np.finfo(float).eps:
        return None, float(rcond) if math.isfinite(rcond) else 0.0
    return factor, float(rcond)
