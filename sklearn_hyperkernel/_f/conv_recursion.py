"""The convolutional f's kernel: its recursion on the spatial diagonal, as pure array functions.

f reads an image ``x`` of shape ``(H, W, C0)`` through ``D = f_depth - 1``
convolutional layers (``k x k`` filters, stride 1, SAME zero padding, fan-in
``k k C``, ``phi`` after each) and one dense readout over the flattened last
feature map (``../shared/docs/conv-f.md``, "The model"). With infinitely many
channels, and with a flatten readout, only the *spatial diagonal* of the
position-pair covariances is needed: per pair of images each quantity is one
``H x W`` map (conv-f.md, "Only the diagonal"):

    K^0(p)     = x(p) . x'(p) / C0                       (channels' dot product)
    Sigma^l    = B K^{l-1} + bf                          l = 1 .. D
    Theta^l    = B (Theta^{l-1} Kdot^{l-1} + K^{l-1}) + bf   (Theta^0 = 0, Kdot^0 = 1)
    K^l        = sqrt(v_l u_l) kappa1(rho_l),  Kdot^l = kappa0(rho_l),
                 rho_l = Sigma^l / sqrt(v_l u_l)  (0 where v_l u_l = 0)
    S_f        = mean_p K^D + bf
    Theta^f    = mean_p (Theta^D Kdot^D + K^D) + bf

``B`` is the ``k x k`` box average with SAME zero padding, dividing by
``k k`` at the border too (padded zeros count, as in torch's
``conv2d(padding=k // 2)`` and neural-tangents); it is separable and runs as
two 1-D passes of ``k`` shifted sums (along W, then along H), then one
product with ``1 / (k k)``. ``kappa1`` and ``kappa0`` are the package's
duals of the normalised (leaky) ReLU on correlations
(:func:`~..recursions.dual_correlations`), applied per position with that
position's variances ``v_l(p) = Sigma^l(x, x)(p, p)`` of x and ``u_l(p) =
Sigma^l(x', x')(p, p)`` of x' (they are not ``|x|^2 / n0``: zero padding
loses energy at the border), so a zero-variance position (its receptive field
is all zero) gives ``K = 0`` without a NaN. ``bf`` is ``f_bias_variance``
(biases.md; the convention of neural-tangents' ``b_std``).

On an image's own diagonal every correlation is 1 and ``kappa1(1) =
kappa0(1) = 1``, so the variances obey the linear recursion
``v_0 = |x(p)|^2 / C0``, ``v_l = B v_{l-1} + bf``, ``t_1 = v_1``,
``t_l = B (t_{l-1} + v_{l-1}) + bf`` (``t_l = Theta^l(x, x)(p, p)``),
``S_f(x, x) = mean v_D + bf`` and ``Theta^f(x, x) = mean (t_D + v_D) + bf``
(:func:`conv_variances`); they are affine in ``bf``. The pair recursion runs
the same operations in the same order, so an image paired with itself gets
exactly its variances back.

Tangents in ``bf`` (forward mode, exact; ``dX`` is ``d X / d bf``):

    dv_0 = 0,  dv_l = B dv_{l-1} + 1       (one map for every image: du_l = dv_l)
    dt_1 = dv_1,  dt_l = B (dt_{l-1} + dv_{l-1}) + 1
    dK^0 = dTheta^0 = dKdot^0 = 0
    dSigma^l = B dK^{l-1} + 1
    dTheta^l = B (dTheta^{l-1} Kdot^{l-1} + Theta^{l-1} dKdot^{l-1} + dK^{l-1}) + 1
    s_l      = sqrt(v_l u_l),  g_l = dv_l / v_l + du_l / u_l   (a term 0 where its variance is 0)
    dK^l     = kappa0 dSigma^l + s_l (kappa1 - rho_l kappa0) g_l / 2
    drho_l   = (dSigma^l - rho_l s_l g_l / 2) / s_l
    dKdot^l  = kappa0'(rho_l) drho_l          (:func:`~..recursions.kappa0_slope`)
    dS_f     = mean_p dK^D + 1
    dTheta^f = mean_p (dTheta^D Kdot^D + Theta^D dKdot^D + dK^D) + 1

(``kappa1 - rho kappa0 = c sin(t) / pi``: the covariance dual's derivative in
the variances, biases.md's ``d kappa1``). With ``sigma = S_f(x, x)`` and
``sigma* = S_f(x', x')`` (:func:`conv_variances`, with ``dsigma = mean_p dv_D
+ 1``), the normalised ``r = S_f / sqrt(sigma sigma*)`` has ``dr = dS_f /
sqrt(sigma sigma*) - r (dsigma / sigma + dsigma* / sigma*) / 2``, and the NTK
alike; a direction's tangent is ``Direction.f_bias * dr`` (``bf dr``: the
derivative in ``log bf``).

Pure array functions: numpy arrays and torch tensors (array API), out of
place, differentiable by autograd. The compiled evaluation of the same values
is :mod:`.conv_compiled`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from array_api_compat import array_namespace
from array_api_compat import device as _device

from ..recursions import Direction, MLPCorrelations, dual_correlations, kappa0_slope

__all__ = ["ConvVariances", "conv_variances", "conv_correlations", "check_conv_arguments"]

Array = Any  # a numpy array or a torch tensor


class ConvVariances(NamedTuple):
    """Per-image quantities of the conv f on the image's own diagonal (:func:`conv_variances`).

    Attributes
    ----------
    maps : array of shape (n, D + 1, H, W)
        ``v_l(p) = Sigma^l(x, x)(p, p)``, ``l = 0 .. D`` (``v_0 = |x(p)|^2 /
        C0``; ``D = f_depth - 1``).
    sigma : array of shape (n,)
        ``S_f(x, x) = mean_p v_D(p) + bf``.
    theta : array of shape (n,)
        ``Theta^f(x, x)``.
    d_sigma, d_theta : arrays of shape (n,)
        Their derivatives in ``bf`` (both are affine in ``bf``).
    """

    maps: Array
    sigma: Array
    theta: Array
    d_sigma: Array
    d_theta: Array


def check_conv_arguments(filter_size: Any, f_depth: Any, bias_variance: Any) -> None:
    """Raise a ``ValueError`` naming the parameter for a bad filter size, depth or bias.

    ``filter_size`` a positive odd integer, ``f_depth`` an integer >= 1,
    ``bias_variance`` finite and >= 0.
    """
    integer = (int, np.integer)
    if (
        not isinstance(filter_size, integer)
        or isinstance(filter_size, bool)
        or filter_size < 1
        or filter_size % 2 == 0
    ):
        raise ValueError(f"filter_size must be a positive odd integer; got {filter_size!r}.")
    if not isinstance(f_depth, integer) or isinstance(f_depth, bool) or f_depth < 1:
        raise ValueError(f"f_depth must be an integer >= 1; got {f_depth!r}.")
    if not math.isfinite(bias_variance) or bias_variance < 0:
        raise ValueError(f"bias_variance must be a finite number >= 0; got {bias_variance!r}.")


def _check_images(images: Array, name: str) -> None:
    if len(images.shape) != 4:
        raise ValueError(f"{name} must have shape (n, H, W, C); got shape {tuple(images.shape)}.")


def _box(maps: Array, filter_size: int) -> Array:
    """``B``: the ``k x k`` box sum over the last two axes (SAME zero padding) over ``k k``.

    Two 1-D passes (along the last axis, then the one before), each the sum
    of the ``k`` shifted copies of the zero-padded map in the order of the
    offsets ``-r .. r``, then one product with ``1 / (k k)``.
    """
    if filter_size == 1:
        return maps
    xp = array_namespace(maps)
    r = filter_size // 2
    for axis in (-1, -2):
        size = maps.shape[axis]
        pad_shape = list(maps.shape)
        pad_shape[axis] = r
        zeros = xp.zeros(tuple(pad_shape), dtype=maps.dtype, device=_device(maps))
        padded = xp.concat([zeros, maps, zeros], axis=axis)
        total = None
        for d in range(filter_size):
            part = padded[..., d : d + size] if axis == -1 else padded[..., d : d + size, :]
            total = part if total is None else total + part
        maps = total
    return maps * (1.0 / (filter_size * filter_size))


def _channel_dot(a: Array, b: Array) -> Array:
    """``a(p) . b(p) / C0`` over the last axis (channels), summed channel by channel."""
    total = a[..., 0] * b[..., 0]
    for c in range(1, a.shape[-1]):
        total = total + a[..., c] * b[..., c]
    return total / float(a.shape[-1])


def _mean(maps: Array) -> Array:
    """The mean over the last two axes (positions)."""
    xp = array_namespace(maps)
    return xp.mean(xp.reshape(maps, (*maps.shape[:-2], -1)), axis=-1)


def _variance_tangents(like: Array, f_depth: int, filter_size: int) -> list:
    """``v_l' = d v_l / d bf`` maps of shape (H, W), ``l = 0 .. D`` (the same for every image)."""
    xp = array_namespace(like)
    shape = tuple(like.shape[-2:])
    ones = xp.ones(shape, dtype=like.dtype, device=_device(like))
    maps = [0.0 * ones]
    for _ in range(1, f_depth):
        maps.append(_box(maps[-1], filter_size) + 1.0)
    return maps


def conv_variances(
    images: Array, filter_size: int, f_depth: int, bias_variance: float = 0.0
) -> ConvVariances:
    """Variances of the conv f on each image's own diagonal, and ``S_f(x, x)``, ``Theta^f(x, x)``.

    Parameters
    ----------
    images : array of shape (n, H, W, C0)
        The images (a row of X reshaped row-major, channels last).
    filter_size : int
        ``k``, positive and odd.
    f_depth : int
        f's weight layers: ``f_depth - 1`` conv layers and the readout.
    bias_variance : float, default=0.0
        ``bf``, the variance of every layer's bias (biases.md).

    Returns
    -------
    ConvVariances
        The maps ``v_l`` (shape (n, f_depth, H, W)) and the per-image ``S_f(x,
        x)``, ``Theta^f(x, x)`` and their ``bf``-derivatives (shape (n,)), from
        the linear recursion of the module docstring (conv-f.md with every
        correlation 1).

    Raises
    ------
    ValueError
        If ``images`` is not 4-D or ``filter_size``, ``f_depth`` or
        ``bias_variance`` is out of range (named in the message).
    """
    check_conv_arguments(filter_size, f_depth, bias_variance)
    _check_images(images, "images")
    xp = array_namespace(images)
    bf = float(bias_variance)
    v = _channel_dot(images, images)  # v_0
    maps = [v]
    t = None  # t_l = Theta^l(x, x)(p, p); Theta^0 = 0
    for _ in range(1, f_depth):
        # the pair recursion's order: Theta^{l-1} * Kdot + K with Kdot = 1 (t_0 = 0: K alone)
        t = _box(v if t is None else t * 1.0 + v, filter_size) + bf
        v = _box(v, filter_size) + bf
        maps.append(v)
    sigma = _mean(v) + bf
    theta = _mean(v if t is None else t * 1.0 + v) + bf
    dv = _variance_tangents(images[..., 0], f_depth, filter_size)
    dt = None
    for layer in range(1, f_depth):
        previous = dv[layer - 1]
        dt = _box(previous if dt is None else dt + previous, filter_size) + 1.0
    d_sigma = _mean(dv[-1]) + 1.0
    d_theta = _mean(dv[-1] if dt is None else dt + dv[-1]) + 1.0
    ones = xp.ones_like(sigma)
    return ConvVariances(xp.stack(maps, axis=1), sigma, theta, d_sigma * ones, d_theta * ones)


def _safe_divide(a: Array, b: Array) -> Array:
    """``a / b`` where ``b > 0``, else 0 (no NaN where ``b`` is 0)."""
    xp = array_namespace(a, b)
    positive = b > 0
    return xp.where(positive, a / xp.where(positive, b, xp.ones_like(b)), xp.zeros_like(a * b))


def conv_correlations(
    images_a: Array,
    images_b: Array,
    var_a: ConvVariances,
    var_b: ConvVariances,
    filter_size: int,
    f_depth: int,
    negative_slope: float = 0.0,
    *,
    need_ntk: bool = True,
    bias_variance: float = 0.0,
    same: Array | None = None,
    directions: Sequence[Direction] = (),
) -> MLPCorrelations:
    """Output correlation and normalised NTK of the conv f on all pairs of two sets of images.

    The recursion of the module docstring (``../shared/docs/conv-f.md``) on
    the spatial diagonal, vectorised over pairs: its state is one array of
    shape (n_a, n_b, H, W) per quantity (the caller passes blocks small
    enough for its memory; a few such arrays live at a time).

    Parameters
    ----------
    images_a : array of shape (n_a, H, W, C0)
    images_b : array of shape (n_b, H, W, C0)
    var_a, var_b : ConvVariances
        :func:`conv_variances` of ``images_a`` and ``images_b``, with the same
        ``filter_size``, ``f_depth`` and ``bias_variance``.
    filter_size : int
        ``k``, positive and odd.
    f_depth : int
        f's weight layers (``f_depth - 1`` conv layers, then the readout).
    negative_slope : float, default=0.0
        Leaky ReLU slope of ``phi`` (0: ReLU).
    need_ntk : bool, default=True
        Whether to compute the NTK.
    bias_variance : float, default=0.0
        ``bf``, the variance of f's biases.
    same : boolean array of shape (n_a, n_b), default=None
        Pairs of equal images: there ``rho`` is exactly 1 and ``ntk`` exactly
        ``theta / sigma`` (0 where ``sigma`` is 0), their tangents the
        derivatives of these.
    directions : sequence of Direction, default=()
        Forward-mode tangents; only ``Direction.f_bias`` (the tangent of
        ``bf``) enters f.

    Returns
    -------
    MLPCorrelations
        ``rho = S_f(x, x') / sqrt(sigma sigma')`` and ``ntk = Theta^f(x, x') /
        sqrt(sigma sigma')`` (shape (n_a, n_b); 0 where ``sigma`` or
        ``sigma'`` is 0; ``rho`` clipped to [-1, 1], which rounding can
        leave; ``ntk`` None unless ``need_ntk``), and one tangent
        each per direction, ``Direction.f_bias`` times the ``bf``-derivative
        of the normalised value (module docstring), None where zero.

    Raises
    ------
    ValueError
        If the images are not 4-D or of different ``(H, W, C0)``, the
        variances do not match them, or an argument is out of range.
    """
    check_conv_arguments(filter_size, f_depth, bias_variance)
    _check_images(images_a, "images_a")
    _check_images(images_b, "images_b")
    if tuple(images_a.shape[1:]) != tuple(images_b.shape[1:]):
        raise ValueError(
            "images_a and images_b must have the same (H, W, C0); got "
            f"{tuple(images_a.shape[1:])} and {tuple(images_b.shape[1:])}."
        )
    n_a, n_b = images_a.shape[0], images_b.shape[0]
    maps_shape = (f_depth, *images_a.shape[1:3])
    for name, var, n in (("var_a", var_a, n_a), ("var_b", var_b, n_b)):
        if tuple(var.maps.shape) != (n, *maps_shape):
            raise ValueError(
                f"{name}.maps must have shape {(n, *maps_shape)} (conv_variances of the images "
                f"with this f_depth); got {tuple(var.maps.shape)}."
            )
    if same is not None and tuple(same.shape) != (n_a, n_b):
        raise ValueError(f"same must have shape ({n_a}, {n_b}); got {tuple(same.shape)}.")
    xp = array_namespace(images_a, images_b)
    bf = float(bias_variance)
    f_biases = [float(d.f_bias) for d in directions]
    tangents = any(db != 0.0 for db in f_biases)
    need_theta = need_ntk or tangents
    va, vb = var_a.maps, var_b.maps
    k = _channel_dot(images_a[:, None], images_b[None, :])  # K^0, (n_a, n_b, H, W)
    kdot = theta = None  # Kdot^0 = 1, Theta^0 = 0
    if tangents:  # d / d bf of K, Kdot, Theta (all 0 at layer 0)
        dv = _variance_tangents(k, f_depth, filter_size)
        dk, dkdot, dtheta = xp.zeros_like(k), xp.zeros_like(k), xp.zeros_like(k)
    for layer in range(1, f_depth):
        sigma_l = _box(k, filter_size) + bf
        if need_theta:
            # Theta^{l-1} Kdot^{l-1} + K^{l-1} (at l = 1, Theta^0 = 0: K^0 alone)
            backward = k if theta is None else theta * kdot + k
            if tangents:
                d_backward = dk if theta is None else dtheta * kdot + theta * dkdot + dk
                dtheta = _box(d_backward, filter_size) + 1.0
            theta = _box(backward, filter_size) + bf
        scale = xp.sqrt(va[:, None, layer] * vb[None, :, layer])
        rho_l = xp.clip(_safe_divide(sigma_l, scale), -1.0, 1.0)
        kappa1, kappa0 = dual_correlations(rho_l, negative_slope)
        if tangents:
            d_sigma_l = _box(dk, filter_size) + 1.0
            g = _safe_divide(dv[layer], va[:, None, layer])
            g = g + _safe_divide(dv[layer], vb[None, :, layer])
            dk = kappa0 * d_sigma_l + scale * (kappa1 - rho_l * kappa0) * g * 0.5
            d_rho = _safe_divide(d_sigma_l - rho_l * scale * g * 0.5, scale)
            dkdot = kappa0_slope(rho_l, negative_slope) * d_rho
        k = scale * kappa1
        kdot = kappa0
    s_f = _mean(k) + bf
    theta_f = None
    if need_theta:
        theta_f = _mean(k if theta is None else theta * kdot + k) + bf
    norm = xp.sqrt(var_a.sigma[:, None] * var_b.sigma[None, :])
    rho = xp.clip(_safe_divide(s_f, norm), -1.0, 1.0)  # it may leave it by rounding
    ntk = _safe_divide(theta_f, norm) if need_ntk else None
    d_rho_f = d_ntk_f = None
    if tangents:
        # r' = S' / sqrt(sigma sigma') - r (sigma' / sigma + sigma'' / sigma'') / 2
        half = 0.5 * (
            _safe_divide(var_a.d_sigma, var_a.sigma)[:, None]
            + _safe_divide(var_b.d_sigma, var_b.sigma)[None, :]
        )
        d_rho_f = _safe_divide(_mean(dk) + 1.0, norm) - rho * half
        if need_ntk:
            d_theta_f = _mean(dk if theta is None else dtheta * kdot + theta * dkdot + dk) + 1.0
            d_ntk_f = _safe_divide(d_theta_f, norm) - ntk * half
    if same is not None:
        rho = xp.where(same, xp.ones_like(rho), rho)
        positive = (var_a.sigma[:, None] > 0) & (var_b.sigma[None, :] > 0)
        rho = xp.where(same & ~positive, xp.zeros_like(rho), rho)
        if need_ntk:
            ratio = _safe_divide(var_a.theta, var_a.sigma)[:, None] + 0.0 * ntk
            ntk = xp.where(same, ratio, ntk)
        if tangents:
            d_rho_f = xp.where(same, xp.zeros_like(d_rho_f), d_rho_f)
            if need_ntk:
                # d (theta / sigma) = (theta' sigma - theta sigma') / sigma^2
                d_ratio = (
                    _safe_divide(
                        var_a.d_theta * var_a.sigma - var_a.theta * var_a.d_sigma,
                        var_a.sigma * var_a.sigma,
                    )[:, None]
                    + 0.0 * d_ntk_f
                )
                d_ntk_f = xp.where(same, d_ratio, d_ntk_f)
    rho_tangents = [None if db == 0.0 else db * d_rho_f for db in f_biases]
    ntk_tangents = [None if db == 0.0 or not need_ntk else db * d_ntk_f for db in f_biases]
    return MLPCorrelations(rho, ntk, rho_tangents, ntk_tangents)
