"""Array arithmetic shared by the recursions, for numpy arrays and torch tensors.

* In place unless autograd records: the recursions overwrite their
  temporaries (much faster), except while torch records gradients through an
  input (:func:`in_place_allowed`), when every operation is out of place.
  :func:`scale`, :func:`shift`, :func:`sqrt` and :func:`clip_correlations`
  take that decision as an argument.
* Scale-safe root mean squares of rows (:func:`scale_safe_root`): computed
  on the rows divided by their largest absolute value, so that no square
  under- or overflows.
* Pairwise quantities of two sets of rows, exact for equal rows (see
  :mod:`._utils.rows`): cosine correlations (:func:`row_correlations`, exactly 1)
  and squared distances (:func:`squared_distances`, exactly 0).

Pure numpy and array API: no scikit-learn.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from .rows import FIND, Coincidence, find_coincidence, set_where

__all__ = [
    "DIFFERENCE_COLUMNS",
    "in_place_allowed",
    "scale",
    "shift",
    "sqrt",
    "clip_correlations",
    "like",
    "safe_inverse",
    "scale_safe_root",
    "row_correlations",
    "squared_distances",
]

Array = Any  # a numpy array or a torch tensor


def in_place_allowed(*arrays: Array) -> bool:
    """Whether temporaries derived from ``arrays`` may be overwritten.

    Not while torch records gradients through one of them: autograd keeps
    some intermediates for the backward pass and refuses ones that changed.
    """
    for array in arrays:
        if getattr(array, "requires_grad", False):
            import torch

            return not torch.is_grad_enabled()
    return True


def scale(array: Array, factor: Any, in_place: bool) -> Array:
    """``array * factor``, overwriting ``array`` when ``in_place``."""
    if in_place:
        array *= factor
        return array
    return array * factor


def shift(array: Array, term: Any, in_place: bool) -> Array:
    """``array + term``, overwriting ``array`` when ``in_place``."""
    if in_place:
        array += term
        return array
    return array + term


def sqrt(array: Array, xp: Any, in_place: bool) -> Array:
    """``sqrt(array)``, overwriting ``array`` when ``in_place``."""
    if not in_place:
        return xp.sqrt(array)
    if isinstance(array, np.ndarray):
        return np.sqrt(array, out=array)
    if hasattr(array, "sqrt_"):
        return array.sqrt_()
    return xp.sqrt(array)


def clip_correlations(rho: Array, in_place: bool) -> Array:
    """``rho`` clipped to ``[-1, 1]``, in place when allowed and ``rho`` is writeable."""
    xp = array_namespace(rho)
    flags = getattr(rho, "flags", None)
    if in_place and isinstance(rho, np.ndarray) and flags.writeable:
        np.clip(rho, -1.0, 1.0, out=rho)
        return rho
    return xp.clip(rho, -1.0, 1.0)


def like(values: np.ndarray, array: Array) -> Array:
    """Host ``values`` as an array of ``array``'s namespace, dtype and device."""
    if isinstance(array, np.ndarray):
        return values.astype(array.dtype, copy=False)
    return array_namespace(array).asarray(values, dtype=array.dtype, device=array.device)


def safe_inverse(values: Array, xp: Any) -> Array:
    """1 / values where values > 0, else 0 (a zero row has zero correlation)."""
    positive = values > 0
    return xp.where(positive, 1.0 / xp.where(positive, values, xp.ones_like(values)), 0.0 * values)


#: rows per chunk of :func:`scale_safe_root` (its maximum and its chunked statistic)
_SCALE_SAFE_CHUNK_ROWS = 4096


def scale_safe_root(
    rows: np.ndarray, mean_square: Callable[[np.ndarray], float], *, chunked: bool = False
) -> float:
    """``peak * sqrt(mean_square(rows / peak))`` with ``peak = max |rows|``.

    A root mean square of rows (a norm, an RMS, a spread) that neither
    underflows for tiny rows nor overflows for huge ones: ``mean_square``
    sees the rows divided by their largest absolute value, so every square
    it takes is at most 1 and the largest is exactly 1.

    Parameters
    ----------
    rows : ndarray of shape (n_rows, n_columns)
        Finite values.
    mean_square : callable
        Maps an array of shape (n, n_columns) of scaled rows to a
        non-negative number (a mean or a maximum of squares).
    chunked : bool, default=False
        Pass ``rows / peak`` to ``mean_square`` 4096 rows at a time and keep
        the largest result: for a maximum over the rows, without a copy of
        all of them. ``peak`` itself is always found chunk by chunk.

    Returns
    -------
    root : float
        0.0 for no rows, no columns or all-zero rows (``mean_square`` is
        then not called).
    """
    if rows.size == 0:
        return 0.0
    step = _SCALE_SAFE_CHUNK_ROWS
    starts = range(0, rows.shape[0], step)
    peak = max(float(np.max(np.abs(rows[start : start + step]))) for start in starts)
    if not peak > 0:
        return 0.0
    if chunked:
        value = max(float(mean_square(rows[start : start + step] / peak)) for start in starts)
    else:
        value = float(mean_square(rows / peak))
    return peak * math.sqrt(value)


def row_correlations(
    a: Array, b: Array, coincident: Coincidence = FIND
) -> tuple[Array, Array, Array]:
    """Cosine similarities of rows (exactly 1 for equal rows) and the row norms.

    ``coincident`` says where rows are equal (:func:`._utils.rows.coincident_pairs`;
    None: nowhere) where the caller knows it; by default it is found from the
    rows.
    """
    xp = array_namespace(a, b)
    in_place = in_place_allowed(a, b)
    norm_a = xp.sqrt(xp.sum(a * a, axis=1))
    norm_b = xp.sqrt(xp.sum(b * b, axis=1))
    rho = a @ b.T
    rho = scale(rho, safe_inverse(norm_a, xp)[:, None], in_place)
    rho = scale(rho, safe_inverse(norm_b, xp)[None, :], in_place)
    coincident = find_coincidence(a, b) if coincident is FIND else coincident
    return set_where(rho, coincident, 1.0, in_place), norm_a, norm_b


# Up to this many z columns, squared distances are sums of squared differences:
# as fast as the expansion |a|^2 + |b|^2 - 2 a.b for so few columns, exactly 0
# for equal rows and free of its cancellation (which loses |a|^2 * ulp: 1e-4
# in float32 for pixel coordinates in units of a small length scale).
DIFFERENCE_COLUMNS = 8


def squared_distances(a: Array, b: Array, coincident: Coincidence = FIND) -> Array:
    """``sum_d (a_id - b_jd)^2`` for all pairs of rows, exactly 0 for equal rows.

    With up to 8 columns, sums of squared differences (0 for equal rows by
    construction); with more, the expansion ``|a|^2 + |b|^2 - 2 a.b``
    clipped at 0, with 0 written where ``coincident`` (as
    :func:`.recursions.z_correlations`; by default found from the rows).
    """
    xp = array_namespace(a, b)
    in_place = in_place_allowed(a, b)
    if a.shape[1] <= DIFFERENCE_COLUMNS:  # equal rows: exactly 0 by construction
        if in_place and isinstance(a, np.ndarray):
            total = np.subtract.outer(a[:, 0], b[:, 0])
            np.square(total, out=total)
            difference = np.empty_like(total) if a.shape[1] > 1 else None
            for d in range(1, a.shape[1]):
                np.subtract.outer(a[:, d], b[:, d], out=difference)
                np.square(difference, out=difference)
                total += difference
            return total
        total = None
        for d in range(a.shape[1]):
            difference = a[:, d][:, None] - b[:, d][None, :]
            difference = scale(difference, difference, in_place)
            total = difference if total is None else shift(total, difference, in_place)
        return total
    sq = a @ b.T
    sq = scale(sq, -2.0, in_place)
    sq = shift(sq, xp.sum(a * a, axis=1)[:, None], in_place)
    sq = shift(sq, xp.sum(b * b, axis=1)[None, :], in_place)
    # rounding can make a squared distance slightly negative
    if in_place and isinstance(sq, np.ndarray):
        np.maximum(sq, 0.0, out=sq)
    else:
        sq = xp.clip(sq, 0.0, None)
    coincident = find_coincidence(a, b) if coincident is FIND else coincident
    return set_where(sq, coincident, 0.0, in_place)
