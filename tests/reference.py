"""The tests' one reference implementation of the closed forms, in a chosen precision.

The recursions of ``docs/math.md`` written literally, in covariance space, one pair of rows
at a time, with scalar arithmetic only: it shares no code (and no vectorisation, correlation
space or in-place trick) with the package. The precision is a parameter:

* ``"float64"``: Python floats, dot products by :func:`math.fsum`;
* ``"longdouble"``: numpy's extended precision (80-bit on x86);
* ``"mpmath"``: :mod:`mpmath` at the working precision of the caller's context
  (``with mpmath.mp.workdps(40): ...``).

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
) -> tuple:
    """``(HyperNNGP, HyperKernel)`` of one pair of rows, straight from the math page.

    ``Lambda^l = S_f * (Sigma^{l-1} + bg)``, ``Sigma^l = kappa1(Lambda^l)``; the backward
    kernel ``K^{l+1} = Sigma^l + bg + K^l * S_f * Sigmadot^l`` from ``K^1 = Sigma^0 + bg``; the
    hyperkernel is ``Theta^f * K^g`` (``bf``, ``bg``: the bias variances of f and of the g
    that f generates, ../shared/docs/biases.md; both 0: the paper's bias-free network).
    """
    slope = negative_slope
    num = numbers(precision)
    S_f, theta_f = mlp_pair(x, x_other, f_depth, slope, precision, f_bias_variance)
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
    :func:`sklearn_hyperkernel.recursions.hyper_kernels`).
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
