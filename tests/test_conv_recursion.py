"""The convolutional f's recursion (``_f.conv_recursion``) and its compiled twin.

The exact identities of ``../shared/docs/conv-f.md`` (``f_depth = 1`` is the dense f,
``filter_size = 1`` the pixel average of the dense kernel, ``Theta^f(x, x) = f_depth S_f(x,
x)``, homogeneity, zero and sparse images), the border's loss of energy in closed form, the
forward-mode bias tangents against finite differences, numpy against torch, and the compiled
table against the array functions.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from sklearn_hyperkernel._f import conv_recursion as cr
from sklearn_hyperkernel.recursions import Direction, mlp_kernels

SHAPES = [(5, 4, 2), (7, 5, 2)]


def _images(shape, seed=0):
    """Six images: two generic, a zero one, a sparse corner one, a repeat and a scaled copy."""
    rng = np.random.default_rng(seed)
    x = np.zeros((6, *shape))
    x[0] = rng.standard_normal(shape)
    x[1] = rng.standard_normal(shape)
    x[3, 0, 0, :] = rng.standard_normal(shape[2])
    x[3, 0, 1, 0] = 0.7
    x[4] = x[0]
    x[5] = 2.5 * x[1]
    return x


def _same(a, b):
    return np.all((a[:, None] == b[None, :]).reshape(a.shape[0], b.shape[0], -1), axis=-1)


def _kernels(a, b, filter_size, f_depth, slope=0.0, bf=0.0):
    """Unnormalised ``S_f`` and ``Theta^f`` of all pairs, and both variances."""
    var_a = cr.conv_variances(a, filter_size, f_depth, bf)
    var_b = cr.conv_variances(b, filter_size, f_depth, bf)
    c = cr.conv_correlations(a, b, var_a, var_b, filter_size, f_depth, slope, bias_variance=bf)
    scale = np.sqrt(np.outer(var_a.sigma, var_b.sigma))
    return c.rho * scale, c.ntk * scale, var_a, var_b


CASES = list(itertools.product(SHAPES, [1, 2, 3], [3, 5], [0.0, 0.2], [0.0, 0.4]))


def _case_id(case):
    shape, f_depth, k, slope, bf = case
    return f"{'x'.join(map(str, shape))}-L{f_depth}-k{k}-a{slope}-bf{bf}"


# ------------------------------------------------------------------ exact identities


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("bf", [0.0, 0.3])
@pytest.mark.parametrize("slope", [0.0, 0.2])
def test_depth_one_is_the_dense_f_of_depth_one(shape, bf, slope):
    x = _images(shape)
    nngp, ntk, var, _ = _kernels(x, x, 3, 1, slope, bf)
    flat = x.reshape(6, -1)
    expected_nngp, expected_ntk = mlp_kernels(flat, depth=1, negative_slope=slope, bias_variance=bf)
    np.testing.assert_allclose(nngp, expected_nngp, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(ntk, expected_ntk, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(var.sigma, np.sum(flat * flat, axis=1) / flat.shape[1] + bf)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("f_depth", [1, 2, 3])
@pytest.mark.parametrize("bf", [0.0, 0.3])
@pytest.mark.parametrize("slope", [0.0, 0.2])
def test_filter_size_one_is_the_pixel_average_of_the_dense_kernel(shape, f_depth, bf, slope):
    # not the scaled copy: a parallel pair's correlation is 1 - ulp in one path and 1 in the
    # other, which kappa0 (slope infinite at 1) turns into 1e-9 (tested by homogeneity below)
    x = _images(shape)[:5]
    nngp, ntk, _, _ = _kernels(x, x, 1, f_depth, slope, bf)
    n, h, w, c = x.shape
    expected_nngp = np.zeros((n, n))
    expected_ntk = np.zeros((n, n))
    for i, j in itertools.product(range(h), range(w)):
        pixel_nngp, pixel_ntk = mlp_kernels(
            x[:, i, j, :], depth=f_depth, negative_slope=slope, bias_variance=bf
        )
        expected_nngp += pixel_nngp / (h * w)
        expected_ntk += pixel_ntk / (h * w)
    np.testing.assert_allclose(nngp, expected_nngp, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ntk, expected_ntk, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("f_depth", [1, 2, 3])
@pytest.mark.parametrize("k", [3, 5])
def test_ntk_diagonal_is_depth_times_nngp_without_bias(shape, f_depth, k):
    x = _images(shape)
    _, ntk, var, _ = _kernels(x, x, k, f_depth)
    np.testing.assert_allclose(var.theta, f_depth * var.sigma, rtol=1e-14)
    np.testing.assert_allclose(np.diag(ntk), f_depth * var.sigma, rtol=1e-13)
    assert np.all(var.sigma[[0, 1, 3, 4, 5]] > 0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("f_depth", [1, 2, 3])
@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("slope", [0.0, 0.2])
def test_scaling_one_image_scales_both_kernels(shape, f_depth, k, slope):
    x = _images(shape)
    c = 2.7
    nngp, ntk, _, _ = _kernels(x, x, k, f_depth, slope)
    nngp_c, ntk_c, var_c, _ = _kernels(c * x, x, k, f_depth, slope)
    np.testing.assert_allclose(nngp_c, c * nngp, rtol=1e-12, atol=1e-15)
    # parallel pairs (c x with x, x[4] = x[0], x[5] = 2.5 x[1]): a correlation of 1 - ulp
    # there, which kappa0's infinite slope at 1 turns into ~1e-9 (neural-tangents alike)
    parallel = np.eye(6, dtype=bool)
    parallel[[0, 4, 0, 4, 1, 5], [4, 0, 0, 4, 5, 1]] = True
    np.testing.assert_allclose(ntk_c[~parallel], c * ntk[~parallel], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ntk_c[parallel], c * ntk[parallel], rtol=1e-8)
    # and x[5] = 2.5 x[1]: S_f(x, x[5]) = 2.5 S_f(x, x[1])
    np.testing.assert_allclose(nngp[:, 5], 2.5 * nngp[:, 1], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("f_depth", [1, 2, 3])
@pytest.mark.parametrize("k", [3, 5])
def test_zero_and_sparse_images_are_finite_and_a_zero_image_gives_zeros(f_depth, k):
    x = _images((7, 5, 2))
    var = cr.conv_variances(x, k, f_depth)
    c = cr.conv_correlations(x, x, var, var, k, f_depth, same=_same(x, x))
    for value in (c.rho, c.ntk, var.maps, var.sigma, var.theta):
        assert np.all(np.isfinite(value))
    assert np.all(c.rho[2] == 0.0) and np.all(c.ntk[:, 2] == 0.0)
    assert var.sigma[2] == 0.0 and var.theta[2] == 0.0
    # the sparse corner image: far positions have an all-zero receptive field ...
    if f_depth == 3 and k == 3:
        assert np.any(var.maps[3, -1] == 0.0) and np.any(var.maps[3, -1] > 0.0)
    # ... yet it is an ordinary image: positive variance, correlations in [-1, 1]
    assert var.sigma[3] > 0 and c.rho[3, 3] == 1.0 and np.all(np.abs(c.rho) <= 1.0)
    # with biases a zero image is an ordinary input (only the biases reach the output)
    var_b = cr.conv_variances(x, k, f_depth, 0.5)
    c_b = cr.conv_correlations(x, x, var_b, var_b, k, f_depth, bias_variance=0.5)
    assert np.all(np.isfinite(c_b.rho)) and np.all(c_b.rho[2] > 0.0)


def test_zero_padding_loses_energy_at_the_border():
    """conv-f.md's point: ``S_f(x, x)`` is not ``|x|^2 / n0``. One box average keeps the
    energy of an interior image and keeps 4/9 of a corner pixel's (k = 3: the 2 x 2 of its
    3 x 3 window inside the image); a generic image loses some."""
    h, w, c = 7, 5, 2
    interior = np.zeros((1, h, w, c))
    interior[0, 3, 2] = [1.0, -2.0]  # two layers' windows (radius 2) stay inside
    corner = np.zeros((1, h, w, c))
    corner[0, 0, 0] = [1.0, -2.0]
    s = 5.0 / (h * w * c)  # |x|^2 / n0
    np.testing.assert_allclose(cr.conv_variances(interior, 3, 3).sigma, [s], rtol=1e-14)
    np.testing.assert_allclose(cr.conv_variances(corner, 3, 2).sigma, [4.0 / 9.0 * s], rtol=1e-14)
    generic = _images((h, w, c))[:2]
    sigma = cr.conv_variances(generic, 3, 3).sigma
    assert np.all(sigma < 0.9 * np.sum(generic**2, axis=(1, 2, 3)) / (h * w * c))


@pytest.mark.parametrize("f_depth", [1, 2, 3])
@pytest.mark.parametrize("bf", [0.0, 0.4])
def test_variances_are_the_pair_recursion_on_an_image_with_itself(f_depth, bf):
    """The linear recursion of :func:`conv_variances` equals the pair recursion bit for bit on
    coincident pairs (same operations), and the bf-derivatives are those of an affine map."""
    x = _images((5, 4, 2))
    var = cr.conv_variances(x, 3, f_depth, bf)
    c = cr.conv_correlations(x, x, var, var, 3, f_depth, bias_variance=bf)
    nonzero = var.sigma > 0
    assert np.all(np.diag(c.rho)[nonzero] == 1.0)
    ratio = var.theta[nonzero] / var.sigma[nonzero]
    np.testing.assert_allclose(np.diag(c.ntk)[nonzero], ratio, rtol=1e-15)
    shifted = cr.conv_variances(x, 3, f_depth, bf + 0.25)
    np.testing.assert_allclose(shifted.sigma - var.sigma, 0.25 * var.d_sigma, rtol=1e-12)
    np.testing.assert_allclose(shifted.theta - var.theta, 0.25 * var.d_theta, rtol=1e-12)
    if f_depth == 1:
        assert np.all(var.d_sigma == 1.0) and np.all(var.d_theta == 1.0)


@pytest.mark.parametrize("bf", [0.0, 0.4])
def test_same_pairs_are_exactly_one(bf):
    x = _images((7, 5, 2))
    x[1] = x[1] * (1.0 + 1e-15)  # rounding would not give exactly 1 between 1 and this one
    var = cr.conv_variances(x, 3, 3, bf)
    same = _same(x, x)
    directions = [Direction(f_bias=bf or 1.0)]
    c = cr.conv_correlations(x, x, var, var, 3, 3, same=same, bias_variance=bf)
    has_variance = var.sigma[:, None] * var.sigma[None, :] > 0
    assert np.all(c.rho[same & has_variance] == 1.0)
    ratio = np.broadcast_to((var.theta / np.where(var.sigma > 0, var.sigma, 1))[:, None], (6, 6))
    assert np.all(c.ntk[same & has_variance] == ratio[same & has_variance])
    assert np.all(c.rho[same & ~has_variance] == 0.0)
    if bf:
        t = cr.conv_correlations(
            x, x, var, var, 3, 3, same=same, bias_variance=bf, directions=directions
        )
        assert np.all(t.rho_tangents[0][same] == 0.0)
        # equal images: d(theta / sigma) / d log bf
        d_ratio = bf * (var.d_theta * var.sigma - var.theta * var.d_sigma) / var.sigma**2
        np.testing.assert_allclose(t.ntk_tangents[0][0, 4], d_ratio[0], rtol=1e-13)


# ------------------------------------------------------------------ tangents in bf


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_bias_tangents_equal_central_differences(case):
    shape, f_depth, k, slope, bf = case
    x = _images(shape, seed=1)
    a, b = x[[0, 1, 3, 5]], x[[1, 2, 4]]
    same = _same(a, b)

    def normalised(variance):
        var_a = cr.conv_variances(a, k, f_depth, variance)
        var_b = cr.conv_variances(b, k, f_depth, variance)
        c = cr.conv_correlations(
            a, b, var_a, var_b, k, f_depth, slope, bias_variance=variance, same=same
        )
        return c.rho, c.ntk

    base = bf or 0.3  # the derivative in log bf, at bf > 0
    var_a = cr.conv_variances(a, k, f_depth, base)
    var_b = cr.conv_variances(b, k, f_depth, base)
    c = cr.conv_correlations(
        a,
        b,
        var_a,
        var_b,
        k,
        f_depth,
        slope,
        bias_variance=base,
        same=same,
        directions=[Direction(), Direction(f_bias=base), Direction(g_bias=1.0, z=True)],
    )
    assert c.rho_tangents[0] is None and c.rho_tangents[2] is None and c.ntk_tangents[2] is None
    step = 1e-5
    plus, minus = normalised(base * np.exp(step)), normalised(base * np.exp(-step))
    for tangent, p, m in zip((c.rho_tangents[1], c.ntk_tangents[1]), plus, minus, strict=True):
        np.testing.assert_allclose(tangent, (p - m) / (2 * step), rtol=1e-6, atol=1e-8)
    assert np.max(np.abs(c.ntk_tangents[1])) > 1e-3  # not trivially zero


def test_tangents_without_ntk_and_the_value_of_the_bias_derivative():
    x = _images((5, 4, 2))
    var = cr.conv_variances(x, 3, 2, 0.5)
    c = cr.conv_correlations(
        x, x, var, var, 3, 2, need_ntk=False, bias_variance=0.5, directions=[Direction(0.5)]
    )
    full = cr.conv_correlations(x, x, var, var, 3, 2, bias_variance=0.5, directions=[Direction(1)])
    assert c.ntk is None and c.ntk_tangents == [None]
    np.testing.assert_allclose(c.rho_tangents[0], 0.5 * full.rho_tangents[0], rtol=1e-15)


# ------------------------------------------------------------------ numpy and torch


@pytest.mark.parametrize("f_depth", [1, 3])
@pytest.mark.parametrize("bf", [0.0, 0.4])
def test_torch_equals_numpy(f_depth, bf):
    torch = pytest.importorskip("torch")
    x = _images((7, 5, 2))
    a, b = x[:4], x[2:]
    kw = dict(negative_slope=0.2, bias_variance=bf, directions=[Direction(f_bias=bf or 1.0)])
    expected = cr.conv_correlations(
        a,
        b,
        cr.conv_variances(a, 5, f_depth, bf),
        cr.conv_variances(b, 5, f_depth, bf),
        5,
        f_depth,
        same=_same(a, b),
        **kw,
    )
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    got = cr.conv_correlations(
        ta,
        tb,
        cr.conv_variances(ta, 5, f_depth, bf),
        cr.conv_variances(tb, 5, f_depth, bf),
        5,
        f_depth,
        same=torch.from_numpy(_same(a, b)),
        **kw,
    )
    for g, e in zip(
        (got.rho, got.ntk, got.rho_tangents[0], got.ntk_tangents[0]),
        (expected.rho, expected.ntk, expected.rho_tangents[0], expected.ntk_tangents[0]),
        strict=True,
    ):
        assert isinstance(g, torch.Tensor) and g.dtype == torch.float64
        np.testing.assert_allclose(g.numpy(), e, rtol=1e-12, atol=1e-14)


def test_torch_autograd_through_the_images_equals_finite_differences():
    """The array functions are differentiable by autograd: d Theta^f(x, x') / d x(p, c)."""
    torch = pytest.importorskip("torch")
    x = _images((5, 4, 2))[[0, 1]]

    def value(images):
        # distinct images only: at correlation 1 (an image with itself) kappa0's slope is
        # infinite, and autograd's 0 * inf would spread a NaN to the other entries
        a, b = images[:1], images[1:]
        var_a, var_b = cr.conv_variances(a, 3, 3, 0.4), cr.conv_variances(b, 3, 3, 0.4)
        c = cr.conv_correlations(a, b, var_a, var_b, 3, 3, 0.2, bias_variance=0.4)
        return c.ntk[0, 0] * torch.sqrt(var_a.sigma[0] * var_b.sigma[0])

    images = torch.from_numpy(x).requires_grad_(True)
    (gradient,) = torch.autograd.grad(value(images), images)
    step = 1e-6
    for index in [(0, 2, 1, 0), (1, 0, 3, 1), (0, 4, 0, 1)]:
        plus, minus = x.copy(), x.copy()
        plus[index] += step
        minus[index] -= step
        with torch.no_grad():
            fd = (value(torch.from_numpy(plus)) - value(torch.from_numpy(minus))) / (2 * step)
        np.testing.assert_allclose(float(gradient[index]), float(fd), rtol=1e-6)
        assert abs(float(fd)) > 1e-4


# ------------------------------------------------------------------ bad input


def test_bad_input_raises_value_errors_naming_the_parameter():
    x = _images((5, 4, 2))
    var = cr.conv_variances(x, 3, 2)
    with pytest.raises(ValueError, match="filter_size"):
        cr.conv_variances(x, 2, 2)
    with pytest.raises(ValueError, match="filter_size"):
        cr.conv_variances(x, 0, 2)
    with pytest.raises(ValueError, match="f_depth"):
        cr.conv_variances(x, 3, 0)
    with pytest.raises(ValueError, match="bias_variance"):
        cr.conv_variances(x, 3, 2, -1.0)
    with pytest.raises(ValueError, match="images"):
        cr.conv_variances(x[0], 3, 2)
    with pytest.raises(ValueError, match="var_b"):
        cr.conv_correlations(x, x[:2], var, var, 3, 2)
    with pytest.raises(ValueError, match="var_a"):
        cr.conv_correlations(x, x, var, var, 3, 3)
    with pytest.raises(ValueError, match="same"):
        cr.conv_correlations(x, x, var, var, 3, 2, same=np.ones((6, 5), bool))
    with pytest.raises(ValueError, match="images_a and images_b"):
        cr.conv_correlations(x, x[:, :4], var, var, 3, 2)


# ------------------------------------------------------------------ the compiled table

COMPILED_CASES = list(itertools.product(SHAPES, [1, 2, 3], [3, 5], [0.0, 0.2], [0.0, 0.4]))


def _compiled():
    pytest.importorskip("numba")
    from sklearn_hyperkernel._f import conv_compiled

    if not conv_compiled.available():
        pytest.skip("numba's JIT is disabled")
    return conv_compiled


@pytest.mark.parametrize("case", COMPILED_CASES, ids=_case_id)
def test_compiled_table_equals_the_array_functions(case):
    cc = _compiled()
    shape, f_depth, k, slope, bf = case
    x = _images(shape, seed=2)
    a, b = x, x[[1, 3, 0, 2]]
    var_a, var_b = cr.conv_variances(a, k, f_depth, bf), cr.conv_variances(b, k, f_depth, bf)
    same = _same(a, b)
    expected = cr.conv_correlations(
        a, b, var_a, var_b, k, f_depth, slope, bias_variance=bf, same=same
    )
    rho, ntk = cc.conv_table(
        a, b, var_a, var_b, k, f_depth, slope, need_ntk=True, bias_variance=bf, same_pairs=same
    )
    assert rho.dtype == np.float64 and rho.shape == (6, 4)
    np.testing.assert_allclose(rho, expected.rho, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ntk, expected.ntk, rtol=1e-12, atol=1e-14)
    assert np.all(rho[same & (var_a.sigma[:, None] > 0)] == 1.0)
    nngp_only, none = cc.conv_table(
        a, b, var_a, var_b, k, f_depth, slope, need_ntk=False, bias_variance=bf, same_pairs=same
    )
    assert none is None and np.array_equal(nngp_only, rho)


@pytest.mark.parametrize("f_depth", [1, 3])
@pytest.mark.parametrize("bf", [0.0, 0.4])
def test_compiled_symmetric_table_is_the_full_one_mirrored(f_depth, bf):
    cc = _compiled()
    x = _images((7, 5, 2), seed=3)
    var = cr.conv_variances(x, 3, f_depth, bf)
    kw = dict(need_ntk=True, bias_variance=bf)
    full = cc.conv_table(x, x, var, var, 3, f_depth, 0.2, same_pairs=_same(x, x), **kw)
    symmetric = cc.conv_table(x, None, var, None, 3, f_depth, 0.2, symmetric=True, **kw)
    for s, f in zip(symmetric, full, strict=True):
        assert np.array_equal(s, s.T)
        np.testing.assert_allclose(s, f, rtol=1e-14, atol=1e-15)
    # the diagonal and the repeat (x[4] = x[0]) are equal pairs; the zero image has sigma 0
    assert symmetric[0][0, 0] == 1.0 and symmetric[0][2, 2] == (1.0 if bf else 0.0)
    assert symmetric[1][0, 0] == var.theta[0] / var.sigma[0]
    # the repeat is an equal pair only where the caller says so (the engine's x are distinct)
    assert abs(symmetric[0][0, 4] - 1.0) < 1e-15 and full[0][0, 4] == 1.0
    marked = cc.conv_table(
        x, None, var, None, 3, f_depth, 0.2, symmetric=True, same_pairs=_same(x, x), **kw
    )
    assert marked[0][0, 4] == marked[0][4, 0] == 1.0 and marked[1][0, 4] == full[1][0, 4]


def test_compiled_float32_and_threads():
    cc = _compiled()
    import threading

    x = _images((7, 5, 2), seed=4)
    x32 = x.astype(np.float32)
    var, var32 = cr.conv_variances(x, 5, 3, 0.4), cr.conv_variances(x32, 5, 3, 0.4)
    kw = dict(need_ntk=True, bias_variance=0.4)
    rho, ntk = cc.conv_table(x32, x32, var32, var32, 5, 3, 0.0, same_pairs=_same(x, x), **kw)
    assert rho.dtype == np.float32 and ntk.dtype == np.float32
    # computed in float64: float32's rounding of the float64 values ...
    x64 = x32.astype(float)
    var64 = cr.conv_variances(x64, 5, 3, 0.4)
    exact = cr.conv_correlations(x64, x64, var64, var64, 5, 3, same=_same(x, x), **kw)
    np.testing.assert_allclose(rho, exact.rho, rtol=1e-7)
    np.testing.assert_allclose(ntk, exact.ntk, rtol=1e-7)
    # ... and within 1e-5 of numpy's float32 path away from parallel pairs (x[5] = 2.5 x[1]:
    # a correlation of 1 - ulp, which kappa0 turns into sqrt(ulp) ~ 3e-4 in float32)
    some = [0, 1, 2, 3, 4]
    x32 = x32[some]
    var32 = cr.conv_variances(x32, 5, 3, 0.4)
    expected = cr.conv_correlations(x32, x32, var32, var32, 5, 3, same=_same(x32, x32), **kw)
    assert expected.rho.dtype == np.float32
    np.testing.assert_allclose(rho[np.ix_(some, some)], expected.rho, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ntk[np.ix_(some, some)], expected.ntk, rtol=1e-5, atol=1e-6)
    # one thread, numba's threads and a worker thread (computed serially there): equal
    serial = cc.conv_table(x, x, var, var, 5, 3, 0.0, n_threads=1, **kw)
    parallel = cc.conv_table(x, x, var, var, 5, 3, 0.0, n_threads=2, **kw)
    found = {}
    worker = threading.Thread(
        target=lambda: found.update(value=cc.conv_table(x, x, var, var, 5, 3, 0.0, **kw))
    )
    worker.start()
    worker.join()
    for got in (parallel, found["value"]):
        assert np.array_equal(got[0], serial[0]) and np.array_equal(got[1], serial[1])
    # a process forked after the pool started (GNU OpenMP's is not fork-safe) is not killed
    # and computes the same table (on one thread there)
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.apply_async(_forked_table, (x, var)).get(timeout=120)
    assert np.array_equal(child[0], serial[0]) and np.array_equal(child[1], serial[1])


def _forked_table(x, var):
    from sklearn_hyperkernel._f import conv_compiled

    return conv_compiled.conv_table(x, x, var, var, 5, 3, 0.0, need_ntk=True, bias_variance=0.4)


def test_compiled_bad_input():
    cc = _compiled()
    x = _images((5, 4, 2))
    var = cr.conv_variances(x, 3, 2)
    kw = dict(need_ntk=True, bias_variance=0.0)
    with pytest.raises(ValueError, match="filter_size"):
        cc.conv_table(x, x, var, var, 4, 2, 0.0, **kw)
    with pytest.raises(ValueError, match="var_a"):
        cc.conv_table(x, x, var, var, 3, 3, 0.0, **kw)
    with pytest.raises(ValueError, match="var_b"):
        cc.conv_table(x, x[:2], var, var, 3, 2, 0.0, **kw)
    with pytest.raises(ValueError, match="same_pairs"):
        cc.conv_table(x, x, var, var, 3, 2, 0.0, same_pairs=np.ones((2, 2), bool), **kw)
    with pytest.raises(ValueError, match="negative_slope"):
        cc.conv_table(x, x, var, var, 3, 2, float("nan"), **kw)
    with pytest.raises(ValueError, match="images_a"):
        cc.conv_table(x[0], x, var, var, 3, 2, 0.0, **kw)
