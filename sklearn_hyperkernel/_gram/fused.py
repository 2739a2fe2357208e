"""A block of the hyperkernel or hyper-NNGP Gram in one compiled pass (numba).

:mod:`~sklearn_hyperkernel.recursions` evaluates the recursions with numpy, an
array operation at a time: about ten passes over a tile per dual activation.
:func:`hyper_block` evaluates all layers of f and g, the z correlation and the
row scales of an entry together, in loops compiled by numba (parallel over
rows, ``fastmath`` off, cached on disk): each entry is read and written once.

Scope: numpy arrays on the CPU, float64 (float32 inputs are computed in
float64, stored in float32); the value of ``kind="ntk"`` (HyperKernel) and
``"nngp"`` (HyperNNGP), every depth, both activations (``negative_slope``),
both z encodings, any number of z columns and length scales, and the bias
variances of f and of g (``f_bias_variance``, ``g_bias_variance``). Left to
the numpy path: torch tensors (GPU) and the gradients.

Without biases the formulas are those of :func:`~.recursions.dual_correlations`,
:func:`~.recursions.mlp_correlations` and :func:`~.recursions.hyper_correlations`
(docs/math.md, "correlation space") for one entry, the operations in the same
order, scaled by the rows' ``s^(H/2) sqrt(e)`` at the end; tests/test_fused.py
checks the two paths to 1e-12. With biases the rows no longer factor out:
each layer carries its covariance, and its dual sees the correlation, the
covariance over ``sqrt`` of the product of the two rows' variances at that
layer (docs/math.md, "Biases"; the variances ``v_l`` of f and ``w_l`` of g are
computed once per row), a ``sqrt`` and a division more per entry and layer;
tests/test_fused.py checks them against tests/reference.py's covariance-space
recursions to 1e-12.

The scalar ``acos``, ``exp`` and duals are :mod:`._utils.compiled`'s (fdlibm's,
vectorised by LLVM, within 1 ulp of numpy's), exact where the kernel needs
it: ``acos(1) = 0``, ``exp(0) = 1``, so coincident
rows (x correlation set to exactly 1 by the caller, z correlation exactly 1
here) give the closed form; with biases too, since ``sqrt(v v) == v`` in
binary floating point and each row's variances are rounded as an equal pair's
covariances are. Each row of a block is cut into tiles of ``_TILE`` columns,
every layer one vectorised loop over a tile whose buffers stay in the L1
cache. With few distinct x, f runs once per distinct pair, into a table of
f's output correlation and NTK (with biases: its output covariance ``S_f``,
which is what g needs, and NTK).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .._utils import compiled as _compiled
from .._utils.compiled import numba
from ..config import get_config

__all__ = ["available", "hyper_block"]

# the package's shared numba options, scalar math and thread rule (_utils.compiled)
_jit, _acos, _exp, _dual = _compiled.jit, _compiled.acos, _compiled.exp, _compiled.dual
_relu_slope, _threads_are_safe = _compiled.relu_slope, _compiled.threads_are_safe


def available() -> bool:
    """Whether :func:`hyper_block` can run compiled (numba installed, its JIT not disabled)."""
    return numba is not None and _compiled.available()


#: Columns of one tile: 5 buffers of 2 KiB, in the L1 cache.
_TILE = 256
#: Rows a thread takes at a time (its buffers are allocated once per group).
_ROW_GROUP = 8

# ---------------------------------------------------------------- one tile


@_jit()
def _f_tile(rho, ntk, width, f_depth, slope):  # pragma: no cover - compiled
    """:func:`~.recursions.mlp_correlations` on ``rho[:width]`` in place, ``ntk`` out."""
    for t in range(width):
        ntk[t] = rho[t]
    for _ in range(f_depth - 1):
        for t in range(width):
            kappa1, kappa0 = _dual(rho[t], slope)
            ntk[t] = ntk[t] * kappa0 + kappa1
            rho[t] = kappa1


@_jit()
def _g_tile(rho_f, sigma, ntk, width, g_depth, slope):  # pragma: no cover - compiled
    """:func:`~.recursions.hyper_correlations`: ``sigma`` (rho_z in place) and ``ntk`` out."""
    for t in range(width):
        ntk[t] = sigma[t]
    for _ in range(g_depth - 1):
        for t in range(width):
            kappa1, kappa0 = _dual(rho_f[t] * sigma[t], slope)
            ntk[t] = ntk[t] * (rho_f[t] * kappa0) + kappa1
            sigma[t] = kappa1


@_jit()
def _f_tile_biased(
    rho, ntk, scratch, width, f_depth, slope, bf, v_a, i, v_b, j0
):  # pragma: no cover - compiled
    """f with bias variance ``bf``: ``rho[:width]`` (x correlation in, ``S_f`` out), ``ntk`` out.

    ``v_a[l, i]`` and ``v_b[l, j0 + t]`` are the variances ``v_l = s + l bf``
    (``v_0 = s``) of layer ``l``'s pre-activation, so that layer ``l``'s
    covariance ``S^{l-1}`` has correlation ``cov / sqrt(v_l v_l')`` (0 where a
    variance is 0); ``Theta^{l+1} = Theta^l kappa0 + S^l`` from ``Theta^1 = S^0``
    (docs/math.md, "Biases"). ``scratch``: two rows of ``width`` or more.
    Equal rows (correlation exactly 1, equal variances) keep correlation
    exactly 1: ``sqrt(v v) == v`` and ``v_{l+1} = v_l + bf`` as rounded.
    """
    cov, root = scratch[0], scratch[1]
    for t in range(width):
        covariance = math.sqrt(v_a[0, i] * v_b[0, j0 + t]) * rho[t] + bf  # S^0
        scale = math.sqrt(v_a[1, i] * v_b[1, j0 + t])
        ntk[t] = covariance
        cov[t] = covariance
        root[t] = scale
        rho[t] = covariance / scale if scale > 0.0 else 0.0
    for layer in range(2, f_depth + 1):
        for t in range(width):
            kappa1, kappa0 = _dual(rho[t], slope)
            covariance = root[t] * kappa1 + bf  # S^{layer - 1}
            scale = math.sqrt(v_a[layer, i] * v_b[layer, j0 + t])
            ntk[t] = ntk[t] * kappa0 + covariance
            cov[t] = covariance
            root[t] = scale
            rho[t] = covariance / scale if scale > 0.0 else 0.0
    for t in range(width):
        rho[t] = cov[t]


@_jit()
def _g_tile_biased(
    cov_f, sigma, ntk, width, g_depth, slope, bg, w_a, i, w_b, j0
):  # pragma: no cover - compiled
    """g with bias variance ``bg``: ``sigma`` (rho_z in, ``Lambda^H`` out), ``ntk`` (``K^H``) out.

    ``cov_f`` is f's output covariance ``S_f``; ``w_a[l, i]``, ``w_b[l, j0 + t]``
    the variances ``w_l = sigma (w_{l-1} + bg)``, ``w_0 = e``, of
    ``Lambda^l`` and ``Sigma^l``. ``Lambda^l = S_f (Sigma^{l-1} + bg)``,
    ``Sigma^l = kappa1``, and ``K^{l+1} = K^l S_f kappa0 + Sigma^l + bg`` from
    ``K^1 = Sigma^0 + bg`` (docs/math.md, "Biases"), each dual on the
    correlation ``Lambda^l / sqrt(w_l w_l')`` (0 where a variance is 0).
    """
    for t in range(width):
        covariance = math.sqrt(w_a[0, i] * w_b[0, j0 + t]) * sigma[t]  # Sigma^0
        ntk[t] = covariance + bg
        sigma[t] = covariance
    for layer in range(1, g_depth):
        for t in range(width):
            lam = cov_f[t] * (sigma[t] + bg)
            scale = math.sqrt(w_a[layer, i] * w_b[layer, j0 + t])
            kappa1, kappa0 = _dual(lam / scale if scale > 0.0 else 0.0, slope)
            covariance = scale * kappa1  # Sigma^layer
            ntk[t] = ntk[t] * (cov_f[t] * kappa0) + (covariance + bg)
            sigma[t] = covariance
    for t in range(width):
        sigma[t] = cov_f[t] * (sigma[t] + bg)  # Lambda^H


@_jit()
def _z_tile(i, j0, width, rows, cols, fourier, rho_z, same):  # pragma: no cover - compiled
    """Correlation of g's inputs between row ``i`` and columns ``j0:j0 + width``.

    Fourier: ``exp(-sum_d (a_d - b_d)^2 / 2)`` of z over the length scales
    (exactly 1 for equal rows); linear: ``(a . b) / |a| / |b|``, exactly 1 where
    all values are equal (``-0.0 == 0.0``), the rule of :mod:`~.recursions`.
    """
    z_a, inverse_a, z_b, inverse_b = rows[1], rows[2], cols[1], cols[2]
    if fourier:
        for t in range(width):
            difference = z_a[i, 0] - z_b[0, j0 + t]
            rho_z[t] = difference * difference
        for d in range(1, z_a.shape[1]):
            for t in range(width):
                difference = z_a[i, d] - z_b[d, j0 + t]
                rho_z[t] += difference * difference
        for t in range(width):
            rho_z[t] = _exp(rho_z[t] * -0.5)
        return
    for t in range(width):
        rho_z[t] = z_a[i, 0] * z_b[0, j0 + t]
        same[t] = z_a[i, 0] == z_b[0, j0 + t]
    for d in range(1, z_a.shape[1]):
        for t in range(width):
            rho_z[t] += z_a[i, d] * z_b[d, j0 + t]
            same[t] &= z_a[i, d] == z_b[d, j0 + t]
    for t in range(width):
        value = (rho_z[t] * inverse_a[i]) * inverse_b[j0 + t]
        rho_z[t] = 1.0 if same[t] else value


@_jit()
def _biased_tile(
    i, j0, width, out, rows, cols, arch, bias, buffers, same
):  # pragma: no cover - compiled
    """Entries ``(i, j0:j0 + width)`` with biases, from the x correlations (f per entry) or,
    from f's table, its output covariances in ``buffers[0]`` (and NTK in ``buffers[1]``)."""
    f_depth, g_depth, fourier, ntk_kind, slope, symmetric, tabled = arch
    bf, bg, v_a, v_b, w_a, w_b = bias
    rho_f, ntk_f, sigma, ntk_g = buffers[0], buffers[1], buffers[2], buffers[3]
    if not tabled:  # rho_f becomes f's output covariance S_f
        _f_tile_biased(rho_f, ntk_f, buffers[4:], width, f_depth, slope, bf, v_a, i, v_b, j0)
    _z_tile(i, j0, width, rows, cols, fourier, sigma, same)
    _g_tile_biased(rho_f, sigma, ntk_g, width, g_depth, slope, bg, w_a, i, w_b, j0)
    for t in range(width):  # covariances: no row scales
        out[i, j0 + t] = ntk_g[t] * ntk_f[t] if ntk_kind else sigma[t]


@_jit()
def _block_rows(first, step, out, x, rows, cols, arch, bias):  # pragma: no cover - compiled
    """Rows ``first, first + step, ...`` of a block (the arguments of :func:`_block_serial`)."""
    rho_x, ntk_x = x
    index_a, scale_a, index_b, scale_b = rows[0], rows[3], cols[0], cols[3]
    f_depth, g_depth, fourier, ntk_kind, slope, symmetric, tabled = arch
    m = out.shape[1]
    buffers = np.empty((6, _TILE))
    rho_f, ntk_f, sigma, ntk_g = buffers[0], buffers[1], buffers[2], buffers[3]
    same = np.empty(_TILE, dtype=np.bool_)
    for i in range(first, out.shape[0], step):
        row = index_a[i] if index_a.shape[0] else i
        for j0 in range(i if symmetric else 0, m, _TILE):
            width = min(_TILE, m - j0)
            if index_b.shape[0]:
                for t in range(width):
                    rho_f[t] = rho_x[row, index_b[j0 + t]]
                if tabled and ntk_kind:
                    for t in range(width):
                        ntk_f[t] = ntk_x[row, index_b[j0 + t]]
            else:
                for t in range(width):
                    rho_f[t] = rho_x[row, j0 + t]
                if tabled and ntk_kind:
                    for t in range(width):
                        ntk_f[t] = ntk_x[row, j0 + t]
            # numba prunes this branch when compiling for bias=None: the bias-free
            # pass does not compile the biased loops (a quarter more compile time)
            if bias is not None:
                _biased_tile(i, j0, width, out, rows, cols, arch, bias, buffers, same)
                continue
            if not tabled:
                _f_tile(rho_f, ntk_f, width, f_depth, slope)
            _z_tile(i, j0, width, rows, cols, fourier, sigma, same)
            _g_tile(rho_f, sigma, ntk_g, width, g_depth, slope)
            for t in range(width):  # the numpy path's order: ((g * f) * s_a) * s_b
                value = ntk_g[t] * ntk_f[t] if ntk_kind else rho_f[t] * sigma[t]
                out[i, j0 + t] = (value * scale_a[i]) * scale_b[j0 + t]


@_jit()
def _mirror_row(out, i):  # pragma: no cover - compiled
    """Row ``i`` below the diagonal from the column above it."""
    for j in range(i):
        out[i, j] = out[j, i]


@_jit()
def _block_serial(out, x, rows, cols, arch, bias):  # pragma: no cover - compiled
    """The block on the calling thread. ``x = (rho_x, ntk_x)``; ``rows = (x index,
    z, 1/|z|, scale)``, ``cols`` alike with z transposed (an empty index: the
    identity); ``arch = (f_depth, g_depth, fourier, ntk_kind, slope, symmetric,
    tabled)``; ``bias``: None (the bias-free pass, with its row scales) or
    ``(bf, bg, v_a, v_b, w_a, w_b)``, the variances of :func:`_f_tile_biased` and
    :func:`_g_tile_biased` per row and column."""
    _block_rows(0, 1, out, x, rows, cols, arch, bias)
    if arch[5]:
        for i in range(out.shape[0]):
            _mirror_row(out, i)


@_jit(parallel=True)
def _block_parallel(out, x, rows, cols, arch, bias):  # pragma: no cover - compiled
    """:func:`_block_serial` on numba's threads; group ``g`` takes rows ``g, g +
    n_groups, ...``, so that every thread gets rows of all of a triangle."""
    n_groups = (out.shape[0] + _ROW_GROUP - 1) // _ROW_GROUP
    for group in numba.prange(n_groups):
        _block_rows(group, n_groups, out, x, rows, cols, arch, bias)
    if arch[5]:
        for i in numba.prange(out.shape[0]):
            _mirror_row(out, i)


@_jit()
def _f_table(rho_x, ntk_x, f_depth, slope, bias):  # pragma: no cover - compiled
    """f's layers on every entry of ``rho_x``, in place, and ``ntk_x`` out.

    ``bias`` None: :func:`_f_tile` (``rho_x`` becomes f's output correlation);
    else ``(bf, v_a, v_b)``: :func:`_f_tile_biased` with the variances
    ``v_a[:, i]`` and ``v_b[:, j]`` of the distinct x (``rho_x`` becomes the
    covariance ``S_f``, what g needs with biases).
    """
    buffers = np.empty((4, _TILE))
    rho, ntk = buffers[0], buffers[1]
    for i in range(rho_x.shape[0]):
        for j0 in range(0, rho_x.shape[1], _TILE):
            width = min(_TILE, rho_x.shape[1] - j0)
            for t in range(width):
                rho[t] = rho_x[i, j0 + t]
            if bias is not None:  # pruned when compiling for bias=None
                bf, v_a, v_b = bias
                _f_tile_biased(rho, ntk, buffers[2:], width, f_depth, slope, bf, v_a, i, v_b, j0)
            else:
                _f_tile(rho, ntk, width, f_depth, slope)
            for t in range(width):
                rho_x[i, j0 + t] = rho[t]
                ntk_x[i, j0 + t] = ntk[t]


# ---------------------------------------------------------------- the block


def _side(
    index: np.ndarray | None,
    z: np.ndarray,
    s: np.ndarray,
    size: int,
    z_encoding: str,
    scales: np.ndarray,
    g_depth: int,
    name: str,
) -> tuple[np.ndarray, ...]:
    """``(x index, z, 1/|z|, scale, e, s)`` of the rows or the columns, as the loops read them.

    Fourier z are divided by the length scales (``e = 1``); linear z come with
    their inverse norms (0 for a zero row) and ``e = |z|^2 / m0``; the scale
    is ``s^(H/2) sqrt(e)`` (:func:`~.recursions.hyper_kernels`). An index of
    None becomes an empty array (the identity, checked against ``size``).
    """
    if index is None:
        if size != z.shape[0]:
            raise ValueError(f"{name} is None: rho_x needs {z.shape[0]} entries there, not {size}.")
        index = np.zeros(0, dtype=np.int64)
    else:
        index = np.asarray(index)
        inside = index.size == 0 or 0 <= index.min() <= index.max() < size
        if index.shape != (z.shape[0],) or not inside:
            raise ValueError(f"{name} must have shape ({z.shape[0]},) with values in [0, {size}).")
        index = index.astype(np.int64, copy=False)
    z = np.asarray(z, dtype=np.float64)
    if z_encoding == "fourier":
        z, inverse = z / scales, np.ones(z.shape[0])
        e = inverse
    else:
        norm = np.sqrt(np.sum(z * z, axis=1))
        inverse = np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)
        z, e = np.ascontiguousarray(z), norm * norm / z.shape[1]
    scale = s ** (g_depth / 2.0) * np.sqrt(e)
    return index, z, inverse, scale, e, s


def _f_variances(s: np.ndarray, f_depth: int, bf: float) -> np.ndarray:
    """f's pre-activation variances ``v_l = s + l bf``, shape ``(f_depth + 1, len(s))``.

    Row ``l`` is layer ``l``'s (``v_0 = s``, ``v_L`` f's output variance
    ``sigma``; docs/math.md, "Biases"), summed one ``bf`` at a time as the
    loops' covariances of equal rows are, so that their correlation is exactly 1.
    """
    v = np.empty((f_depth + 1, s.shape[0]))
    v[0] = s
    for layer in range(1, f_depth + 1):
        v[layer] = v[layer - 1] + bf
    return v


def _g_variances(sigma: np.ndarray, e: np.ndarray, g_depth: int, bg: float) -> np.ndarray:
    """g's variances ``w_l = sigma (w_{l-1} + bg)``, ``w_0 = e``, shape ``(g_depth, len(e))``.

    Those of ``Lambda^l`` and ``Sigma^l`` (``l >= 1``) and of ``Sigma^0``
    (``l = 0``), from f's output variance ``sigma`` (docs/math.md, "Biases"),
    rounded as the loops' covariances of equal rows are.
    """
    w = np.empty((g_depth, e.shape[0]))
    w[0] = e
    for layer in range(1, g_depth):
        w[layer] = sigma * (w[layer - 1] + bg)
    return w


def _distinct_variances(s: np.ndarray, index: np.ndarray, size: int) -> np.ndarray:
    """``s`` of the distinct x (``size`` of them) from every row's (an empty index: identity)."""
    if index.size == 0:
        return s
    distinct = np.zeros(size)
    distinct[index] = s
    return distinct


def _same_view(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two arrays are the same memory with the same layout."""
    same = a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
    return same and a.shape == b.shape and a.strides == b.strides and a.dtype == b.dtype


def hyper_block(
    rho_x: np.ndarray,
    z_a: np.ndarray,
    z_b: np.ndarray,
    s_a: np.ndarray,
    s_b: np.ndarray,
    *,
    f_depth: int,
    g_depth: int,
    z_encoding: str,
    length_scale: float | Sequence[float] | np.ndarray,
    negative_slope: float,
    kind: str,
    x_index_a: np.ndarray | None = None,
    x_index_b: np.ndarray | None = None,
    symmetric: bool = False,
    out: np.ndarray | None = None,
    n_threads: int | None = None,
    f_bias_variance: float = 0.0,
    g_bias_variance: float = 0.0,
    f_tabled: bool = False,
    f_ntk: np.ndarray | None = None,
) -> np.ndarray:
    """A block of the hyperkernel (``kind="ntk"``) or hyper-NNGP (``"nngp"``) Gram.

    Entry ``(i, j)`` is the kernel between row ``i`` (x correlations
    ``rho_x[x_index_a[i]]``, z ``z_a[i]``, x variance ``s_a[i]``) and column
    ``j`` (``rho_x[:, x_index_b[j]]``, ``z_b[j]``, ``s_b[j]``): the value of a
    tile of the Gram engine's numpy path, in one compiled pass.

    Parameters
    ----------
    rho_x : ndarray of shape (p, q), float64 or float32
        Correlations ``x.x' / (|x| |x'|)`` between the distinct x of the rows
        and of the columns, exactly 1 where the two x are equal (the caller's
        rule: see :mod:`~sklearn_hyperkernel.recursions`). Not modified
        unless it is ``out``.
    z_a, z_b : ndarrays of shapes (n, m0) and (m, m0)
        g's input of every row and column.
    s_a, s_b : ndarrays of shapes (n,) and (m,)
        ``|x|^2 / n0`` of every row's and column's x.
    f_depth, g_depth : int
        Weight matrices of f and of g, at least 1.
    z_encoding : {"linear", "fourier"}
    length_scale : float or ndarray of shape (m0,)
        Of the Fourier encoding; ignored by the linear one.
    negative_slope : float
        Leaky ReLU slope (0 for the ReLU).
    kind : {"ntk", "nngp"}
    x_index_a, x_index_b : ndarrays of shapes (n,) and (m,), default=None
        Row of ``rho_x`` of each row, column of each column; None: the
        identity (``p == n``, ``q == m``).
    symmetric : bool, default=False
        The rows are the first ``n`` columns (a block of consecutive rows of
        a symmetric Gram, against the columns from its first row on): entries
        ``j >= i`` are computed, those below copied from them, so the leading
        square is exactly symmetric.
    out : ndarray of shape (n, m), default=None
        Where to write; its rows must have unit stride (a view such as
        ``K[rows, cols]`` of a larger Gram will do). May be ``rho_x`` itself
        when both indices are None (in place: a block's x product becomes the
        kernel where it lies). None allocates one of ``rho_x``'s dtype.
    n_threads : int, default=None
        None: numba's threads (``numba.get_num_threads()``, all cores unless
        ``NUMBA_NUM_THREADS`` says fewer); 1: the calling thread only, as a
        caller running blocks on threads of its own should ask. Called from
        a thread other than the main one, in a process forked after numba's
        OpenMP threads started (whoever started them), or where numba's
        configured threading layer cannot be loaded (:mod:`._utils.compiled`), the
        block is computed on the calling thread whatever ``n_threads`` says
        (the same values).
    f_bias_variance, g_bias_variance : float >= 0, default=0.0
        Variances ``bf`` of f's biases and ``bg`` of the biases f generates
        for g (docs/math.md, "Biases"). Both 0: the bias-free recursions in
        correlation space with the row scales ``s^(H/2) sqrt(e)``, bit for bit
        as before biases existed. Else each layer's correlation is formed
        from the covariance and the per-row variances ``v_l = s + l bf`` of f
        and ``w_l = sigma (w_{l-1} + bg)`` of g (``sigma = s + L bf``,
        ``w_0 = e``). A row whose variance is 0 (x = 0 with ``bf = 0``) stays
        exactly 0; x = 0 with ``bf > 0``, and linear z = 0 with ``bg > 0``,
        are ordinary rows; equal rows still give correlation exactly 1 at every
        layer.
    f_tabled : bool, default=False
        True: f was evaluated already (any f's kernel, :mod:`.._f`):
        ``rho_x`` is f's output correlation ``S_f / sqrt(sigma sigma')`` on
        the distinct pairs (exactly 1 at equal x), ``f_ntk`` f's NTK over
        ``sqrt(sigma sigma')`` there (needed for ``kind="ntk"``), and
        ``s_a``, ``s_b`` are f's output variances ``sigma = S_f(x, x)`` of
        every row and column; only g runs here (``f_depth`` is then unused).
    f_ntk : ndarray of the shape of ``rho_x``, default=None
        See ``f_tabled``.

    Returns
    -------
    out : ndarray of shape (n, m)

    Raises
    ------
    ImportError
        Without numba (see :func:`available`).
    ValueError
        If an argument has a wrong shape or value (named in the message), a
        bias variance included (negative or not finite).
    """
    if numba is None:
        raise ImportError("hyper_block needs numba (pip install numba).")
    rho_x, z_a, z_b = np.asarray(rho_x), np.asarray(z_a), np.asarray(z_b)
    if rho_x.ndim != 2 or rho_x.dtype not in (np.float64, np.float32):
        raise ValueError(f"rho_x must be a 2-D float64 or float32 array; got {rho_x.shape}.")
    if z_a.ndim != 2 or z_b.ndim != 2 or z_a.shape[1] != z_b.shape[1] or z_a.shape[1] < 1:
        raise ValueError(f"z_a and z_b must be 2-D, of equal widths; got {z_a.shape}, {z_b.shape}.")
    n, m = z_a.shape[0], z_b.shape[0]
    s_a, s_b = np.asarray(s_a, dtype=np.float64), np.asarray(s_b, dtype=np.float64)
    if s_a.shape != (n,) or s_b.shape != (m,):
        raise ValueError(f"s_a and s_b must have shapes ({n},), ({m},): {s_a.shape}, {s_b.shape}.")
    for name, depth in (("f_depth", f_depth), ("g_depth", g_depth)):
        if not isinstance(depth, (int, np.integer)) or isinstance(depth, bool) or depth < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {depth!r}.")
    if kind not in ("ntk", "nngp"):
        raise ValueError(f"kind must be 'ntk' or 'nngp'; got {kind!r}.")
    if z_encoding not in ("linear", "fourier"):
        raise ValueError(f"z_encoding must be 'linear' or 'fourier'; got {z_encoding!r}.")
    scales = np.atleast_1d(np.asarray(length_scale, dtype=np.float64))
    if scales.ndim != 1 or scales.shape[0] not in (1, z_a.shape[1]) or not np.all(scales > 0):
        raise ValueError(f"length_scale must be positive, one or one per z column; got {scales}.")
    if not np.isfinite(negative_slope):
        raise ValueError(f"negative_slope must be finite; got {negative_slope!r}.")
    if symmetric and n > m:
        raise ValueError(f"symmetric needs at least as many columns as rows; got {n} x {m}.")
    for name, variance in (
        ("f_bias_variance", f_bias_variance),
        ("g_bias_variance", g_bias_variance),
    ):
        if not np.isfinite(variance) or variance < 0:
            raise ValueError(f"{name} must be a finite number >= 0; got {variance!r}.")
    bf, bg = float(f_bias_variance), float(g_bias_variance)
    if f_tabled and kind == "ntk" and (f_ntk is None or np.shape(f_ntk) != rho_x.shape):
        raise ValueError(f"f_tabled with kind='ntk' needs f_ntk of shape {rho_x.shape}.")
    side_a = _side(x_index_a, z_a, s_a, rho_x.shape[0], z_encoding, scales, g_depth, "x_index_a")
    side_b = _side(x_index_b, z_b, s_b, rho_x.shape[1], z_encoding, scales, g_depth, "x_index_b")
    rows = side_a[:4]
    cols = (side_b[0], np.ascontiguousarray(side_b[1].T), side_b[2], side_b[3])
    indexed = rows[0].size > 0 or cols[0].size > 0
    if out is None:
        out = np.empty((n, m), dtype=rho_x.dtype)
    elif (
        out.shape != (n, m)
        or out.dtype not in (np.float64, np.float32)
        or (m > 1 and out.strides[1] != out.itemsize)
    ):
        raise ValueError(f"out must be a float array of shape ({n}, {m}) with rows of unit stride.")
    elif np.may_share_memory(out, rho_x) and (indexed or not _same_view(out, rho_x)):
        raise ValueError("out may overlap rho_x only as rho_x itself, without x indices.")
    if n == 0 or m == 0:
        return out
    slope = _relu_slope(float(negative_slope))
    entries = n * m / 2.0 if symmetric else float(n * m)
    if f_tabled:
        options = (z_encoding, slope, symmetric)
        args = (rows, cols, out, bg, g_depth, kind, n_threads, options)
        return _g_block(rho_x, f_ntk, side_a, side_b, *args)
    tabled = indexed and rho_x.size <= get_config()["fused_table_fraction"] * entries
    biased = bf != 0.0 or bg != 0.0
    bias = None
    if biased:
        v_a, v_b = _f_variances(s_a, f_depth, bf), _f_variances(s_b, f_depth, bf)
        w_a = _g_variances(v_a[f_depth], side_a[4], g_depth, bg)
        w_b = _g_variances(v_b[f_depth], side_b[4], g_depth, bg)
        bias = (bf, bg, v_a, v_b, w_a, w_b)
    x = (rho_x, np.empty((0, 0)))
    if tabled:
        x = (np.array(rho_x, dtype=np.float64, order="C"), np.empty(rho_x.shape))
        f_bias = None
        if biased:  # f's variances per distinct x (s is a function of x)
            s_table_a = _distinct_variances(s_a, rows[0], rho_x.shape[0])
            s_table_b = _distinct_variances(s_b, cols[0], rho_x.shape[1])
            v_table = (_f_variances(s_table_a, f_depth, bf), _f_variances(s_table_b, f_depth, bf))
            f_bias = (bf, *v_table)
        _f_table(x[0], x[1], int(f_depth), slope, f_bias)
    elif rho_x.shape[1] > 1 and rho_x.strides[1] != rho_x.itemsize:
        x = (np.ascontiguousarray(rho_x), x[1])
    arch = (int(f_depth), int(g_depth), z_encoding == "fourier", kind == "ntk", slope)
    arch += (bool(symmetric), bool(tabled))
    return _run_block(out, x, rows, cols, arch, bias, n_threads)


def _g_block(
    rho_f: np.ndarray,
    ntk_f: np.ndarray | None,
    side_a: tuple,
    side_b: tuple,
    rows: tuple,
    cols: tuple,
    out: np.ndarray,
    bg: float,
    g_depth: int,
    kind: str,
    n_threads: int | None,
    options: tuple,
) -> np.ndarray:
    """:func:`hyper_block` of a tabled f (``f_tabled``): g on f's correlation table.

    ``side_a[3]`` and ``side_b[3]`` are the scales ``sigma^(H/2) sqrt(e)`` of
    the bias-free g (``s`` was f's output variance ``sigma``); with g's biases
    the table becomes f's covariances ``rho sqrt(sigma sigma')`` (exactly
    ``sigma`` at equal x: ``sqrt(v v) == v``) and g's variances
    ``w_l = sigma (w_{l-1} + bg)`` come from ``sigma``.
    """
    z_encoding, slope, symmetric = options
    ntk_kind = kind == "ntk"
    rho = np.array(rho_f, dtype=np.float64, order="C")
    ntk = np.array(ntk_f, dtype=np.float64, order="C") if ntk_kind else np.empty(rho.shape)
    bias = None
    if bg != 0.0:
        sigma_a, sigma_b = side_a[5], side_b[5]  # s is sigma here
        table_a = _distinct_variances(sigma_a, rows[0], rho.shape[0])
        table_b = _distinct_variances(sigma_b, cols[0], rho.shape[1])
        root = np.sqrt(table_a[:, None] * table_b[None, :])
        rho *= root
        if ntk_kind:
            ntk *= root
        w_a = _g_variances(sigma_a, side_a[4], g_depth, bg)
        w_b = _g_variances(sigma_b, side_b[4], g_depth, bg)
        unused = np.zeros((1, 1))
        bias = (0.0, bg, unused, unused, w_a, w_b)
    arch = (1, int(g_depth), z_encoding == "fourier", ntk_kind, slope, bool(symmetric), True)
    return _run_block(out, (rho, ntk), rows, cols, arch, bias, n_threads)


def _run_block(out, x, rows, cols, arch, bias, n_threads) -> np.ndarray:
    """:func:`_block_serial` or :func:`_block_parallel`, as :func:`hyper_block` says."""
    if n_threads == 1 or not _threads_are_safe():
        _block_serial(out, x, rows, cols, arch, bias)
        return out
    previous = numba.get_num_threads()
    if n_threads is not None:
        numba.set_num_threads(max(1, min(int(n_threads), numba.config.NUMBA_NUM_THREADS)))
    try:
        _block_parallel(out, x, rows, cols, arch, bias)
    finally:
        numba.set_num_threads(previous)
    return out
