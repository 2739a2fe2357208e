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

Coincident rows: two rows with equal x (equal values, ``-0.0 == 0.0``) have
``rho_x = 1`` exactly, and two rows with equal z have ``rho_z = 1`` exactly,
whether they are one row or rows of two arrays; equal rows are found exactly
(:mod:`._rows`), and the blocked evaluation of
:class:`~sklearn_hyperkernel.HyperKernel` uses the same rule. On torch tensors
the functions are differentiable with ``torch.autograd``: while gradients are
recorded every operation is out of place, otherwise temporaries are
overwritten in place. The math page ("How the package evaluates them") gives
the reasons and the gradients at coincident and parallel rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from array_api_compat import array_namespace

from . import _arrays
from ._arrays import DIFFERENCE_COLUMNS, clip_correlations, squared_distances
from ._rows import FIND, Coincidence, find_coincidence, set_where

__all__ = [
    "relu_duals",
    "dual_correlations",
    "mlp_correlations",
    "hyper_correlations",
    "HyperCorrelations",
    "mlp_kernels",
    "z_correlations",
    "z_input_kernel",
    "hyper_kernels",
    "z_needs_coincidence",
    "length_scale_array",
]

Array = Any  # a numpy array or a torch tensor


def _relu_weight(negative_slope: float) -> float:
    """Weight ``c = (1 - a)^2 / (1 + a^2)`` of the ReLU part in the duals of the leaky ReLU.

    ``phi(s) = sqrt(2 / (1 + a^2)) * leaky_relu(s)`` and ``leaky_relu(s) = a s
    + (1 - a) relu(s)``, so every dual is ``(1 - c) * (linear dual) + c *
    (ReLU dual)``; :func:`dual_correlations` writes both duals with ``c`` alone.
    """
    return (1.0 - negative_slope) ** 2 / (1.0 + negative_slope * negative_slope)


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

    ``d kappa0 / d rho`` is infinite at ``rho = +-1``: an autograd gradient
    through an entry at exactly ``+-1`` is infinite or NaN unless ``where``
    set it there (as for coincident rows), which gives it a zero gradient.
    """
    xp = array_namespace(rho)
    in_place = _arrays.in_place_allowed(rho)
    rho = clip_correlations(rho, in_place)
    slope = _relu_weight(negative_slope) / math.pi
    # kappa0 = 1 - c t / pi
    kappa0 = xp.acos(rho)
    kappa0 = _arrays.scale(kappa0, -slope, in_place)
    kappa0 = _arrays.shift(kappa0, 1.0, in_place)
    # c sin(t) / pi = sqrt((1 - rho)(1 + rho) (c / pi)^2); 1 - rho is exact near 1
    kappa1 = 1.0 - rho
    kappa1 = _arrays.scale(kappa1, 1.0 + rho, in_place)
    kappa1 = _arrays.scale(kappa1, slope * slope, in_place)
    kappa1 = _arrays.sqrt(kappa1, xp, in_place)
    kappa1 = _arrays.shift(kappa1, kappa0 * rho, in_place)
    return kappa1, (kappa0 if need_kappa0 else None)


def _kappa0_slope(rho: Array, negative_slope: float) -> Array:
    """d kappa0 / d rho; zero where |rho| = 1, where every caller's tangent is 0."""
    xp = array_namespace(rho)
    sine = xp.sqrt((1.0 - rho) * (1.0 + rho))
    positive = sine > 0.0
    safe = xp.where(positive, sine, xp.ones_like(sine))
    return xp.where(positive, (_relu_weight(negative_slope) / math.pi) / safe, xp.zeros_like(sine))


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
    rho = cov * _arrays.safe_inverse(norm_a, xp)[:, None]
    rho = rho * _arrays.safe_inverse(norm_b, xp)[None, :]
    kappa1, kappa0 = dual_correlations(rho, negative_slope)
    return scale * kappa1, kappa0


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
    in_place = _arrays.in_place_allowed(rho)
    ntk = (xp.asarray(rho, copy=True) if in_place else rho) if need_ntk else None
    for _ in range(f_depth - 1):
        rho_next, kappa0 = dual_correlations(rho, negative_slope, need_kappa0=need_ntk)
        if need_ntk:
            ntk = _arrays.shift(_arrays.scale(ntk, kappa0, in_place), rho_next, in_place)
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
    in_place = _arrays.in_place_allowed(rho_f, rho_z)
    rho_sigma = rho_z  # correlation of Sigma^{l-1}
    ntk = (xp.asarray(rho_z, copy=True) if in_place else rho_z) if need_ntk else None
    d_sigma = xp.ones_like(rho_z) if need_tangent else None
    d_ntk = xp.ones_like(rho_z) if (need_tangent and need_ntk) else None
    for _ in range(g_depth - 1):
        rho_lambda = rho_f * rho_sigma
        need_kappa0 = need_ntk or need_tangent
        rho_sigma, kappa0 = dual_correlations(rho_lambda, negative_slope, need_kappa0=need_kappa0)
        if need_tangent:
            d_lambda = rho_f * d_sigma
            if need_ntk:
                # d(ntk * rho_f * kappa0 + rho_sigma): the product rule on the
                # backward factor; kappa0 is also d rho_sigma / d rho_lambda.
                d_ntk = _arrays.scale(d_ntk, kappa0, in_place)
                slope = _kappa0_slope(rho_lambda, negative_slope)
                d_ntk = _arrays.shift(d_ntk, ntk * slope * d_lambda, in_place)
                d_ntk = _arrays.scale(d_ntk, rho_f, in_place)
                d_ntk = _arrays.shift(d_ntk, kappa0 * d_lambda, in_place)
            d_sigma = kappa0 * d_lambda
        if need_ntk:
            ntk = _arrays.shift(_arrays.scale(ntk, rho_f * kappa0, in_place), rho_sigma, in_place)
    nngp = rho_f * rho_sigma if need_nngp else None
    d_nngp = rho_f * d_sigma if (need_nngp and need_tangent) else None
    return HyperCorrelations(nngp, ntk, d_nngp, d_ntk)


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
    x_b = x_a if x_b is None else x_b
    rho, norm_a, norm_b = _arrays.row_correlations(x_a, x_b)
    n0 = x_a.shape[1]
    scale = (norm_a[:, None] * norm_b[None, :]) / n0
    rho_f, ntk = mlp_correlations(rho, depth, negative_slope)
    return scale * rho_f, scale * ntk


def length_scale_array(length_scale: float | Sequence[float] | Array, z_dim: int) -> np.ndarray:
    """``length_scale`` (one, or one per z column) as a checked 1-D float array.

    Returns an ndarray of shape (1,) or (z_dim,); raises a ``ValueError``
    naming ``length_scale`` for a wrong number of entries or an entry that is
    not positive and finite.
    """
    scales = np.atleast_1d(np.asarray(length_scale, dtype=float))
    if scales.ndim != 1 or scales.shape[0] not in (1, z_dim):
        raise ValueError(
            f"length_scale must be a float or have one entry per z column ({z_dim}); "
            f"got shape {scales.shape}."
        )
    if not np.all(np.isfinite(scales)) or np.any(scales <= 0):
        raise ValueError(f"length_scale must be positive and finite; got {scales.tolist()}.")
    return scales


def z_correlations(
    z_a: Array, z_b: Array, encoding: str, length_scale: Any, coincident: Coincidence = FIND
) -> tuple[Array, Array, Array]:
    """Correlation of g's inputs and each row's variance ``e = Sigma^0(z, z)``.

    Parameters
    ----------
    z_a : array of shape (n, m0)
    z_b : array of shape (m, m0)
    encoding : {"linear", "fourier"}
        As in :func:`z_input_kernel`.
    length_scale : float or array of shape (1,) or (m0,)
        Used by the Fourier encoding only.
    coincident : optional
        Where rows are equal (:func:`._rows.coincident_pairs`; None: nowhere,
        allowed where :func:`z_needs_coincidence` is False); found by default.

    Returns
    -------
    rho_z : array of shape (n, m)
        ``Sigma^0(z, z') / sqrt(e e')``, exactly 1 for equal rows.
    e_a, e_b : arrays of shape (n,) and (m,)
        ``Sigma^0(z, z)`` per row: ``|z|^2 / m0``, or 1 (Fourier).
    """
    xp = array_namespace(z_a, z_b)
    if encoding not in ("linear", "fourier"):
        raise ValueError(f"z_encoding must be 'linear' or 'fourier'; got {encoding!r}.")
    if coincident is FIND:
        # always: the where that sets equal rows' correlation also stops the
        # infinite derivative of kappa0 there from reaching z (autograd)
        coincident = find_coincidence(z_a, z_b)
    if encoding == "linear":
        rho, norm_a, norm_b = _arrays.row_correlations(z_a, z_b, coincident)
        m0 = z_a.shape[1]
        return rho, norm_a * norm_a / m0, norm_b * norm_b / m0
    in_place = _arrays.in_place_allowed(z_a, z_b)
    scales = _arrays.like(length_scale_array(length_scale, z_a.shape[1]), z_a)
    rho = squared_distances(z_a / scales, z_b / scales, coincident)
    rho = _arrays.scale(rho, -0.5, in_place)
    rho = np.exp(rho, out=rho) if in_place and isinstance(rho, np.ndarray) else xp.exp(rho)
    rho = set_where(rho, coincident, 1.0, in_place)  # None: nothing to set
    ones_a = xp.ones_like(z_a[:, 0])
    return rho, ones_a, xp.ones_like(z_b[:, 0])


def z_needs_coincidence(encoding: str, z_dim: int) -> bool:
    """Whether equal z rows need the coincidence mask to get correlation exactly 1.

    Not for the Fourier encoding with few z columns, whose squared distances
    are exactly 0 for equal rows (:func:`squared_distances`), unless
    gradients flow through them (see :func:`z_correlations`).
    """
    return encoding != "fourier" or z_dim > DIFFERENCE_COLUMNS


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
    rho, e_a, e_b = z_correlations(z_a, z_b, encoding, length_scale)
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
    rho_x, norm_xa, norm_xb = _arrays.row_correlations(x_a, x_b)
    rho_z, e_a, e_b = z_correlations(z_a, z_b, z_encoding, length_scale)
    n0 = x_a.shape[1]
    s_a, s_b = norm_xa * norm_xa / n0, norm_xb * norm_xb / n0
    rho_f, ntk_f = mlp_correlations(rho_x, f_depth, negative_slope)
    g = hyper_correlations(rho_f, rho_z, g_depth, negative_slope)
    scale_a = s_a ** (g_depth / 2) * xp.sqrt(e_a)
    scale_b = s_b ** (g_depth / 2) * xp.sqrt(e_b)
    scale = scale_a[:, None] * scale_b[None, :]
    return scale * g.nngp, scale * ntk_f * g.ntk_g
