"""Closed-form kernels of infinitely wide hypernetworks, as pure array functions.

This module knows nothing of scikit-learn. It implements the recursions of
``docs/math.md`` (the paper's Eqs. 8-15 with the layer indices resolved) for
numpy arrays and, through the array API, for torch tensors.

Everything is computed in *correlation space*. Because the dual of the
(normalised) ReLU keeps the variance of its input, the diagonal of every layer
is known in closed form: with ``s = |x|^2 / n0`` and ``e = Sigma^0(z, z)``,

* every NNGP layer of f has variance ``s``;
* layer ``l`` of the hyper-NNGP has variance ``s^l e``.

So each kernel is ``scale(u) * scale(u') * R(u, u')`` where ``R`` is a function
of the two input correlations ``rho_x = x.x' / (|x| |x'|)`` and
``rho_z = Sigma^0(z, z') / sqrt(e e')`` only. Working with correlations keeps
every intermediate in ``[-1, 1]``, needs no per-layer norms and gives rows with
``x = 0`` or ``z = 0`` an exact zero instead of ``0 / 0``.

Coincident rows. Two rows with equal x (equal values; ``-0.0 == 0.0``) have
``rho_x = 1`` exactly, and two rows with equal z have ``rho_z = 1`` exactly (and
a squared z distance of exactly 0), whether they are the same row or two rows
of two different arrays. The rounded value would be ``1 +- ulp``, and
``kappa0 = 1 - arccos(rho) / pi`` has an infinite slope at 1, so one ulp there
moves the kernel by about ``sqrt(ulp)`` (1e-8 in float64, 3e-4 in float32).
Equal rows are found exactly (a hash of their values, verified against the
values); the blocked evaluation of :class:`~sklearn_hyperkernel.HyperKernel`
uses the same rule.

Gradients. On torch tensors the functions are differentiable with
``torch.autograd``: while gradients are being recorded (grad mode on and an
input that requires grad) every operation is out of place; otherwise the
temporaries are overwritten in place, which is faster. The derivative of
``kappa0`` is infinite at ``rho = +-1``: coincident rows, whose correlation is
set to exactly 1 by an out-of-place ``where``, get a zero gradient through their
correlation (correct for the diagonal of a Gram, where ``rho(x, x) = 1`` for
every x; the kernel's dependence on the row norms still has its gradient).
Parallel or antiparallel rows that differ (``x' = c x``, ``c != 1``) are not
coincident: where their rounded correlation lands on exactly ``+-1`` the
gradient is NaN, where it lands next to it the gradient is finite (and the
correlation's part of it tiny, the correlation being stationary there). The
NTK has no derivative at such points anyway (``kappa0`` makes a kink of the
form ``|x'_perp|``); the NNGP has one.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple, Sequence

import numpy as np
from array_api_compat import array_namespace

__all__ = [
    "relu_duals",
    "dual_correlations",
    "mlp_correlations",
    "hyper_correlations",
    "HyperCorrelations",
    "mlp_kernels",
    "z_input_kernel",
    "hyper_kernels",
]

Array = Any  # a numpy array or a torch tensor


def _slope_coefficients(negative_slope: float) -> tuple[float, float]:
    """Weights of the linear and the ReLU part of the normalised leaky ReLU.

    ``phi(s) = sqrt(2 / (1 + a^2)) * leaky_relu(s)`` and
    ``leaky_relu(s) = a s + (1 - a) relu(s)``, so every dual is
    ``linear * (linear-part dual) + relu * (ReLU dual)``. The two weights sum
    to 1, which :func:`dual_correlations` uses to write both duals with
    ``relu`` alone.
    """
    denominator = 1.0 + negative_slope * negative_slope
    return 2.0 * negative_slope / denominator, (1.0 - negative_slope) ** 2 / denominator


def dual_correlations(
    rho: Array, negative_slope: float = 0.0, *, need_kappa0: bool = True
) -> tuple[Array, Array | None]:
    """Dual activation of the normalised (leaky) ReLU on correlations.

    Parameters
    ----------
    rho : array of shape (n, m)
        Input correlations; clipped to [-1, 1] (in place on a writeable numpy
        array; they may leave it by rounding).
    negative_slope : float, default=0.0
        Slope ``a`` of the leaky ReLU on the negative side; 0 gives the ReLU.
    need_kappa0 : bool, default=True
        Whether to return the derivative dual as well.

    Returns
    -------
    kappa1 : array of shape (n, m)
        Correlation of ``phi(s), phi(s')``: ``2 E[phi(s) phi(s')] / (1 + a^2)``
        for unit-variance ``s, s'`` of correlation ``rho``.
    kappa0 : array of shape (n, m) or None
        ``2 E[phi'(s) phi'(s')] / (1 + a^2)``, the factor of the NTK's backward
        pass. Also the derivative of ``kappa1`` with respect to ``rho``.

    Notes
    -----
    With ``t = arccos(rho)`` and ``c = (1 - a)^2 / (1 + a^2)`` (the weight of
    the ReLU part; the linear part's weight is ``1 - c``), the duals are
    ``kappa0 = 1 - c t / pi`` and ``kappa1 = c sin(t) / pi + rho kappa0``. The
    sine is taken as ``sqrt((1 - rho)(1 + rho))``, never as
    ``sin(arccos(rho))``: it is one pass cheaper and exact at ``rho = +-1``.
    Written this way both duals map ``rho = 1`` to exactly 1 for every slope
    and precision (``relu * 1 + linear * 1`` would be ``1 +- ulp``, which the
    next layer's arccos turns into ``sqrt(ulp)``). No correlation is shrunk, so
    there is no bias at ``rho = +-1``.

    On torch tensors that record gradients the operations are out of place
    (differentiable). ``d kappa0 / d rho`` is infinite at ``rho = +-1``, so a
    gradient through an entry at exactly ``+-1`` is infinite or NaN unless the
    entry was set to that value by ``where`` (as coincident rows are), which
    gives it a zero gradient.
    """
    xp = array_namespace(rho)
    in_place = _in_place(rho)
    rho = _clip_inplace(rho, xp) if in_place and _is_writeable(rho) else xp.clip(rho, -1.0, 1.0)
    _, relu = _slope_coefficients(negative_slope)
    slope = relu / math.pi
    # kappa0 = 1 - c t / pi
    kappa0 = xp.acos(rho)
    kappa0 = _scale(kappa0, -slope, in_place)
    kappa0 = _shift(kappa0, 1.0, in_place)
    # c sin(t) / pi = sqrt((1 - rho)(1 + rho) (c / pi)^2); 1 - rho is exact near 1
    kappa1 = 1.0 - rho
    kappa1 = _scale(kappa1, 1.0 + rho, in_place)
    kappa1 = _scale(kappa1, slope * slope, in_place)
    kappa1 = _sqrt(kappa1, xp, in_place)
    kappa1 = _shift(kappa1, kappa0 * rho, in_place)
    return kappa1, (kappa0 if need_kappa0 else None)


def _kappa0_slope(rho: Array, negative_slope: float) -> Array:
    """d kappa0 / d rho; zero where |rho| = 1, where every caller's tangent is 0."""
    xp = array_namespace(rho)
    _, relu = _slope_coefficients(negative_slope)
    sine = xp.sqrt((1.0 - rho) * (1.0 + rho))
    positive = sine > 0.0
    safe = xp.where(positive, sine, xp.ones_like(sine))
    return xp.where(positive, (relu / math.pi) / safe, xp.zeros_like(sine))


# ---------------------------------------------------------------- in place or not


def _in_place(*arrays: Array) -> bool:
    """Whether temporaries derived from ``arrays`` may be overwritten.

    Not while torch records gradients through one of them: autograd keeps
    some intermediates for the backward pass and refuses ones that changed.
    """
    for array in arrays:
        if getattr(array, "requires_grad", False):
            import torch

            return not torch.is_grad_enabled()
    return True


def _scale(array: Array, factor: Any, in_place: bool) -> Array:
    """``array * factor``, overwriting ``array`` when ``in_place``."""
    if in_place:
        array *= factor
        return array
    return array * factor


def _shift(array: Array, term: Any, in_place: bool) -> Array:
    """``array + term``, overwriting ``array`` when ``in_place``."""
    if in_place:
        array += term
        return array
    return array + term


def _sqrt(array: Array, xp: Any, in_place: bool) -> Array:
    if not in_place:
        return xp.sqrt(array)
    if isinstance(array, np.ndarray):
        return np.sqrt(array, out=array)
    if hasattr(array, "sqrt_"):
        return array.sqrt_()
    return xp.sqrt(array)


def _is_writeable(array: Array) -> bool:
    flags = getattr(array, "flags", None)
    return bool(flags.writeable) if flags is not None else True


def _clip_inplace(rho: Array, xp: Any) -> Array:
    if isinstance(rho, np.ndarray):
        np.clip(rho, -1.0, 1.0, out=rho)
        return rho
    return xp.clip(rho, -1.0, 1.0)


# ---------------------------------------------------------------- coincident rows
# Equal rows are found by an exact 64-bit hash of their values, verified
# against the values (a collision falls back to an exact sort): O(n * dim).

_HASH_MULTIPLIERS_SEED = 0x5EED
_NEGATIVE_ZERO = np.uint64(1 << 63)
_HASH_BLOCK_WORDS = 1 << 16


@functools.lru_cache(maxsize=16)
def _hash_multipliers(n_columns: int) -> np.ndarray:
    multipliers = np.random.default_rng(_HASH_MULTIPLIERS_SEED).integers(
        1, np.iinfo(np.int64).max, size=n_columns, dtype=np.uint64
    ) | np.uint64(1)
    multipliers.flags.writeable = False
    return multipliers


def _host_rows(rows: Array) -> np.ndarray:
    """Rows as a 2-D float64 numpy array (a view when they already are one)."""
    if not isinstance(rows, np.ndarray):
        rows = rows.detach().cpu().numpy() if hasattr(rows, "detach") else np.asarray(rows)
    return np.asarray(rows, dtype=np.float64).reshape(rows.shape[0], -1)


def _row_keys(rows: np.ndarray) -> np.ndarray:
    """A 64-bit hash of the values of each row, equal for equal rows.

    Each 64-bit word has its high half folded onto its low half (the low bits
    of round numbers are all zero), then the words are combined with odd
    random multipliers, wrapping modulo 2^64. ``-0.0`` hashes as ``0.0``.
    """
    rows = _host_rows(rows)
    n_rows, n_columns = rows.shape
    multipliers = _hash_multipliers(n_columns)
    keys = np.empty(n_rows, dtype=np.uint64)
    step = max(1, _HASH_BLOCK_WORDS // max(n_columns, 1))
    with np.errstate(over="ignore"):
        for start in range(0, n_rows, step):
            block = np.array(rows[start : start + step], dtype=np.float64, order="C")
            words = block.view(np.uint64)
            words[words == _NEGATIVE_ZERO] = 0
            words ^= words >> np.uint64(32)
            keys[start : start + step] = words @ multipliers  # wraps modulo 2^64
    return keys


#: Bytes of rows compared at once when :func:`_row_ids` verifies its hash.
_VERIFY_BYTES = 16 * 2**20


def _row_ids(*blocks: Array, keys: Sequence[np.ndarray | None] | None = None) -> list[np.ndarray]:
    """Integer ids of the rows of several arrays: equal if and only if the rows are.

    Rows are equal when all their values are (``-0.0 == 0.0``), within one
    array or across arrays. ``keys`` are :func:`_row_keys` of the blocks
    where already known. Returns one int64 array per block.
    """
    hosts = [_host_rows(block) for block in blocks]
    keys = [None] * len(hosts) if keys is None else list(keys)
    all_keys = np.concatenate(
        [
            _row_keys(host) if key is None else np.asarray(key, dtype=np.uint64)
            for host, key in zip(hosts, keys)
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
    step = max(1, _VERIFY_BYTES // (8 * max(hosts[0].shape[1], 1)))
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
# than this fraction of all pairs (a scatter per entry costs more than a
# comparison of all of them).
_DENSE_COINCIDENCE_FRACTION = 1.0 / 16.0

Coincidence = Any  # None, a pair (i, j) of index arrays, or a boolean matrix
# default of the functions that take a Coincidence: find it from the rows
_FIND = "find"


def _sorted_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(order, ids[order])``: the search index :func:`_coincident_pairs` takes."""
    order = np.argsort(ids, kind="stable")
    return order, ids[order]


def _coincident_pairs(
    ids_a: np.ndarray,
    ids_b: np.ndarray,
    index_b: tuple[np.ndarray, np.ndarray] | None = None,
    cols: slice = slice(None),
) -> Coincidence:
    """Where ``ids_a[i] == ids_b[cols][j]``: None, (i, j) or a boolean matrix.

    ``index_b`` is :func:`_sorted_ids` of ``ids_b`` (whole, before ``cols``
    restricts the columns) where already known; host arrays.
    """
    start, stop, _ = cols.indices(ids_b.shape[0])
    if index_b is None:
        ids_b, start, stop = ids_b[start:stop], 0, stop - start
        index_b = _sorted_ids(ids_b)
    order_b, sorted_b = index_b
    low = np.searchsorted(sorted_b, ids_a, side="left")
    counts = np.searchsorted(sorted_b, ids_a, side="right") - low
    total = int(counts.sum())
    if total == 0:
        return None
    n_cols = stop - start
    if total > _DENSE_COINCIDENCE_FRACTION * ids_a.shape[0] * n_cols:
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


def _coincidence(a: Array, b: Array) -> Coincidence:
    """Where row i of ``a`` equals row j of ``b``, as arrays of a's namespace and device."""
    ids_a, ids_b = _row_ids(a) * 2 if b is a else _row_ids(a, b)
    coincidence = _coincident_pairs(ids_a, ids_b)
    if coincidence is None or isinstance(a, np.ndarray):
        return coincidence
    xp = array_namespace(a)
    if isinstance(coincidence, tuple):
        return tuple(xp.asarray(index, device=a.device) for index in coincidence)
    return xp.asarray(coincidence, device=a.device)


def _set_where(array: Array, coincidence: Coincidence, value: float, in_place: bool) -> Array:
    """``array`` with ``value`` at the entries of a :func:`_coincident_pairs` result.

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


def relu_duals(
    var_a: Array, var_b: Array, cov: Array, negative_slope: float = 0.0
) -> tuple[Array, Array]:
    """Dual activations of the normalised (leaky) ReLU on 2x2 covariances.

    For each pair ``(i, j)`` the covariance ``[[var_a[i], cov[i, j]],
    [cov[i, j], var_b[j]]]`` of a centred Gaussian pair ``(s, s')`` is mapped to
    ``(E[phi(s) phi(s')], E[phi'(s) phi'(s')])`` where
    ``phi = sqrt(2 / (1 + a^2)) * leaky_relu_a`` (``sqrt(2) * relu`` for
    ``a = 0``), the activation of the networks in this package.

    Parameters
    ----------
    var_a : array of shape (n,)
        Variances of the first element of each pair.
    var_b : array of shape (m,)
        Variances of the second element.
    cov : array of shape (n, m)
        Covariances.
    negative_slope : float, default=0.0
        Leaky ReLU slope ``a``.

    Returns
    -------
    kappa1 : array of shape (n, m)
        ``E[phi(s) phi(s')]``. Keeps the variance: ``kappa1(a, a, a) = a``.
    kappa0 : array of shape (n, m)
        ``E[phi'(s) phi'(s')]``. Where a variance is zero the pair is taken as
        independent: ``kappa0 = kappa0(rho=0)`` (1/2 for the ReLU), never NaN.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hyperkernel.recursions import relu_duals
    >>> kappa1, kappa0 = relu_duals(np.array([2.0]), np.array([2.0]), np.array([[0.0]]))
    >>> round(float(kappa1[0, 0]), 12), float(kappa0[0, 0])  # (2 / pi, 1 / 2)
    (0.636619772368, 0.5)
    """
    xp = array_namespace(var_a, var_b, cov)
    norm_a = xp.sqrt(var_a)
    norm_b = xp.sqrt(var_b)
    scale = norm_a[:, None] * norm_b[None, :]
    rho = cov * _safe_inverse(norm_a, xp)[:, None] * _safe_inverse(norm_b, xp)[None, :]
    kappa1, kappa0 = dual_correlations(rho, negative_slope)
    return scale * kappa1, kappa0


def _safe_inverse(values: Array, xp: Any) -> Array:
    """1 / values where values > 0, else 0 (a zero row has zero correlation)."""
    positive = values > 0
    return xp.where(positive, 1.0 / xp.where(positive, values, xp.ones_like(values)), 0.0 * values)


def mlp_correlations(
    rho_x: Array, f_depth: int, negative_slope: float = 0.0, *, need_ntk: bool = True
) -> tuple[Array, Array | None]:
    """NNGP and NTK of the hypernetwork f (a bias-free MLP) in correlation space.

    Parameters
    ----------
    rho_x : array of shape (n, m)
        Input correlations ``x.x' / (|x| |x'|)``; clipped in place.
    f_depth : int
        Number of weight matrices ``L`` of f.
    negative_slope : float, default=0.0
        Leaky ReLU slope.
    need_ntk : bool, default=True
        Whether to compute the NTK.

    Returns
    -------
    rho_f : array of shape (n, m)
        Correlation of f's outputs, ``S_f / sqrt(s s')`` (``S^{L-1}``).
    ntk_f : array of shape (n, m) or None
        ``Theta^f / sqrt(s s')``; equal to ``L`` where ``rho_x = 1``.
    """
    rho = rho_x
    xp = array_namespace(rho)
    in_place = _in_place(rho)
    ntk = (xp.asarray(rho, copy=True) if in_place else rho) if need_ntk else None
    for _ in range(f_depth - 1):
        rho_next, kappa0 = dual_correlations(rho, negative_slope, need_kappa0=need_ntk)
        if need_ntk:
            ntk = _shift(_scale(ntk, kappa0, in_place), rho_next, in_place)
        rho = rho_next
    return rho, ntk


class HyperCorrelations(NamedTuple):
    """Outputs of :func:`hyper_correlations` (see there)."""

    nngp: Array | None
    ntk_g: Array | None
    nngp_tangent: Array | None
    ntk_g_tangent: Array | None


def hyper_correlations(
    rho_f: Array,
    rho_z: Array,
    g_depth: int,
    negative_slope: float = 0.0,
    *,
    need_nngp: bool = True,
    need_ntk: bool = True,
    need_tangent: bool = False,
) -> HyperCorrelations:
    """The primary network g's recursion on f's output correlation.

    Parameters
    ----------
    rho_f : array of shape (n, m)
        Correlation of f's outputs (from :func:`mlp_correlations`).
    rho_z : array of shape (n, m)
        Correlation of g's inputs, ``Sigma^0 / sqrt(e e')``.
    g_depth : int
        Number of weight matrices ``H`` of g.
    negative_slope : float, default=0.0
        Leaky ReLU slope.
    need_nngp, need_ntk : bool, default=True
        Which kernels to return.
    need_tangent : bool, default=False
        Also return the elementwise derivatives of both with respect to
        ``rho_z`` (forward mode), used for hyperparameter gradients.

    Returns
    -------
    HyperCorrelations
        ``nngp = Lambda^H / ((s s')^{H/2} (e e')^{1/2})`` and
        ``ntk_g = K^g / ((s s')^{(H-1)/2} (e e')^{1/2})``, and their tangents;
        entries not asked for are None.
    """
    xp = array_namespace(rho_f, rho_z)
    in_place = _in_place(rho_f, rho_z)
    rho_sigma = rho_z  # correlation of Sigma^{l-1}
    ntk = (xp.asarray(rho_z, copy=True) if in_place else rho_z) if need_ntk else None
    d_sigma = xp.ones_like(rho_z) if need_tangent else None
    d_ntk = xp.ones_like(rho_z) if (need_tangent and need_ntk) else None
    for _ in range(g_depth - 1):
        rho_lambda = rho_f * rho_sigma
        rho_sigma, kappa0 = dual_correlations(rho_lambda, negative_slope, need_kappa0=need_ntk or need_tangent)
        if need_tangent:
            d_lambda = rho_f * d_sigma
            if need_ntk:
                # d(ntk * rho_f * kappa0 + rho_sigma): the product rule on the
                # backward factor; kappa0 is also d rho_sigma / d rho_lambda.
                d_ntk = _scale(d_ntk, kappa0, in_place)
                slope = _kappa0_slope(rho_lambda, negative_slope)
                d_ntk = _shift(d_ntk, ntk * slope * d_lambda, in_place)
                d_ntk = _scale(d_ntk, rho_f, in_place)
                d_ntk = _shift(d_ntk, kappa0 * d_lambda, in_place)
            d_sigma = kappa0 * d_lambda
        if need_ntk:
            ntk = _shift(_scale(ntk, rho_f * kappa0, in_place), rho_sigma, in_place)
    nngp = rho_f * rho_sigma if need_nngp else None
    d_nngp = rho_f * d_sigma if (need_nngp and need_tangent) else None
    return HyperCorrelations(nngp, ntk, d_nngp, d_ntk)


def _row_correlations(
    a: Array, b: Array, xp: Any, coincident: Coincidence = _FIND
) -> tuple[Array, Array, Array]:
    """Cosine similarities of rows (exactly 1 for equal rows) and the row norms.

    ``coincident`` says where rows are equal (:func:`_coincident_pairs`; None:
    nowhere) where the caller knows it; by default it is found from the rows.
    """
    in_place = _in_place(a, b)
    norm_a = xp.sqrt(xp.sum(a * a, axis=1))
    norm_b = xp.sqrt(xp.sum(b * b, axis=1))
    rho = a @ xp.matrix_transpose(b) if hasattr(xp, "matrix_transpose") else a @ b.T
    rho = _scale(rho, _safe_inverse(norm_a, xp)[:, None], in_place)
    rho = _scale(rho, _safe_inverse(norm_b, xp)[None, :], in_place)
    coincident = _coincidence(a, b) if coincident is _FIND else coincident
    return _set_where(rho, coincident, 1.0, in_place), norm_a, norm_b


def mlp_kernels(
    x_a: Array, x_b: Array | None = None, depth: int = 3, negative_slope: float = 0.0
) -> tuple[Array, Array]:
    """NNGP and NTK of a bias-free MLP in NTK parameterisation (the paper's f).

    Parameters
    ----------
    x_a : array of shape (n, n0)
    x_b : array of shape (m, n0), default=None (means ``x_a``)
    depth : int, default=3
        Number of weight matrices ``L``.
    negative_slope : float, default=0.0
        Leaky ReLU slope (0: ReLU).

    Returns
    -------
    nngp : array of shape (n, m)
        ``S_f = S^{L-1}``, the covariance of every output unit of f.
    ntk : array of shape (n, m)
        ``Theta^f``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hyperkernel.recursions import mlp_kernels
    >>> x = np.array([[1.0, 0.0], [0.0, 2.0]])
    >>> nngp, ntk = mlp_kernels(x, depth=2)
    >>> np.round(ntk, 4).tolist()  # diagonal: depth * |x|^2 / n0
    [[1.0, 0.3183], [0.3183, 4.0]]
    """
    xp = array_namespace(x_a)
    x_b = x_a if x_b is None else x_b
    rho, norm_a, norm_b = _row_correlations(x_a, x_b, xp)
    n0 = x_a.shape[1]
    scale = (norm_a[:, None] * norm_b[None, :]) / n0
    rho_f, ntk = mlp_correlations(rho, depth, negative_slope)
    return scale * rho_f, scale * ntk


def _length_scales(length_scale: float | Sequence[float] | Array, z_dim: int) -> np.ndarray:
    scales = np.atleast_1d(np.asarray(length_scale, dtype=float))
    if scales.ndim != 1 or scales.shape[0] not in (1, z_dim):
        raise ValueError(
            f"length_scale must be a float or have one entry per z column ({z_dim}); got shape {scales.shape}."
        )
    if not np.all(np.isfinite(scales)) or np.any(scales <= 0):
        raise ValueError(f"length_scale must be positive and finite; got {scales.tolist()}.")
    return scales


def _z_correlations(
    z_a: Array,
    z_b: Array,
    encoding: str,
    length_scale: Any,
    xp: Any,
    coincident: Coincidence = _FIND,
) -> tuple[Array, Array, Array]:
    """Correlation of g's inputs and each row's variance ``e = Sigma^0(z, z)``.

    Rows with equal z have correlation exactly 1. ``coincident`` says where
    rows are equal (:func:`_coincident_pairs`; None: nowhere), where the
    caller knows it; it may be None wherever :func:`_z_needs_coincidence` is
    False. By default it is found from the rows.
    """
    if encoding not in ("linear", "fourier"):
        raise ValueError(f"z_encoding must be 'linear' or 'fourier'; got {encoding!r}.")
    if coincident is _FIND:
        # always: the where that sets equal rows' correlation also stops the
        # infinite derivative of kappa0 there from reaching z (autograd)
        coincident = _coincidence(z_a, z_b)
    if encoding == "linear":
        rho, norm_a, norm_b = _row_correlations(z_a, z_b, xp, coincident)
        m0 = z_a.shape[1]
        return rho, norm_a * norm_a / m0, norm_b * norm_b / m0
    in_place = _in_place(z_a, z_b)
    scales = _placed_length_scales(length_scale, z_a, xp)
    rho = _squared_distances(z_a / scales, z_b / scales, xp, coincident)
    rho = _scale(rho, -0.5, in_place)
    rho = np.exp(rho, out=rho) if in_place and isinstance(rho, np.ndarray) else xp.exp(rho)
    rho = _set_where(rho, coincident, 1.0, in_place)  # None: nothing to set
    ones_a = xp.ones_like(z_a[:, 0])
    return rho, ones_a, xp.ones_like(z_b[:, 0])


def _placed_length_scales(length_scale: Any, z: Array, xp: Any) -> Array:
    """The length scales as an array of ``z``'s namespace, dtype and device."""
    scales = _length_scales(length_scale, z.shape[1])
    if isinstance(z, np.ndarray):
        return scales.astype(z.dtype, copy=False)
    return xp.asarray(scales, dtype=z.dtype, device=z.device)


def _z_needs_coincidence(encoding: str, z_dim: int) -> bool:
    """Whether equal z rows need the coincidence mask to get correlation exactly 1.

    Not for the Fourier encoding with few z columns, whose squared distances
    are exactly 0 for equal rows (:func:`_squared_distances`), unless
    gradients flow through them (see :func:`_z_correlations`).
    """
    return encoding != "fourier" or z_dim > _DIFFERENCE_COLUMNS


# Up to this many z columns, squared distances are sums of squared differences:
# as fast as the expansion |a|^2 + |b|^2 - 2 a.b for so few columns, exactly 0
# for equal rows and free of its cancellation (which loses |a|^2 * ulp: 1e-4
# in float32 for pixel coordinates in units of a small length scale).
_DIFFERENCE_COLUMNS = 8


def _squared_distances(a: Array, b: Array, xp: Any, coincident: Coincidence = _FIND) -> Array:
    """``sum_d (a_id - b_jd)^2``, exactly 0 where ``coincident`` (equal rows)."""
    in_place = _in_place(a, b)
    if a.shape[1] <= _DIFFERENCE_COLUMNS:  # equal rows: exactly 0 by construction
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
            difference = _scale(difference, difference, in_place)
            total = difference if total is None else _shift(total, difference, in_place)
        return total
    sq = a @ (b.T if not hasattr(xp, "matrix_transpose") else xp.matrix_transpose(b))
    sq = _scale(sq, -2.0, in_place)
    sq = _shift(sq, xp.sum(a * a, axis=1)[:, None], in_place)
    sq = _shift(sq, xp.sum(b * b, axis=1)[None, :], in_place)
    # rounding can make a squared distance slightly negative
    if in_place and isinstance(sq, np.ndarray):
        np.maximum(sq, 0.0, out=sq)
    else:
        sq = xp.clip(sq, 0.0, None)
    coincident = _coincidence(a, b) if coincident is _FIND else coincident
    return _set_where(sq, coincident, 0.0, in_place)


def z_input_kernel(
    z_a: Array,
    z_b: Array | None = None,
    encoding: str = "linear",
    length_scale: float | Sequence[float] = 1.0,
) -> Array:
    """Input kernel ``Sigma^0`` of the primary network g.

    Parameters
    ----------
    z_a : array of shape (n, m0)
    z_b : array of shape (m, m0), default=None (means ``z_a``)
    encoding : {"linear", "fourier"}, default="linear"
        ``"linear"``: ``z.z' / m0``. ``"fourier"``: the limit of infinitely
        many random Fourier features (paper, Remarks 2-3),
        ``exp(-sum_d (z_d - z'_d)^2 / (2 length_scale_d^2))``.
    length_scale : float or sequence of m0 floats, default=1.0
        Used by the Fourier encoding only.

    Returns
    -------
    array of shape (n, m)

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hyperkernel.recursions import z_input_kernel
    >>> z = np.array([[0.0, 0.0], [1.0, 0.0]])
    >>> np.round(z_input_kernel(z, encoding="fourier"), 4).tolist()
    [[1.0, 0.6065], [0.6065, 1.0]]
    """
    xp = array_namespace(z_a)
    z_b = z_a if z_b is None else z_b
    rho, e_a, e_b = _z_correlations(z_a, z_b, encoding, length_scale, xp)
    return rho * xp.sqrt(e_a)[:, None] * xp.sqrt(e_b)[None, :]


def hyper_kernels(
    x_a: Array,
    z_a: Array,
    x_b: Array | None = None,
    z_b: Array | None = None,
    f_depth: int = 3,
    g_depth: int = 2,
    z_encoding: str = "linear",
    length_scale: float | Sequence[float] = 1.0,
    negative_slope: float = 0.0,
) -> tuple[Array, Array]:
    """Hyper-NNGP ``Lambda^H`` and hyperkernel ``Theta^h`` on all pairs of rows.

    A direct evaluation on full matrices: the reference that the blocked,
    x-factorised evaluation of :class:`~sklearn_hyperkernel.HyperKernel` must
    reproduce.

    Parameters
    ----------
    x_a : array of shape (n, n0)
        Inputs of the hypernetwork f.
    z_a : array of shape (n, m0)
        Inputs of the primary network g.
    x_b, z_b : arrays of shape (m, n0) and (m, m0), default=None
        Second set of rows; None means the first.
    f_depth, g_depth : int, default=3, 2
        Number of weight matrices of f and of g.
    z_encoding : {"linear", "fourier"}, default="linear"
    length_scale : float or sequence of m0 floats, default=1.0
    negative_slope : float, default=0.0

    Returns
    -------
    hyper_nngp : array of shape (n, m)
    hyper_ntk : array of shape (n, m)
        ``Theta^f(x, x') * K^g(u, u')``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hyperkernel.recursions import hyper_kernels
    >>> x = np.array([[1.0, -1.0], [1.0, -1.0]])
    >>> z = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> nngp, ntk = hyper_kernels(x, z, f_depth=1, g_depth=1)
    >>> np.round(ntk, 12).tolist()  # (x.x'/n0) (z.z'/m0)
    [[0.5, 0.0], [0.0, 0.5]]
    """
    xp = array_namespace(x_a, z_a)
    x_b = x_a if x_b is None else x_b
    z_b = z_a if z_b is None else z_b
    rho_x, norm_xa, norm_xb = _row_correlations(x_a, x_b, xp)
    rho_z, e_a, e_b = _z_correlations(z_a, z_b, z_encoding, length_scale, xp)
    n0 = x_a.shape[1]
    s_a, s_b = norm_xa * norm_xa / n0, norm_xb * norm_xb / n0
    rho_f, ntk_f = mlp_correlations(rho_x, f_depth, negative_slope)
    g = hyper_correlations(rho_f, rho_z, g_depth, negative_slope)
    scale_a = s_a ** (g_depth / 2) * xp.sqrt(e_a)
    scale_b = s_b ** (g_depth / 2) * xp.sqrt(e_b)
    scale = scale_a[:, None] * scale_b[None, :]
    return scale * g.nngp, scale * ntk_f * g.ntk_g
