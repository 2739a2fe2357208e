"""The Gram matrix of a set of training rows, as an operator the solvers share.

The kernel ridge solvers never ask a kernel directly: they ask a
:class:`GramOperator` -- the matrix ``K[i, j] = k(u_i, u_j)`` of one fixed set
of rows -- for what they need of ``K``:

============================  ================================================
``n_rows``, ``diagonal``      its size and its diagonal (``kernel.diag``)
``gram()``                    the whole matrix (the exact solver)
``block(rows, cols)``         a block ``K[rows, cols]``
``row(i)``, ``columns(idx)``  a row, columns, with the exact diagonal written in
                              (pivoted Cholesky preconditioner, RPCholesky)
``matvec(V)``                 ``K @ V`` streamed over the upper block triangle,
                              never holding ``K`` (conjugate gradients)
``cross(rows)``               ``K(rows, these rows)`` for other rows: new
                              rows or another operator's (Nyström's sums)
``cross_product(X, coef)``    ``K(X, these rows) @ coef`` in blocks of rows,
                              the blocks parallel tasks (prediction)
``take(index)``               the operator of a subset of the rows (Nyström's components)
``sequential()``              the operator for use inside parallel tasks
============================  ================================================

The pieces of the work: a *block* is the consecutive output rows one task
computes, a *tile* the part of a block evaluated in one kernel call
(:func:`block_partition`); ``block_size`` is the rows of a block.

Two implementations, chosen once by :func:`gram_operator`:

* :class:`GramOperator` serves any scikit-learn kernel: every block is a call
  ``kernel(X[rows], X[cols])`` and ``K @ V`` goes block by block over the
  upper block triangle (:func:`._utils.linalg.upper_triangle_matvec`, the one
  loop of that product, which the Gram engine's ``K @ V`` runs too);
* :class:`FactorizedGramOperator` serves HyperKernel and HyperNNGP: the rows
  are factorised once (``factorize_rows``: each distinct x found and its
  quantities computed once), every block is ``gram_factorized`` on subsets
  of them (``FactorizedRows.take``), and ``K @ V`` is the kernel's own
  ``gram_matvec`` (parallel, on its device, on Dask).

An operator is picklable and holds its kernel by reference, so a fitted
estimator that keeps one predicts with its kernel's current settings (its
``device``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import clone

from .._utils.device import resolve_device
from .._utils.linalg import block_contribution, upper_triangle_matvec
from .._utils.scheduling import run_tasks
from ..config import get_config
from ..progress import ProgressLog

__all__ = [
    "FactorizingKernel",
    "check_finite_kernel",
    "FactorizedGramOperator",
    "GramOperator",
    "block_partition",
    "gram_operator",
]


def block_partition(
    n_rows: int,
    n_cols: int,
    block_size: int | None,
    *,
    min_blocks: int = 1,
    tile_bytes: int | None = None,
) -> tuple[list[slice], int]:
    """Blocks of output rows (one task each) and the rows of their tiles (one kernel call each).

    ``block_size`` given: blocks of ``block_size`` rows, each one tile (the
    rule of the Gram engine). None: tiles of at most ``tile_bytes`` (None:
    the configuration's ``operator_tile_bytes``, 16 MiB) of ``n_cols``
    float64 columns, and at most ``ceil(n_rows / min_blocks)`` rows unless
    that is below ``operator_min_tile_rows`` (256); blocks of whole tiles, at
    least ``min_blocks`` of them while tiles allow and at most
    ``operator_max_tiles_per_block`` (16) tiles each
    (:mod:`sklearn_hyperkernel.config`). None of it depends on the number of
    workers, so neither do sums over the blocks.

    Returns
    -------
    blocks : list of slice
    tile_rows : int
    """
    if block_size is not None:
        tile_rows = int(block_size)
        tiles_per_block = 1
    else:
        config = get_config()
        tile_bytes = config["operator_tile_bytes"] if tile_bytes is None else tile_bytes
        by_bytes = max(1, tile_bytes // (8 * max(n_cols, 1)))
        min_rows = config["operator_min_tile_rows"]
        tile_rows = min(by_bytes, max(min_rows, -(-n_rows // min_blocks)))
        n_tiles = max(1, math.ceil(n_rows / tile_rows))
        most = config["operator_max_tiles_per_block"]
        tiles_per_block = min(most, max(1, n_tiles // min_blocks))
    block_rows = tiles_per_block * tile_rows
    return _slices(slice(0, n_rows), block_rows), tile_rows


def tiles(block: slice, tile_rows: int) -> list[slice]:
    """The tiles of ``tile_rows`` rows of a block (the last one may be shorter)."""
    return _slices(block, tile_rows)


def _slices(rows: slice, size: int) -> list[slice]:
    starts = range(rows.start, rows.stop, size)
    return [slice(start, min(start + size, rows.stop)) for start in starts]


def check_finite_kernel(values: np.ndarray) -> None:
    """Raise the one error of a kernel that returned NaN or infinity on the training rows.

    The sum of the values is finite when every value is, so it is tested first
    (no boolean temporary of the values' size); only a non-finite sum, which
    may also be an overflow of finite values, needs the full test.

    Raises
    ------
    ValueError
        When ``values`` holds NaN or infinity.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.sum(values)
    if not np.isfinite(total) and not np.all(np.isfinite(values)):
        raise ValueError(
            "The kernel returned non-finite values on the training data; check the scale of X."
        )


def gram_operator(kernel: Any, X: np.ndarray, *, block_size: int | None = None) -> GramOperator:
    """The Gram operator of the rows ``X`` for ``kernel``.

    A kernel that factorises rows (``factorize_rows``, ``gram_factorized``
    and ``gram_matvec``: the hypernetwork kernels) gets a
    :class:`FactorizedGramOperator`, any other kernel a :class:`GramOperator`.

    Parameters
    ----------
    kernel : Kernel
    X : ndarray of shape (n_rows, n_features)
        Validated float64 rows.
    block_size : int or None, default=None
        Rows per block of :meth:`GramOperator.matvec` for a kernel that does
        not factorise rows (None: at most the configuration's
        ``matvec_block_bytes`` per block).
        A factorising kernel uses its own ``block_size`` parameter.
    """
    if isinstance(kernel, FactorizingKernel):
        return FactorizedGramOperator(kernel, kernel.factorize_rows(X), X, block_size=block_size)
    return GramOperator(kernel, X, block_size=block_size)


class FactorizingKernel(ABC):
    """What a kernel offers the operator when it factorises its rows (the hypernetwork kernels).

    A kernel that derives from this class is wrapped in a :class:`FactorizedGramOperator`:
    its rows are factorised once, and every block, column, cross block and product of the
    operator is one of these three public calls. Any other scikit-learn kernel is wrapped in
    a :class:`GramOperator`, which calls ``kernel(X, Y)``.
    """

    @abstractmethod
    def factorize_rows(self, X: Any) -> Any:
        """Validated rows, factorised once (their distinct x found)."""

    @abstractmethod
    def gram_factorized(self, rows_a: Any, rows_b: Any = None, *, stream_entries: Any = None):
        """The kernel between two sets of factorised rows (``rows_b=None``: symmetric)."""

    @abstractmethod
    def gram_matvec(self, rows: Any, vectors: np.ndarray) -> np.ndarray:
        """``K @ vectors`` for the Gram of ``rows``, without forming it."""


class GramOperator:
    """``K = kernel(X, X)`` for any scikit-learn kernel, evaluated block by block.

    Parameters
    ----------
    kernel : Kernel
        Held by reference (not copied).
    X : ndarray of shape (n_rows, n_features)
        Validated float64 rows.
    block_size : int or None, default=None
        Rows per block of :meth:`matvec`.
    diagonal : ndarray of shape (n_rows,) or None, default=None
        ``kernel.diag(X)`` when already known; computed on first use otherwise.
    """

    def __init__(
        self,
        kernel: Any,
        X: np.ndarray,
        *,
        block_size: int | None = None,
        diagonal: np.ndarray | None = None,
    ) -> None:
        self.kernel = kernel
        self.X = X
        self.block_size = block_size
        self._diagonal = diagonal

    # ----------------------------------------------------------- description
    @property
    def n_rows(self) -> int:
        """Number of rows (and columns) of ``K``."""
        return self.X.shape[0]

    @property
    def diagonal(self) -> np.ndarray:
        """``diag(K)`` from ``kernel.diag`` (O(n); computed once, float64).

        Raises
        ------
        ValueError
            When the kernel returns non-finite values.
        """
        if self._diagonal is None:
            if self.X is None:
                raise ValueError("This operator was made without X: its diagonal is unknown.")
            diagonal = np.asarray(self.kernel.diag(self.X), dtype=np.float64)
            check_finite_kernel(diagonal)
            self._diagonal = diagonal
        return self._diagonal

    @property
    def n_jobs(self) -> int | None:
        """The kernel's ``n_jobs`` parameter (None when it has none)."""
        return self.kernel.get_params(deep=False).get("n_jobs", None)

    @property
    def uses_torch(self) -> bool:
        """Whether the kernel computes with torch (its ``device`` is not numpy)."""
        device = getattr(self.kernel, "device", None)
        if device is None:
            return False
        try:
            return resolve_device(device) is not None
        except Exception:  # an unusable device: the kernel itself will say so
            return True

    def __sizeof__(self) -> int:
        """Bytes of the arrays held, so that Dask (``dask.sizeof``) ships an
        operator to its workers once per computation, as a large array."""
        arrays = (self.X, self._diagonal, *self._row_arrays())
        return object.__sizeof__(self) + sum(a.nbytes for a in arrays if isinstance(a, np.ndarray))

    def _row_arrays(self) -> tuple:
        return ()

    # ------------------------------------------------------------ new operators
    def _with(self, kernel: Any, index: Any = None) -> GramOperator:
        if index is None:
            X, diagonal = self.X, self._diagonal
        else:
            X = self.X[index]
            diagonal = None if self._diagonal is None else self._diagonal[index]
        return type(self)(kernel, X, block_size=self.block_size, diagonal=diagonal)

    def take(self, index: slice | np.ndarray) -> GramOperator:
        """The operator of the rows ``index`` (a slice or an array of ints, repeats allowed)."""
        return self._with(self.kernel, index)

    def _quiet_kernel(self) -> Any:
        """The kernel with ``n_jobs=1`` and ``verbose=0`` (those it has), cloned; or itself."""
        params = self.kernel.get_params(deep=False)
        changes = {name: value for name, value in (("n_jobs", 1), ("verbose", 0)) if name in params}
        return clone(self.kernel).set_params(**changes) if changes else self.kernel

    def sequential(self, stream_entries: int | None = None) -> GramOperator:
        """The operator for use inside parallel tasks, which are the parallelism.

        Its kernel runs on one worker and prints nothing (a clone with
        ``n_jobs=1`` and ``verbose=0``, the parameters it has), and it holds
        only what evaluating blocks needs. ``stream_entries`` (the entries of
        all its tiles together) serves :class:`FactorizedGramOperator`.
        """
        kernel = self._quiet_kernel()
        return self if kernel is self.kernel else self._with(kernel)

    # ------------------------------------------------------------ evaluation
    def _as_rows(self, rows: GramOperator | np.ndarray) -> Any:
        """What :meth:`_cross` takes for other rows: here their ``X``."""
        return rows.X if isinstance(rows, GramOperator) else rows

    def _cross(self, rows: Any, cols: Any) -> np.ndarray:
        """``k(rows, cols)`` for row sets of :meth:`_as_rows` (``cols=None``: symmetric)."""
        return self.kernel(rows, cols)

    def _subset(self, index: slice | np.ndarray) -> Any:
        """The rows ``index`` in the form :meth:`_cross` takes."""
        return self.X[index]

    def _own(self) -> Any:
        """All the rows in the form :meth:`_cross` takes."""
        return self.X

    def gram(self) -> np.ndarray:
        """The whole ``n x n`` matrix: float64, writeable, C- or Fortran-ordered.

        Its diagonal is the kernel's (for the hypernetwork kernels the closed
        form of ``diag``).
        """
        K = np.asarray(self._cross(self._own(), None), dtype=np.float64)
        if not K.flags.writeable or not (K.flags.c_contiguous or K.flags.f_contiguous):
            K = np.array(K, dtype=np.float64, order="C")
        return K

    def block(self, rows: slice | np.ndarray, cols: slice | np.ndarray) -> np.ndarray:
        """``K[rows, cols]`` as the kernel evaluates it (float64)."""
        return np.asarray(self._cross(self._subset(rows), self._subset(cols)), dtype=np.float64)

    def cross(self, rows: GramOperator | np.ndarray) -> np.ndarray:
        """``k(rows, these rows)``, float64 of shape (n_other, n_rows).

        Parameters
        ----------
        rows : GramOperator or ndarray of shape (n_other, n_features)
            Another operator of the same kernel (its rows), or validated
            float64 rows.
        """
        return np.asarray(self._cross(self._as_rows(rows), self._own()), dtype=np.float64)

    def row(self, index: int) -> np.ndarray:
        """Row ``K[index, :]`` (a column of the symmetric ``K``), with ``diagonal[index]``."""
        row = self.block(slice(index, index + 1), slice(0, None)).reshape(-1)
        row[index] = self.diagonal[index]
        return row

    def columns(self, index: np.ndarray) -> np.ndarray:
        """Columns ``K[:, index]``, shape (n_rows, len(index)), with the exact diagonal."""
        K = self.block(slice(None), index)
        K[index, np.arange(index.shape[0])] = self.diagonal[index]
        return K

    def cross_product(
        self,
        X: np.ndarray,
        coef: np.ndarray,
        *,
        block_size: int | None = None,
        min_blocks: int = 1,
        prepare: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> np.ndarray:
        """``k(X, these rows) @ coef``, never holding more than a tile of ``k`` per task.

        The blocks of rows of :func:`block_partition` are parallel tasks
        (:func:`._utils.scheduling.run_tasks`, over the kernel's ``n_jobs`` workers or
        a Dask cluster; one at a time locally for a torch kernel), each
        evaluating its tiles with :meth:`sequential`. The kernel's ``verbose``
        (if it has one) reports their progress.

        Parameters
        ----------
        X : ndarray of shape (n_new, n_features)
            Validated float64 rows.
        coef : ndarray of shape (n_rows, n_targets)
        block_size : int or None, default=None
        min_blocks : int, default=1
            See :func:`block_partition`.
        prepare : callable or None, default=None
            Applied to each tile of rows of ``X`` before the kernel sees it
            (a picklable function returning rows of the same shape, such as
            the regressor's division of x by ``x_scale_``), so that a
            transformed copy of ``X`` is never held whole.

        Returns
        -------
        ndarray of shape (n_new, n_targets)
        """
        blocks, tile_rows = block_partition(
            X.shape[0], self.n_rows, block_size, min_blocks=min_blocks
        )
        out = np.empty((X.shape[0], coef.shape[1]))
        task_operator = self.sequential(stream_entries=X.shape[0] * self.n_rows)
        calls = [(task_operator, block, tile_rows, coef, X, prepare) for block in blocks]

        def consume(result: tuple[int, np.ndarray]) -> None:
            start, part = result
            out[start : start + part.shape[0]] = part

        verbose = self.kernel.get_params(deep=False).get("verbose", 0)
        label = f"[{type(self.kernel).__name__}] K(X, rows) @ coef, {X.shape[0]} x {self.n_rows}"
        with ProgressLog(label, len(blocks), verbose) as progress:
            run_tasks(
                _predict_task,
                calls,
                self.n_jobs,
                consume,
                progress=progress,
                sequential_locally=self.uses_torch,
            )
        return out

    def matvec(self, vectors: np.ndarray) -> np.ndarray:
        """``K @ vectors`` without holding ``K``.

        Only the blocks ``K[i:j, i:]`` of the upper block triangle are
        evaluated, one at a time, each one kernel call of ``block_size`` rows
        (None: of about the configuration's ``matvec_block_bytes``,
        :func:`block_partition`'s tiles); each serves its own rows and,
        transposed, the rows below (:func:`._utils.linalg.upper_triangle_matvec`),
        with ``diagonal`` written in and each block's leading square made
        exactly symmetric, as in :meth:`gram`.

        Parameters
        ----------
        vectors : ndarray of shape (n_rows, k)

        Returns
        -------
        ndarray of shape (n_rows, k)
        """
        n = self.n_rows
        tile_bytes = get_config()["matvec_block_bytes"]
        _, block_rows = block_partition(n, n, self.block_size, tile_bytes=tile_bytes)
        diagonal = self.diagonal
        calls = [(self, block, vectors, diagonal) for block in _slices(slice(0, n), block_rows)]
        return upper_triangle_matvec(_matvec_task, calls, vectors, n_jobs=1)


class FactorizedGramOperator(GramOperator):
    """``K`` of a hypernetwork kernel on rows factorised once (``factorize_rows``).

    Every block is ``kernel.gram_factorized`` on subsets of the factorised
    rows (``FactorizedRows.take``), so each distinct x is found and its
    quantities computed once for all blocks; ``K @ V`` is the kernel's
    ``gram_matvec``.

    Parameters
    ----------
    kernel : HyperKernel or HyperNNGP
    rows : FactorizedRows
        ``kernel.factorize_rows(X)``.
    X : ndarray of shape (n_rows, n_features) or None, default=None
        The rows themselves, read only by :attr:`diagonal` (``kernel.diag``);
        None when the diagonal is given or not needed.
    block_size, diagonal
        As :class:`GramOperator` (``block_size`` is unused: ``gram_matvec``
        follows the kernel's own ``block_size``).
    """

    def __init__(
        self,
        kernel: Any,
        rows: Any,
        X: np.ndarray | None = None,
        *,
        block_size: int | None = None,
        diagonal: np.ndarray | None = None,
    ) -> None:
        super().__init__(kernel, X, block_size=block_size, diagonal=diagonal)
        self.rows = rows
        self.stream_entries: int | None = None

    @property
    def n_rows(self) -> int:
        return self.rows.n_rows

    def _row_arrays(self) -> tuple:
        return tuple(vars(self.rows).values())

    def _with(
        self, kernel: Any, index: Any = None, *, keep_X: bool = True
    ) -> FactorizedGramOperator:
        X = self.X if keep_X else None
        if index is None:
            rows, diagonal = self.rows, self._diagonal
        else:
            # a lasting subset: only the distinct x rows it uses go with it
            rows = self.rows.take(index).compact()
            diagonal = None if self._diagonal is None else self._diagonal[index]
            X = None if X is None else X[index]
        operator = FactorizedGramOperator(
            kernel, rows, X, block_size=self.block_size, diagonal=diagonal
        )
        operator.stream_entries = self.stream_entries
        return operator

    def sequential(self, stream_entries: int | None = None) -> FactorizedGramOperator:
        """As :meth:`GramOperator.sequential`, without ``X`` (blocks do not read it); its
        tiles choose the fused pass by ``stream_entries`` (:func:`._gram.engine.gram`)."""
        operator = self._with(self._quiet_kernel(), keep_X=False)
        operator.stream_entries = stream_entries
        return operator

    def _as_rows(self, rows: GramOperator | np.ndarray) -> Any:
        if isinstance(rows, FactorizedGramOperator):
            return rows.rows
        return self.kernel.factorize_rows(rows)

    def _cross(self, rows: Any, cols: Any) -> np.ndarray:
        entries = getattr(self, "stream_entries", None)  # None in pickles of older versions
        return self.kernel.gram_factorized(rows, cols, stream_entries=entries)

    def _subset(self, index: slice | np.ndarray) -> Any:
        return self.rows.take(index)

    def _own(self) -> Any:
        return self.rows

    def matvec(self, vectors: np.ndarray) -> np.ndarray:
        """``K @ vectors`` by the kernel's ``gram_matvec`` (see :meth:`GramOperator.matvec`)."""
        return self.kernel.gram_matvec(self.rows, vectors)


def _matvec_task(
    operator: GramOperator, rows: slice, vectors: np.ndarray, diagonal: np.ndarray
) -> tuple[int, np.ndarray]:
    """The contribution of ``K[rows, rows.start:]``, one kernel call, to ``K @ V``: a task of
    :meth:`GramOperator.matvec`."""
    block = operator.block(rows, slice(rows.start, None))
    return rows.start, block_contribution(
        [(rows, block)], rows.start, vectors[rows.start :], diagonal
    )


def _predict_task(
    operator: GramOperator,
    block: slice,
    tile_rows: int,
    coef: np.ndarray,
    X: np.ndarray,
    prepare: Callable[[np.ndarray], np.ndarray] | None,
) -> tuple[int, np.ndarray]:
    """``k(X[block], operator's rows) @ coef``, tile by tile: a task of
    :meth:`GramOperator.cross_product`."""
    out = np.empty((block.stop - block.start, coef.shape[1]))
    for tile in tiles(block, tile_rows):
        part = out[tile.start - block.start : tile.stop - block.start]
        rows = X[tile] if prepare is None else prepare(X[tile])
        np.matmul(operator.cross(rows), coef, out=part)
    return block.start, out
