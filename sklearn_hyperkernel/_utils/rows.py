"""Exact identity of rows: the package's one row de-duplication.

Two rows are *equal* when all their values are (``-0.0 == 0.0``). The closed
forms need this exactly: equal x, or equal z, must have correlation exactly 1
(``docs/math.md``, "How the package evaluates them"), and the Gram engine evaluates f once
per distinct x. Rows are grouped by an exact 64-bit hash of their values
(:func:`row_keys`), verified against the values slice by slice; a collision
between different rows falls back to an exact sort. The cost is O(n * dim),
not the O(n log n * dim) of a lexicographic sort of the rows.

* :func:`distinct_rows`: the distinct rows of one array (numpy, or a torch
  tensor on any device) and the index from every row to them;
* :func:`row_ids`: integer ids shared by the rows of several arrays, equal
  exactly for equal rows;
* :func:`coincident_pairs`, :func:`find_coincidence`: where the rows of two
  arrays are equal, as index pairs or a mask, and :func:`set_where` to write
  a value there.

The hashing and bookkeeping run on host numpy arrays; only the results of
:func:`distinct_rows`, :func:`find_coincidence` and :func:`set_where` follow
the input's array namespace and device. Pure numpy and array API: no
scikit-learn.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from ..config import get_config

__all__ = [
    "FIND",
    "Coincidence",
    "host_rows",
    "row_keys",
    "row_ids",
    "distinct_rows",
    "distinct_rows_and_keys",
    "sorted_ids",
    "coincident_pairs",
    "find_coincidence",
    "set_where",
]

Array = Any  # a numpy array or a torch tensor

_HASH_MULTIPLIERS_SEED = 0x5EED
_NEGATIVE_ZERO = np.uint64(1 << 63)


@functools.lru_cache(maxsize=16)
def _hash_multipliers(n_columns: int) -> np.ndarray:
    multipliers = np.random.default_rng(_HASH_MULTIPLIERS_SEED).integers(
        1, np.iinfo(np.int64).max, size=n_columns, dtype=np.uint64
    ) | np.uint64(1)
    multipliers.flags.writeable = False
    return multipliers


def host_rows(rows: Array) -> np.ndarray:
    """Rows as a 2-D float64 numpy array (a view when they already are one)."""
    if not isinstance(rows, np.ndarray):
        rows = rows.detach().cpu().numpy() if hasattr(rows, "detach") else np.asarray(rows)
    rows = np.asarray(rows, dtype=np.float64)
    return rows if rows.ndim == 2 else rows.reshape(rows.shape[0], -1)


def row_keys(rows: np.ndarray) -> np.ndarray:
    """A 64-bit hash of the values of each row, equal for equal rows.

    Each 64-bit word has its high half folded onto its low half (the low bits
    of round numbers are all zero), then the words are combined with odd
    random multipliers, wrapping modulo 2^64. ``-0.0`` hashes as ``0.0``.
    """
    rows = host_rows(rows)
    n_rows, n_columns = rows.shape
    multipliers = _hash_multipliers(n_columns)
    keys = np.empty(n_rows, dtype=np.uint64)
    step = max(1, get_config()["rows_hash_block_words"] // max(n_columns, 1))
    with np.errstate(over="ignore"):
        for start in range(0, n_rows, step):
            block = np.array(rows[start : start + step], dtype=np.float64, order="C")
            words = block.view(np.uint64)
            words[words == _NEGATIVE_ZERO] = 0
            words ^= words >> np.uint64(32)
            keys[start : start + step] = words @ multipliers  # wraps modulo 2^64
    return keys


def row_ids(*blocks: Array, keys: Sequence[np.ndarray | None] | None = None) -> list[np.ndarray]:
    """Integer ids of the rows of several arrays: equal if and only if the rows are.

    Rows are equal when all their values are (``-0.0 == 0.0``), within one
    array or across arrays. ``keys`` are :func:`row_keys` of the blocks
    where already known. Returns one int64 array per block.
    """
    hosts = [host_rows(block) for block in blocks]
    keys = [None] * len(hosts) if keys is None else list(keys)
    all_keys = np.concatenate(
        [
            row_keys(host) if key is None else np.asarray(key, dtype=np.uint64)
            for host, key in zip(hosts, keys, strict=True)
        ]
    )
    offsets = np.cumsum([0] + [host.shape[0] for host in hosts])
    if all_keys.shape[0] == 0:
        return [np.zeros(0, dtype=np.int64) for _ in hosts]
    _, first, ids = np.unique(all_keys, return_index=True, return_inverse=True)
    ids = ids.reshape(-1).astype(np.int64, copy=False)
    # rows that share a key with another row must equal its first row exactly;
    # checked a slice of rows at a time, so the check holds two slices, not two
    # copies of every shared row (at a million pixel rows, gigabytes)
    shared = np.flatnonzero(np.bincount(ids)[ids] > 1)
    step = max(1, get_config()["rows_verify_bytes"] // (8 * max(hosts[0].shape[1], 1)))
    if not all(
        np.array_equal(
            _gather_rows(hosts, offsets, part), _gather_rows(hosts, offsets, first[ids[part]])
        )
        for part in (shared[start : start + step] for start in range(0, shared.shape[0], step))
    ):
        # a hash collision between different rows: an exact sort instead
        rows = np.concatenate(hosts) + 0.0  # + 0.0 turns -0.0 into 0.0
        _, ids = np.unique(rows, axis=0, return_inverse=True)
        ids = ids.reshape(-1).astype(np.int64, copy=False)
    return [ids[offsets[k] : offsets[k + 1]] for k in range(len(hosts))]


def _gather_rows(
    hosts: Sequence[np.ndarray], offsets: np.ndarray, positions: np.ndarray
) -> np.ndarray:
    """Rows at ``positions`` of the blocks stacked, without stacking them."""
    if len(hosts) == 1:
        return hosts[0][positions]
    out = np.empty((positions.shape[0], hosts[0].shape[1]))
    block = np.searchsorted(offsets, positions, side="right") - 1
    for k, host in enumerate(hosts):
        mine = block == k
        out[mine] = host[positions[mine] - offsets[k]]
    return out


# Where two sets of ids coincide: index arrays (i, j) when the pairs are few
# (typical: one match per row at most), a boolean matrix when they are more
# than the configuration's coincidence_dense_fraction of all pairs.
Coincidence = Any  # None, a pair (i, j) of index arrays, or a boolean matrix
#: default of the functions that take a Coincidence: find it from the rows
FIND = "find"


def sorted_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(order, ids[order])``: the search index :func:`coincident_pairs` takes."""
    order = np.argsort(ids, kind="stable")
    return order, ids[order]


def coincident_pairs(
    ids_a: np.ndarray,
    ids_b: np.ndarray,
    index_b: tuple[np.ndarray, np.ndarray] | None = None,
    cols: slice = slice(None),
) -> Coincidence:
    """Where ``ids_a[i] == ids_b[cols][j]``: None, (i, j) or a boolean matrix.

    ``index_b`` is :func:`sorted_ids` of ``ids_b`` (whole, before ``cols``
    restricts the columns) where already known; host arrays.
    """
    start, stop, _ = cols.indices(ids_b.shape[0])
    if index_b is None:
        ids_b, start, stop = ids_b[start:stop], 0, stop - start
        index_b = sorted_ids(ids_b)
    order_b, sorted_b = index_b
    low = np.searchsorted(sorted_b, ids_a, side="left")
    counts = np.searchsorted(sorted_b, ids_a, side="right") - low
    total = int(counts.sum())
    if total == 0:
        return None
    n_cols = stop - start
    if total > get_config()["coincidence_dense_fraction"] * ids_a.shape[0] * n_cols:
        return ids_a[:, None] == ids_b[None, start:stop]
    i = np.repeat(np.arange(ids_a.shape[0]), counts)
    first = np.cumsum(counts) - counts
    j = order_b[np.arange(total) - np.repeat(first - low, counts)]
    inside = (j >= start) & (j < stop)
    if not inside.all():
        i, j = i[inside], j[inside]
        if i.shape[0] == 0:
            return None
    return i, j - start


def find_coincidence(a: Array, b: Array) -> Coincidence:
    """Where row i of ``a`` equals row j of ``b``, as arrays of a's namespace and device."""
    ids_a, ids_b = row_ids(a) * 2 if b is a else row_ids(a, b)
    coincidence = coincident_pairs(ids_a, ids_b)
    if coincidence is None or isinstance(a, np.ndarray):
        return coincidence
    xp = array_namespace(a)
    if isinstance(coincidence, tuple):
        return tuple(xp.asarray(index, device=a.device) for index in coincidence)
    return xp.asarray(coincidence, device=a.device)


def set_where(array: Array, coincidence: Coincidence, value: float, in_place: bool) -> Array:
    """``array`` with ``value`` at the entries of a :func:`coincident_pairs` result.

    In place, or out of place (``where``, ``index_put``), which gives the
    entries it sets a zero gradient.
    """
    if coincidence is None:
        return array
    xp = array_namespace(array)
    if isinstance(coincidence, tuple):
        if in_place:
            array[coincidence] = value
            return array
        if isinstance(array, np.ndarray):
            array = array.copy()
            array[coincidence] = value
            return array
        fill = xp.asarray(value, dtype=array.dtype, device=array.device)
        return array.index_put(coincidence, fill)
    if in_place:
        if isinstance(array, np.ndarray):
            np.putmask(array, coincidence, value)
        else:
            array.masked_fill_(coincidence, value)
        return array
    return xp.where(coincidence, xp.full_like(array, value), array)


def distinct_rows(x: Array) -> tuple[Array, Array]:
    """Distinct rows of ``x`` in order of first appearance, and the inverse index.

    Parameters
    ----------
    x : array of shape (n_rows, n_columns)
        A numpy array, or a torch tensor (on any device; it is hashed on the
        host).

    Returns
    -------
    distinct : array of shape (n_distinct, n_columns)
        The distinct rows (rows of ``x`` itself, in ``x``'s namespace, dtype
        and device), in order of first appearance.
    inverse : array of shape (n_rows,)
        ``distinct[inverse]`` equals ``x`` exactly: numpy ``intp``, or a
        torch ``int64`` tensor on ``x``'s device.

    Raises
    ------
    ValueError
        If ``x`` is not 2-dimensional.
    """
    if x.ndim != 2:
        raise ValueError(f"x must be 2-dimensional, got shape {tuple(x.shape)}.")
    if isinstance(x, np.ndarray):
        distinct, inverse, _ = distinct_rows_and_keys(x)
        return distinct, inverse
    xp = array_namespace(x)
    leaders, inverse = _leaders_and_inverse(host_rows(x))[:2]
    device = x.device
    leaders = xp.asarray(leaders, dtype=xp.int64, device=device)
    return xp.take(x, leaders, axis=0), xp.asarray(inverse, dtype=xp.int64, device=device)


def distinct_rows_and_keys(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`distinct_rows` of a numpy array, and the :func:`row_keys` of the distinct rows."""
    leaders, inverse, keys = _leaders_and_inverse(x)
    return x[leaders], inverse, keys[leaders]


def _leaders_and_inverse(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First row of each distinct row (in order), each row's distinct index, and all keys."""
    if x.shape[0] == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.uint64)
    keys = row_keys(x)
    (ids,) = row_ids(x, keys=[keys])
    _, first = np.unique(ids, return_index=True)  # the first row of each id
    leaders = np.sort(first)  # in order of first appearance
    relabel = np.empty(first.shape[0], dtype=np.intp)
    relabel[ids[leaders]] = np.arange(leaders.shape[0])
    return leaders, relabel[ids], keys
