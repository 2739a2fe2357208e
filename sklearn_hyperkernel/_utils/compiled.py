"""What the package's compiled (numba) passes share: options, scalar math, threads.

* :func:`jit`: ``numba.njit`` with the package's options (``fastmath`` off,
  numpy's error model, no GIL, cached on disk), the identity without numba;
  :func:`available` says whether the passes can run compiled.
* Scalar math for the loops: :func:`acos`, :func:`exp` and the dual
  activations :func:`dual` of one entry, with :func:`relu_slope` the constant
  they take. numba would call the C library's scalar ``acos`` and ``exp`` (20
  and 8 ns a value, against 2-3 ns in numpy's vector loops; the llvmlite
  wheels have no vector math library), so :func:`acos` and :func:`exp` follow
  fdlibm's ``e_acos.c`` and ``e_exp.c`` (Sun Microsystems: "Permission to
  use, copy, modify, and distribute this software is freely granted, provided
  that this notice is preserved"), written without branches so that LLVM
  vectorises them; both are within 1 ulp of numpy's, and exact where the
  kernels need it: ``acos(1) = 0``, ``exp(0) = 1``.
* Threads: :func:`threads_are_safe` says whether a call may use numba's thread
  pool (the main thread only, and :func:`._utils.fork.pool_usable`).

Importing this module imports numba (the callers import it when they first
compile); :mod:`._utils.fork`, which the package imports early for its fork
hook, does not.

Users: the fused Gram pass (:mod:`._gram.fused`) and the conv f's table
(:mod:`._f.conv_compiled`).
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

from .fork import pool_usable

try:  # a core dependency; where it cannot be imported the callers keep their numpy paths
    import numba
except ImportError:  # pragma: no cover - exercised where numba is absent
    numba = None

__all__ = [
    "numba",
    "available",
    "jit",
    "acos",
    "exp",
    "dual",
    "relu_slope",
    "threads_are_safe",
]

# fdlibm e_acos.c: acos(x) = pi/2 - (x + x^3 R(x^2)) for |x| < 1/2, else
# 2 asin(sqrt((1 - |x|) / 2)) (or pi minus it) with the same R = P / Q
_PIO2_HI = 1.57079632679489655800e00
_PIO2_LO = 6.12323399573676603587e-17
_PS = (
    1.66666666666666657415e-01,
    -3.25565818622400915405e-01,
    2.01212532134862925881e-01,
    -4.00555345006794114027e-02,
    7.91534994289814532176e-04,
    3.47933107596021167570e-05,
)
_QS = (
    -2.40339491173441421878e00,
    2.02094576023350569471e00,
    -6.88283971605453293030e-01,
    7.70381505559019352791e-02,
)
# fdlibm e_exp.c: x = k ln2 + r with |r| <= ln2 / 2, exp(r) a rational in r^2
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00
_P = (
    1.66666666666666019037e-01,
    -2.77777777770155933842e-03,
    6.61375632143793436117e-05,
    -1.65339022054652515390e-06,
    4.13813679705723846039e-08,
)
_EXP_UNDERFLOW = -745.1332191019412  # exp(x) rounds to 0 below


def available() -> bool:
    """Whether the compiled passes can run (numba installed, its JIT not disabled)."""
    return numba is not None and not numba.config.DISABLE_JIT


def jit(**options: Any):
    """``numba.njit`` with the package's options (cached on disk); the identity without numba."""
    if numba is None:
        return lambda function: function
    # fastmath off: no reassociation, no contraction into FMAs (a * b + c stays
    # two roundings, as in numpy); error_model="numpy": a division by 0 gives
    # inf or nan instead of raising, which keeps the loops free of checks
    options.update(fastmath=False, error_model="numpy", nogil=True)

    def decorate(function):
        try:
            return numba.njit(cache=True, **options)(function)
        except RuntimeError:  # no writable cache folder: compiled in every process
            return numba.njit(**options)(function)

    return decorate


# ---------------------------------------------------------------- one entry


@jit()
def acos(x: float) -> float:
    """``arccos(x)`` for ``x`` in [-1, 1], within 1 ulp; ``acos(1.0) == 0.0``."""
    ax = abs(x)
    small = ax < 0.5
    z = x * x if small else (1.0 - ax) * 0.5
    p = z * (_PS[0] + z * (_PS[1] + z * (_PS[2] + z * (_PS[3] + z * (_PS[4] + z * _PS[5])))))
    r = p / (1.0 + z * (_QS[0] + z * (_QS[1] + z * (_QS[2] + z * _QS[3]))))
    s = math.sqrt(z)
    near_zero = _PIO2_HI - (x - (_PIO2_LO - x * r))
    near_minus_one = 2.0 * _PIO2_HI - 2.0 * (s + (r * s - _PIO2_LO))
    # fdlibm adds the rounding error of s here, (z - h^2) / (s + h) with h the
    # high half of s: a division for less than an ulp, left out
    near_one = 2.0 * (s + r * s)
    if small:
        return near_zero
    return near_minus_one if x < 0.0 else near_one


@jit()
def exp(x: float) -> float:
    """``exp(x)`` for ``x <= 0``, within 1 ulp; ``exp(0.0) == 1.0``."""
    k = max(math.floor(x * _INV_LN2 + 0.5), -1100.0)  # -1100: the result is 0 anyway
    high = x - k * _LN2_HI
    low = k * _LN2_LO
    r = high - low
    t = r * r
    c = r - t * (_P[0] + t * (_P[1] + t * (_P[2] + t * (_P[3] + t * _P[4]))))
    y = 1.0 - ((low - (r * c) / (2.0 - c)) - high)
    # y 2^k as two exact powers of two, so that a subnormal result is rounded once
    k_int = np.int64(k)
    half = k_int >> 1
    first = np.int64((half + 1023) << 52).view(np.float64)
    second = np.int64((k_int - half + 1023) << 52).view(np.float64)
    value = (y * first) * second
    return 0.0 if x < _EXP_UNDERFLOW else value


@jit()
def dual(rho: float, slope: float) -> tuple[float, float]:
    """``(kappa1, kappa0)`` of :func:`~.recursions.dual_correlations` for one entry.

    ``slope`` is ``c / pi`` with ``c = (1 - a)^2 / (1 + a^2)``; the operations
    are those of the array form, in its order.
    """
    rho = min(max(rho, -1.0), 1.0)
    kappa0 = acos(rho) * -slope + 1.0
    kappa1 = math.sqrt(((1.0 - rho) * (1.0 + rho)) * (slope * slope)) + kappa0 * rho
    return kappa1, kappa0


def relu_slope(negative_slope: float) -> float:
    """``c / pi``, ``c = (1 - a)^2 / (1 + a^2)``, the constant :func:`dual` takes.

    As in :func:`~sklearn_hyperkernel.recursions.dual_correlations`: ``a`` is
    the leaky ReLU's negative slope.
    """
    return (1.0 - negative_slope) ** 2 / (1.0 + negative_slope * negative_slope) / math.pi


# ---------------------------------------------------------------- threads


def threads_are_safe() -> bool:
    """Whether this call may use numba's thread pool.

    Only from the main thread: numba's "workqueue" layer (numba's without TBB
    or GNU OpenMP) aborts on concurrent launches, and a caller's worker thread
    has its share of the cores already. Not where :func:`._utils.fork.pool_usable`
    says no: in a process forked after GNU OpenMP's pool started (the "omp"
    layer, not fork-safe), or where the configured layer cannot be loaded.
    """
    return threading.current_thread() is threading.main_thread() and pool_usable()
