"""The convolutional f's table of pair quantities, compiled (numba).

:func:`conv_table` gives the values of :func:`.conv_recursion.conv_correlations`
(``rho = S_f / sqrt(sigma sigma')`` and ``ntk = Theta^f / sqrt(sigma sigma')``
of every pair of images; no tangents) in loops compiled by numba: parallel
over rows of pairs (``numba.prange``), each thread with a few ``H x W`` maps
of scratch, so memory stays linear in the pixels. Per pair and conv layer: the
separable box sums of ``K`` and of ``Theta Kdot + K`` (two 1-D passes of
``k`` shifted sums each), then one loop over the positions for the duals.

The operations are those of the array form in its order (the box sums
included), with :mod:`.._utils.compiled`'s scalar ``acos`` (within 1 ulp of
numpy's) and a sequential mean over the positions (numpy's is pairwise): the
two agree to ~1e-15 relative (tests: 1e-12). float32 inputs are computed in
float64 (their variances too) and returned as float32. Scope: numpy arrays on the CPU, values only.

Threads: numba's (``n_threads``), except off the main thread, in a process
forked after numba's OpenMP pool started, or where numba's threading layer
cannot be loaded (:func:`.._utils.compiled.threads_are_safe`): there the table
is computed on the calling thread (the same values). Compiled code is cached
on disk (the first call on a machine compiles it).
"""

from __future__ import annotations

import math

import numpy as np

from .._utils import compiled as _compiled
from .._utils.compiled import numba
from .conv_recursion import ConvVariances, check_conv_arguments, conv_variances

__all__ = ["available", "conv_table"]

#: Rows of pairs a thread takes at a time (its scratch maps are allocated once per group).
_ROW_GROUP = 4

_jit, _dual = _compiled.jit, _compiled.dual


def available() -> bool:
    """Whether :func:`conv_table` can run compiled (numba installed, its JIT not disabled)."""
    return _compiled.available()


@_jit()
def _edge_sum(values, base, stride, index, n, k):  # pragma: no cover - compiled
    """The box sum at ``index`` of a line of ``n`` values ``values[base + m stride]``, over
    the window's positions inside the line, in the order of the offsets."""
    r = k // 2
    total = 0.0
    for d in range(max(0, r - index), min(k, n + r - index)):
        total += values[base + (index + d - r) * stride]
    return total


@_jit()
def _box(src, dst, tmp, h, w, k, bias):  # pragma: no cover - compiled
    """``dst = B src + bias`` on flat ``h x w`` maps: the sums along W into ``tmp``, then along
    H, each in the order of the offsets ``-r .. r`` (the array form's; a padded zero adds
    nothing), then times ``1 / (k k)``.

    Each pass runs as long loops over the flat map (vectorised), as if the map had no
    border; then the positions within ``r`` of a border (whose window those loops wrapped
    or cut) are summed again over their window's positions inside the image.
    """
    r = k // 2
    size = h * w
    # the long loops index views from 0 (numba cannot see that p - r >= 0 and would check
    # for negative indices at every element, which stops LLVM from vectorising them)
    inner = size - 2 * r
    if inner > 0:  # along W
        out = tmp[r : r + inner]
        first = src[0:inner]
        for q in range(inner):
            out[q] = first[q]
        for d in range(1, k):
            term = src[d : d + inner]
            for q in range(inner):
                out[q] += term[q]
    for i in range(h):  # the columns j < r and j >= w - r, each once
        for j in range(min(r, w)):
            tmp[i * w + j] = _edge_sum(src, i * w, 1, j, w, k)
        for j in range(max(min(r, w), w - r), w):
            tmp[i * w + j] = _edge_sum(src, i * w, 1, j, w, k)
    inner = size - 2 * r * w
    if inner > 0:  # along H
        out = dst[r * w : r * w + inner]
        first = tmp[0:inner]
        for q in range(inner):
            out[q] = first[q]
        for d in range(1, k):
            term = tmp[d * w : d * w + inner]
            for q in range(inner):
                out[q] += term[q]
    for i in range(h):  # the rows i < r and i >= h - r
        if r <= i < h - r:
            continue
        for j in range(w):
            dst[i * w + j] = _edge_sum(tmp, j, w, i, h, k)
    inverse = 1.0 / (k * k)
    for p in range(size):
        dst[p] = dst[p] * inverse + bias


@_jit()
def _pair(a, b, va, vb, maps, arch, bf):  # pragma: no cover - compiled
    """``(S_f, Theta^f)`` of one pair: images ``a``, ``b`` of shape (C0, H W), variance maps
    ``va``, ``vb`` of shape (f_depth, H W); ``maps``: 6 scratch rows of ``H W``."""
    h, w, k, f_depth, slope, need_ntk = arch
    c0 = a.shape[0]
    size = h * w
    kk, theta, kdot, back, tmp, sig = maps[0], maps[1], maps[2], maps[3], maps[4], maps[5]
    for p in range(size):  # K^0 = x(p) . x'(p) / C0
        kk[p] = a[0, p] * b[0, p]
    for c in range(1, c0):
        for p in range(size):
            kk[p] += a[c, p] * b[c, p]
    for p in range(size):
        kk[p] = kk[p] / c0
    for layer in range(1, f_depth):
        if need_ntk:
            if layer == 1:  # Theta^0 = 0: K^0 alone
                _box(kk, theta, tmp, h, w, k, bf)
            else:
                for p in range(size):
                    back[p] = theta[p] * kdot[p] + kk[p]
                _box(back, theta, tmp, h, w, k, bf)
        _box(kk, sig, tmp, h, w, k, bf)
        for p in range(size):
            scale = math.sqrt(va[layer, p] * vb[layer, p])
            rho = sig[p] / scale if scale > 0.0 else 0.0
            kappa1, kappa0 = _dual(rho, slope)
            kk[p] = scale * kappa1
            kdot[p] = kappa0
    s_f = 0.0
    for p in range(size):
        s_f += kk[p]
    s_f = s_f / size + bf
    theta_f = s_f
    if need_ntk and f_depth > 1:
        theta_f = 0.0
        for p in range(size):
            theta_f += theta[p] * kdot[p] + kk[p]
        theta_f = theta_f / size + bf
    return s_f, theta_f


@_jit()
def _rows(first, step, rho, ntk, x_a, x_b, v_a, v_b, norm, arch, bf, symmetric):  # pragma: no cover
    """Rows ``first, first + step, ...`` of the table (columns ``j >= i`` when ``symmetric``)."""
    maps = np.empty((6, x_a.shape[2]))
    sigma_a, sigma_b = norm
    for i in range(first, rho.shape[0], step):
        for j in range(i if symmetric else 0, rho.shape[1]):
            s_f, theta_f = _pair(x_a[i], x_b[j], v_a[i], v_b[j], maps, arch, bf)
            scale = math.sqrt(sigma_a[i] * sigma_b[j])
            if scale > 0.0:
                rho[i, j] = min(max(s_f / scale, -1.0), 1.0)
                ntk[i, j] = theta_f / scale
            else:
                rho[i, j] = 0.0
                ntk[i, j] = 0.0


@_jit()
def _table_serial(rho, ntk, x_a, x_b, v_a, v_b, norm, arch, bf, symmetric):  # pragma: no cover
    _rows(0, 1, rho, ntk, x_a, x_b, v_a, v_b, norm, arch, bf, symmetric)


@_jit(parallel=True)
def _table_parallel(rho, ntk, x_a, x_b, v_a, v_b, norm, arch, bf, symmetric):  # pragma: no cover
    """:func:`_table_serial` on numba's threads; group ``g`` takes rows ``g, g + n_groups, ...``
    (every thread gets rows of all of a triangle)."""
    n_groups = (rho.shape[0] + _ROW_GROUP - 1) // _ROW_GROUP
    for group in numba.prange(n_groups):
        _rows(group, n_groups, rho, ntk, x_a, x_b, v_a, v_b, norm, arch, bf, symmetric)


def _side(
    images: np.ndarray, var: ConvVariances, shape: tuple, name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(images as (n, C0, H W), maps as (n, f_depth, H W), sigma, theta)`` in float64.

    ``shape = (filter_size, f_depth, bias_variance)``. Variances of another
    precision than float64 are computed again in float64: a pair's covariance
    and its images' variances must be rounded alike, or an image with itself
    gets a correlation of ``1 - ulp``, which ``kappa0`` (its slope infinite at
    1) turns into ``sqrt(ulp)`` (3e-4 in float32).
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"{name} must have shape (n, H, W, C); got shape {images.shape}.")
    n, h, w, c0 = images.shape
    f_depth = shape[1]
    maps = np.asarray(var.maps)
    if maps.shape != (n, f_depth, h, w):
        raise ValueError(
            f"var_{name[-1]}.maps must have shape {(n, f_depth, h, w)} (conv_variances of "
            f"{name} with this f_depth); got {maps.shape}."
        )
    if maps.dtype != np.float64 or images.dtype != np.float64:
        var = conv_variances(images.astype(np.float64), *shape)
        maps = var.maps
    flat = np.ascontiguousarray(images.reshape(n, h * w, c0).transpose(0, 2, 1), dtype=np.float64)
    sigma = np.asarray(var.sigma, dtype=np.float64)
    theta = np.asarray(var.theta, dtype=np.float64)
    return flat, np.ascontiguousarray(maps.reshape(n, f_depth, h * w)), sigma, theta


def conv_table(
    images_a: np.ndarray,
    images_b: np.ndarray,
    var_a: ConvVariances,
    var_b: ConvVariances,
    filter_size: int,
    f_depth: int,
    negative_slope: float,
    *,
    need_ntk: bool,
    bias_variance: float,
    same_pairs: np.ndarray | None = None,
    symmetric: bool = False,
    n_threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The conv f's output correlation and normalised NTK of every pair of images, compiled.

    The values of :func:`.conv_recursion.conv_correlations` (conv-f.md's
    recursion on the spatial diagonal; see there), without tangents.

    Parameters
    ----------
    images_a : ndarray of shape (n_a, H, W, C0), float64 or float32
    images_b : ndarray of shape (n_b, H, W, C0)
        Ignored (taken as ``images_a``) when ``symmetric``.
    var_a, var_b : ConvVariances
        :func:`.conv_recursion.conv_variances` of the two sets of images with
        the same ``filter_size``, ``f_depth`` and ``bias_variance`` (computed
        again in float64 where they, or the images, are not float64).
    filter_size : int
        Positive and odd.
    f_depth : int
        f's weight layers (``f_depth - 1`` conv layers and the readout).
    negative_slope : float
        Leaky ReLU slope (0: ReLU).
    need_ntk : bool
        Whether to compute the NTK.
    bias_variance : float
        ``bf`` >= 0.
    same_pairs : boolean ndarray of shape (n_a, n_b), default=None
        Pairs of equal images: ``rho`` exactly 1 and ``ntk`` exactly
        ``theta / sigma`` there (both 0 where ``sigma`` is 0).
    symmetric : bool, default=False
        ``images_b`` is ``images_a``: the pairs ``j >= i`` are computed and
        mirrored, and the diagonal's are equal pairs.
    n_threads : int, default=None
        None: numba's threads; 1: the calling thread only (see the module
        docstring for where it is one thread anyway).

    Returns
    -------
    rho : ndarray of shape (n_a, n_b)
        ``S_f(x, x') / sqrt(sigma sigma')``, in [-1, 1] (0 where ``sigma`` or
        ``sigma'`` is 0), of ``images_a``'s dtype.
    ntk : ndarray of shape (n_a, n_b) or None
        ``Theta^f(x, x') / sqrt(sigma sigma')``; None unless ``need_ntk``.

    Raises
    ------
    ImportError
        Without numba (see :func:`available`).
    ValueError
        If an argument has a wrong shape or value (named in the message).
    """
    if numba is None:
        raise ImportError("conv_table needs numba (pip install numba).")
    check_conv_arguments(filter_size, f_depth, bias_variance)
    if not np.isfinite(negative_slope):
        raise ValueError(f"negative_slope must be finite; got {negative_slope!r}.")
    if symmetric:
        images_b, var_b = images_a, var_a
    shape = (filter_size, f_depth, bias_variance)
    x_a, v_a, sigma_a, theta_a = _side(images_a, var_a, shape, "images_a")
    x_b, v_b, sigma_b, _ = _side(images_b, var_b, shape, "images_b")
    if np.shape(images_a)[1:] != np.shape(images_b)[1:]:
        raise ValueError(
            "images_a and images_b must have the same (H, W, C0); got "
            f"{np.shape(images_a)[1:]} and {np.shape(images_b)[1:]}."
        )
    n_a, n_b = x_a.shape[0], x_b.shape[0]
    if same_pairs is not None:
        same_pairs = np.asarray(same_pairs, dtype=bool)
        if same_pairs.shape != (n_a, n_b):
            raise ValueError(f"same_pairs must have shape ({n_a}, {n_b}); got {same_pairs.shape}.")
    dtype = np.float32 if np.asarray(images_a).dtype == np.float32 else np.float64
    rho = np.empty((n_a, n_b))
    ntk = np.empty((n_a, n_b))
    if n_a and n_b:
        h, w = np.shape(images_a)[1:3]
        slope = _compiled.relu_slope(float(negative_slope))
        arch = (int(h), int(w), int(filter_size), int(f_depth), slope, bool(need_ntk))
        args = (rho, ntk, x_a, x_b, v_a, v_b, (sigma_a, sigma_b), arch, float(bias_variance))
        if n_threads == 1 or not _compiled.threads_are_safe():
            _table_serial(*args, bool(symmetric))
        else:
            previous = numba.get_num_threads()
            if n_threads is not None:
                numba.set_num_threads(max(1, min(int(n_threads), numba.config.NUMBA_NUM_THREADS)))
            try:
                _table_parallel(*args, bool(symmetric))
            finally:
                numba.set_num_threads(previous)
        if symmetric:
            lower = np.tril_indices(n_a, -1)
            rho[lower] = rho.T[lower]
            ntk[lower] = ntk.T[lower]
            same_pairs = np.eye(n_a, dtype=bool) if same_pairs is None else same_pairs
            same_pairs = same_pairs | np.eye(n_a, dtype=bool)
        if same_pairs is not None:
            positive = (sigma_a[:, None] > 0) & (sigma_b[None, :] > 0)
            ratio = np.divide(theta_a, sigma_a, out=np.zeros_like(sigma_a), where=sigma_a > 0)
            rho[same_pairs] = np.where(positive, 1.0, 0.0)[same_pairs]
            ntk[same_pairs] = np.broadcast_to(ratio[:, None], (n_a, n_b))[same_pairs]
    return rho.astype(dtype, copy=False), (ntk.astype(dtype, copy=False) if need_ntk else None)
