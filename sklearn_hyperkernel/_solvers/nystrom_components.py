"""Which training rows are the components of Nyström kernel ridge regression.

``HyperKernelRegressor(solver="nystrom", component_selection=...)``:

* ``"uniform"``: :func:`uniform_components`, the draw of scikit-learn's
  :class:`~sklearn.kernel_approximation.Nystroem`;
* ``"rpcholesky"``: :func:`rpcholesky_components` (randomly pivoted Cholesky) on
  the weighted kernel matrix of a uniform pool of candidate rows;
* an array of row indices, used as given.

:func:`select_components` applies the rule to a
:class:`~._operator.GramOperator` of the training rows.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.utils import check_array, check_random_state

from .._operator.gram_operator import GramOperator

__all__ = [
    "NYSTROM_DEFAULT_COMPONENTS",
    "RPCHOLESKY_POOL_FACTOR",
    "resolve_n_components",
    "rpcholesky_components",
    "select_components",
    "uniform_components",
]

#: ``n_components=None`` uses ``min(n_samples, this)`` components.
NYSTROM_DEFAULT_COMPONENTS = 2000

#: ``component_selection="rpcholesky"`` runs randomly pivoted Cholesky on at most
#: this many times ``n_components`` training rows drawn uniformly (its factor
#: takes ``8 * pool * n_components`` bytes while the components are chosen).
RPCHOLESKY_POOL_FACTOR = 10

#: Candidates drawn per round of accelerated RPCholesky.
_RPCHOLESKY_BLOCK = 64


def resolve_n_components(n_components: int | None, n_samples: int) -> int:
    """The number of components: ``n_components``, its default, or ``n_samples`` at most.

    Warns
    -----
    UserWarning
        When ``n_components > n_samples`` (reduced to ``n_samples``, as
        :class:`~sklearn.kernel_approximation.Nystroem` does).
    """
    if n_components is None:
        return min(n_samples, NYSTROM_DEFAULT_COMPONENTS)
    if n_components > n_samples:
        warnings.warn(
            f"n_components={n_components} > n_samples={n_samples}. This is not "
            "possible: n_components was set to n_samples (every training row a "
            "centre), which costs more than the exact solver.",
            UserWarning,
            stacklevel=6,
        )
        return n_samples
    return int(n_components)


def uniform_components(
    n_samples: int, n_components: int, random_state: np.random.RandomState
) -> np.ndarray:
    """``n_components`` row indices drawn uniformly without replacement.

    The same draw as :class:`sklearn.kernel_approximation.Nystroem` with the
    same ``random_state`` (the first ``n_components`` of a permutation).
    """
    return random_state.permutation(n_samples)[:n_components]


def rpcholesky_components(
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
        # every residual at rounding level: nothing can be accepted any more
        if not float(np.max(residual, initial=0.0)) > floor:
            break
        size = min(block, max(1, math.ceil(1.25 * (n_components - rank))))
        candidates = random_state.choice(p, size=size, replace=True, p=residual / total)
        start_diagonal = residual[candidates].copy()
        # residual columns for the candidates, after the pivots of earlier rounds
        new = np.asarray(columns(candidates), dtype=np.float64).reshape(p, size)
        if rank:
            new -= factor[:, :rank] @ factor[candidates, :rank].T
        accepted = 0
        spanned = []  # candidates whose residual is rounding: in the pivots' span
        for j in range(size):
            if rank + accepted == n_components:
                break
            pivot = int(candidates[j])
            column = new[:, j]
            if accepted:
                block_factor = factor[:, rank : rank + accepted]
                column = column - block_factor @ block_factor[pivot]
            value = float(column[pivot])
            if value <= floor:
                spanned.append(pivot)
                continue
            if random_state.random_sample() * start_diagonal[j] >= value:
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
        # a candidate found in the span stays there: its residual (left above the floor by
        # rounding of the running update) is 0, so it is not drawn again
        residual[spanned] = 0.0
    return np.asarray(pivots, dtype=np.intp)


def _given_components(selection: Any, n_samples: int) -> np.ndarray:
    """Validated row indices of ``component_selection`` given as an array."""
    index = check_array(selection, ensure_2d=False, dtype=None, input_name="component_selection")
    if index.ndim != 1 or index.shape[0] == 0 or not np.issubdtype(index.dtype, np.integer):
        raise ValueError(
            "component_selection must be 'uniform', 'rpcholesky' or a non-empty 1-d "
            f"array of integer row indices; got an array of shape {index.shape} "
            f"and dtype {index.dtype}."
        )
    if index.min() < -n_samples or index.max() >= n_samples:
        raise ValueError(
            f"component_selection has row indices outside [0, {n_samples}) for "
            f"{n_samples} training rows."
        )
    return np.asarray(index, dtype=np.intp) % n_samples


def select_components(
    operator: GramOperator,
    sample_weight: np.ndarray | None,
    selection: str | Any,
    n_components: int | None,
    random_state: Any,
) -> np.ndarray:
    """Indices of the training rows used as components.

    Parameters
    ----------
    operator : GramOperator
        The training rows' Gram (its diagonal and, for ``"rpcholesky"``,
        columns of a pool of rows).
    sample_weight : ndarray of shape (n_rows,) or None
        ``"rpcholesky"`` works on the weighted kernel ``W^1/2 K W^1/2``.
    selection : {"uniform", "rpcholesky"} or array-like of int
    n_components : int or None
        See :func:`resolve_n_components`; ignored for an array of indices.
    random_state : int, RandomState or None

    Returns
    -------
    ndarray of int
        Row indices; ``"rpcholesky"`` may return fewer than asked (with a
        warning) when the pool's kernel matrix has a lower numerical rank.
    """
    n_samples = operator.n_rows
    if not isinstance(selection, str):
        return _given_components(selection, n_samples)
    n_components = resolve_n_components(n_components, n_samples)
    random_state = check_random_state(random_state)
    if selection == "uniform":
        return uniform_components(n_samples, n_components, random_state)
    # randomly pivoted Cholesky on the weighted kernel of a uniform pool
    pool = uniform_components(
        n_samples, min(n_samples, RPCHOLESKY_POOL_FACTOR * n_components), random_state
    )
    diagonal = operator.diagonal[pool]
    pool_weight = None if sample_weight is None else sample_weight[pool]
    pool_diagonal = diagonal if pool_weight is None else diagonal * pool_weight
    pool_gram = operator.take(pool)  # with its part of the diagonal

    def columns(index: np.ndarray) -> np.ndarray:
        K = pool_gram.columns(index)
        if pool_weight is not None:
            K *= np.sqrt(pool_weight)[:, None]
            K *= np.sqrt(pool_weight[index])[None, :]
        return K

    pivots = rpcholesky_components(pool_diagonal, columns, n_components, random_state)
    if pivots.shape[0] < n_components:
        warnings.warn(
            f"component_selection='rpcholesky' found {pivots.shape[0]} centres instead of "
            f"n_components={n_components}: the kernel matrix of the candidate rows has "
            "that numerical rank.",
            UserWarning,
            stacklevel=5,
        )
    return pool[pivots]
