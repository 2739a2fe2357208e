"""How a hypernetwork Gram matrix is evaluated: x-factorised, in blocks, in parallel.

The recursions (:mod:`sklearn_hyperkernel.recursions`) are elementwise once the
two input correlations are known; this module decides *where* they are
evaluated. Vocabulary: a *block* is the consecutive output rows one task
computes (against the columns it needs; ``block_size`` rows when given); a
*tile* is the part of a block evaluated in one vectorised pass, so that memory
stays bounded (:mod:`._gram.tiles` evaluates one block, tile by tile).

* f's quantities depend on x alone: the distinct x rows are found once
  (:func:`factorize`), and each block works on the distinct x it uses (the
  paper's tasks share one image among many pixel coordinates);
* rows with equal x, or equal z, get correlation exactly 1 wherever they
  meet (symmetric or cross Gram, gradient, ``K @ V``): equal rows are found
  once per call on the host (:func:`._gram.tiles.coincidence_ids`);
* a symmetric Gram is filled from its upper block triangle and mirrored, and a
  product ``K @ V`` (:func:`gram_matvec`) streams over the same triangle
  without ever holding ``K`` (the one loop, :func:`._utils.linalg.upper_triangle_matvec`);
* on numpy, or torch tensors on a CPU or a GPU (:class:`._utils.device.Placement`);
* on numpy where numba can be imported, a large Gram's blocks run their
  recursions in one compiled pass (:mod:`._gram.fused`), as the configuration's
  ``fused`` and ``fused_min_entries`` say (:func:`._gram.tiles.fused_pass`);
* blocks are independent tasks run by :func:`._utils.scheduling.run_tasks`
  (sequentially, on threads, or on Dask); in this process each writes its
  part of the Gram itself, elsewhere (Dask) it returns it, so nothing
  assumes one machine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._f import FKernel, FRows
from .._utils.device import Placement
from .._utils.linalg import (
    block_contribution,
    mirror_below,
    mirror_leading_square,
    upper_triangle_matvec,
)
from .._utils.rows import distinct_rows_and_keys
from .._utils.scheduling import run_tasks, runs_locally
from ..progress import ProgressLog
from ..recursions import hyper_diagonal
from .tiles import (
    N_ROW_ARRAYS,
    Architecture,
    PlacedRows,
    block_and_tile_rows,
    block_tiles,
    fused_available,
    fused_block,
    fused_pass,
    gradient_columns,
    place_rows,
)

_NUMPY = Placement()  # the default: numpy, float64

__all__ = [
    "Architecture",
    "FactorizedRows",
    "factorize",
    "with_f",
    "gram",
    "gram_matvec",
    "diagonal",
]


@dataclass(frozen=True)
class FactorizedRows:
    """Rows ``u = [x | z]`` split, with their distinct x rows found once.

    Attributes
    ----------
    x_distinct : ndarray of shape (n_distinct, n0)
        The distinct x rows, in order of first appearance.
    x_index : ndarray of shape (n_rows,)
        For each row, the index of its x in ``x_distinct``.
    f : FRows
        f's quantities per distinct x (:meth:`._f.base.FKernel.rows`): its
        output variance ``S_f(x, x)``, ``Theta^f(x, x)`` and the features its
        pairs are computed from (the dense f's ``x / |x|``, so that a block's
        correlations are one matrix product).
    z : ndarray of shape (n_rows, m0)
    x_key : ndarray of shape (n_distinct,), dtype uint64, or None
        A hash of each distinct x's values (see
        :func:`~sklearn_hyperkernel._utils.rows.row_keys`), with which equal x
        rows of two sets of rows are matched; None computes it when needed.
    """

    x_distinct: np.ndarray
    x_index: np.ndarray
    f: FRows
    z: np.ndarray
    x_key: np.ndarray | None = None

    @property
    def n_rows(self) -> int:
        """Number of rows."""
        return self.z.shape[0]

    @property
    def all_distinct(self) -> bool:
        """Whether every row has its own x."""
        return self.x_distinct.shape[0] == self.n_rows

    def take(self, index: slice | np.ndarray) -> FactorizedRows:
        """The rows ``index``, sharing this object's table of distinct x rows.

        The one way rows are subset: only the per-row arrays (``x_index``,
        ``z``) are indexed, in O(len(index)) (views for a slice), and the
        result keeps ``x_distinct`` itself, so that a Gram between two subsets
        of one factorisation matches their equal x rows without hashing them
        again. :meth:`compact` drops the distinct rows a subset does not use.

        Parameters
        ----------
        index : slice or array-like of int
            Rows to keep, in that order (repeats allowed).

        Returns
        -------
        FactorizedRows
        """
        if not isinstance(index, slice):
            index = np.asarray(index, dtype=np.intp).reshape(-1)
        return dataclasses.replace(self, x_index=self.x_index[index], z=self.z[index])

    def compact(self) -> FactorizedRows:
        """The same rows with only the distinct x rows they use (itself when all are).

        Worth it before the rows are placed on a device or sent elsewhere, or
        when a small subset of many rows (a block of a long computation) is
        evaluated many times: a Gram's cost in hashing and transfers grows
        with the size of the distinct-x table, not only with the rows.
        """
        used, local = np.unique(self.x_index, return_inverse=True)
        if used.shape[0] == self.x_distinct.shape[0]:
            return self
        return FactorizedRows(
            self.x_distinct[used],
            local.reshape(-1).astype(self.x_index.dtype, copy=False),
            self.f.take(used),
            self.z,
            None if self.x_key is None else self.x_key[used],
        )


def factorize(
    U: np.ndarray,
    z_dim: int,
    f: FKernel,
    *,
    normalize: bool = False,
    distinct: bool = True,
) -> FactorizedRows:
    """Split validated rows ``[x | z]`` into x and z, find the distinct x rows and ask f about them.

    Parameters
    ----------
    U : ndarray of shape (n_rows, n0 + z_dim), float64
    z_dim : int
    f : FKernel
        f's kernel (:func:`._f.f_kernel`), asked for its :class:`._f.base.FRows`
        of the distinct x.
    normalize : bool, default=False
        Each non-zero x rescaled to ``|x|^2 / n0 = 1`` (``normalize_x``).
    distinct : bool, default=True
        False keeps every row's x as its own (no hashing, no features, no
        ``x_key``): enough for :func:`diagonal`.

    Returns
    -------
    FactorizedRows
    """
    x = U[:, : U.shape[1] - z_dim]
    z = np.ascontiguousarray(U[:, U.shape[1] - z_dim :])
    if not distinct:
        f_rows = f.rows(x, normalize=normalize, need_features=False)
        return FactorizedRows(x, np.arange(x.shape[0]), f_rows, z)
    x_distinct, x_index, x_key = distinct_rows_and_keys(x)
    if x_distinct.shape[0] == x.shape[0]:
        # every x distinct: x itself, in order (a view of U), so that only
        # f's features copy it while the Gram is computed
        x_distinct = x
    f_rows = f.rows(x_distinct, normalize=normalize)
    return FactorizedRows(x_distinct, x_index, f_rows, z, x_key)


def with_f(rows: FactorizedRows, f: FKernel, *, normalize: bool) -> FactorizedRows:
    """``rows`` with f's quantities of ``f`` (recomputed from ``x_distinct`` if another f's).

    Rows factorised by one kernel may be evaluated by another (a different
    ``f_depth``, bias variance or ``f_architecture``): f's ``sigma`` and
    ``theta`` depend on them, the distinct x do not.
    """
    if rows.f.key == f.key(normalize):
        return rows
    need_features = rows.f.features is not None
    f_rows = f.rows(rows.x_distinct, normalize=normalize, need_features=need_features)
    return dataclasses.replace(rows, f=f_rows)


# ---------------------------------------------------------------- tasks
# Module-level functions of plain arguments: joblib sends them to threads,
# processes or Dask workers alike (see :func:`._utils.scheduling.run_tasks`).


def _gram_block(
    arch: Architecture,
    placement: Placement,
    rows: slice,
    cols: slice,
    eval_gradient: tuple[str, ...],
    tile_rows: int,
    symmetric: bool,
    fused: bool,
    shared: tuple[np.ndarray, np.ndarray | None] | None,
    *row_arrays: Any,
) -> list[tuple[slice, slice, np.ndarray, np.ndarray | None]]:
    """One block of a Gram: written into ``shared``, or returned as host tiles.

    ``row_arrays`` are :func:`._gram.tiles.place_rows` of the rows, then of
    the columns when they differ; ``fused`` as :func:`._gram.tiles.block_tiles`.
    ``shared`` (tasks in the caller's process only): ``(K, gradient)``, which
    the block writes itself, tile by tile (a fused block: straight from its
    pass), returning nothing. None: the tiles ``(rows, cols, value,
    gradient)`` are returned, for :func:`_write_tile` in the caller.
    """
    a = PlacedRows(*row_arrays[:N_ROW_ARRAYS])
    b = PlacedRows(*row_arrays[N_ROW_ARRAYS:]) if len(row_arrays) > N_ROW_ARRAYS else a
    fused = fused and fused_available()  # a worker without numba: the numpy path
    if fused and shared is not None:
        K = shared[0]
        # one tile: the whole block, written into K, its leading square mirrored
        fused_block(arch, a, rows, b, cols, symmetric=symmetric, destination=K[rows, cols])
        if symmetric:
            mirror_below(K, rows)
        return []
    tiles = []
    for tile, tile_cols, value, grad in block_tiles(
        arch,
        placement,
        a,
        rows,
        b,
        cols,
        gradient_names=eval_gradient,
        tile_rows=tile_rows,
        symmetric=symmetric,
        fused=fused,
    ):
        value = Placement.host(value)
        grad = None if grad is None else Placement.host(grad)
        if symmetric and not fused:  # the fused pass mirrors its own leading square
            mirror_leading_square(value)
            if grad is not None:
                mirror_leading_square(grad)
        if shared is None:
            tiles.append((tile, tile_cols, value, grad))
        else:
            _write_tile(*shared, symmetric, tile, tile_cols, value, grad)
    return tiles


def _write_tile(
    K: np.ndarray,
    gradient: np.ndarray | None,
    symmetric: bool,
    tile: slice,
    tile_cols: slice,
    value: np.ndarray,
    grad: np.ndarray | None,
) -> None:
    """A tile (and its gradient) into the Gram, and its mirror below the diagonal.

    In a symmetric Gram the tile's columns start at its first row and its
    leading square is already symmetric (:func:`._utils.linalg.mirror_leading_square`).
    """
    K[tile, tile_cols] = value
    if grad is not None:
        gradient[tile, tile_cols] = grad
    if symmetric:
        mirror_below(K, tile)
        if grad is not None:
            mirror_below(gradient, tile)


def _matvec_block(
    arch: Architecture,
    placement: Placement,
    rows: slice,
    vectors: np.ndarray,
    diagonal: np.ndarray,
    tile_rows: int,
    fused: bool,
    *row_arrays: Any,
) -> tuple[int, np.ndarray]:
    """The contribution of the upper-triangle block ``K[rows, rows.start:]`` to ``K @ V``.

    Tile by tile (:func:`._utils.linalg.block_contribution`): a task of
    :func:`._utils.linalg.upper_triangle_matvec`. Returns ``(rows.start,
    contribution to rows rows.start:)``.
    """
    a = PlacedRows(*row_arrays)
    cols = slice(rows.start, a.n_rows)
    tiles = block_tiles(
        arch, placement, a, rows, a, cols, tile_rows=tile_rows, symmetric=True, fused=fused
    )
    contribution = block_contribution(
        ((tile, value) for tile, _, value, _ in tiles),
        rows.start,
        placement.put(vectors[rows.start :]),
        placement.put(diagonal),
    )
    return rows.start, Placement.host(contribution)


@contextmanager
def _progress(label: str, n_blocks: int, verbose: int) -> Iterator[ProgressLog | None]:
    """One progress step per block; the bar closes however the run ends (an interruption
    included)."""
    progress = ProgressLog(label, n_blocks, verbose, unit="blocks") if verbose else None
    try:
        yield progress
    finally:
        if progress is not None:
            progress.close()


def _run(task, calls, consume, placement, n_jobs, verbose, label, **options) -> None:
    """:func:`._utils.scheduling.run_tasks` of the blocks, with one progress step per block."""
    sequential = placement.uses_torch  # torch parallelises inside a block; a GPU runs one
    with _progress(label, len(calls), verbose) as progress:
        run_tasks(
            task,
            calls,
            n_jobs,
            consume,
            progress=progress,
            sequential_locally=sequential,
            **options,
        )


def gram(
    arch: Architecture,
    a: FactorizedRows,
    b: FactorizedRows | None = None,
    *,
    eval_gradient: tuple[str, ...] = (),
    block_size: int | None = None,
    n_jobs: int | None = None,
    placement: Placement = _NUMPY,
    verbose: int = 0,
    label: str = "Gram",
    stream_entries: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Fill the Gram matrix between two sets of factorised rows, block by block.

    Parameters
    ----------
    arch : Architecture
    a : FactorizedRows
    b : FactorizedRows or None
        None: the symmetric Gram of ``a``, filled from its upper block triangle.
    eval_gradient : tuple of str
        Also return the gradient with respect to the log of these
        hyperparameters (names of :data:`._gram.tiles.GRADIENT_NAMES`, in
        that order: ``f_bias_variance``, ``g_bias_variance``,
        ``length_scale``), shape (n_a, n_b, n_theta): one column per bias
        variance, one per length scale. Empty: no gradient.
    block_size : int or None
        Rows per block (one task), and per tile; None chooses blocks for BLAS
        and tiles of about 2^17 entries for the elementwise recursions (one
        tile per block of 2^25 entries on a GPU; blocks of 2^20 entries, one
        tile each, in the fused pass of :func:`._gram.tiles.fused_pass`): the
        defaults of :func:`sklearn_hyperkernel.set_config`, see
        :func:`._gram.tiles.block_and_tile_rows`. Results do not depend on it.
    n_jobs : int or None
        joblib workers over blocks (see :func:`._utils.scheduling.run_tasks`).
    placement : Placement
        numpy, or torch on a device; the result is a float64 numpy array.
    verbose : int
        Progress lines (see :class:`sklearn_hyperkernel.progress.ProgressLog`), one step per block.
    label : str
        Prefix of the progress lines.
    stream_entries : int or None
        Entries of the whole computation this Gram is one piece of (a tile of
        Nystroem's ``K_nm``, of a prediction's ``K(X, rows)``): the fused pass
        is chosen by that size (:func:`._gram.tiles.fused_pass`) instead of
        this Gram's own. None: this Gram's.

    Returns
    -------
    K : ndarray of shape (n_a, n_b)
        Its diagonal, for ``b=None``, as rounded (callers write the closed form).
    gradient : ndarray of shape (n_a, n_b, n_theta) or None
    """
    symmetric = b is None
    b = a if b is None else b
    n_a, n_b = a.n_rows, b.n_rows
    out = np.empty((n_a, n_b))
    eval_gradient = tuple(eval_gradient)
    n_theta = gradient_columns(arch, eval_gradient)
    gradient = np.empty((n_a, n_b, n_theta)) if eval_gradient else None
    fused = fused_pass(placement, bool(eval_gradient), max(n_a * n_b, stream_entries or 0))
    block_rows, tile_rows = block_and_tile_rows(n_b, block_size, placement, fused)
    row_arrays = place_rows(placement, a, None if symmetric else b)
    # blocks in this process write their own disjoint parts of ``out`` (their
    # rows, and their mirror below the diagonal): none holds its tiles or the
    # whole block until the caller copies them; elsewhere (Dask) they return them
    shared = (out, gradient) if runs_locally() else None
    calls = [
        (
            arch,
            placement,
            slice(start, min(start + block_rows, n_a)),
            slice(start, n_b) if symmetric else slice(0, n_b),
            eval_gradient,
            tile_rows,
            symmetric,
            fused,
            shared,
            *row_arrays,
        )
        for start in range(0, n_a, block_rows)
    ]

    def consume(tiles: list) -> None:
        for tile in tiles:
            _write_tile(out, gradient, symmetric, *tile)

    label = f"{label} {n_a} x {n_b}"
    _run(_gram_block, calls, consume, placement, n_jobs, verbose, label, consume_in_workers=True)
    return out, gradient


def gram_matvec(
    arch: Architecture,
    a: FactorizedRows,
    vectors: np.ndarray,
    diagonal: np.ndarray,
    *,
    block_size: int | None = None,
    n_jobs: int | None = None,
    placement: Placement = _NUMPY,
    verbose: int = 0,
    label: str = "K @ V",
) -> np.ndarray:
    """``K @ vectors`` for the symmetric Gram ``K`` of ``a``, never holding ``K``.

    Every entry of the upper triangle is computed once, in tiles of the same
    size as :func:`gram`'s, and serves both its row and its column. The
    diagonal is ``diagonal`` (the kernel's closed form), so the product is
    that of the matrix :func:`gram` returns with that diagonal written in.
    Parameters not listed are :func:`gram`'s; the contributions of the blocks
    are summed in their order, so the result does not depend on ``n_jobs``
    (on local threads).

    Parameters
    ----------
    vectors : ndarray of shape (n_rows, n_vectors)
    diagonal : ndarray of shape (n_rows,)

    Returns
    -------
    ndarray of shape (n_rows, n_vectors), float64
    """
    n = a.n_rows
    fused = fused_pass(placement, False, n * n)
    block_rows, tile_rows = block_and_tile_rows(n, block_size, placement, fused)
    row_arrays = place_rows(placement, a)
    vectors = np.asarray(vectors, dtype=np.float64)
    diagonal = np.asarray(diagonal, dtype=np.float64)
    calls = [
        (
            arch,
            placement,
            slice(start, min(start + block_rows, n)),
            vectors,
            diagonal,
            tile_rows,
            fused,
            *row_arrays,
        )
        for start in range(0, n, block_rows)
    ]
    with _progress(f"{label} {n} x {n}", len(calls), verbose) as progress:
        return upper_triangle_matvec(
            _matvec_block,
            calls,
            vectors,
            n_jobs,
            progress=progress,
            sequential_locally=placement.uses_torch,
        )


def diagonal(arch: Architecture, a: FactorizedRows) -> np.ndarray:
    """The Gram's diagonal in O(n): every correlation there is exactly 1.

    :func:`.recursions.hyper_diagonal` of f's ``sigma = S_f(x, x)`` and
    ``theta = Theta^f(x, x)`` (``a.f``) and ``e = Sigma^0(z, z)``; without
    biases ``HyperNNGP(u, u) = sigma^H e`` and ``HyperKernel(u, u) = H theta
    sigma^(H-1) e`` (docs/math.md, "Biases", for the rest).
    """
    if arch.z_encoding == "linear":
        e = np.einsum("ij,ij->i", a.z, a.z) / a.z.shape[1]
    else:
        e = np.ones(a.n_rows)
    return hyper_diagonal(
        a.f.sigma[a.x_index],
        a.f.theta[a.x_index],
        e,
        arch.g_depth,
        arch.kind,
        float(arch.g_bias_variance),
    )
