"""How a hypernetwork Gram matrix is evaluated: x-factorised, blocked, threaded.

The recursions (:mod:`sklearn_hyperkernel.recursions`) are elementwise once the
two input correlations are known. This module decides *where* they are
evaluated:

* f's quantities depend on x alone, so they are computed on the distinct x
  rows of each block only and gathered to rows (the paper's tasks share one
  image among many pixel coordinates);
* the output is filled in row blocks, so the temporaries of the recursion stay
  a small multiple of one block, not of the whole Gram;
* a symmetric Gram is filled from its upper block triangle and mirrored;
* blocks run on joblib threads (numpy releases the GIL in ufuncs and BLAS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from joblib import Parallel, delayed
from threadpoolctl import threadpool_limits

from .recursions import (
    _z_correlations,
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

_HASH_MULTIPLIERS_SEED = 0x5EED


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
    """

    x_distinct: np.ndarray
    x_index: np.ndarray
    x_variance: np.ndarray
    z: np.ndarray
    x_unit: np.ndarray | None = None

    @property
    def n_rows(self) -> int:
        return self.z.shape[0]

    @property
    def all_distinct(self) -> bool:
        return self.x_distinct.shape[0] == self.n_rows


def distinct_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of ``x`` in order of first appearance, and the inverse index.

    Rows are grouped by an exact hash of their bytes, then verified, so equal
    rows are found in O(n * n0) instead of a lexicographic sort of the rows.
    """
    n_rows = x.shape[0]
    if n_rows == 0:
        return x, np.zeros(0, dtype=np.intp)
    x = np.ascontiguousarray(x, dtype=np.float64)
    words = x.view(np.uint64)
    multipliers = np.random.default_rng(_HASH_MULTIPLIERS_SEED).integers(
        1, np.iinfo(np.int64).max, size=x.shape[1], dtype=np.uint64
    ) | np.uint64(1)
    with np.errstate(over="ignore"):
        keys = words @ multipliers  # wraps modulo 2^64: exact and deterministic
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.empty(n_rows, dtype=bool)
    starts[0] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=starts[1:])
    group = np.cumsum(starts) - 1
    leaders = order[starts]  # the stable sort puts each group's first row first
    if not np.array_equal(x[order], x[leaders[group]]):
        # a hash collision between different rows: fall back to a sort
        _, first, inverse = np.unique(x, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        relabel = np.empty_like(first)
        relabel[np.argsort(first)] = np.arange(first.shape[0])
        return x[np.sort(first)], relabel[inverse]
    inverse = np.empty(n_rows, dtype=np.intp)
    inverse[order] = group
    relabel = np.empty(leaders.shape[0], dtype=np.intp)
    relabel[np.argsort(leaders)] = np.arange(leaders.shape[0])
    return x[np.sort(leaders)], relabel[inverse]


def factorize(U: np.ndarray, z_dim: int) -> FactorizedRows:
    """Split validated rows into x and z and find the distinct x rows."""
    x = U[:, : U.shape[1] - z_dim]
    z = np.ascontiguousarray(U[:, U.shape[1] - z_dim :])
    x_distinct, x_index = distinct_rows(x)
    squared_norm = np.einsum("ij,ij->i", x_distinct, x_distinct)
    norm = np.sqrt(squared_norm)
    x_unit = x_distinct * np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)[:, None]
    return FactorizedRows(x_distinct, x_index, squared_norm / max(x.shape[1], 1), z, x_unit)


@dataclass(frozen=True)
class Architecture:
    """Everything the recursions need to know about the network."""

    f_depth: int
    g_depth: int
    z_encoding: str
    length_scale: np.ndarray
    negative_slope: float
    kind: str  # "ntk" or "nngp"


def _local_distinct(index: np.ndarray) -> tuple[np.ndarray | slice, np.ndarray | None]:
    """Distinct x indices used by a block, and the block's index into them.

    When the block's rows are consecutive distinct rows (every x differs), the
    first value is a slice (no copy of x) and the second None (no gather).
    """
    if index.shape[0] and index[-1] - index[0] == index.shape[0] - 1 and np.all(np.diff(index) == 1):
        return slice(int(index[0]), int(index[-1]) + 1), None
    used, local = np.unique(index, return_inverse=True)
    return used, local.reshape(-1)


def _gather(table: np.ndarray, rows: np.ndarray | None, cols: np.ndarray | None) -> np.ndarray:
    if rows is not None:
        table = np.take(table, rows, axis=0)
    if cols is not None:
        table = np.take(table, cols, axis=1)
    return table


def _panel(
    arch: Architecture,
    a: FactorizedRows,
    rows: slice,
    b: FactorizedRows,
    cols: slice,
    need_gradient: bool,
    chunk_rows: int,
    symmetric: bool,
    write: Callable[[slice, slice, np.ndarray, np.ndarray | None], None],
) -> None:
    """Kernel (and its log-length-scale gradient) on a panel of rows.

    x's correlations come from one matrix product for the whole panel (BLAS is
    slow on thin panels); the elementwise recursions then run on chunks of
    ``chunk_rows`` rows so their temporaries stay small. Each chunk is handed
    to ``write(chunk_rows, chunk_cols, value, gradient)``.
    """
    used_a, local_a = _local_distinct(a.x_index[rows])
    used_b, local_b = _local_distinct(b.x_index[cols])
    rho_x_panel = a.x_unit[used_a] @ b.x_unit[used_b].T
    if symmetric:
        _set_self_correlations(rho_x_panel, used_a, used_b, a.x_distinct.shape[0])
    for start in range(rows.start, rows.stop, chunk_rows):
        chunk = slice(start, min(start + chunk_rows, rows.stop))
        within = slice(chunk.start - rows.start, chunk.stop - rows.start)
        # in a symmetric Gram each chunk starts at its own diagonal, so every
        # entry is computed once and mirrored: the result is exactly symmetric
        skip = within.start if symmetric else 0
        chunk_cols = slice(cols.start + skip, cols.stop)
        if local_a is None:
            # distinct rows: this chunk owns its rows of the panel
            rho_x, local_chunk = rho_x_panel[within], None
        else:
            used_chunk, local_chunk = _local_distinct(local_a[within])
            rho_x = rho_x_panel[used_chunk]
        if local_b is None:
            rho_x, local_chunk_b = rho_x[:, skip:], None
        else:
            local_chunk_b = local_b[skip:]
        rho_x = np.array(rho_x, copy=True)  # the recursion works in place
        value, gradient = _chunk(arch, a, chunk, b, chunk_cols, rho_x, local_chunk, local_chunk_b, need_gradient)
        write(chunk, chunk_cols, value, gradient)


def _set_self_correlations(rho: np.ndarray, used_a, used_b, n_distinct: int) -> None:
    """Set the correlation of each distinct x with itself to exactly 1.

    The product of a unit row with itself is 1 only up to rounding, and the
    ReLU's derivative dual is steep there (kappa0 moves by ~sqrt(ulp)).
    """
    all_rows = np.arange(n_distinct)
    index_a, index_b = all_rows[used_a], all_rows[used_b]  # index_b is sorted
    position = np.minimum(np.searchsorted(index_b, index_a), index_b.shape[0] - 1)
    same = index_b[position] == index_a
    rho[np.flatnonzero(same), position[same]] = 1.0


def _chunk(
    arch: Architecture,
    a: FactorizedRows,
    rows: slice,
    b: FactorizedRows,
    cols: slice,
    rho_x: np.ndarray,
    local_a: np.ndarray | None,
    local_b: np.ndarray | None,
    need_gradient: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The recursions on one chunk, from x's correlations on its distinct rows."""
    need_ntk = arch.kind == "ntk"
    rho_f, ntk_f = mlp_correlations(rho_x, arch.f_depth, arch.negative_slope, need_ntk=need_ntk)
    rho_f = _gather(rho_f, local_a, local_b)
    z_a, z_b = a.z[rows], b.z[cols]
    rho_z, e_a, e_b = _z_correlations(z_a, z_b, arch.z_encoding, arch.length_scale, np)
    g = hyper_correlations(
        rho_f,
        rho_z,
        arch.g_depth,
        arch.negative_slope,
        need_nngp=not need_ntk,
        need_ntk=need_ntk,
        need_tangent=need_gradient,
    )
    s_a = a.x_variance[a.x_index[rows]]
    s_b = b.x_variance[b.x_index[cols]]
    half_depth = arch.g_depth / 2.0
    scale_a = s_a**half_depth * np.sqrt(e_a)
    scale_b = s_b**half_depth * np.sqrt(e_b)
    if need_ntk:
        value, tangent = g.ntk_g, g.ntk_g_tangent
        ntk_f = _gather(ntk_f, local_a, local_b)
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
    gradient = np.empty(value.shape + (n_theta,))
    for d in range(n_theta):
        if n_theta == 1:
            diff = _squared_distances(z_a / ell[0], z_b / ell[0])
        else:
            diff = np.subtract.outer(z_a[:, d], z_b[:, d])
            diff *= diff
            diff *= 1.0 / ell[d] ** 2
        diff *= tangent
        gradient[..., d] = diff
    return value, gradient


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = a @ b.T
    sq *= -2.0
    sq += np.einsum("ij,ij->i", a, a)[:, None]
    sq += np.einsum("ij,ij->i", b, b)[None, :]
    np.maximum(sq, 0.0, out=sq)
    return sq


def _panel_and_chunk_rows(n_cols: int, block_size: int | None) -> tuple[int, int]:
    if block_size is not None:
        return max(1, int(block_size)), max(1, int(block_size))
    chunk = max(1, _CHUNK_ELEMENTS // max(n_cols, 1))
    panel = max(_MIN_PANEL_ROWS, _PANEL_ELEMENTS // max(n_cols, 1))
    return panel, min(chunk, panel)


def gram(
    arch: Architecture,
    a: FactorizedRows,
    b: FactorizedRows | None = None,
    *,
    eval_gradient: bool = False,
    block_size: int | None = None,
    n_jobs: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Fill the Gram matrix between two sets of factorised rows, block by block.

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
        Rows per block; None chooses panels for BLAS and chunks of about 2^17
        entries for the elementwise recursions.
    n_jobs : int or None
        joblib threads over panels.
    """
    symmetric = b is None
    b = a if b is None else b
    n_a, n_b = a.n_rows, b.n_rows
    out = np.empty((n_a, n_b))
    gradient = None
    if eval_gradient:
        gradient = np.empty((n_a, n_b, arch.length_scale.shape[0]))
    panel_rows, chunk_rows = _panel_and_chunk_rows(n_b, block_size)
    starts = range(0, n_a, panel_rows)

    def fill(start: int) -> None:
        rows = slice(start, min(start + panel_rows, n_a))
        cols = slice(start, n_b) if symmetric else slice(0, n_b)

        def write(chunk: slice, chunk_cols: slice, value: np.ndarray, grad: np.ndarray | None) -> None:
            if symmetric:
                # the chunk's leading square straddles the diagonal: keep its
                # upper triangle and mirror it, so the Gram is exactly symmetric
                lower = np.tril_indices(value.shape[0], -1)
                square = value[:, : value.shape[0]]
                square[lower] = square.T[lower]
                if grad is not None:
                    grad_square = grad[:, : value.shape[0]]
                    grad_square[lower] = grad_square.transpose(1, 0, 2)[lower]
                out[chunk_cols, chunk] = value.T
                if grad is not None:
                    gradient[chunk_cols, chunk] = grad.transpose(1, 0, 2)
            out[chunk, chunk_cols] = value
            if grad is not None:
                gradient[chunk, chunk_cols] = grad

        _panel(arch, a, rows, b, cols, eval_gradient, chunk_rows, symmetric, write)

    if n_jobs in (None, 1) or len(starts) <= 1:
        for start in starts:
            fill(start)
    else:
        # each thread's panel product would otherwise start its own BLAS
        # threads on the same cores
        with threadpool_limits(limits=1, user_api="blas"):
            Parallel(n_jobs=n_jobs, prefer="threads")(delayed(fill)(start) for start in starts)
    return out, gradient


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
