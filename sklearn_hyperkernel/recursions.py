"""Closed-form kernels of infinitely wide hypernetworks, as pure array functions.

This module knows nothing of scikit-learn. It implements the recursions of
``docs/math.md`` (the paper's Eqs. 8-15 with the layer indices resolved) for
numpy arrays and, through the array API, for torch tensors.

Everything is computed in *correlation space*. Because the dual of the
(normalised) ReLU keeps the variance of its input, the diagonal of every layer
is known in closed form: with ``s = |x|^2 / n0`` and ``e = Sigma^0(z, z)``,
without biases

* every NNGP layer of f has variance ``s``;
* layer ``l`` of the hyper-NNGP has variance ``s^l e``.

So each kernel is ``scale(u) * scale(u') * R(u, u')`` where ``R`` is a function
of the two input correlations ``rho_x = x.x' / (|x| |x'|)`` and
``rho_z = Sigma^0(z, z') / sqrt(e e')`` only. Working with correlations keeps
every intermediate in ``[-1, 1]``, needs no per-layer norms and gives rows with
``x = 0`` or ``z = 0`` an exact zero instead of ``0 / 0``.

With biases (``f_bias_variance``, ``g_bias_variance``; docs/math.md,
"Biases") every layer's row variance is still known in closed form (f:
``s + (l + 1) bf``; g: ``w_l = sigma (w_{l-1} + bg)``), and each layer's bias
maps the correlation to ``rho alpha alpha' + b beta beta'`` with per-row
factors (:class:`_BiasStep`); ``R`` then also depends on ``s`` and ``e``. The
hyperparameter gradients are forward-mode tangents carried through the same
loops (:class:`Direction`).

Coincident rows: two rows with equal x (equal values, ``-0.0 == 0.0``) have
``rho_x = 1`` exactly, and two rows with equal z have ``rho_z = 1`` exactly,
whether they are one row or rows of two arrays; equal rows are found exactly
(:mod:`._utils.rows`), and the blocked evaluation of
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

from ._utils import arrays as _arrays
from ._utils.arrays import DIFFERENCE_COLUMNS, clip_correlations, squared_distances
from ._utils.rows import FIND, Coincidence, find_coincidence, set_where

__all__ = [
    "relu_duals",
    "dual_correlations",
    "kappa0_slope",
    "Direction",
    "mlp_correlations",
    "MLPCorrelations",
    "hyper_correlations",
    "HyperCorrelations",
    "f_output_variance",
    "f_ntk_variance",
    "hyper_scales",
    "hyper_from_correlations",
    "HyperKernels",
    "hyper_diagonal",
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


def kappa0_slope(rho: Array, negative_slope: float = 0.0) -> Array:
    """``d kappa0 / d rho = c / (pi sin t)`` of :func:`dual_correlations`, elementwise.

    Zero where ``|rho| = 1`` (it is infinite there), where every caller's
    tangent of ``rho`` is 0. Forward-mode tangents through a dual use it.
    """
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


class Direction(NamedTuple):
    """One direction of a forward-mode derivative through the recursions.

    The tangents of the two bias variances and of g's input correlation along
    it: ``(f_bias_variance, 0, False)`` is ``d / d log bf`` when ``f_bias`` is
    ``bf`` itself (scikit-learn's log space), ``(0, 0, True)`` the derivative
    with respect to ``rho_z`` (a length scale's gradient is that times
    ``d rho_z / d log ell``).
    """

    f_bias: float = 0.0
    g_bias: float = 0.0
    z: bool = False


def _plus(a: Array | None, b: Array | None) -> Array | None:
    """``a + b`` where None is a zero tangent."""
    if a is None:
        return b
    return a if b is None else a + b


def _times(a: Array | None, b: Array) -> Array | None:
    """``a * b`` where None is a zero tangent."""
    return None if a is None else a * b


class _BiasStep(NamedTuple):
    """Adding an independent bias to a pair of Gaussians, as a map of correlations.

    A pair of variances ``(v, v')`` and correlation ``rho`` plus a bias of
    variance ``b`` has correlation ``rho alpha alpha' + b beta beta'`` with
    ``alpha = sqrt(v / (v + b))`` and ``beta = 1 / sqrt(v + b)`` per row
    (docs/math.md, "Biases"). ``d_alpha`` and ``d_beta`` are the
    log-derivatives of the factors per direction (pairs of row vectors, None
    where zero), ``d_bias`` the tangent of ``b``.
    """

    alpha: tuple[Array, Array]
    beta: tuple[Array, Array]
    bias: float
    d_alpha: list
    d_beta: list
    d_bias: list


def _bias_step(
    variances: tuple[Array, Array], bias: float, d_variances: list, d_bias: Sequence[float]
) -> _BiasStep:
    """The :class:`_BiasStep` of row variances ``(v_a, v_b)`` and a bias variance > 0.

    ``d_variances[k]``: the tangents ``(dv_a, dv_b)`` along direction ``k``
    (scalars or row vectors), or None.
    """
    xp = array_namespace(*variances)
    alpha, beta = [], []
    for v in variances:
        inverse = 1.0 / xp.sqrt(v + bias)
        alpha.append(xp.sqrt(v) * inverse)
        beta.append(inverse)
    d_alpha, d_beta = [], []
    for dv, db in zip(d_variances, d_bias, strict=True):
        if dv is None and db == 0.0:
            d_alpha.append(None)
            d_beta.append(None)
            continue
        dv = (0.0, 0.0) if dv is None else dv
        # d log beta = -(dv + db) / (2 (v + b)); d log alpha = dv / (2 v) + d log beta
        d_log_beta = tuple(-0.5 * (d + db) * b * b for d, b in zip(dv, beta, strict=True))
        d_log_alpha = tuple(
            0.5 * d * _arrays.safe_inverse(v, xp) + lb
            for d, v, lb in zip(dv, variances, d_log_beta, strict=True)
        )
        d_alpha.append(d_log_alpha)
        d_beta.append(d_log_beta)
    return _BiasStep(tuple(alpha), tuple(beta), bias, d_alpha, d_beta, list(d_bias))


def _outer(pair: tuple[Array, Array]) -> Array:
    return pair[0][:, None] * pair[1][None, :]


def _sum_outer(pair: tuple[Array, Array]) -> Array:
    return pair[0][:, None] + pair[1][None, :]


def _apply_bias(m: Array, step: _BiasStep, in_place: bool) -> Array:
    """``m alpha alpha' + b beta beta'`` (a correlation, or the NTK normalised alike)."""
    m = _arrays.scale(m, step.alpha[0][:, None], in_place)
    m = _arrays.scale(m, step.alpha[1][None, :], in_place)
    return _arrays.shift(m, step.bias * _outer(step.beta), in_place)


def _bias_tangent(
    m: Array, dm: Array | None, step: _BiasStep, k: int, in_place: bool
) -> Array | None:
    """Tangent of :func:`_apply_bias` ``(m)`` along direction ``k``, from ``m``'s tangent ``dm``.

    ``(dm + m (la + la')) alpha alpha' + (db + b (lb + lb')) beta beta'`` with
    ``la``, ``lb`` the log-derivatives of the factors. Call it before
    :func:`_apply_bias` overwrites ``m``.
    """
    d_alpha, d_beta, d_bias = step.d_alpha[k], step.d_beta[k], step.d_bias[k]
    if d_alpha is not None:
        dm = _plus(dm, m * _sum_outer(d_alpha))
    if dm is not None:
        dm = _arrays.scale(dm, step.alpha[0][:, None], in_place)
        dm = _arrays.scale(dm, step.alpha[1][None, :], in_place)
    if d_beta is None and d_bias == 0.0:
        return dm
    bias_term = _outer(step.beta)
    factor = d_bias if d_beta is None else d_bias + step.bias * _sum_outer(d_beta)
    return _plus(dm, bias_term * factor)


def _exact_ones(mask: Array) -> tuple:
    """Indices of the entries of a boolean ``mask`` (for :func:`._utils.rows.set_where`)."""
    xp = array_namespace(mask)
    return tuple(xp.nonzero(mask))


def _set_ones(value: Array, tangents: list, where: Any, in_place: bool) -> tuple[Array, list]:
    """``value`` exactly 1 at ``where`` (coincident rows), its tangents 0 there."""
    if where is None:
        return value, tangents
    value = set_where(value, where, 1.0, in_place)
    tangents = [None if t is None else set_where(t, where, 0.0, in_place) for t in tangents]
    return value, tangents


def _add_bias(
    step: _BiasStep,
    same: Any,
    in_place: bool,
    rho: Array,
    d_rho: list,
    ntk: Array | None = None,
    d_ntk: list | None = None,
    *,
    keep_rho: bool = False,
) -> tuple[Array, list, Array | None, list | None]:
    """One layer's bias (:class:`_BiasStep`) on a correlation and, if given, its NTK.

    ``rho`` and ``ntk`` (and their tangents, one per direction, None where
    zero) become :func:`_apply_bias` of themselves, their tangents by
    :func:`_bias_tangent`; ``rho`` is set to exactly 1 at the coincident pairs
    ``same`` (:func:`_set_ones`). ``keep_rho`` leaves the caller's ``rho``
    unchanged (a new array is returned) even where ``in_place``.

    Returns
    -------
    rho, d_rho, ntk, d_ntk
        ``ntk`` and ``d_ntk`` as given when ``ntk`` is None.
    """
    overwrite = in_place and not keep_rho
    d_rho = [_bias_tangent(rho, d, step, k, overwrite) for k, d in enumerate(d_rho)]
    rho = _apply_bias(rho, step, overwrite)
    rho, d_rho = _set_ones(rho, d_rho, same, in_place)
    if ntk is not None:
        d_ntk = [_bias_tangent(ntk, d, step, k, in_place) for k, d in enumerate(d_ntk)]
        ntk = _apply_bias(ntk, step, in_place)
    return rho, d_rho, ntk, d_ntk


class MLPCorrelations(NamedTuple):
    """Outputs of :func:`mlp_correlations` (see there)."""

    rho: Array
    ntk: Array | None
    rho_tangents: list
    ntk_tangents: list


def mlp_correlations(
    rho_x: Array,
    f_depth: int,
    negative_slope: float = 0.0,
    *,
    need_ntk: bool = True,
    variances: tuple[Array, Array] | None = None,
    bias_variance: float = 0.0,
    directions: Sequence[Direction] = (),
) -> MLPCorrelations:
    """NNGP and NTK of the hypernetwork f (an MLP, biases optional) in correlation space.

    Parameters
    ----------
    rho_x : array of shape (n, m)
        Input correlations ``x.x' / (|x| |x'|)`` (0 for a zero row); clipped
        and overwritten in place where allowed.
    f_depth : int
        Number of weight matrices ``L`` of f.
    negative_slope : float, default=0.0
        Leaky ReLU slope.
    need_ntk : bool, default=True
        Whether to compute the NTK.
    variances : pair of arrays of shapes (n,) and (m,), default=None
        ``s = |x|^2 / n0`` of the rows and of the columns; needed when
        ``bias_variance > 0``.
    bias_variance : float, default=0.0
        ``bf``, the variance of f's biases (docs/math.md, "Biases"). Layer
        ``l``'s NNGP has row variance ``s + (l + 1) bf``; each layer's
        correlation is mapped by :class:`_BiasStep`.
    directions : sequence of Direction, default=()
        Forward-mode tangents to carry (only ``Direction.f_bias`` enters f).

    Returns
    -------
    MLPCorrelations
        ``rho``: correlation of f's outputs, ``S_f / sqrt(sigma sigma')`` with
        ``sigma = s + L bf`` (array of shape (n, m)); ``ntk``:
        ``Theta^f / sqrt(sigma sigma')`` or None; ``rho_tangents`` and
        ``ntk_tangents``: one per direction, None where zero. Rows with equal
        ``rho_x = 1`` and equal ``s`` have ``rho`` exactly 1.
    """
    rho = rho_x
    xp = array_namespace(rho)
    in_place = _arrays.in_place_allowed(rho, *(variances or ()))
    d_rho: list = [None] * len(directions)
    d_ntk: list = [None] * len(directions)
    biased = bias_variance > 0.0
    same = None
    if biased:
        if variances is None:
            raise ValueError("mlp_correlations needs the row variances when bias_variance > 0.")
        s_a, s_b = variances
        rho = clip_correlations(rho, in_place)
        # f(x) = f(x') exactly for equal rows, and for rows whose x carries no variance
        # (x = 0, or |x|^2 / n0 below float64's range): only the biases reach f's output
        no_x = (s_a == 0.0)[:, None] & (s_b == 0.0)[None, :]
        same = _exact_ones(((rho == 1.0) & (s_a[:, None] == s_b[None, :])) | no_x)
        d_bias = [d.f_bias for d in directions]

        def step(layer: int) -> _BiasStep:
            # the variance before layer's bias is s + layer bf (tangent: layer dbf)
            shifted = (s_a + layer * bias_variance, s_b + layer * bias_variance)
            d_variances = [None if db == 0.0 else (layer * db, layer * db) for db in d_bias]
            return _bias_step(shifted, bias_variance, d_variances, d_bias)

        rho, d_rho, _, _ = _add_bias(step(0), same, in_place, rho, d_rho)
    if need_ntk:
        ntk = xp.asarray(rho, copy=True) if in_place else rho
        d_ntk = [None if d is None else xp.asarray(d, copy=True) for d in d_rho]
    else:
        ntk = None
    tangents = any(d is not None for d in d_rho)
    for layer in range(1, f_depth):
        rho_next, kappa0 = dual_correlations(rho, negative_slope, need_kappa0=need_ntk or tangents)
        d_next = [_times(d, kappa0) for d in d_rho]
        if need_ntk:
            if tangents:
                slope = kappa0_slope(rho, negative_slope)
                d_ntk = [
                    _plus(_plus(_times(dn, kappa0), _times(dr, ntk * slope)), dx)
                    for dn, dr, dx in zip(d_ntk, d_rho, d_next, strict=True)
                ]
            ntk = _arrays.shift(_arrays.scale(ntk, kappa0, in_place), rho_next, in_place)
        rho, d_rho = rho_next, d_next
        if biased:
            rho, d_rho, ntk, d_ntk = _add_bias(step(layer), same, in_place, rho, d_rho, ntk, d_ntk)
    return MLPCorrelations(rho, ntk, d_rho, d_ntk if need_ntk else [None] * len(d_rho))


def _side(pair: tuple[Array, Array] | None, k: int) -> Array | None:
    """Side ``k`` (0: rows, 1: columns) of a pair of tangents, None where zero."""
    return None if pair is None else pair[k]


def _g_variances(
    sigma: Array,
    e: Array,
    g_depth: int,
    bias_variance: float,
    d_sigma: Sequence[Array | None],
    d_bias: Sequence[float],
) -> list[tuple[Array, list]]:
    """Row variances ``w_l`` of g's layers and their tangents, ``l = 0 .. H``.

    ``w_0 = e``, ``w_l = sigma (w_{l-1} + bg)`` (``sigma``: f's output
    variance; ``HyperNNGP(u, u) = w_H``). Tangents per direction from those
    of ``sigma`` (per row, or scalars; None where zero) and of ``bg`` (scalars).
    """
    w, dw = e, [None] * len(d_sigma)
    chain = [(w, dw)]
    for _ in range(g_depth):
        p = w + bias_variance
        dw = [
            _plus(None if ds is None else ds * p, _times(_plus(d, db or None), sigma))
            for d, ds, db in zip(dw, d_sigma, d_bias, strict=True)
        ]
        w = sigma * p
        chain.append((w, dw))
    return chain


class HyperCorrelations(NamedTuple):
    """Outputs of :func:`hyper_correlations` (see there)."""

    nngp: Array | None
    ntk_g: Array | None
    nngp_tangents: list
    ntk_g_tangents: list


def hyper_correlations(
    rho_f: Array,
    rho_z: Array,
    g_depth: int,
    negative_slope: float = 0.0,
    *,
    need_nngp: bool = True,
    need_ntk: bool = True,
    variances: tuple[Array, Array, Array, Array] | None = None,
    bias_variance: float = 0.0,
    rho_f_tangents: Sequence[Array | None] = (),
    sigma_tangents: Sequence[tuple[Array, Array] | None] = (),
    directions: Sequence[Direction] = (),
) -> HyperCorrelations:
    """The primary network g's recursion on f's output correlation.

    Parameters
    ----------
    rho_f : array of shape (n, m)
        Correlation of f's outputs (from :func:`mlp_correlations`).
    rho_z : array of shape (n, m)
        Correlation of g's inputs, ``Sigma^0 / sqrt(e e')``; left unchanged.
    g_depth : int
        Number of weight matrices ``H`` of g.
    negative_slope : float, default=0.0
        Leaky ReLU slope.
    need_nngp, need_ntk : bool, default=True
        Which kernels to return.
    variances : tuple of 4 arrays, default=None
        ``(sigma_a, sigma_b, e_a, e_b)``: f's output variance ``S_f(x, x)``
        (the dense f's ``s + L bf``) and ``e = Sigma^0(z, z)`` of the rows and
        of the columns; needed when ``bias_variance > 0``.
    bias_variance : float, default=0.0
        ``bg``, the variance of the biases f generates for g (docs/math.md,
        "Biases"): ``Lambda^l = S_f (Sigma^{l-1} + bg)``.
    rho_f_tangents : sequence of arrays or None, default=()
        Tangents of ``rho_f`` along ``directions`` (None: zero; empty: all zero).
    sigma_tangents : sequence of pairs of arrays or None, default=()
        Tangents ``(dsigma_a, dsigma_b)`` of the rows' and columns' ``sigma``
        along ``directions`` (the dense f's ``L dbf``), None where zero;
        empty: all zero.
    directions : sequence of Direction, default=()
        Forward-mode tangents to carry: ``Direction.g_bias`` and
        ``Direction.z`` (a unit tangent of ``rho_z``) enter here.

    Returns
    -------
    HyperCorrelations
        ``nngp = Lambda^H / sqrt(w_H w_H')`` and
        ``ntk_g = K^g / sqrt(p p')`` with ``p = w_{H-1} + bg`` (without
        biases ``w_l = s^l e``), and their tangents, one per direction (None
        where zero); kernels not asked for are None.
    """
    xp = array_namespace(rho_f, rho_z)
    in_place = _arrays.in_place_allowed(rho_f, rho_z, *(variances or ()))
    n = len(directions)
    d_f = list(rho_f_tangents) or [None] * n
    d_sigma = list(sigma_tangents) or [None] * n
    d_bias = [d.g_bias for d in directions]
    ones = xp.ones_like(rho_z) if any(d.z for d in directions) else None
    rho_p = rho_z  # correlation of Sigma^{l-1} + bg
    d_p: list = [ones if d.z else None for d in directions]
    biased = bias_variance > 0.0
    same = None
    if biased:
        if variances is None:
            raise ValueError("hyper_correlations needs the row variances when bias_variance > 0.")
        sigma_a, sigma_b, e_a, e_b = variances
        chains = [
            _g_variances(
                sigma, e, g_depth - 1, bias_variance, [_side(d, k) for d in d_sigma], d_bias
            )
            for k, (sigma, e) in enumerate(((sigma_a, e_a), (sigma_b, e_b)))
        ]
        same = _exact_ones(
            (rho_f == 1.0)
            & (rho_z == 1.0)
            & (sigma_a[:, None] == sigma_b[None, :])
            & (e_a[:, None] == e_b[None, :])
        )

        def step(layer: int) -> _BiasStep:
            (w_a, dw_a), (w_b, dw_b) = chains[0][layer], chains[1][layer]
            dv = [None if a is None else (a, b) for a, b in zip(dw_a, dw_b, strict=True)]
            return _bias_step((w_a, w_b), bias_variance, dv, d_bias)

        # rho_z stays for the caller
        rho_p, d_p, _, _ = _add_bias(step(0), same, in_place, rho_p, d_p, keep_rho=True)
    if need_ntk:
        ntk = xp.asarray(rho_p, copy=True) if in_place else rho_p
        d_ntk = [None if d is None else xp.asarray(d, copy=True) for d in d_p]
    else:
        ntk, d_ntk = None, [None] * n
    for layer in range(1, g_depth):
        rho_lambda = rho_f * rho_p
        d_lambda = [
            _plus(_times(df, rho_p), _times(dp, rho_f)) for df, dp in zip(d_f, d_p, strict=True)
        ]
        tangents = any(d is not None for d in d_lambda)
        rho_p, kappa0 = dual_correlations(
            rho_lambda, negative_slope, need_kappa0=need_ntk or tangents
        )
        if need_ntk:
            if tangents:
                # d(ntk rho_f kappa0 + rho_sigma): the product rule on the backward
                # factor; kappa0 is also d rho_sigma / d rho_lambda
                slope = kappa0_slope(rho_lambda, negative_slope)
                d_ntk = [
                    _plus(
                        _plus(_times(dn, rho_f * kappa0), _times(df, ntk * kappa0)),
                        _times(dl, ntk * rho_f * slope + kappa0),
                    )
                    for dn, df, dl in zip(d_ntk, d_f, d_lambda, strict=True)
                ]
            ntk = _arrays.shift(_arrays.scale(ntk, rho_f * kappa0, in_place), rho_p, in_place)
        d_p = [_times(dl, kappa0) for dl in d_lambda]
        if biased:
            rho_p, d_p, ntk, d_ntk = _add_bias(step(layer), same, in_place, rho_p, d_p, ntk, d_ntk)
    if need_nngp:
        nngp = rho_f * rho_p
        d_nngp = [
            _plus(_times(df, rho_p), _times(dp, rho_f)) for df, dp in zip(d_f, d_p, strict=True)
        ]
    else:
        nngp, d_nngp = None, [None] * n
    return HyperCorrelations(nngp, ntk, d_nngp, d_ntk)


def f_output_variance(s: Array, f_depth: int, f_bias_variance: float = 0.0) -> Array:
    """``sigma = s + L bf``: the variance of the dense f's outputs (``S_f(x, x)``)."""
    return s + f_depth * f_bias_variance if f_bias_variance else s


def f_ntk_variance(s: Array, f_depth: int, f_bias_variance: float = 0.0) -> Array:
    """``Theta^f(x, x) = L s + bf L (L + 1) / 2`` of the dense f (docs/math.md, "Biases")."""
    theta = f_depth * s
    if f_bias_variance:
        theta = theta + f_bias_variance * f_depth * (f_depth + 1) / 2.0
    return theta


def hyper_scales(
    sigma: Array,
    e: Array,
    g_depth: int,
    g_bias_variance: float = 0.0,
    directions: Sequence[Direction] = (),
    sigma_tangents: Sequence[Array | None] = (),
) -> tuple[Array, list]:
    """Row scale ``sqrt(HyperNNGP(u, u))`` of both kernels, and its log-derivatives.

    Parameters
    ----------
    sigma, e : arrays of shape (n,)
        f's output variance ``S_f(x, x)`` (from f's kernel, :mod:`._f`; the
        dense f's ``s + L bf``) and ``Sigma^0(z, z)`` per row.
    g_depth : int
    g_bias_variance : float, default=0.0
    directions : sequence of Direction, default=()
    sigma_tangents : sequence of arrays of shape (n,) or None, default=()
        Tangent of ``sigma`` along each direction (None: zero; empty: all zero).

    Returns
    -------
    scale : array of shape (n,)
        ``sqrt(w_H)`` (:func:`_g_variances`); without g's biases the closed
        form ``sigma^(H/2) sqrt(e)``.
    d_log_scale : list
        Per direction, ``d log(scale)`` per row (an array, or None where 0).
    """
    xp = array_namespace(sigma, e)
    d_sigma = list(sigma_tangents) or [None] * len(directions)
    if not g_bias_variance:
        scale = sigma ** (g_depth / 2.0) * xp.sqrt(e)
        inverse = _arrays.safe_inverse(sigma, xp)
        return scale, [None if ds is None else (0.5 * g_depth * ds) * inverse for ds in d_sigma]
    d_bias = [d.g_bias for d in directions]
    w, dw = _g_variances(sigma, e, g_depth, g_bias_variance, d_sigma, d_bias)[-1]
    inverse = _arrays.safe_inverse(w, xp)
    return xp.sqrt(w), [_times(d, 0.5 * inverse) for d in dw]


class HyperKernels(NamedTuple):
    """Outputs of :func:`hyper_from_correlations` (see there)."""

    nngp: Array | None
    ntk: Array | None
    nngp_tangents: list
    ntk_tangents: list


def hyper_from_correlations(
    f: MLPCorrelations,
    rho_z: Array,
    rows: tuple[Array, Array, Array, Array],
    g_depth: int,
    negative_slope: float = 0.0,
    *,
    g_bias_variance: float = 0.0,
    need_nngp: bool = True,
    need_ntk: bool = True,
    directions: Sequence[Direction] = (),
    sigma_tangents: Sequence[tuple[Array, Array] | None] = (),
) -> HyperKernels:
    """Both kernels (and their tangents) from f's correlations and g's input correlations.

    Parameters
    ----------
    f : MLPCorrelations
        f's output correlation and NTK over ``sqrt(sigma sigma')`` on the
        pairs (:func:`mlp_correlations` for the dense f; any f's kernel of
        :mod:`._f`), with the same ``directions`` (gathered to the rows and
        columns of ``rho_z``).
    rho_z : array of shape (n, m)
        From :func:`z_correlations`; left unchanged.
    rows : tuple of 4 arrays
        ``(sigma_a, sigma_b, e_a, e_b)``: f's output variance ``S_f(x, x)``
        (the dense f's :func:`f_output_variance`) and ``Sigma^0(z, z)`` of
        the rows (shape (n,)) and of the columns (shape (m,)).
    g_depth : int
    negative_slope : float, default=0.0
    g_bias_variance : float, default=0.0
    need_nngp, need_ntk : bool, default=True
    directions : sequence of Direction, default=()
    sigma_tangents : sequence of pairs of arrays or None, default=()
        Tangents ``(dsigma_a, dsigma_b)`` of ``sigma`` along ``directions``
        (the dense f's ``L dbf``), None where zero; empty: all zero.

    Returns
    -------
    HyperKernels
        ``nngp`` (``Lambda^H``) and ``ntk`` (``Theta^f K^g``) of shape
        (n, m), None where not asked for, and their tangents along
        ``directions`` (None where zero). The NTK is built in ``f.ntk``'s
        memory where allowed.
    """
    sigma_a, sigma_b, e_a, e_b = rows
    d_sigma = list(sigma_tangents) or [None] * len(directions)
    g = hyper_correlations(
        f.rho,
        rho_z,
        g_depth,
        negative_slope,
        need_nngp=need_nngp,
        need_ntk=need_ntk,
        variances=(sigma_a, sigma_b, e_a, e_b),
        bias_variance=g_bias_variance,
        rho_f_tangents=f.rho_tangents,
        sigma_tangents=d_sigma,
        directions=directions,
    )
    biases = (g_depth, g_bias_variance, directions)
    scale_a, d_scale_a = hyper_scales(sigma_a, e_a, *biases, [_side(d, 0) for d in d_sigma])
    scale_b, d_scale_b = hyper_scales(sigma_b, e_b, *biases, [_side(d, 1) for d in d_sigma])
    in_place = _arrays.in_place_allowed(f.rho, rho_z, sigma_a, sigma_b, e_a, e_b)
    # both sides' tangents are None together (the same direction moves every row)
    d_scales = [
        None if a is None else _sum_outer((a, b)) for a, b in zip(d_scale_a, d_scale_b, strict=True)
    ]

    def scaled(value: Array, tangents: list) -> tuple[Array, list]:
        # K = scale scale' R: dK = scale scale' (dR + R (dls + dls'))
        tangents = [_plus(t, _times(ds, value)) for t, ds in zip(tangents, d_scales, strict=True)]
        for i, t in enumerate(tangents):
            if t is not None:
                t = _arrays.scale(t, scale_a[:, None], in_place)
                tangents[i] = _arrays.scale(t, scale_b[None, :], in_place)
        value = _arrays.scale(value, scale_a[:, None], in_place)
        return _arrays.scale(value, scale_b[None, :], in_place), tangents

    nngp, d_nngp = (None, [None] * len(directions))
    if need_nngp:
        nngp, d_nngp = scaled(g.nngp, g.nngp_tangents)
    ntk, d_ntk = (None, [None] * len(directions))
    if need_ntk:
        d_ntk = [
            _plus(_times(dt, g.ntk_g), _times(dg, f.ntk))
            for dt, dg in zip(f.ntk_tangents, g.ntk_g_tangents, strict=True)
        ]
        ntk = _arrays.scale(g.ntk_g, f.ntk, in_place)
        ntk, d_ntk = scaled(ntk, d_ntk)
    return HyperKernels(nngp, ntk, d_nngp, d_ntk)


def hyper_diagonal(
    sigma: Array,
    theta: Array,
    e: Array,
    g_depth: int,
    kind: str,
    g_bias_variance: float = 0.0,
) -> Array:
    """The kernels at coincident rows, in closed form (every correlation is 1 there).

    ``HyperNNGP(u, u) = w_H`` (:func:`hyper_scales` squared; ``sigma^H e``
    without g's biases) and ``HyperKernel(u, u) = Theta^f(x, x) K^g(u, u)``
    with ``K^g(u, u) = H sigma^(H-1) e + bg sum_{i<H} (i + 1) sigma^i``
    (docs/math.md, "Biases"). The dense f's ``sigma = s + L bf``
    (:func:`f_output_variance`) and ``Theta^f(x, x) = L s + bf L (L + 1) / 2``
    (:func:`f_ntk_variance`) give ``L H s^H e`` without biases.

    Parameters
    ----------
    sigma, theta, e : arrays of shape (n,)
        f's ``S_f(x, x)`` and ``Theta^f(x, x)`` (from f's kernel, :mod:`._f`)
        and ``Sigma^0(z, z)`` per row.
    g_depth : int
    kind : {"nngp", "ntk"}
    g_bias_variance : float, default=0.0

    Returns
    -------
    array of shape (n,)
    """
    H, bg = g_depth, g_bias_variance
    if kind == "nngp":
        return _g_variances(sigma, e, H, bg, (), ())[-1][0] if bg else sigma**H * e
    k_g = H * sigma ** (H - 1) * e
    for i in range(H):
        k_g = k_g + bg * (i + 1) * sigma**i
    return theta * k_g


def mlp_kernels(
    x_a: Array,
    x_b: Array | None = None,
    depth: int = 3,
    negative_slope: float = 0.0,
    *,
    bias_variance: float = 0.0,
) -> tuple[Array, Array]:
    """NNGP and NTK of an MLP in NTK parameterisation (the paper's f), biases optional.

    Parameters
    ----------
    x_a : array of shape (n, n0)
    x_b : array of shape (m, n0), default=None (means ``x_a``)
    depth : int, default=3
        Number of weight matrices ``L``.
    negative_slope : float, default=0.0
        Leaky ReLU slope (0: ReLU).
    bias_variance : float, default=0.0
        Variance ``bf`` of every layer's bias, the output layer's included
        (``S^0 = x.x'/n0 + bf``, ``S^l = kappa1(S^{l-1}) + bf``; docs/math.md,
        "Biases"); 0 is the paper's bias-free f.

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
    >>> nngp, ntk = mlp_kernels(x, depth=2, bias_variance=0.5)
    >>> np.round(np.diag(ntk), 4).tolist()  # depth |x|^2 / n0 + bf depth (depth + 1) / 2
    [2.5, 5.5]
    """
    xp = array_namespace(x_a)
    x_b = x_a if x_b is None else x_b
    rho, norm_a, norm_b = _arrays.row_correlations(x_a, x_b)
    n0 = x_a.shape[1]
    s_a, s_b = norm_a * norm_a / n0, norm_b * norm_b / n0
    f = mlp_correlations(
        rho, depth, negative_slope, variances=(s_a, s_b), bias_variance=bias_variance
    )
    if bias_variance:
        sigma_a = f_output_variance(s_a, depth, bias_variance)
        sigma_b = f_output_variance(s_b, depth, bias_variance)
        scale = xp.sqrt(sigma_a)[:, None] * xp.sqrt(sigma_b)[None, :]
    else:
        scale = (norm_a[:, None] * norm_b[None, :]) / n0
    return scale * f.rho, scale * f.ntk


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
        Where rows are equal (:func:`._utils.rows.coincident_pairs`; None: nowhere,
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
    *,
    f_bias_variance: float = 0.0,
    g_bias_variance: float = 0.0,
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
    f_bias_variance, g_bias_variance : float, default=0.0
        Variances ``bf`` of f's biases and ``bg`` of the biases f generates
        for g (docs/math.md, "Biases"); 0 and 0 is the paper's bias-free
        hypernetwork.

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
    x_b = x_a if x_b is None else x_b
    z_b = z_a if z_b is None else z_b
    rho_x, norm_xa, norm_xb = _arrays.row_correlations(x_a, x_b)
    rho_z, e_a, e_b = z_correlations(z_a, z_b, z_encoding, length_scale)
    n0 = x_a.shape[1]
    s_a, s_b = norm_xa * norm_xa / n0, norm_xb * norm_xb / n0
    f = mlp_correlations(
        rho_x, f_depth, negative_slope, variances=(s_a, s_b), bias_variance=f_bias_variance
    )
    sigma_a = f_output_variance(s_a, f_depth, f_bias_variance)
    sigma_b = f_output_variance(s_b, f_depth, f_bias_variance)
    kernels = hyper_from_correlations(
        f,
        rho_z,
        (sigma_a, sigma_b, e_a, e_b),
        g_depth,
        negative_slope,
        g_bias_variance=g_bias_variance,
    )
    return kernels.nngp, kernels.ntk
