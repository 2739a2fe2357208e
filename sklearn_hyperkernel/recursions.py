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
"""

from __future__ import annotations

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
    ``linear * (linear-part dual) + relu * (ReLU dual)``.
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
        Input correlations; clipped to [-1, 1] in place (they may leave it by
        rounding).
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
    With ``t = arccos(rho)``, the ReLU duals are
    ``(sqrt(1 - rho^2) + (pi - t) rho) / pi`` and ``(pi - t) / pi``. The sine is
    taken as ``sqrt((1 - rho)(1 + rho))``, never as ``sin(arccos(rho))``: it is
    one pass cheaper and exact at ``rho = +-1``. No correlation is shrunk, so
    there is no bias at ``rho = +-1``.
    """
    xp = array_namespace(rho)
    rho = _clip_inplace(rho, xp) if _is_writeable(rho) else xp.clip(rho, -1.0, 1.0)
    linear, relu = _slope_coefficients(negative_slope)
    # the ReLU's kappa0, (pi - t) / pi
    kappa0 = xp.acos(rho)
    kappa0 *= -1.0 / math.pi
    kappa0 += 1.0
    # sin(t) / pi = sqrt((1 - rho)(1 + rho) / pi^2); 1 - rho is exact near 1
    kappa1 = 1.0 - rho
    kappa1 *= 1.0 + rho
    kappa1 *= 1.0 / math.pi**2
    kappa1 = _sqrt_inplace(kappa1, xp)
    kappa1 += kappa0 * rho
    if negative_slope != 0.0:
        kappa1 *= relu
        kappa1 += linear * rho
        if need_kappa0:
            kappa0 *= relu
            kappa0 += linear
    return kappa1, (kappa0 if need_kappa0 else None)


def _kappa0_slope(rho: Array, negative_slope: float) -> Array:
    """d kappa0 / d rho; zero where |rho| = 1, where every caller's tangent is 0."""
    xp = array_namespace(rho)
    _, relu = _slope_coefficients(negative_slope)
    sine = xp.sqrt((1.0 - rho) * (1.0 + rho))
    positive = sine > 0.0
    safe = xp.where(positive, sine, xp.ones_like(sine))
    return xp.where(positive, (relu / math.pi) / safe, xp.zeros_like(sine))


def _sqrt_inplace(array: Array, xp: Any) -> Array:
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
    ntk = xp.asarray(rho, copy=True) if need_ntk else None
    for _ in range(f_depth - 1):
        rho_next, kappa0 = dual_correlations(rho, negative_slope, need_kappa0=need_ntk)
        if need_ntk:
            ntk *= kappa0
            ntk += rho_next
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
    rho_sigma = rho_z  # correlation of Sigma^{l-1}
    ntk = xp.asarray(rho_z, copy=True) if need_ntk else None
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
                d_ntk *= kappa0
                d_ntk += ntk * _kappa0_slope(rho_lambda, negative_slope) * d_lambda
                d_ntk *= rho_f
                d_ntk += kappa0 * d_lambda
            d_sigma = kappa0 * d_lambda
        if need_ntk:
            ntk *= rho_f * kappa0
            ntk += rho_sigma
    nngp = rho_f * rho_sigma if need_nngp else None
    d_nngp = rho_f * d_sigma if (need_nngp and need_tangent) else None
    return HyperCorrelations(nngp, ntk, d_nngp, d_ntk)


def _row_correlations(a: Array, b: Array, xp: Any) -> tuple[Array, Array, Array]:
    """Cosine similarities of rows and the row norms."""
    norm_a = xp.sqrt(xp.sum(a * a, axis=1))
    norm_b = xp.sqrt(xp.sum(b * b, axis=1))
    rho = a @ xp.matrix_transpose(b) if hasattr(xp, "matrix_transpose") else a @ b.T
    rho *= _safe_inverse(norm_a, xp)[:, None]
    rho *= _safe_inverse(norm_b, xp)[None, :]
    return rho, norm_a, norm_b


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
    z_a: Array, z_b: Array, encoding: str, length_scale: Any, xp: Any
) -> tuple[Array, Array, Array]:
    """Correlation of g's inputs and each row's variance ``e = Sigma^0(z, z)``."""
    if encoding == "linear":
        rho, norm_a, norm_b = _row_correlations(z_a, z_b, xp)
        m0 = z_a.shape[1]
        return rho, norm_a * norm_a / m0, norm_b * norm_b / m0
    if encoding == "fourier":
        scales = xp.asarray(_length_scales(length_scale, z_a.shape[1]), dtype=z_a.dtype)
        if hasattr(z_a, "device"):
            scales = xp.asarray(scales, device=z_a.device)
        a = z_a / scales
        b = z_b / scales
        sq_a = xp.sum(a * a, axis=1)
        sq_b = xp.sum(b * b, axis=1)
        rho = a @ (b.T if not hasattr(xp, "matrix_transpose") else xp.matrix_transpose(b))
        rho *= -2.0
        rho += sq_a[:, None]
        rho += sq_b[None, :]
        # rounding can make a squared distance slightly negative
        rho = xp.clip(rho, 0.0, None) if not isinstance(rho, np.ndarray) else np.maximum(rho, 0.0, out=rho)
        rho *= -0.5
        rho = xp.exp(rho)
        ones_a = xp.ones_like(sq_a)
        return rho, ones_a, xp.ones_like(sq_b)
    raise ValueError(f"z_encoding must be 'linear' or 'fourier'; got {encoding!r}.")


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
    >>> ntk.tolist()  # (x.x'/n0) (z.z'/m0)
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
