"""No silent wrong answer at extreme input scales (issue 21, fault class 2).

x (or z, with the linear encoding) scaled by many orders of magnitude, with
``normalize_x=False`` (GPy #898, GPyOpt #48, GPyTorch #623). Before the fix, x
scaled by 1e-150 gave a kernel of exact zeros and regressors that predicted the
training mean without a word (Nyström: a cryptic reshape error); 1e150 gave
infinities; and Nyström's normal equations, which square the kernel, returned
predictions off by 8e3 for x scaled by 1e-45 (a kernel of 1e-180). Now the
kernels refuse values float64 cannot hold, naming the columns and
``normalize_x``, and every solver gives the scale-free answer in between.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import PAPER_KERNEL
from numpy.testing import assert_allclose

from sklearn_hyperkernel import HyperKernel, HyperKernelRegressor, HyperNNGP

RNG = np.random.default_rng(0)
U = RNG.normal(size=(40, 5))  # x: columns 0-2, z: columns 3-4
Y = np.sin(U[:, 0]) + U[:, -1]
SOLVERS = ["cholesky", "cg", "nystrom", "auto"]


def scaled(scale: float, part: str) -> np.ndarray:
    V = U.copy()
    if part == "x":
        V[:, :3] *= scale
    else:
        V[:, 3:] *= scale
    return V


# (part, encoding, scale): the kernel's diagonal, of order s^2 or e, leaves float64
UNREPRESENTABLE = [
    ("x", "fourier", 1e-150),
    ("x", "fourier", 1e150),
    ("x", "linear", 1e-150),
    ("x", "linear", 1e150),
    ("z", "linear", 1e-160),
    ("z", "linear", 1e160),
]


@pytest.mark.parametrize(("part", "encoding", "scale"), UNREPRESENTABLE)
@pytest.mark.parametrize("kernel_class", [HyperKernel, HyperNNGP])
def test_kernels_refuse_values_float64_cannot_hold(part, encoding, scale, kernel_class):
    kernel = kernel_class(**PAPER_KERNEL, z_encoding=encoding)
    which = "underflow" if scale < 1 else "overflow"
    columns = "x \\(columns 0 to 2\\)" if part == "x" else "z \\(columns 3 to 4\\)"
    for call in (kernel, kernel.diag, kernel.factorize_rows, lambda V: kernel(U, V)):
        with pytest.raises(ValueError, match=f"{which}.*{columns}.*normalize_x=False"):
            call(scaled(scale, part))


@pytest.mark.parametrize(("part", "encoding", "scale"), UNREPRESENTABLE)
@pytest.mark.parametrize("solver", SOLVERS)
def test_regressors_refuse_them_on_every_solver(part, encoding, scale, solver):
    model = HyperKernelRegressor(**PAPER_KERNEL, z_encoding=encoding, solver=solver, random_state=0)
    with pytest.raises(ValueError, match="underflow|overflow"):
        model.fit(scaled(scale, part), Y)
    fitted = model.fit(U, Y)  # and at prediction
    with pytest.raises(ValueError, match="normalize_x"):
        fitted.predict(scaled(scale, part))


def test_a_tiny_x_is_not_taken_for_zero_with_normalize_x():
    # |x|^2 underflows to 0: before, the row silently had kernel 0 with every row
    with pytest.raises(ValueError, match="cannot be put on the sphere"):
        HyperKernel(normalize_x=True)(scaled(1e-170, "x"))
    assert_allclose(
        HyperKernel(normalize_x=True)(scaled(1e-100, "x")), HyperKernel(normalize_x=True)(U)
    )


@pytest.mark.parametrize("scale", [1e-20, 1e20])
@pytest.mark.parametrize("kernel_class", [HyperKernel, HyperNNGP])
@pytest.mark.parametrize("encoding", ["fourier", "linear"])
def test_kernels_are_homogeneous_of_degree_2_g_depth_in_x(scale, kernel_class, encoding):
    kernel = kernel_class(**PAPER_KERNEL, z_encoding=encoding, g_depth=2)
    assert_allclose(kernel(scaled(scale, "x")), scale**4 * kernel(U), rtol=1e-10)


@pytest.mark.parametrize(
    ("part", "encoding", "scale"),
    [
        ("x", "fourier", 1e-20),
        ("x", "fourier", 1e-45),  # a kernel of 1e-180: Nystrom's squares underflowed
        ("x", "linear", 1e45),
        ("x", "fourier", 1e60),
        ("z", "linear", 1e-60),
        ("z", "linear", 1e70),
    ],
)
@pytest.mark.parametrize("solver", SOLVERS)
def test_every_solver_gives_the_scale_free_answer(part, encoding, scale, solver):
    # the relative ridge makes kernel ridge regression with a homogeneous kernel
    # independent of the scale of x (and of z with the linear encoding)
    params = dict(**PAPER_KERNEL, z_encoding=encoding, solver=solver, random_state=0, tol=1e-10)
    reference = HyperKernelRegressor(**params).fit(U, Y).predict(U)
    V = scaled(scale, part)
    assert_allclose(
        HyperKernelRegressor(**params).fit(V, Y).predict(V),
        reference,
        atol=1e-8,
    )


@pytest.mark.parametrize("kernel_class", [HyperKernel, HyperNNGP])
def test_a_bias_of_f_bounds_the_diagonal_from_below(kernel_class):
    """With ``f_bias_variance > 0`` a tiny x is an ordinary input (its kernel is that of x = 0
    to rounding), not an underflow; a huge x still overflows and is refused."""
    rng = np.random.default_rng(3)
    U = rng.normal(size=(7, 5))
    kernel = kernel_class(f_bias_variance=0.5, g_bias_variance=0.2, normalize_x=False)
    tiny, zero = U.copy(), U.copy()
    tiny[:, :3] *= 1e-200
    zero[:, :3] = 0.0
    K = kernel(tiny)
    assert np.all(np.isfinite(K)) and np.all(np.diag(K) > 0)
    np.testing.assert_allclose(K, kernel(zero), rtol=1e-12)
    huge = U.copy()
    huge[:, :3] *= 1e200
    with pytest.raises(ValueError, match="overflow"):
        kernel(huge)


@pytest.mark.parametrize("scale", [1e-150, 1e-45, 1e45, 1e150])
@pytest.mark.parametrize("solver", ["cholesky", "nystrom"])
def test_the_default_x_scale_makes_the_regressor_scale_free(scale, solver):
    """``normalize_x="scale"`` (the default, with biases): x_scale_ is computed on x / max|x|,
    so |x|^2 of 1e-150 or 1e150 neither underflows nor overflows, and every x is divided by
    it: the model of x scaled by c is the model of x, its x_scale_ c times larger."""
    params = dict(solver=solver, random_state=0)
    reference = HyperKernelRegressor(**params).fit(U, Y)
    V = scaled(scale, "x")
    model = HyperKernelRegressor(**params).fit(V, Y)
    assert_allclose(model.x_scale_, scale * reference.x_scale_, rtol=1e-13)
    assert_allclose(reference.x_scale_, np.sqrt(np.mean(U[:, :3] ** 2)), rtol=1e-13)
    assert_allclose(model.predict(V), reference.predict(U), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("scale", [1e-200, 1.0, 1e200])
def test_scale_safe_root_is_homogeneous_where_the_plain_square_is_not(scale):
    """The one scale-safe root (``x_scale_``, z's spread for ``length_scale="scale"``, the
    largest |x| that predict's extrapolation warning compares): the RMS and the largest row
    RMS of rows scaled by 1e+-200 are the unscaled ones times the scale, where squaring the
    rows themselves gives 0 or inf; chunked over 4096 rows, the maximum is that of all rows."""
    from sklearn_hyperkernel._utils.arrays import scale_safe_root

    rows = np.random.default_rng(1).normal(size=(9000, 3))
    rows[7777] *= 5.0  # the largest row sits in the second chunk
    rms = np.sqrt(np.mean(rows**2))
    largest = np.sqrt(np.max(np.mean(rows**2, axis=1)))
    V = rows * scale

    assert_allclose(scale_safe_root(V, lambda r: np.mean(r**2)), scale * rms, rtol=1e-14)
    row_max = scale_safe_root(V, lambda r: np.max(np.mean(r**2, axis=1)), chunked=True)
    assert_allclose(row_max, scale * largest, rtol=1e-14)
    assert np.mean(V**2) in (0.0, np.inf) or scale == 1.0  # what the plain square gives
    assert scale_safe_root(np.zeros((3, 2)), lambda r: 1 / 0) == 0.0  # not called
    assert scale_safe_root(np.zeros((0, 2)), lambda r: 1 / 0) == 0.0
