"""How a hypernetwork Gram matrix is evaluated: x-factorised, blocked, parallel.

The recursions (:mod:`sklearn_hyperkernel.recursions`) are elementwise once the
two input correlations are known. This module decides *where* they are
evaluated:

* f's quantities depend on x alone, so they are computed on the distinct x
  rows of each block only and gathered to rows (the paper's tasks share one
  image among many pixel coordinates);
* the output is filled in panels of rows, so the temporaries of the recursion
  stay a small multiple of one chunk, not of the whole Gram;
* rows with equal x, or equal z, get correlation exactly 1 wherever they
  meet (symmetric or cross Gram, gradient, ``K @ V``): equal rows are found
  once per call on the host (:func:`coincidence_ids`, the rule of
  :mod:`~sklearn_hyperkernel.recursions`), and each panel and chunk sets its
  coincident entries from them;
* a symmetric Gram is filled from its upper block triangle and mirrored, and a
  product ``K @ V`` (:func:`gram_matvec`) streams over the same triangle
  without ever holding ``K``;
* on which arrays: numpy, or torch tensors on a CPU or a GPU
  (:class:`Placement`) -- the same code runs on both through the array API;
* by whom: panels are independent tasks run by joblib -- sequentially, on
  threads (numpy releases the GIL in ufuncs and BLAS), or on any joblib
  backend the caller activates, such as Dask's (each task returns its
  results instead of writing to shared memory, so nothing assumes one
  machine).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from array_api_compat import array_namespace
from array_api_compat import device as array_device
from joblib import Parallel, delayed, effective_n_jobs
from joblib._parallel_backends import SequentialBackend, ThreadingBackend
from joblib.parallel import get_active_backend
from threadpoolctl import threadpool_limits

from ._device import resolve_device
from ._progress import ProgressLog
from .recursions import (
    _coincident_pairs,
    _row_ids,
    _row_keys,
    _set_where,
    _sorted_ids,
    _squared_distances,
    _z_correlations,
    _z_needs_coincidence,
    hyper_correlations,
    mlp_correlations,
)

# Entries of one chunk of the elementwise recursions: about 1 MB of float64 per
# temporary, so the dozen temporaries of a chunk stay near the CPU caches (and
# are reused by the allocator instead of being page-faulted in afresh).
_CHUNK_ELEMENTS = 1 << 17
# Entries of one panel of x correlations: BLAS needs a few hundred rows per
# product to reach full speed.
_PANEL_ELEMENTS = 1 << 22
_MIN_PANEL_ROWS = 256
# A GPU wants few, large kernels: one chunk per panel of 2^25 entries (256 MiB
# of float64 per temporary), far from an H100's memory but long enough that
# launch latency does not count.
_GPU_PANEL_ELEMENTS = 1 << 25


@dataclass(frozen=True)
class FactorizedRows:
    """Rows ``u = [x | z]`` split, with their distinct x rows found once.

    Attributes
    ----------
    x_distinct : ndarray of shape (n_distinct, n0)
        The distinct x rows, in order of first appearance.
    x_index : ndarray of shape (n_rows,)
        For each row, the index of its x in ``x_distinct``.
    x_variance : ndarray of shape (n_distinct,)
        ``|x|^2 / n0`` per distinct x.
    z : ndarray of shape (n_rows, m0)
    x_unit : ndarray of shape (n_distinct, n0)
        ``x / |x|`` per distinct x (zero rows stay zero), so that a block's
        correlations are one matrix product.
    x_key : ndarray of shape (n_distinct,), dtype uint64, or None
        A hash of each distinct x's values (see
        :func:`~sklearn_hyperkernel.recursions._row_keys`), with which equal x
        rows of two sets of rows are matched; None computes it when needed.
    """

    x_distinct: np.ndarray
    x_index: np.ndarray
    x_variance: np.ndarray
    z: np.ndarray
    x_unit: np.ndarray | None = None
    x_key: np.ndarray | None = None

    @property
    def n_rows(self) -> int:
        return self.z.shape[0]

    @property
    def all_distinct(self) -> bool:
        return self.x_distinct.shape[0] == self.n_rows


def distinct_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of ``x`` in order of first appearance, and the inverse index.

    Rows are equal when their values are (``-0.0 == 0.0``). They are grouped
    by an exact hash of their values, then verified (a collision falls back to
    a sort), so equal rows are found in O(n * n0) instead of a lexicographic
    sort of the rows.
    """
    distinct, inverse, _ = _distinct_rows_and_keys(x)
    return distinct, inverse


def _distinct_rows_and_keys(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`distinct_rows` and the hash keys of the distinct rows."""
    n_rows = x.shape[0]
    if n_rows == 0:
        return x, np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.uint64)
    keys = _row_keys(x)
    (ids,) = _row_ids(x, keys=[keys])
    _, first = np.unique(ids, return_index=True)  # the first row of each id
    leaders = np.sort(first)  # in order of first appearance
    relabel = np.empty(first.shape[0], dtype=np.intp)
    relabel[ids[leaders]] = np.arange(leaders.shape[0])
    return x[leaders], relabel[ids], keys[leaders]


def factorize(U: np.ndarray, z_dim: int) -> FactorizedRows:
    """Split validated rows into x and z and find the distinct x rows."""
    x = U[:, : U.shape[1] - z_dim]
    z = np.ascontiguousarray(U[:, U.shape[1] - z_dim :])
    x_distinct, x_index, x_key = _distinct_rows_and_keys(x)
    squared_norm = np.einsum("ij,ij->i", x_distinct, x_distinct)
    norm = np.sqrt(squared_norm)
    x_unit = x_distinct * np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)[:, None]
    return FactorizedRows(x_distinct, x_index, squared_norm / max(x.shape[1], 1), z, x_unit, x_key)


def _unit_rows(rows: FactorizedRows) -> np.ndarray:
    if rows.x_unit is not None:
        return rows.x_unit
    norm = np.sqrt(np.einsum("ij,ij->i", rows.x_distinct, rows.x_distinct))
    return rows.x_distinct * np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)[:, None]


def coincidence_ids(a: FactorizedRows, b: FactorizedRows | None = None) -> tuple[np.ndarray, ...]:
    """Ids of the distinct x rows and of the z rows: equal exactly for equal rows.

    Returns ``(x_ids_a, z_ids_a)`` for one set of rows, and
    ``(x_ids_a, z_ids_a, x_ids_b, z_ids_b)`` for two, with ids shared between
    the two sets: ``x_ids_a[i] == x_ids_b[j]`` exactly when distinct x ``i``
    of ``a`` equals distinct x ``j`` of ``b``; likewise for the z of each row.
    Entries of such pairs get correlation exactly 1 (see :mod:`.recursions`).
    """
    if b is None:
        (x_ids,) = _row_ids(a.x_distinct, keys=[a.x_key])
        (z_ids,) = _row_ids(a.z)
        return x_ids, z_ids
    if b.x_distinct is a.x_distinct:  # rows sliced from one factorisation
        (x_ids_a,) = _row_ids(a.x_distinct, keys=[a.x_key])
        x_ids_b = x_ids_a
    else:
        x_ids_a, x_ids_b = _row_ids(a.x_distinct, b.x_distinct, keys=[a.x_key, b.x_key])
    z_ids_a, z_ids_b = _row_ids(a.z, b.z)
    return x_ids_a, z_ids_a, x_ids_b, z_ids_b


@dataclass(frozen=True)
class Architecture:
    """Everything the recursions need to know about the network."""

    f_depth: int
    g_depth: int
    z_encoding: str
    length_scale: np.ndarray
    negative_slope: float
    kind: str  # "ntk" or "nngp"


@dataclass(frozen=True)
class Placement:
    """Which arrays the recursions run on: numpy, or torch on a device.

    Only strings are stored, so a placement travels to other processes (Dask
    workers) and is resolved there.

    Attributes
    ----------
    device : str or None
        None for numpy; otherwise a torch device such as ``"cpu"``, ``"cuda"``
        or ``"cuda:1"``.
    dtype : {"float64", "float32"}
    """

    device: str | None = None
    dtype: str = "float64"

    @property
    def uses_torch(self) -> bool:
        return self.device is not None

    @property
    def on_gpu(self) -> bool:
        return self.device is not None and not self.device.startswith("cpu")

    def put(self, array: np.ndarray) -> Any:
        """A host array as an array of this placement (no copy when possible)."""
        if not self.uses_torch:
            return np.asarray(array, dtype=self.dtype)
        import torch

        return torch.as_tensor(np.asarray(array), dtype=getattr(torch, self.dtype), device=self.device)

    def put_index(self, index: np.ndarray | slice | None) -> Any:
        """An integer index for arrays of this placement (slices pass through)."""
        if index is None or isinstance(index, slice) or not self.uses_torch:
            return index
        import torch

        return torch.as_tensor(index, dtype=torch.int64, device=self.device)

    @staticmethod
    def host(array: Any) -> np.ndarray:
        """A float64 numpy copy (or view) of a result."""
        if isinstance(array, np.ndarray):
            return array if array.dtype == np.float64 else array.astype(np.float64)
        return array.detach().cpu().double().numpy()


def resolve_placement(device: str | None, dtype: str = "float64") -> Placement:
    """Check a ``device`` / ``dtype`` pair; the device rule is :func:`._device.resolve_device`.

    ``None`` (and ``"auto"`` without a GPU) is numpy; any torch device runs
    the same recursions with torch there.
    """
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be 'float64' or 'float32'; got {dtype!r}.")
    return Placement(resolve_device(device), dtype)


@dataclass(frozen=True)
class _PlacedRows:
    """The arrays of :class:`FactorizedRows` the recursions read, placed.

    ``x_index`` and the ids of :func:`coincidence_ids` stay host arrays:
    which distinct rows a panel needs, and which entries coincide, is
    bookkeeping done on the host. ``x_order``, ``x_sorted``, ``z_order`` and
    ``z_sorted`` sort the ids (:func:`~.recursions._sorted_ids`), so that a
    panel or a chunk finds its equal rows by binary search instead of
    comparing every entry.
    """

    x_unit: Any
    x_variance: Any
    z: Any
    x_index: np.ndarray
    x_ids: np.ndarray
    x_order: np.ndarray
    x_sorted: np.ndarray
    z_ids: np.ndarray
    z_order: np.ndarray
    z_sorted: np.ndarray

    @property
    def x_search(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x_order, self.x_sorted

    @property
    def z_search(self) -> tuple[np.ndarray, np.ndarray]:
        return self.z_order, self.z_sorted

    @property
    def n_rows(self) -> int:
        return self.x_index.shape[0]

    @property
    def n_distinct(self) -> int:
        return self.x_unit.shape[0]


_N_ROW_ARRAYS = len(fields(_PlacedRows))  # arrays per set of rows in a task's arguments


def _place(
    rows: FactorizedRows, placement: Placement, x_ids: np.ndarray, z_ids: np.ndarray
) -> _PlacedRows:
    return _PlacedRows(
        placement.put(_unit_rows(rows)),
        placement.put(rows.x_variance),
        placement.put(rows.z),
        rows.x_index,
        x_ids,
        *_sorted_ids(x_ids),
        z_ids,
        *_sorted_ids(z_ids),
    )


def _place_coincidence(coincidence: Any, placement: Placement) -> Any:
    """A :func:`~.recursions._coincident_pairs` result as arrays of the placement."""
    if coincidence is None or not placement.uses_torch:
        return coincidence
    if isinstance(coincidence, tuple):
        return tuple(placement.put_index(index) for index in coincidence)
    import torch

    return torch.as_tensor(coincidence, device=placement.device)


def _local_distinct(index: np.ndarray) -> tuple[np.ndarray | slice, np.ndarray | None]:
    """Distinct x indices used by a block, and the block's index into them.

    When the block's rows are consecutive distinct rows (every x differs), the
    first value is a slice (no copy of x) and the second None (no gather).
    """
    if index.shape[0] and index[-1] - index[0] == index.shape[0] - 1 and np.all(np.diff(index) == 1):
        return slice(int(index[0]), int(index[-1]) + 1), None
    used, local = np.unique(index, return_inverse=True)
    return used, local.reshape(-1)


def _take(table: Any, index: Any, axis: int) -> Any:
    if index is None:
        return table
    if isinstance(index, slice):
        return table[index] if axis == 0 else table[:, index]
    return array_namespace(table).take(table, index, axis=axis)


def _panel_chunks(
    arch: Architecture,
    placement: Placement,
    a: _PlacedRows,
    rows: slice,
    b: _PlacedRows,
    cols: slice,
    need_gradient: bool,
    chunk_rows: int,
    symmetric: bool,
) -> Iterable[tuple[slice, slice, Any, Any]]:
    """Kernel (and its log-length-scale gradient) on a panel of rows, by chunks.

    x's correlations come from one matrix product for the whole panel (BLAS is
    slow on thin panels); the elementwise recursions then run on chunks of
    ``chunk_rows`` rows so their temporaries stay small. Yields
    ``(chunk_rows, chunk_cols, value, gradient)`` with arrays of the placement.
    In a symmetric Gram each chunk starts at its own diagonal, so every entry
    is computed once.
    """
    used_a, local_a = _local_distinct(a.x_index[rows])
    used_b, local_b = _local_distinct(b.x_index[cols])
    rho_x_panel = _take(a.x_unit, placement.put_index(used_a), 0) @ _take(b.x_unit, placement.put_index(used_b), 0).T
    # equal x: correlation exactly 1 (a unit row times itself is 1 only up to
    # rounding, and kappa0 moves by ~sqrt(ulp) there)
    if isinstance(used_b, slice):
        same_x = _coincident_pairs(a.x_ids[used_a], b.x_ids, b.x_search, used_b)
    else:
        same_x = _coincident_pairs(a.x_ids[used_a], b.x_ids[used_b])
    rho_x_panel = _set_where(rho_x_panel, _place_coincidence(same_x, placement), 1.0, True)
    xp = array_namespace(rho_x_panel)
    for start in range(rows.start, rows.stop, chunk_rows):
        chunk = slice(start, min(start + chunk_rows, rows.stop))
        within = slice(chunk.start - rows.start, chunk.stop - rows.start)
        skip = within.start if symmetric else 0
        chunk_cols = slice(cols.start + skip, cols.stop)
        if local_a is None:
            # distinct rows: this chunk owns its rows of the panel
            rho_x, local_chunk = rho_x_panel[within], None
        else:
            used_chunk, local_chunk = _local_distinct(local_a[within])
            rho_x = _take(rho_x_panel, placement.put_index(used_chunk), 0)
        if local_b is None:
            rho_x, local_chunk_b = rho_x[:, skip:], None
        else:
            local_chunk_b = local_b[skip:]
        rho_x = xp.asarray(rho_x, copy=True)  # the recursion works in place
        value, gradient = _chunk(
            arch,
            placement,
            a,
            chunk,
            b,
            chunk_cols,
            rho_x,
            placement.put_index(local_chunk),
            placement.put_index(local_chunk_b),
            need_gradient,
        )
        yield chunk, chunk_cols, value, gradient


def _chunk(
    arch: Architecture,
    placement: Placement,
    a: _PlacedRows,
    rows: slice,
    b: _PlacedRows,
    cols: slice,
    rho_x: Any,
    local_a: Any,
    local_b: Any,
    need_gradient: bool,
) -> tuple[Any, Any]:
    """The recursions on one chunk, from x's correlations on its distinct rows."""
    xp = array_namespace(rho_x)
    need_ntk = arch.kind == "ntk"
    rho_f, ntk_f = mlp_correlations(rho_x, arch.f_depth, arch.negative_slope, need_ntk=need_ntk)
    rho_f = _take(_take(rho_f, local_a, 0), local_b, 1)
    z_a, z_b = a.z[rows], b.z[cols]
    same_z = None
    if _z_needs_coincidence(arch.z_encoding, z_a.shape[1]):
        same_z = _coincident_pairs(a.z_ids[rows], b.z_ids, b.z_search, cols)
        same_z = _place_coincidence(same_z, placement)
    rho_z, e_a, e_b = _z_correlations(z_a, z_b, arch.z_encoding, arch.length_scale, xp, same_z)
    g = hyper_correlations(
        rho_f,
        rho_z,
        arch.g_depth,
        arch.negative_slope,
        need_nngp=not need_ntk,
        need_ntk=need_ntk,
        need_tangent=need_gradient,
    )
    s_a = _take(a.x_variance, placement.put_index(a.x_index[rows]), 0)
    s_b = _take(b.x_variance, placement.put_index(b.x_index[cols]), 0)
    half_depth = arch.g_depth / 2.0
    scale_a = s_a**half_depth * xp.sqrt(e_a)
    scale_b = s_b**half_depth * xp.sqrt(e_b)
    if need_ntk:
        value, tangent = g.ntk_g, g.ntk_g_tangent
        ntk_f = _take(_take(ntk_f, local_a, 0), local_b, 1)
        value *= ntk_f
        if tangent is not None:
            tangent *= ntk_f
    else:
        value, tangent = g.nngp, g.nngp_tangent
    value *= scale_a[:, None]
    value *= scale_b[None, :]
    if not need_gradient:
        return value, None
    # d Sigma^0 / d log ell_d = Sigma^0 * (z_d - z'_d)^2 / ell_d^2
    tangent *= scale_a[:, None]
    tangent *= scale_b[None, :]
    tangent *= rho_z
    ell = arch.length_scale
    n_theta = ell.shape[0]
    gradient = xp.empty(tuple(value.shape) + (n_theta,), dtype=value.dtype, device=array_device(value))
    for d in range(n_theta):
        if n_theta == 1:
            diff = _squared_distances(z_a / float(ell[0]), z_b / float(ell[0]), xp, same_z)
        else:
            diff = z_a[:, d][:, None] - z_b[:, d][None, :]
            diff *= diff
            diff *= 1.0 / float(ell[d]) ** 2
        diff *= tangent
        gradient[..., d] = diff
    return value, gradient


def _mirror_leading_square(value: np.ndarray) -> None:
    """Copy the upper triangle of a chunk's leading square onto its lower one.

    In a symmetric Gram a chunk's leading square straddles the diagonal; its
    upper triangle is the part the chunk owns, so the result is exactly
    symmetric. Works on host arrays of 2 or 3 (gradient) dimensions.
    """
    size = value.shape[0]
    lower = np.tril_indices(size, -1)
    square = value[:, :size]
    square[lower] = np.swapaxes(square, 0, 1)[lower]


def _panel_and_chunk_rows(n_cols: int, block_size: int | None, placement: Placement) -> tuple[int, int]:
    if block_size is not None:
        return max(1, int(block_size)), max(1, int(block_size))
    if placement.on_gpu:
        panel = max(_MIN_PANEL_ROWS, _GPU_PANEL_ELEMENTS // max(n_cols, 1))
        return panel, panel
    chunk = max(1, _CHUNK_ELEMENTS // max(n_cols, 1))
    panel = max(_MIN_PANEL_ROWS, _PANEL_ELEMENTS // max(n_cols, 1))
    return panel, min(chunk, panel)


# ---------------------------------------------------------------- tasks
# Module-level functions of plain arguments: joblib sends them to threads,
# processes or Dask workers alike. The row arrays are separate arguments
# because joblib's Dask backend scatters large array arguments to the cluster
# once and reuses them for every panel (a container of arrays would be
# serialised into every task instead).


def _row_arrays(rows: _PlacedRows) -> tuple:
    return tuple(getattr(rows, field.name) for field in fields(rows))


def _gram_panel(
    arch: Architecture,
    placement: Placement,
    rows: slice,
    cols: slice,
    eval_gradient: bool,
    chunk_rows: int,
    symmetric: bool,
    *row_arrays: Any,
) -> list[tuple[slice, slice, np.ndarray, np.ndarray | None]]:
    """One panel of a Gram as host chunks ``(rows, cols, value, gradient)``.

    ``row_arrays`` are :func:`_row_arrays` of the rows, then of the columns
    when they differ.
    """
    a = _PlacedRows(*row_arrays[:_N_ROW_ARRAYS])
    b = _PlacedRows(*row_arrays[_N_ROW_ARRAYS:]) if len(row_arrays) > _N_ROW_ARRAYS else a
    chunks = []
    for chunk, chunk_cols, value, grad in _panel_chunks(
        arch, placement, a, rows, b, cols, eval_gradient, chunk_rows, symmetric
    ):
        value = Placement.host(value)
        grad = None if grad is None else Placement.host(grad)
        if symmetric:
            _mirror_leading_square(value)
            if grad is not None:
                _mirror_leading_square(grad)
        chunks.append((chunk, chunk_cols, value, grad))
    return chunks


def _matvec_panel(
    arch: Architecture,
    placement: Placement,
    rows: slice,
    vectors: np.ndarray,
    diagonal: np.ndarray,
    chunk_rows: int,
    *row_arrays: Any,
) -> tuple[int, np.ndarray]:
    """``K[rows, :] @ V`` and its transposed part, from one upper-triangle panel.

    The panel holds ``K[rows, rows.start:]``; each chunk ``[S | R]`` (``S`` its
    leading, straddling square, made symmetric with the exact diagonal)
    contributes ``S v_chunk + R v_rest`` to its own rows and ``R^T v_chunk`` to
    the rows below. Returns ``(rows.start, contribution to rows rows.start:)``.
    """
    a = _PlacedRows(*row_arrays)
    n = a.n_rows
    placed_vectors = placement.put(vectors[rows.start :])
    placed_diagonal = placement.put(diagonal)
    xp = array_namespace(placed_vectors)
    contribution = xp.zeros_like(placed_vectors)
    cols = slice(rows.start, n)
    for chunk, chunk_cols, value, _ in _panel_chunks(arch, placement, a, rows, a, cols, False, chunk_rows, True):
        size = chunk.stop - chunk.start
        # the chunk owns the upper triangle of its leading square: mirror it
        # and write the exact diagonal, as in the matrix gram() returns
        square = xp.triu(value[:, :size], k=1)
        square = square + square.T
        on_diagonal = placement.put_index(np.arange(size))
        square[on_diagonal, on_diagonal] = placed_diagonal[chunk]
        rest = value[:, size:]
        local = slice(chunk.start - rows.start, chunk.stop - rows.start)
        below = slice(local.stop, n - rows.start)
        contribution[local] += square @ placed_vectors[local] + rest @ placed_vectors[below]
        contribution[below] += rest.T @ placed_vectors[local]
    return rows.start, Placement.host(contribution)


def _run(
    task: Callable,
    calls: Sequence[tuple],
    n_jobs: int | None,
    placement: Placement,
    progress: ProgressLog | None,
    consume: Callable[[Any], None],
    *,
    consume_in_workers: bool = False,
) -> None:
    """Run ``task(*call)`` for every call and hand each result to ``consume``.

    ``n_jobs`` follows scikit-learn: None is 1 unless a joblib
    ``parallel_config`` context says otherwise. With the default backend the
    tasks run on threads, in waves of twice the number of threads, so that
    progress advances wave by wave and an interruption (KeyboardInterrupt, or
    an exception in ``consume``) stops at the end of the running wave;
    ``consume_in_workers`` lets the threads consume their own results when
    ``consume`` is safe to call concurrently (disjoint writes into a shared
    array). Any other joblib backend (``parallel_config(backend="dask")``: a
    Dask cluster) gets all tasks at once -- a wave would send the row arrays
    to the workers again each time -- and its results come back to the caller
    as they finish; on an interruption joblib cancels the tasks that have not
    finished. On torch the local backends run the tasks one after another:
    torch parallelises inside each, and a GPU runs one at a time.
    """
    backend, _ = get_active_backend(prefer="threads")
    local = isinstance(backend, (ThreadingBackend, SequentialBackend))
    workers = effective_n_jobs(n_jobs)
    if len(calls) <= 1 or workers == 1 or (local and placement.uses_torch):
        for call in calls:
            consume(task(*call))
            if progress is not None:
                progress.step()
        return
    if not local:
        outputs = Parallel(n_jobs=n_jobs, return_as="generator_unordered", batch_size=1)(
            delayed(task)(*call) for call in calls
        )
        try:
            for output in outputs:
                consume(output)
                if progress is not None:
                    progress.step()
        finally:
            outputs.close()  # after an early exit: cancels what has not finished
        return
    wave = 2 * workers
    # each thread's BLAS would otherwise start its own threads on the same cores
    with threadpool_limits(limits=1, user_api="blas"), Parallel(n_jobs=n_jobs, prefer="threads") as parallel:
        for first in range(0, len(calls), wave):
            part = calls[first : first + wave]
            if consume_in_workers:
                parallel(delayed(_consume_in_worker)(task, consume, call) for call in part)
            else:
                for output in parallel(delayed(task)(*call) for call in part):
                    consume(output)
            if progress is not None:
                progress.step(len(part))


def _consume_in_worker(task: Callable, consume: Callable[[Any], None], call: tuple) -> None:
    consume(task(*call))


def gram(
    arch: Architecture,
    a: FactorizedRows,
    b: FactorizedRows | None = None,
    *,
    eval_gradient: bool = False,
    block_size: int | None = None,
    n_jobs: int | None = None,
    placement: Placement = Placement(),
    verbose: int = 0,
    label: str = "Gram",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Fill the Gram matrix between two sets of factorised rows, panel by panel.

    Parameters
    ----------
    arch : Architecture
    a : FactorizedRows
    b : FactorizedRows or None
        None: the symmetric Gram of ``a``, filled from its upper block triangle.
    eval_gradient : bool
        Also return the gradient with respect to log length scale
        (Fourier encoding only), shape (n_a, n_b, n_theta).
    block_size : int or None
        Rows per panel and chunk; None chooses panels for BLAS and chunks of
        about 2^17 entries for the elementwise recursions (one chunk per
        panel of 2^25 entries on a GPU).
    n_jobs : int or None
        joblib workers over panels (see :func:`_run`).
    placement : Placement
        numpy, or torch on a device; the result is a float64 numpy array.
    verbose : int
        Progress lines (see :class:`ProgressLog`).
    """
    symmetric = b is None
    b = a if b is None else b
    n_a, n_b = a.n_rows, b.n_rows
    out = np.empty((n_a, n_b))
    gradient = np.empty((n_a, n_b, arch.length_scale.shape[0])) if eval_gradient else None
    panel_rows, chunk_rows = _panel_and_chunk_rows(n_b, block_size, placement)
    if symmetric:
        x_ids_a, z_ids_a = coincidence_ids(a)
        row_arrays = _row_arrays(_place(a, placement, x_ids_a, z_ids_a))
    else:
        x_ids_a, z_ids_a, x_ids_b, z_ids_b = coincidence_ids(a, b)
        row_arrays = _row_arrays(_place(a, placement, x_ids_a, z_ids_a))
        row_arrays += _row_arrays(_place(b, placement, x_ids_b, z_ids_b))
    calls = [
        (
            arch,
            placement,
            slice(start, min(start + panel_rows, n_a)),
            slice(start, n_b) if symmetric else slice(0, n_b),
            eval_gradient,
            chunk_rows,
            symmetric,
            *row_arrays,
        )
        for start in range(0, n_a, panel_rows)
    ]

    def consume(chunks: list) -> None:
        for chunk, chunk_cols, value, grad in chunks:
            out[chunk, chunk_cols] = value
            if symmetric:
                out[chunk_cols, chunk] = value.T
            if grad is not None:
                gradient[chunk, chunk_cols] = grad
                if symmetric:
                    gradient[chunk_cols, chunk] = grad.transpose(1, 0, 2)

    progress = ProgressLog(f"{label} {n_a} x {n_b}", len(calls), verbose, unit="panels") if verbose else None
    # panels write disjoint regions of ``out`` (their rows, and their mirror
    # below the diagonal), so threads may write their own
    _run(_gram_panel, calls, n_jobs, placement, progress, consume, consume_in_workers=True)
    return out, gradient


def gram_matvec(
    arch: Architecture,
    a: FactorizedRows,
    vectors: np.ndarray,
    diagonal: np.ndarray,
    *,
    block_size: int | None = None,
    n_jobs: int | None = None,
    placement: Placement = Placement(),
    verbose: int = 0,
    label: str = "K @ V",
) -> np.ndarray:
    """``K @ vectors`` for the symmetric Gram ``K`` of ``a``, never holding ``K``.

    Every entry of the upper triangle is computed once, in chunks of the same
    size as :func:`gram`'s, and serves both its row and its column. The
    diagonal is ``diagonal`` (the kernel's closed form), so the product is
    that of the matrix :func:`gram` returns with that diagonal written in.

    Parameters
    ----------
    vectors : ndarray of shape (n_rows, n_vectors)
    diagonal : ndarray of shape (n_rows,)

    Returns
    -------
    ndarray of shape (n_rows, n_vectors), float64
    """
    n = a.n_rows
    panel_rows, chunk_rows = _panel_and_chunk_rows(n, block_size, placement)
    row_arrays = _row_arrays(_place(a, placement, *coincidence_ids(a)))
    vectors = np.asarray(vectors, dtype=np.float64)
    diagonal = np.asarray(diagonal, dtype=np.float64)
    calls = [
        (arch, placement, slice(start, min(start + panel_rows, n)), vectors, diagonal, chunk_rows, *row_arrays)
        for start in range(0, n, panel_rows)
    ]
    product = np.zeros_like(vectors)

    def consume(result: tuple[int, np.ndarray]) -> None:
        start, contribution = result
        product[start:] += contribution

    progress = ProgressLog(f"{label} {n} x {n}", len(calls), verbose, unit="panels") if verbose else None
    _run(_matvec_panel, calls, n_jobs, placement, progress, consume)
    return product


def diagonal(arch: Architecture, a: FactorizedRows) -> np.ndarray:
    """The Gram's diagonal in O(n): every correlation there is exactly 1.

    ``HyperNNGP(u, u) = s^H e`` and ``HyperKernel(u, u) = L H s^H e`` with
    ``s = |x|^2 / n0`` and ``e = Sigma^0(z, z)``.
    """
    s = a.x_variance[a.x_index]
    if arch.z_encoding == "linear":
        e = np.einsum("ij,ij->i", a.z, a.z) / a.z.shape[1]
    else:
        e = np.ones(a.n_rows)
    value = s**arch.g_depth * e
    if arch.kind == "ntk":
        value *= arch.f_depth * arch.g_depth
    return value


def length_scale_array(length_scale: float | Sequence[float] | np.ndarray, z_dim: int) -> np.ndarray:
    """Length scales as a 1-D array (one entry, or one per z column)."""
    from .recursions import _length_scales

    return _length_scales(length_scale, z_dim)
