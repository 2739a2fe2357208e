"""Nyström kernel ridge regression: centres, streamed normal equations, M-space solve.

The pieces of ``HyperKernelRegressor(solver="nystrom")`` (Falkon's problem,
Rudi, Carratino and Rosasco 2017, solved directly in the space of the
centres). With ``K_nm`` the kernel between the ``n`` training rows and ``m``
centres, ``K_mm`` the centres' Gram, ``W`` the sample weights and ``r`` the
ridge, the coefficients ``beta`` of ``f = sum_j beta_j k(., c_j)`` minimise
``sum_i w_i (y_i - f(u_i))^2 + r |f|^2`` over that span::

    (K_nm^T W K_nm + r K_mm) beta = K_nm^T W y

Three steps, each here:

* :func:`uniform_centers` / :func:`rpcholesky_centers`: which rows are centres;
* :func:`normal_equations`: ``K_nm^T W K_nm`` and ``K_nm^T W y`` accumulated
  block of rows by block of rows (``K_nm`` never exists whole), the blocks
  being joblib tasks -- threads, or a Dask cluster inside
  ``joblib.parallel_config(backend="dask")``, like the kernels' own panels;
* :func:`solve_normal_equations`: the ``m x m`` system solved after whitening
  by a Cholesky factor ``K_mm = T T^T`` (an eigen-decomposition restricted to
  the numerical range of ``K_mm`` when that fails): ``beta = T^-T w`` with
  ``(T^-1 K_nm^T W K_nm T^-T + r I) w = T^-1 K_nm^T W y``, which is the ridge
  regression on the features ``K_nm T^-T`` (scikit-learn's ``Nystroem``
  features, up to an orthogonal rotation).

Nothing here is public API; the estimator documents the behaviour.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from joblib import Parallel, delayed, effective_n_jobs
from joblib._parallel_backends import SequentialBackend, ThreadingBackend
from joblib.parallel import get_active_backend
from scipy import linalg
from scipy.linalg import blas, lapack
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from ._solvers import ONE_BLAS_THREAD_ABOVE

#: Rows per task of :func:`normal_equations` are at most this many blocks.
_MAX_BLOCKS_PER_TASK = 16
#: ... and at least enough for this many tasks (load balance over workers).
_MIN_TASKS = 8
#: Candidates drawn per round of accelerated RPCholesky.
_RPCHOLESKY_BLOCK = 64


# ------------------------------------------------------------------ rows
def subset_rows(rows: Any, index: slice | np.ndarray) -> Any:
    """The rows ``index`` of a ``FactorizedRows``, with only the x they use.

    Every field is sliced by its kind, so fields added to ``FactorizedRows``
    later are kept consistent: ``x_index`` is re-indexed into the distinct x
    rows the subset uses; arrays with one entry per distinct x are taken at
    those; arrays with one entry per row are taken at ``index``; ``None`` and
    non-arrays are kept. (When every x is distinct, ``x_index`` is the
    identity, so the two kinds coincide.)
    """
    x_index = rows.x_index[index]
    used, local = np.unique(x_index, return_inverse=True)
    n_distinct = rows.x_distinct.shape[0]
    n_rows = rows.x_index.shape[0]
    changes = {}
    for field in dataclasses.fields(rows):
        value = getattr(rows, field.name)
        if field.name == "x_index":
            changes[field.name] = local.reshape(-1).astype(rows.x_index.dtype, copy=False)
        elif not isinstance(value, np.ndarray) or value.ndim == 0:
            continue
        elif value.shape[0] == n_distinct and field.name.startswith("x_"):
            changes[field.name] = value[used]
        elif value.shape[0] == n_rows:
            changes[field.name] = value[index]
        elif value.shape[0] == n_distinct:
            changes[field.name] = value[used]
    return dataclasses.replace(rows, **changes)


def _rows_fields(rows: Any) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    """Field names and values of a ``FactorizedRows``, to pass as separate arguments.

    joblib's Dask backend scatters each large array argument to the cluster
    once per call; a dataclass holding them would be serialised into every
    task instead.
    """
    names = tuple(field.name for field in dataclasses.fields(rows))
    return names, tuple(getattr(rows, name) for name in names)


def _rebuild_rows(row_type: type, names: Sequence[str], values: Sequence[Any]) -> Any:
    return row_type(**dict(zip(names, values, strict=True)))


# --------------------------------------------------------------- centres
def uniform_centers(
    n_samples: int, n_components: int, random_state: np.random.RandomState
) -> np.ndarray:
    """``n_components`` row indices drawn uniformly without replacement.

    The same draw as :class:`sklearn.kernel_approximation.Nystroem` with the
    same ``random_state`` (the first ``n_components`` of a permutation).
    """
    return random_state.permutation(n_samples)[:n_components]


def rpcholesky_centers(
    diagonal: np.ndarray,
    columns: Callable[[np.ndarray], np.ndarray],
    n_components: int,
    random_state: np.random.RandomState,
    *,
    block: int = _RPCHOLESKY_BLOCK,
) -> np.ndarray:
    """Pivots of randomly pivoted Cholesky on a PSD matrix given by columns.

    Randomly pivoted Cholesky (Chen, Epperly, Tropp and Webber, 2022) picks
    each pivot with probability proportional to the diagonal of the residual
    ``A - F F^T``. This is its accelerated, blocked form with rejection
    sampling (Epperly, Tropp and Webber, 2024): each round draws ``block``
    candidates i.i.d. from the residual diagonal at the start of the round,
    requests their columns at once, and accepts candidate ``j`` with
    probability ``residual_jj / diagonal_jj`` (the residual after the
    candidates accepted before it in the round), which gives exactly the
    distribution of sequential RPCholesky. A candidate equal to an accepted
    pivot has residual 0 and is never accepted.

    Parameters
    ----------
    diagonal : ndarray of shape (p,)
        Diagonal of ``A``.
    columns : callable
        ``columns(index)`` returns ``A[:, index]``, shape (p, len(index)).
    n_components : int
        Number of pivots wanted.
    random_state : RandomState
    block : int
        Candidates per round.

    Returns
    -------
    pivots : ndarray of int
        At most ``n_components`` distinct indices (fewer only when the
        residual vanishes: ``A`` has lower numerical rank).
    """
    diagonal = np.asarray(diagonal, dtype=np.float64)
    p = diagonal.shape[0]
    n_components = min(int(n_components), p)
    factor = np.zeros((p, n_components))
    residual = np.maximum(diagonal.copy(), 0.0)
    floor = float(np.max(residual, initial=0.0)) * p * np.finfo(float).eps
    pivots: list[int] = []
    rank = 0
    while rank < n_components:
        total = float(np.sum(residual))
        if not total > floor:
            break
        size = min(block, max(1, math.ceil(1.25 * (n_components - rank))))
        candidates = random_state.choice(p, size=size, replace=True, p=residual / total)
        start_diagonal = residual[candidates].copy()
        # residual columns for the candidates, after the pivots of earlier rounds
        new = np.asarray(columns(candidates), dtype=np.float64).reshape(p, size)
        if rank:
            new -= factor[:, :rank] @ factor[candidates, :rank].T
        accepted = 0
        for j in range(size):
            if rank + accepted == n_components:
                break
            pivot = int(candidates[j])
            column = new[:, j]
            if accepted:
                block_factor = factor[:, rank : rank + accepted]
                column = column - block_factor @ block_factor[pivot]
            value = float(column[pivot])
            if value <= floor or random_state.random_sample() * start_diagonal[j] >= value:
                continue
            factor[:, rank + accepted] = column / math.sqrt(value)
            pivots.append(pivot)
            accepted += 1
        if accepted:
            residual -= np.einsum(
                "ij,ij->i", factor[:, rank : rank + accepted], factor[:, rank : rank + accepted]
            )
            np.maximum(residual, 0.0, out=residual)
            residual[pivots[rank:]] = 0.0
            rank += accepted
    return np.asarray(pivots, dtype=np.intp)


# ----------------------------------------------------- normal equations
def _uses_torch(kernel: Any) -> bool:
    """Whether a kernel computes with torch (a ``device`` that is not numpy)."""
    device = getattr(kernel, "device", None)
    if device is None:
        return False
    try:
        from ._device import resolve_device

        return resolve_device(device) is not None
    except Exception:  # an unusable device: the kernel itself will say so
        return True


def _run_tasks(
    task: Callable,
    calls: Sequence[tuple],
    n_jobs: int | None,
    consume: Callable[[Any], None],
    *,
    sequential_locally: bool = False,
    consume_in_workers: bool = False,
) -> None:
    """Run ``task(*call)`` for every call, handing each result to ``consume``.

    Sequentially the results come in order; in parallel as they finish, so
    sums over them agree between runs to rounding, not bit for bit.

    The rule of the kernels' own panels: ``n_jobs`` is joblib's (None is 1
    unless a ``parallel_config`` context says otherwise). Local threads run
    with BLAS limited to one thread each (otherwise every thread's BLAS starts
    its own threads on the same cores); any other backend -- Dask's inside
    ``parallel_config(backend="dask")`` -- gets the tasks as they are, its
    large array arguments scattered to the cluster once.
    ``sequential_locally``: run one task at a time unless on such a backend
    (a torch kernel parallelises inside each task, and a GPU runs one at a
    time), as the kernels' own panels do. ``consume_in_workers``: local
    threads hand their own result to ``consume`` (under a lock), so that a
    finished task's result is dropped at once instead of waiting for the
    caller's thread.
    """
    backend, _ = get_active_backend(prefer="threads")
    local = isinstance(backend, (ThreadingBackend, SequentialBackend))
    if len(calls) <= 1 or effective_n_jobs(n_jobs) == 1 or (local and sequential_locally):
        for call in calls:
            consume(task(*call))
        return
    if local:
        with threadpool_limits(limits=1, user_api="blas"):
            if consume_in_workers:
                lock = threading.Lock()

                def locked(output: Any) -> None:
                    with lock:
                        consume(output)

                Parallel(n_jobs=n_jobs, prefer="threads", batch_size=1)(
                    delayed(_consume_in_worker)(task, locked, call) for call in calls
                )
                return
            outputs = Parallel(
                n_jobs=n_jobs,
                prefer="threads",
                return_as="generator_unordered",
                pre_dispatch="n_jobs",
                batch_size=1,
            )(delayed(task)(*call) for call in calls)
            try:
                for output in outputs:
                    consume(output)
            finally:
                outputs.close()
        return
    outputs = Parallel(n_jobs=n_jobs, return_as="generator_unordered", batch_size=1)(
        delayed(task)(*call) for call in calls
    )
    try:
        for output in outputs:
            consume(output)
    finally:
        outputs.close()


def _consume_in_worker(task: Callable, consume: Callable[[Any], None], call: tuple) -> None:
    consume(task(*call))


def _block_kernel(
    kernel: Any, factorized: bool, data: Any, index: slice, centres: Any
) -> np.ndarray:
    """``K(rows[index], centres)`` as a C-ordered float64 array."""
    if factorized:
        K = kernel.gram_factorized(subset_rows(data, index), centres)
    else:
        K = kernel(data[index], centres)
    return np.ascontiguousarray(K, dtype=np.float64)


def _unpack(
    factorized: bool, row_type: type | None, names: Sequence[str], values: Sequence[Any]
) -> Any:
    return _rebuild_rows(row_type, names, values) if factorized else values[0]


def _normal_equations_task(
    kernel: Any,
    factorized: bool,
    row_type: type | None,
    names: Sequence[str],
    n_data: int,
    task_rows: slice,
    block_rows: int,
    targets: np.ndarray,
    weights: np.ndarray | None,
    whitening_kind: str | None,
    whitening_matrix: np.ndarray | None,
    *arrays: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """``A W A^T`` (upper triangle, Fortran order) and ``A W y_b`` over rows ``task_rows``,
    with ``A = K_b^T`` or, given a whitening ``T``, ``T^-1 K_b^T``.

    ``arrays`` are the data's fields (``n_data`` of them), then the centres'.
    """
    whitening = (
        None
        if whitening_kind is None
        else Whitening(whitening_kind, whitening_matrix, 0, 0.0, True)
    )
    data = _unpack(factorized, row_type, names, arrays[:n_data])
    centres = _unpack(factorized, row_type, names, arrays[n_data:])
    gram = None
    rhs = None
    for start in range(task_rows.start, task_rows.stop, block_rows):
        index = slice(start, min(start + block_rows, task_rows.stop))
        K = _block_kernel(kernel, factorized, data, index, centres)
        y = targets[index]
        if weights is not None:
            root = np.sqrt(weights[index])
            K *= root[:, None]
            y = y * root[:, None]
        gram, rhs = _accumulate(gram, rhs, K, y, whitening)
    return gram, rhs


#: Up to this many centres, the m x m factorisations run on one BLAS thread
#: (:func:`m_space_threads`).
SINGLE_THREAD_SOLVE_MAX = 4096


def m_space_threads(m: int) -> threadpool_limits:
    """BLAS threads for the ``m x m`` factorisations: one up to
    ``SINGLE_THREAD_SOLVE_MAX`` centres, the library's default beyond.

    On the two-core development machine OpenBLAS's threaded ``dpotrf`` and
    ``dsygst`` were 2.5 to 10 times *slower* than one thread at ``m`` = 1,000
    to 4,000 (idle machine, load average 0.8: ``dpotrf`` 0.38 s vs 0.16 s,
    ``dsygst`` 0.53 s vs 0.27 s at ``m = 2000``), and up to 10 times under
    load; one thread takes at most a few seconds there. Larger ``m`` on more
    cores gains from threads, except above ``ONE_BLAS_THREAD_ABOVE`` (a
    crash of the bundled OpenBLAS, see :mod:`sklearn_hyperkernel._solvers`).
    """
    one = m <= SINGLE_THREAD_SOLVE_MAX or m > ONE_BLAS_THREAD_ABOVE  # the latter: a crash guard
    return threadpool_limits(limits=1 if one else None, user_api="blas")


#: Rows per chunk of :func:`symmetrize`.
_SWEEP_ROWS = 512


def symmetrize(matrix: np.ndarray, filled: str) -> np.ndarray:
    """Copy the ``filled`` ("lower" or "upper") triangle of a square C-ordered
    array onto the other one, in place, in row chunks (no temporary larger
    than a chunk). Returns ``matrix``."""
    n = matrix.shape[0]
    for start in range(0, n, _SWEEP_ROWS):
        stop = min(start + _SWEEP_ROWS, n)
        block = matrix[start:stop, start:stop]
        if filled == "lower":
            matrix[start:stop, stop:] = matrix[stop:, start:stop].T
            other = np.triu_indices(stop - start, 1)
        else:
            matrix[stop:, start:stop] = matrix[start:stop, stop:].T
            other = np.tril_indices(stop - start, -1)
        block[other] = block.T[other]
    return matrix


def task_partition(n_rows: int, block_rows: int) -> list[slice]:
    """Rows per task: whole blocks, at least ``_MIN_TASKS`` tasks while blocks allow,
    at most ``_MAX_BLOCKS_PER_TASK`` blocks each. Independent of ``n_jobs``, so the
    sums (and the result) do not depend on the number of workers."""
    n_blocks = max(1, math.ceil(n_rows / block_rows))
    blocks_per_task = min(_MAX_BLOCKS_PER_TASK, max(1, n_blocks // _MIN_TASKS))
    rows_per_task = blocks_per_task * block_rows
    return [
        slice(start, min(start + rows_per_task, n_rows))
        for start in range(0, n_rows, rows_per_task)
    ]


def normal_equations(
    kernel: Any,
    data: Any,
    centres: Any,
    targets: np.ndarray,
    weights: np.ndarray | None,
    *,
    factorized: bool,
    block_rows: int,
    n_jobs: int | None,
    whitening: Whitening | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``K_nm^T W K_nm`` and ``K_nm^T W y``, streamed over blocks of ``block_rows`` rows.

    Given ``whitening`` (``T``), ``T^-1 K_nm^T W K_nm T^-T`` and ``T^-1 K_nm^T W y``
    instead, each block whitened before it is accumulated.

    Parameters
    ----------
    kernel : Kernel
        Evaluated inside the tasks (give it ``n_jobs=1``: the tasks are the
        parallelism).
    data, centres : FactorizedRows (``factorized``) or ndarray
        The training rows and the centres.
    targets : ndarray of shape (n, n_targets)
    weights : ndarray of shape (n,) or None

    Returns
    -------
    gram : ndarray of shape (m, m), symmetric
        (``(k, k)`` when whitened by an ``eigh`` whitening of rank ``k``)
    rhs : ndarray of shape (m, n_targets)
    """
    if factorized:
        row_type = type(data)
        names, data_values = _rows_fields(data)
        _, centre_values = _rows_fields(centres)
        n_rows = data.x_index.shape[0]
    else:
        row_type, names = None, ()
        data_values, centre_values = (data,), (centres,)
        n_rows = data.shape[0]
    partition = task_partition(n_rows, block_rows)
    calls = [
        (kernel, factorized, row_type, names, len(data_values), rows, block_rows, targets, weights)
        + ((None, None) if whitening is None else (whitening.kind, whitening.matrix))
        + tuple(data_values)
        + tuple(centre_values)
        for rows in partition
    ]
    total: dict[str, Any] = {"gram": None, "rhs": None, "done": 0}
    started = time.perf_counter()

    def consume(result: tuple[np.ndarray, np.ndarray]) -> None:
        gram, rhs = result
        if total["gram"] is None:
            total["gram"], total["rhs"] = gram, rhs
        else:
            total["gram"] += gram
            total["rhs"] += rhs
        total["done"] += 1
        if log is not None:
            log(
                f"Nystroem normal equations: {total['done']}/{len(calls)} tasks "
                f"({partition[0].stop - partition[0].start} rows each), "
                f"{time.perf_counter() - started:.1f}s"
            )

    _run_tasks(
        _normal_equations_task,
        calls,
        n_jobs,
        consume,
        sequential_locally=_uses_torch(kernel),
        consume_in_workers=True,
    )
    # dsyrk filled the upper triangle of the Fortran-ordered sum, which is the
    # lower triangle of its C-ordered transpose: mirror it there, in place
    gram = total["gram"].T
    symmetrize(gram, "lower")
    return gram, total["rhs"]


def _predict_task(
    kernel: Any,
    factorized: bool,
    row_type: type | None,
    names: Sequence[str],
    n_centre: int,
    task_rows: slice,
    block_rows: int,
    coef: np.ndarray,
    X: np.ndarray,
    *centre_values: Any,
) -> tuple[int, np.ndarray]:
    """``K(X[task_rows], centres) @ coef``, block by block."""
    centres = _unpack(factorized, row_type, names, centre_values)
    out = np.empty((task_rows.stop - task_rows.start, coef.shape[1]))
    for start in range(task_rows.start, task_rows.stop, block_rows):
        stop = min(start + block_rows, task_rows.stop)
        if factorized:
            K = kernel.gram_factorized(kernel.factorize_rows(X[start:stop]), centres)
        else:
            K = kernel(X[start:stop], centres)
        np.matmul(
            np.asarray(K, dtype=np.float64),
            coef,
            out=out[start - task_rows.start : stop - task_rows.start],
        )
    return task_rows.start, out


def predict_blocks(
    kernel: Any,
    X: np.ndarray,
    centres: Any,
    coef: np.ndarray,
    *,
    factorized: bool,
    block_rows: int,
    n_jobs: int | None,
) -> np.ndarray:
    """``K(X, centres) @ coef`` in blocks of rows, the blocks as parallel tasks."""
    if factorized:
        row_type = type(centres)
        names, centre_values = _rows_fields(centres)
    else:
        row_type, names, centre_values = None, (), (centres,)
    out = np.empty((X.shape[0], coef.shape[1]))
    calls = [
        (kernel, factorized, row_type, names, len(centre_values), rows, block_rows, coef, X)
        + tuple(centre_values)
        for rows in task_partition(X.shape[0], block_rows)
    ]

    def consume(result: tuple[int, np.ndarray]) -> None:
        start, part = result
        out[start : start + part.shape[0]] = part

    _run_tasks(_predict_task, calls, n_jobs, consume, sequential_locally=_uses_torch(kernel))
    return out


# ------------------------------------------------------------- the solve
#: Below this reciprocal condition number of ``K_mm``, the blocks of ``K_nm``
#: are whitened before they are accumulated (see :class:`Whitening`).
WHITEN_BLOCKS_BELOW_RCOND = 1e-6


def _max_abs_row_sum(matrix: np.ndarray) -> float:
    """Infinity norm (= 1-norm for a symmetric matrix), in row chunks."""
    norm = 0.0
    for start in range(0, matrix.shape[0], _SWEEP_ROWS):
        norm = max(norm, float(np.abs(matrix[start : start + _SWEEP_ROWS]).sum(axis=1).max()))
    return norm


def _cholesky(matrix: np.ndarray, overwrite: bool = False) -> tuple[np.ndarray | None, float]:
    """Lower Cholesky factor of a symmetric matrix and its reciprocal condition number.

    The factor is None when the matrix is not numerically positive definite
    (the factorisation fails or the reciprocal condition number is below
    ``m`` times the machine epsilon). ``overwrite`` (a C-ordered ``matrix``):
    the factor is written into ``matrix``'s upper triangle (the lower one of
    its Fortran-ordered transpose, which is returned); its strictly lower
    triangle is left as it was.
    """
    m = matrix.shape[0]
    if m == 0:
        return np.zeros((0, 0)), 1.0
    norm = _max_abs_row_sum(matrix)
    if overwrite and matrix.flags.c_contiguous:
        factor, info = lapack.dpotrf(matrix.T, lower=1, clean=0, overwrite_a=1)
    else:
        factor, info = lapack.dpotrf(matrix, lower=1, clean=1, overwrite_a=0)
    if info != 0 or not np.all(np.isfinite(np.diagonal(factor))):
        return None, 0.0
    rcond, info = lapack.dpocon(factor, norm, uplo="L")
    if info != 0 or not math.isfinite(rcond) or rcond < m * np.finfo(float).eps:
        return None, float(rcond) if math.isfinite(rcond) else 0.0
    return factor, float(rcond)


@dataclasses.dataclass
class Whitening:
    """A factor ``T`` with ``T T^T = K_mm`` on the numerical range of ``K_mm``.

    ``kind="cholesky"``: ``T`` is the lower Cholesky factor (``matrix``).
    ``kind="eigh"`` (``K_mm`` not numerically positive definite: duplicated or
    nearly duplicated centres): ``T^-T`` is ``U_k S_k^-1/2`` (``matrix``), from
    the eigenvalues above ``m * eps * max``; the span loses only directions
    that no row of ``K_nm`` can see (a null vector of ``K_mm`` is one of
    ``K_nm`` too, for a PSD kernel).

    ``whiten_blocks``: whether each block of ``K_nm`` is whitened
    (``K_b T^-T``) before it is accumulated. Accumulating ``K_nm^T W K_nm``
    and whitening it afterwards is half the flops but squares the conditioning
    of ``K_mm`` into the rounding errors, which is harmless for the
    hypernetwork kernels at their defaults (``K_mm`` has a condition number of
    about 10^4) and not for smooth kernels such as an RBF (10^10 and more);
    blocks are whitened when the reciprocal condition number of ``K_mm`` is
    below ``WHITEN_BLOCKS_BELOW_RCOND`` and always with ``kind="eigh"``.
    """

    kind: str
    matrix: np.ndarray
    rank: int
    rcond: float
    whiten_blocks: bool

    @classmethod
    def of(cls, centre_gram: np.ndarray) -> Whitening:
        m = centre_gram.shape[0]
        factor, rcond = _cholesky(centre_gram)
        if factor is not None:
            return cls("cholesky", factor, m, rcond, rcond < WHITEN_BLOCKS_BELOW_RCOND)
        values, vectors = linalg.eigh(centre_gram, check_finite=False)
        kept = values > m * np.finfo(float).eps * max(
            float(np.max(np.abs(values), initial=0.0)), 0.0
        )
        inverse_root = vectors[:, kept] / np.sqrt(values[kept])
        return cls(
            "eigh", np.ascontiguousarray(inverse_root), int(np.count_nonzero(kept)), rcond, True
        )

    def project(self, A: np.ndarray) -> np.ndarray:
        """``T^-1 A`` for ``A`` of shape (m, k)."""
        if self.kind == "cholesky":
            return linalg.solve_triangular(self.matrix, A, lower=True, check_finite=False)
        return self.matrix.T @ A

    def back(self, w: np.ndarray) -> np.ndarray:
        """``T^-T w``: coefficients of the centres from whitened ones."""
        if self.kind == "cholesky":
            return linalg.solve_triangular(
                self.matrix, w, lower=True, trans="T", check_finite=False
            )
        return self.matrix @ w


def _accumulate(
    gram: np.ndarray | None,
    rhs: np.ndarray | None,
    K: np.ndarray,
    y: np.ndarray,
    whitening: Whitening | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Add ``A A^T`` and ``A y`` to ``gram`` and ``rhs``, with ``A = K^T`` or ``T^-1 K^T``."""
    A = K.T if whitening is None else np.asfortranarray(whitening.project(K.T))
    if gram is None:
        gram = np.zeros((A.shape[0], A.shape[0]), order="F")
        rhs = np.zeros((A.shape[0], y.shape[1]))
    # A is Fortran-ordered: dsyrk reads it without a copy and adds A A^T into
    # the upper triangle of ``gram`` in place
    gram = blas.dsyrk(1.0, A, beta=1.0, c=gram, trans=0, lower=0, overwrite_c=1)
    rhs += A @ y
    return gram, rhs


def solve_normal_equations(
    whitening: Whitening, gram: np.ndarray, rhs: np.ndarray, ridges: np.ndarray, *, whitened: bool
) -> np.ndarray:
    """Solve ``(gram + r_j K_mm) beta_j = rhs_j`` for each target ``j``.

    With ``K_mm = T T^T`` (see :class:`Whitening`) the system becomes
    ``(H + r_j I) w_j = T^-1 rhs_j`` with ``H = T^-1 gram T^-T`` and ``beta_j
    = T^-T w_j``: the ridge regression on the features ``K_nm T^-T``
    (scikit-learn's ``Nystroem`` features, up to an orthogonal rotation).
    ``H + r_j I`` has eigenvalues at least ``r_j``, so its Cholesky
    factorisation is stable; if rounding makes it indefinite all the same, an
    eigen-solve of ``H`` with its negative eigenvalues set to 0 is used, with a
    warning. ``whitened``: ``gram`` and ``rhs`` are already ``H`` and
    ``T^-1 rhs`` (the blocks were whitened).
    """
    gram = np.ascontiguousarray(gram)
    if whitened:
        H, projected_rhs = gram, rhs
    elif whitening.kind == "cholesky":
        # T^-1 gram T^-T in place by LAPACK's dsygst (the reduction of a
        # generalised symmetric eigenproblem): m^3 flops, half of two
        # triangular solves. ``gram.T`` is Fortran-ordered (and equal to
        # ``gram``); the result fills its lower triangle, the upper one of ``H``.
        reduced, info = lapack.dsygst(gram.T, whitening.matrix, itype=1, lower=1, overwrite_a=1)
        if info != 0:
            raise ValueError(f"dsygst failed with info={info}.")
        H = symmetrize(np.ascontiguousarray(reduced.T), "upper")
        projected_rhs = whitening.project(rhs)
    else:
        H = whitening.project(whitening.project(gram).T)
        projected_rhs = whitening.project(rhs)
    symmetrize(H, "lower")
    coef = np.empty((whitening.matrix.shape[0], rhs.shape[1]))
    eigen = None
    distinct_ridges = np.unique(ridges)
    diagonal = np.diagonal(H).copy()
    for ridge in distinct_ridges:
        columns = np.flatnonzero(ridges == ridge)
        # one ridge (the usual case): factorise H + r I in place, not a copy
        shifted = H if distinct_ridges.shape[0] == 1 else H.copy()
        shifted[np.diag_indices_from(shifted)] = diagonal + ridge
        # the factor is written into ``shifted`` (the lower triangle of its
        # Fortran-ordered view, the only one cho_solve reads)
        shifted_factor, _ = _cholesky(shifted, overwrite=True)
        if shifted_factor is not None:
            w = linalg.cho_solve(
                (shifted_factor, True), projected_rhs[:, columns], check_finite=False
            )
        else:
            if eigen is None:
                if shifted is H:  # undo the attempt: H's lower triangle is intact
                    symmetrize(H, "lower")
                    np.fill_diagonal(H, diagonal)
                eigen = linalg.eigh(H, check_finite=False)
                warnings.warn(
                    "The Nystroem system K_nm^T W K_nm + ridge * K_mm is not numerically "
                    f"positive definite (ridge={ridge:g}); solved by an eigen-decomposition "
                    "with its negative eigenvalues set to 0. Increase alpha.",
                    ConvergenceWarning,
                    stacklevel=3,
                )
            values, vectors = eigen
            w = vectors @ (
                (vectors.T @ projected_rhs[:, columns]) / (np.maximum(values, 0.0) + ridge)[:, None]
            )
        coef[:, columns] = whitening.back(w)
    return coef
