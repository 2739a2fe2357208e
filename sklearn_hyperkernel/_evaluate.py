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
from typing import Sequence

import numpy as np
from joblib import Parallel, delayed

from .recursions import (
    _row_correlations,
    _z_correlations,
    hyper_correlations,
    mlp_correlations,
)

# Elements of one output block. About 2 MB of float64 per temporary: the dozen
# temporaries of a block stay near the CPU caches and far below the output.
_BLOCK_ELEMENTS = 1 << 18

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
    """

    x_distinct: np.ndarray
    x_index: np.ndarray
    x_variance: np.ndarray
    z: np.ndarray

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
    x_variance = np.einsum("ij,ij->i", x_distinct, x_distinct) / max(x.shape[1], 1)
    return FactorizedRows(x_distinct, x_index, x_variance, z)


@dataclass(frozen=True)
class Architecture:
    """Everything the recursions need to know about the network."""

    f_depth: int
    g_depth: int
    z_encoding: str
    length_scale: np.ndarray
    negative_slope: float
    kind: str  # "ntk" or "nngp"


def _local_distinct(index: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Distinct x indices used by a block, and the block's index into them.

    Returns None as the second value when the block's rows are the distinct
    rows themselves in order, so no gather is needed.
    """
    used, local = np.unique(index, return_inverse=True)
    if used.shape[0] == index.shape[0] and np.array_equal(used, index):
        return used, None
    return used, local.reshape(-1)


def _gather(table: np.ndarray, rows: np.ndarray | None, cols: np.ndarray | None) -> np.ndarray:
    if rows is not None:
        table = np.take(table, rows, axis=0)
    if cols is not None:
        table = np.take(table, cols, axis=1)
    return table


def _block(
    arch: Architecture,
    a: FactorizedRows,
    rows: slice,
    b: FactorizedRows,
    cols: slice,
    need_gradient: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Kernel (and, for Fourier z, its gradient in log length scale) on one block."""
    need_ntk = arch.kind == "ntk"
    used_a, local_a = _local_distinct(a.x_index[rows])
    used_b, local_b = _local_distinct(b.x_index[cols])
    rho_x, _, _ = _row_correlations(a.x_distinct[used_a], b.x_distinct[used_b], np)
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


def _block_rows(n_cols: int, block_size: int | None) -> int:
    if block_size is not None:
        return max(1, int(block_size))
    return max(1, _BLOCK_ELEMENTS // max(n_cols, 1))


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
        Rows per block; None chooses about 2^18 elements per block.
    n_jobs : int or None
        joblib threads over blocks.
    """
    symmetric = b is None
    b = a if b is None else b
    n_a, n_b = a.n_rows, b.n_rows
    out = np.empty((n_a, n_b))
    gradient = None
    if eval_gradient:
        gradient = np.empty((n_a, n_b, arch.length_scale.shape[0]))
    step = _block_rows(n_b, block_size)
    starts = range(0, n_a, step)

    def fill(start: int) -> None:
        rows = slice(start, min(start + step, n_a))
        cols = slice(start, n_b) if symmetric else slice(0, n_b)
        value, grad = _block(arch, a, rows, b, cols, eval_gradient)
        out[rows, cols] = value
        if grad is not None:
            gradient[rows, cols] = grad
        if symmetric:
            out[cols, rows] = value.T
            if grad is not None:
                gradient[cols, rows] = grad.transpose(1, 0, 2)

    if n_jobs in (None, 1) or len(starts) <= 1:
        for start in starts:
            fill(start)
    else:
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
