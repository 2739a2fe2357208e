"""The tests' one reference implementation of the closed forms, in a chosen precision.

The recursions of ``docs/math.md`` written literally, in covariance space, one pair of rows
at a time, with scalar arithmetic only: it shares no code (and no vectorisation, correlation
space or in-place trick) with the package. The precision is a parameter:

* ``"float64"``: Python floats, dot products by :func:`math.fsum`;
* ``"longdouble"``: numpy's extended precision (80-bit on x86);
* ``"mpmath"``: :mod:`mpmath` at the working precision of the caller's context
  (``with mpmath.mp.workdps(40): ...``).

A convolutional f (:func:`conv_pair`, ../shared/docs/conv-f.md) is written the same way, on
full ``(H W) x (H W)`` maps of position pairs (every pair, not only the diagonal the package
needs), with the box average and the zero padding as the page writes them.

Import it from a test module as ``from reference import ...`` (pytest puts ``tests/`` on
``sys.path``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np


class Numbers(NamedTuple):
    """A number system: conversion from float and the functions the recursions need."""

    number: Callable[[float], Any]
    sqrt: Callable[[Any], Any]
    acos: Callable[[Any], Any]
    sin: Callable[[Any], Any]
    cos: Callable[[Any], Any]
    exp: Callable[[Any], Any]
    pi: Callable[[], Any]
    fsum: Callable[[Any], Any]


def numbers(precision: str) -> Numbers:
    """The :class:`Numbers` of ``"float64"``, ``"longdouble"`` or ``"mpmath"``."""
    if precision == "float64":
        return Numbers(
            float, math.sqrt, math.acos, math.sin, math.cos, math.exp, lambda: math.pi, math.fsum
        )
    if precision == "longdouble":
        ld = np.longdouble
        return Numbers(
            ld,
            np.sqrt,
            np.arccos,
            np.sin,
            np.cos,
            np.exp,
            lambda: np.arccos(ld(-1)),
            lambda terms: sum(terms, ld(0)),
        )
    if precision == "mpmath":
        import mpmath as mp

        return Numbers(mp.mpf, mp.sqrt, mp.acos, mp.sin, mp.cos, mp.exp, lambda: +mp.pi, mp.fsum)
    raise ValueError(f"unknown precision {precision!r}")


def duals(var_a, var_b, cov, slope: float, precision: str = "float64") -> tuple:
    """``(kappa1, kappa0)``: ``E[phi(s) phi(s')]`` and ``E[phi'(s) phi'(s')]`` of a 2x2 covariance.

    ``phi = sqrt(2 / (1 + a^2)) * leaky_relu_a`` (``a = slope``; ``sqrt(2) * relu`` for 0).
    A zero variance makes the pair independent: ``kappa1 = 0``, ``kappa0`` its value at
    ``rho = 0``.
    """
    num = numbers(precision)
    var_a, var_b, cov, slope = (num.number(v) for v in (var_a, var_b, cov, slope))
    pi, norm, relu = num.pi(), 1 + slope**2, (1 - slope) ** 2
    if var_a <= 0 or var_b <= 0:
        return num.number(0), (2 * slope + relu / 2) / norm
    root = num.sqrt(var_a * var_b)
    angle = num.acos(min(num.number(1), max(num.number(-1), cov / root)))
    arc_cosine = (num.sin(angle) + (pi - angle) * num.cos(angle)) / pi
    kappa1 = (2 * slope * cov + relu * root * arc_cosine) / norm
    kappa0 = (2 * slope + relu * (pi - angle) / pi) / norm
    return kappa1, kappa0


def _layer(triple: tuple, slope: float, precision: str) -> tuple[tuple, Any]:
    """The next layer's covariance triple ``(aa, bb, ab)`` and ``kappa0`` of the pair."""
    aa, bb, ab = triple
    k1_ab, k0_ab = duals(aa, bb, ab, slope, precision)
    k1_aa = duals(aa, aa, aa, slope, precision)[0]
    k1_bb = duals(bb, bb, bb, slope, precision)[0]
    return (k1_aa, k1_bb, k1_ab), k0_ab


def _dot(u: Sequence, v: Sequence, num: Numbers) -> Any:
    return num.fsum(num.number(a) * num.number(b) for a, b in zip(u, v, strict=True))


def mlp_pair(
    x, x_other, depth: int, slope: float, precision: str = "float64", bias_variance: float = 0.0
) -> tuple:
    """f's NNGP triple ``(S(x,x), S(x',x'), S(x,x'))`` at layer ``L-1``, and ``Theta^f(x,x')``.

    ``S^0 = x.x' / n0 + bf``, ``S^l = kappa1(S^{l-1}) + bf``; ``Theta^{l+1} = Theta^l * Sdot^l
    + S^l`` from ``Theta^1 = S^0`` (``bf = bias_variance``; ../shared/docs/biases.md).
    """
    num = numbers(precision)
    n0 = num.number(len(x))
    bf = num.number(bias_variance)
    S = (_dot(x, x, num) / n0, _dot(x_other, x_other, num) / n0, _dot(x, x_other, num) / n0)
    S = tuple(s + bf for s in S)
    theta = S[2]
    for _ in range(1, depth):
        S, kappa0 = _layer(S, slope, precision)
        S = tuple(s + bf for s in S)
        theta = theta * kappa0 + S[2]
    return S, theta


def _image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    dims = [int(d) for d in image_shape]
    return (dims[0], dims[1], 1) if len(dims) == 2 else (dims[0], dims[1], dims[2])


def _box(A: list, height: int, width: int, filter_size: int, num: Numbers) -> list:
    """``(B A)(p, p') = mean over d in the k x k window of A(p + d, p' + d)``, 0 outside.

    ``A`` is a full map over pairs of positions, a list of lists indexed by ``p = i W + j``.
    Both positions move by the same offset; a term whose ``p + d`` or ``p' + d`` falls
    outside the image is 0, and the mean still divides by ``k * k``.
    """
    half = filter_size // 2
    offsets = [(a, b) for a in range(-half, half + 1) for b in range(-half, half + 1)]
    count = num.number(filter_size * filter_size)
    n_positions = height * width
    out = [[num.number(0)] * n_positions for _ in range(n_positions)]
    for p in range(n_positions):
        i, j = divmod(p, width)
        for q in range(n_positions):
            k, m = divmod(q, width)
            terms = []
            for a, b in offsets:
                if 0 <= i + a < height and 0 <= j + b < width:
                    if 0 <= k + a < height and 0 <= m + b < width:
                        terms.append(A[(i + a) * width + j + b][(k + a) * width + m + b])
            out[p][q] = num.fsum(terms) / count if terms else num.number(0)
    return out


def conv_pair(
    x,
    x_other,
    image_shape: Sequence[int],
    filter_size: int,
    depth: int,
    slope: float,
    precision: str = "float64",
    bias_variance: float = 0.0,
) -> tuple:
    """A conv f's NNGP triple ``(S_f(x,x), S_f(x',x'), S_f(x,x'))`` and ``Theta^f(x,x')``.

    ../shared/docs/conv-f.md on full position-pair maps: ``x`` is ``x.reshape(H, W, C0)``
    (row-major, channels last); ``K^0(p, p') = x(p) . x'(p') / C0``, and for the
    ``D = depth - 1`` conv layers ``Sigma^l = B K^{l-1} + bf``,
    ``Theta^l = B (Theta^{l-1} Kdot^{l-1} + K^{l-1}) + bf`` (``Theta^0 = 0``, ``Kdot^0 = 1``),
    ``K^l = kappa1(Sigma^l)``, ``Kdot^l = kappa0(Sigma^l)`` with the variances
    ``Sigma^l(x, x)(p, p)`` and ``Sigma^l(x', x')(p', p')``; the dense readout gives
    ``S_f = mean_p K^D(p, p) + bf`` and ``Theta^f = mean_p [Theta^D Kdot^D + K^D](p, p) + bf``.
    A zero variance gives ``kappa1 = 0`` (:func:`duals`). ``bf = bias_variance``.
    """
    num = numbers(precision)
    height, width, channels = _image_shape(image_shape)
    n_positions = height * width
    bf = num.number(bias_variance)
    c0 = num.number(channels)

    def pixels(image) -> list:
        values = list(image)
        if len(values) != n_positions * channels:
            raise ValueError(f"an image of {image_shape} has {n_positions * channels} values")
        return [values[p * channels : (p + 1) * channels] for p in range(n_positions)]

    a, b = pixels(x), pixels(x_other)
    # the three maps: (x, x), (x', x'), (x, x')
    pairs = ((a, a), (b, b), (a, b))
    K = [
        [[_dot(u[p], v[q], num) / c0 for q in range(n_positions)] for p in range(n_positions)]
        for u, v in pairs
    ]
    Kdot = [[[num.number(1)] * n_positions for _ in range(n_positions)] for _ in range(3)]
    theta = [[num.number(0)] * n_positions for _ in range(n_positions)]  # of (x, x') only
    for _ in range(depth - 1):
        inner = [
            [theta[p][q] * Kdot[2][p][q] + K[2][p][q] for q in range(n_positions)]
            for p in range(n_positions)
        ]
        theta = [[t + bf for t in row] for row in _box(inner, height, width, filter_size, num)]
        sigma = [
            [[s + bf for s in row] for row in _box(K[m], height, width, filter_size, num)]
            for m in range(3)
        ]
        variances = (
            [sigma[0][p][p] for p in range(n_positions)],
            [sigma[1][p][p] for p in range(n_positions)],
        )
        K, Kdot = [], []
        for m, (first, second) in enumerate(((0, 0), (1, 1), (0, 1))):
            k1_map, k0_map = [], []
            for p in range(n_positions):
                k1_row, k0_row = [], []
                for q in range(n_positions):
                    k1, k0 = duals(
                        variances[first][p], variances[second][q], sigma[m][p][q], slope, precision
                    )
                    k1_row.append(k1)
                    k0_row.append(k0)
                k1_map.append(k1_row)
                k0_map.append(k0_row)
            K.append(k1_map)
            Kdot.append(k0_map)
    count = num.number(n_positions)
    S = tuple(num.fsum(K[m][p][p] for p in range(n_positions)) / count + bf for m in range(3))
    readout = num.fsum(theta[p][p] * Kdot[2][p][p] + K[2][p][p] for p in range(n_positions)) / count
    return S, readout + bf


def f_pair(
    x,
    x_other,
    depth: int,
    slope: float,
    precision: str = "float64",
    bias_variance: float = 0.0,
    f_architecture: str = "dense",
    image_shape: Sequence[int] | None = None,
    filter_size: int = 3,
) -> tuple:
    """f's ``(S_f triple, Theta^f)``: :func:`mlp_pair`, or :func:`conv_pair` for ``"conv"``."""
    if f_architecture == "dense":
        return mlp_pair(x, x_other, depth, slope, precision, bias_variance)
    if f_architecture == "conv":
        return conv_pair(
            x, x_other, image_shape, filter_size, depth, slope, precision, bias_variance
        )
    raise ValueError(f"unknown f_architecture {f_architecture!r}")


def z_kernel(z, z_other, encoding: str, length_scale=1.0, precision: str = "float64") -> Any:
    """``Sigma^0(z, z')``: ``z.z' / m0``, or ``exp(-sum_d (z_d - z'_d)^2 / (2 ell_d^2))``."""
    num = numbers(precision)
    if encoding == "linear":
        return _dot(z, z_other, num) / num.number(len(z))
    scales = np.broadcast_to(np.asarray(length_scale, dtype=float), (len(z),))
    squares = (
        ((num.number(a) - num.number(b)) / num.number(s)) ** 2
        for a, b, s in zip(z, z_other, scales, strict=True)
    )
    return num.exp(-num.fsum(squares) / 2)


def hyper_pair(
    x,
    z,
    x_other,
    z_other,
    f_depth: int,
    g_depth: int,
    z_encoding: str = "linear",
    length_scale=1.0,
    negative_slope: float = 0.0,
    precision: str = "float64",
    f_bias_variance: float = 0.0,
    g_bias_variance: float = 0.0,
    f_architecture: str = "dense",
    image_shape: Sequence[int] | None = None,
    filter_size: int = 3,
) -> tuple:
    """``(HyperNNGP, HyperKernel)`` of one pair of rows, straight from the math page.

    ``Lambda^l = S_f * (Sigma^{l-1} + bg)``, ``Sigma^l = kappa1(Lambda^l)``; the backward
    kernel ``K^{l+1} = Sigma^l + bg + K^l * S_f * Sigmadot^l`` from ``K^1 = Sigma^0 + bg``; the
    hyperkernel is ``Theta^f * K^g`` (``bf``, ``bg``: the bias variances of f and of the g
    that f generates, ../shared/docs/biases.md; both 0: the paper's bias-free network).
    f is an MLP, or with ``f_architecture="conv"`` the conv f of :func:`conv_pair`.
    """
    slope = negative_slope
    num = numbers(precision)
    S_f, theta_f = f_pair(
        x,
        x_other,
        f_depth,
        slope,
        precision,
        f_bias_variance,
        f_architecture,
        image_shape,
        filter_size,
    )
    bg = num.number(g_bias_variance)
    sigma = tuple(
        z_kernel(a, b, z_encoding, length_scale, precision)
        for a, b in ((z, z), (z_other, z_other), (z, z_other))
    )
    lam = tuple(S_f[i] * (sigma[i] + bg) for i in range(3))
    k_g = sigma[2] + bg
    for _ in range(1, g_depth):
        sigma, kappa0 = _layer(lam, slope, precision)
        k_g = sigma[2] + bg + k_g * S_f[2] * kappa0
        lam = tuple(S_f[i] * (sigma[i] + bg) for i in range(3))
    return lam[2], theta_f * k_g


def hyper_grams(
    x_a, z_a, x_b=None, z_b=None, *, precision: str = "float64", **architecture
) -> tuple[np.ndarray, np.ndarray]:
    """``(HyperNNGP, HyperKernel)`` Gram matrices by :func:`hyper_pair`, rounded to float64.

    ``architecture``: ``f_depth``, ``g_depth``, and optionally ``z_encoding``,
    ``length_scale``, ``negative_slope``, ``f_bias_variance``, ``g_bias_variance`` (the names of
    :func:`sklearn_hyperkernel.recursions.hyper_kernels`), ``f_architecture``, ``image_shape``,
    ``filter_size`` (a conv f, :func:`conv_pair`).
    """
    x_b = x_a if x_b is None else x_b
    z_b = z_a if z_b is None else z_b
    nngp = np.empty((len(x_a), len(x_b)))
    ntk = np.empty_like(nngp)
    for i in range(len(x_a)):
        for j in range(len(x_b)):
            pair = hyper_pair(
                list(x_a[i]),
                list(z_a[i]),
                list(x_b[j]),
                list(z_b[j]),
                precision=precision,
                **architecture,
            )
            nngp[i, j], ntk[i, j] = (float(value) for value in pair)
    return nngp, ntk
