"""Tests of the pure array functions in :mod:`sklearn_hyperkernel.recursions`.

The expected values come from closed forms of the dual activations, from the exact
identities listed in ``docs/math.md`` (the consequences of correlation space) and from the
tests' scalar reference implementation of the recursions (``tests/reference.py``, in float64
here), which shares no code (and no vectorisation tricks) with the package.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import PAPER_KERNEL, no_floating_point_warnings
from numpy.testing import assert_allclose, assert_array_equal
from reference import duals, hyper_grams, mlp_pair

from sklearn_hyperkernel import recursions
from sklearn_hyperkernel.recursions import (
    hyper_kernels,
    mlp_kernels,
    relu_duals,
    z_input_kernel,
)

LEAKY_SLOPES = [0.01, 0.2, 0.5]


def _rows(seed: int, n: int, dim: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim))


# ---------------------------------------------------------------------------
# relu_duals
# ---------------------------------------------------------------------------

# Variances whose products are perfect squares, so that c = rho * sqrt(a b) is exact.
VAR_A = np.array([4.0, 1.0, 0.25])
VAR_B = np.array([9.0, 16.0])
ROOT = np.sqrt(np.outer(VAR_A, VAR_B))


def test_relu_duals_shapes_and_dtype():
    kappa1, kappa0 = relu_duals(VAR_A, VAR_B, 0.3 * ROOT)
    assert kappa1.shape == (3, 2) and kappa0.shape == (3, 2)
    assert kappa1.dtype == np.float64 and kappa0.dtype == np.float64


def test_relu_duals_relu_closed_values():
    k1, k0 = relu_duals(VAR_A, VAR_B, ROOT)  # rho = 1
    assert_allclose(k1, ROOT, rtol=1e-14)
    assert_allclose(k0, 1.0, rtol=1e-14)
    k1, k0 = relu_duals(VAR_A, VAR_B, np.zeros_like(ROOT))  # rho = 0
    assert_allclose(k1, ROOT / np.pi, rtol=1e-14)
    assert_allclose(k0, 0.5, rtol=1e-14)
    k1, k0 = relu_duals(VAR_A, VAR_B, -ROOT)  # rho = -1
    assert_allclose(k1, 0.0, atol=1e-14 * ROOT.max())
    assert_allclose(k0, 0.0, atol=1e-14)


def test_relu_duals_keep_the_variance():
    var = np.array([0.3, 1.0, 7.5])
    k1, k0 = relu_duals(var, var, np.diag(var))
    assert_allclose(np.diag(k1), var, rtol=1e-14)
    # rho = c / sqrt(a b) may land one ulp below 1; kappa0 is then off by ~5e-9 (math doc).
    assert_allclose(np.diag(k0), 1.0, rtol=1e-7)


@pytest.mark.parametrize("slope", LEAKY_SLOPES)
def test_relu_duals_leaky_closed_values(slope):
    norm = 1.0 + slope**2
    k1, k0 = relu_duals(VAR_A, VAR_B, ROOT, negative_slope=slope)  # rho = 1: t = 0
    assert_allclose(k1, ROOT, rtol=1e-13)  # (2a c + (1-a)^2 c) / (1+a^2) = c
    assert_allclose(k0, 1.0, rtol=1e-13)
    k1, k0 = relu_duals(VAR_A, VAR_B, np.zeros_like(ROOT), negative_slope=slope)  # t = pi/2
    assert_allclose(k1, (1 - slope) ** 2 * ROOT / np.pi / norm, rtol=1e-13)
    assert_allclose(k0, (2 * slope + (1 - slope) ** 2 / 2) / norm, rtol=1e-13)
    k1, k0 = relu_duals(VAR_A, VAR_B, -ROOT, negative_slope=slope)  # rho = -1: t = pi
    assert_allclose(k1, -2 * slope * ROOT / norm, rtol=1e-12, atol=1e-14 * ROOT.max())
    assert_allclose(k0, 2 * slope / norm, rtol=1e-12, atol=1e-14)


def test_relu_duals_zero_slope_is_relu():
    rng = np.random.default_rng(0)
    var_a, var_b = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 4)
    cov = rng.uniform(-1, 1, (5, 4)) * np.sqrt(np.outer(var_a, var_b))
    for got, expected in zip(
        relu_duals(var_a, var_b, cov, negative_slope=0.0),
        relu_duals(var_a, var_b, cov),
        strict=True,
    ):
        assert_array_equal(got, expected)


@pytest.mark.parametrize("slope", [0.0, *LEAKY_SLOPES])
def test_relu_duals_against_scalar_reference(slope):
    rng = np.random.default_rng(1)
    var_a, var_b = rng.uniform(0.05, 4, 6), rng.uniform(0.05, 4, 5)
    cov = rng.uniform(-0.999, 0.999, (6, 5)) * np.sqrt(np.outer(var_a, var_b))
    k1, k0 = relu_duals(var_a, var_b, cov, negative_slope=slope)
    for i in range(6):
        for j in range(5):
            ref1, ref0 = duals(var_a[i], var_b[j], cov[i, j], slope)
            assert k1[i, j] == pytest.approx(ref1, rel=1e-12, abs=1e-15)
            assert k0[i, j] == pytest.approx(ref0, rel=1e-12, abs=1e-15)


def test_relu_duals_swap_arguments_transposes():
    rng = np.random.default_rng(2)
    var_a, var_b = rng.uniform(0.1, 3, 4), rng.uniform(0.1, 3, 3)
    cov = rng.uniform(-1, 1, (4, 3)) * np.sqrt(np.outer(var_a, var_b))
    for got, swapped in zip(
        relu_duals(var_a, var_b, cov), relu_duals(var_b, var_a, cov.T), strict=True
    ):
        assert_allclose(got, swapped.T, rtol=1e-14, atol=1e-15)


def test_relu_duals_rho_slightly_outside_unit_interval_is_clipped():
    # Rounding can put |c| a hair above sqrt(ab); the duals must then equal the rho = +-1 values.
    var_a, var_b = np.array([1.0]), np.array([1.0])
    with no_floating_point_warnings():
        k1, k0 = relu_duals(var_a, var_b, np.array([[1.0 + 1e-15]]))
        k1n, k0n = relu_duals(var_a, var_b, np.array([[-1.0 - 1e-15]]))
    assert np.isfinite([k1, k0, k1n, k0n]).all()
    assert_allclose(k1, 1.0, rtol=1e-13)
    assert_allclose(k0, 1.0, rtol=1e-13)
    assert_allclose(k1n, 0.0, atol=1e-14)
    assert_allclose(k0n, 0.0, atol=1e-14)


@pytest.mark.parametrize("slope", [0.0, *LEAKY_SLOPES])
def test_relu_duals_zero_variance(slope):
    independent_kappa0 = (2 * slope + (1 - slope) ** 2 / 2) / (1 + slope**2)
    var_a = np.array([0.0, 2.0, 0.0])
    var_b = np.array([0.0, 3.0])
    cov = np.array([[0.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    with no_floating_point_warnings():
        k1, k0 = relu_duals(var_a, var_b, cov, negative_slope=slope)
    assert np.isfinite(k1).all() and np.isfinite(k0).all()
    zero_rows = np.array([[True, True], [True, False], [True, True]])
    assert_array_equal(k1[zero_rows], 0.0)
    assert_allclose(k0[zero_rows], independent_kappa0, rtol=1e-14)
    if slope == 0.0:
        assert_allclose(k0[zero_rows], 0.5, rtol=1e-14)
    ref1, ref0 = duals(2.0, 3.0, 1.0, slope)
    assert k1[1, 1] == pytest.approx(ref1, rel=1e-12)
    assert k0[1, 1] == pytest.approx(ref0, rel=1e-12)


# ---------------------------------------------------------------------------
# mlp_kernels
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
@pytest.mark.parametrize("slope", [0.0, 0.2])
def test_mlp_kernels_diagonal_identities(depth, slope):
    x = _rows(3, 7, 5)
    s = (x**2).sum(axis=1) / x.shape[1]
    S_f, theta_f = mlp_kernels(x, depth=depth, negative_slope=slope)
    assert S_f.shape == (7, 7) and theta_f.shape == (7, 7)
    assert_allclose(np.diag(S_f), s, rtol=1e-12)
    # Theta^f diagonal goes through kappa0 at rho = 1, which is sensitive (math doc): rtol 1e-6.
    assert_allclose(np.diag(theta_f), depth * s, rtol=1e-6)


@pytest.mark.parametrize("slope", [0.0, 0.2])
def test_mlp_kernels_depth_one_is_the_scaled_dot_product(slope):
    x_a, x_b = _rows(4, 6, 3), _rows(5, 4, 3)
    S_f, theta_f = mlp_kernels(x_a, x_b, depth=1, negative_slope=slope)
    expected = x_a @ x_b.T / 3
    assert_allclose(S_f, expected, rtol=1e-13, atol=1e-15)
    assert_allclose(theta_f, expected, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("depth", [2, 3, 4])
@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_mlp_kernels_against_scalar_reference(depth, slope):
    x_a, x_b = _rows(6, 5, 4), _rows(7, 3, 4)
    S_f, theta_f = mlp_kernels(x_a, x_b, depth=depth, negative_slope=slope)
    for i in range(5):
        for j in range(3):
            S_ref, theta_ref = mlp_pair(list(x_a[i]), list(x_b[j]), depth, slope)
            assert S_f[i, j] == pytest.approx(S_ref[2], rel=1e-10, abs=1e-14)
            assert theta_f[i, j] == pytest.approx(theta_ref, rel=1e-10, abs=1e-14)


def test_mlp_kernels_auto_equals_cross_and_is_symmetric():
    x = _rows(8, 6, 3)
    S_auto, theta_auto = mlp_kernels(x, depth=3)
    S_cross, theta_cross = mlp_kernels(x, x, depth=3)
    assert_allclose(S_auto, S_cross, rtol=1e-12)
    assert_allclose(theta_auto, theta_cross, rtol=1e-6)
    assert_allclose(S_auto, S_auto.T, rtol=1e-13)
    assert_allclose(theta_auto, theta_auto.T, rtol=1e-13)


def test_mlp_kernels_zero_row_is_zero_without_warnings():
    x = _rows(9, 4, 3)
    x[1] = 0.0
    with no_floating_point_warnings():
        S_f, theta_f = mlp_kernels(x, depth=3)
    assert np.isfinite(S_f).all() and np.isfinite(theta_f).all()
    for gram in (S_f, theta_f):
        assert_array_equal(gram[1], 0.0)
        assert_array_equal(gram[:, 1], 0.0)


# ---------------------------------------------------------------------------
# z_input_kernel
# ---------------------------------------------------------------------------


def test_z_input_kernel_linear():
    z_a, z_b = _rows(10, 5, 3), _rows(11, 4, 3)
    assert_allclose(z_input_kernel(z_a, z_b, encoding="linear"), z_a @ z_b.T / 3, rtol=1e-13)
    assert_allclose(z_input_kernel(z_a), z_a @ z_a.T / 3, rtol=1e-13)


@pytest.mark.parametrize("length_scale", [1.0, 0.3, [0.5, 2.0, 1.0]])
def test_z_input_kernel_fourier(length_scale):
    z_a, z_b = _rows(12, 5, 3), _rows(13, 4, 3)
    scales = np.broadcast_to(np.asarray(length_scale, dtype=float), (3,))
    diff = (z_a[:, None, :] - z_b[None, :, :]) / scales
    expected = np.exp(-0.5 * (diff**2).sum(axis=-1))
    got = z_input_kernel(z_a, z_b, encoding="fourier", length_scale=length_scale)
    assert got.shape == (5, 4)
    assert_allclose(got, expected, rtol=1e-12)
    auto = z_input_kernel(z_a, encoding="fourier", length_scale=length_scale)
    assert_allclose(np.diag(auto), 1.0, rtol=1e-14)
    assert_allclose(auto, auto.T, rtol=1e-14)


def test_z_input_kernel_fourier_one_dimensional_z():
    z_a, z_b = _rows(14, 4, 1), _rows(15, 3, 1)
    got = z_input_kernel(z_a, z_b, encoding="fourier", length_scale=[0.7])
    assert_allclose(got, np.exp(-0.5 * ((z_a - z_b.T) / 0.7) ** 2), rtol=1e-12)


# ---------------------------------------------------------------------------
# hyper_kernels
# ---------------------------------------------------------------------------

HYPER_CASES = [
    dict(f_depth=2, g_depth=2),
    dict(f_depth=2, g_depth=2, slope=0.2),
    dict(f_depth=2, g_depth=2, encoding="fourier", length_scale=0.8),
    dict(f_depth=1, g_depth=1),
    dict(f_depth=3, g_depth=2, encoding="fourier", length_scale=[0.5, 1.5]),
    dict(f_depth=2, g_depth=3, slope=0.1),
    dict(f_depth=4, g_depth=3),
]


def _case_id(case: dict) -> str:
    return "-".join(f"{key}={value}" for key, value in case.items())


@pytest.mark.parametrize("case", HYPER_CASES, ids=_case_id)
def test_hyper_kernels_against_scalar_loop(case):
    rng = np.random.default_rng(16)
    x_a, z_a = rng.normal(size=(5, 4)), rng.normal(size=(5, 2))
    x_b, z_b = rng.normal(size=(4, 4)), rng.normal(size=(4, 2))
    # rows sharing x with a different z, as in (image, pixel) data
    x_b[1] = x_a[0]
    architecture = dict(
        f_depth=case["f_depth"],
        g_depth=case["g_depth"],
        z_encoding=case.get("encoding", "linear"),
        length_scale=case.get("length_scale", 1.0),
        negative_slope=case.get("slope", 0.0),
    )
    nngp, ntk = hyper_kernels(x_a, z_a, x_b, z_b, **architecture)
    ref_nngp, ref_ntk = hyper_grams(x_a, z_a, x_b, z_b, **architecture)
    assert nngp.shape == ntk.shape == (5, 4)
    scale_nngp, scale_ntk = np.abs(ref_nngp).max(), np.abs(ref_ntk).max()
    assert_allclose(nngp, ref_nngp, rtol=1e-9, atol=1e-13 * scale_nngp)
    assert_allclose(ntk, ref_ntk, rtol=1e-7, atol=1e-13 * scale_ntk)


def test_hyper_kernels_two_two_literal_loop_auto():
    rng = np.random.default_rng(17)
    x, z = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    nngp, ntk = hyper_kernels(x, z, f_depth=2, g_depth=2)
    ref_nngp, ref_ntk = hyper_grams(x, z, x, z, f_depth=2, g_depth=2)
    assert_allclose(nngp, ref_nngp, rtol=1e-9)
    assert_allclose(ntk, ref_ntk, rtol=1e-6)


@pytest.mark.parametrize("f_depth,g_depth", [(1, 1), (2, 2), (3, 2), (2, 4)])
@pytest.mark.parametrize("encoding", ["linear", "fourier"])
def test_hyper_kernels_diagonal_identities(f_depth, g_depth, encoding):
    rng = np.random.default_rng(18)
    x, z = rng.normal(size=(7, 4)), rng.normal(size=(7, 3))
    nngp, ntk = hyper_kernels(
        x, z, f_depth=f_depth, g_depth=g_depth, z_encoding=encoding, length_scale=0.9
    )
    s = (x**2).sum(axis=1) / 4
    e = (z**2).sum(axis=1) / 3 if encoding == "linear" else np.ones(7)
    assert_allclose(np.diag(nngp), s**g_depth * e, rtol=1e-10)
    assert_allclose(np.diag(ntk), f_depth * g_depth * s**g_depth * e, rtol=1e-6)


def test_hyper_kernels_depth_one_is_bilinear():
    rng = np.random.default_rng(19)
    x_a, z_a = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    x_b, z_b = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    expected = (x_a @ x_b.T / 3) * (z_a @ z_b.T / 2)
    nngp, ntk = hyper_kernels(x_a, z_a, x_b, z_b, f_depth=1, g_depth=1)
    assert_allclose(nngp, expected, rtol=1e-12, atol=1e-15)
    assert_allclose(ntk, expected, rtol=1e-12, atol=1e-15)


def test_hyper_kernels_default_second_argument():
    rng = np.random.default_rng(20)
    x, z = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    auto = hyper_kernels(x, z, f_depth=3, g_depth=2)
    cross = hyper_kernels(x, z, x, z, f_depth=3, g_depth=2)
    assert_allclose(auto[0], cross[0], rtol=1e-12)
    assert_allclose(auto[1], cross[1], rtol=1e-6)


def test_hyper_kernels_zero_x_or_zero_z_rows_are_zero():
    rng = np.random.default_rng(21)
    x, z = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    x[1] = 0.0
    z[3] = 0.0
    with no_floating_point_warnings():
        grams = hyper_kernels(x, z, f_depth=3, g_depth=3)
    for gram in grams:
        assert np.isfinite(gram).all()
        for row in (1, 3):
            assert_array_equal(gram[row], 0.0)
            assert_array_equal(gram[:, row], 0.0)
        assert np.all(np.abs(np.delete(np.diag(gram), [1, 3])) > 0)


def test_module_exposes_the_documented_functions():
    for name in ("relu_duals", "mlp_kernels", "z_input_kernel", "hyper_kernels"):
        assert callable(getattr(recursions, name))


# ---------------------------------------------------------------------------
# torch.autograd through the pure functions
# ---------------------------------------------------------------------------


def _tensors(torch_module, seed: int, *shapes: tuple[int, int]):
    generator = torch_module.Generator().manual_seed(seed)
    return [
        torch_module.randn(*shape, generator=generator, dtype=torch_module.float64).requires_grad_(
            True
        )
        for shape in shapes
    ]


@pytest.mark.parametrize("slope", [0.0, 0.2])
@pytest.mark.parametrize(
    "encoding,length_scale", [("linear", 1.0), ("fourier", 0.8), ("fourier", [0.6, 1.7])]
)
def test_hyper_kernels_gradients_match_finite_differences(
    torch_module, encoding, length_scale, slope
):
    # distinct random rows: every correlation strictly inside (-1, 1)
    x_a, z_a, x_b, z_b = _tensors(torch_module, 0, (4, 5), (4, 2), (3, 5), (3, 2))

    def grams(x_a, z_a, x_b, z_b):
        return hyper_kernels(
            x_a,
            z_a,
            x_b,
            z_b,
            f_depth=3,
            g_depth=3,
            z_encoding=encoding,
            length_scale=length_scale,
            negative_slope=slope,
        )

    assert torch_module.autograd.gradcheck(grams, (x_a, z_a, x_b, z_b))
    nngp, ntk = grams(x_a, z_a, x_b, z_b)
    reference = hyper_kernels(
        x_a.detach().numpy(),
        z_a.detach().numpy(),
        x_b.detach().numpy(),
        z_b.detach().numpy(),
        f_depth=3,
        g_depth=3,
        z_encoding=encoding,
        length_scale=length_scale,
        negative_slope=slope,
    )
    # out of place gives the same values as in place
    assert_allclose(nngp.detach().numpy(), reference[0], rtol=1e-14)
    assert_allclose(ntk.detach().numpy(), reference[1], rtol=1e-14)


@pytest.mark.parametrize("slope", [0.0, 0.2])
@pytest.mark.parametrize("encoding", ["linear", "fourier"])
def test_gradient_of_a_gram_through_its_diagonal(torch_module, encoding, slope):
    # K(X, X): each diagonal entry's correlations are 1 for every X (set so by a
    # where), so their gradient is 0 and the entry's gradient is its scale's
    x, z = _tensors(torch_module, 1, (5, 4), (5, 2))

    def grams(x, z):
        return hyper_kernels(
            x,
            z,
            f_depth=3,
            g_depth=2,
            z_encoding=encoding,
            length_scale=0.9,
            negative_slope=slope,
        )

    assert torch_module.autograd.gradcheck(grams, (x, z))
    for gram in grams(x, z):
        gradients = torch_module.autograd.grad(gram.sum(), (x, z), retain_graph=True)
        assert all(bool(torch_module.isfinite(g).all()) for g in gradients)
    # the diagonal alone: NNGP(u, u) = s^H e, its gradient that of the closed form
    nngp, _ = grams(x, z)
    (grad_x,) = torch_module.autograd.grad(torch_module.diagonal(nngp).sum(), (x,))
    s = (x * x).sum(dim=1) / 4
    e = (z * z).sum(dim=1) / 2 if encoding == "linear" else torch_module.ones(5, dtype=x.dtype)
    (expected,) = torch_module.autograd.grad((s**2 * e).sum(), (x,))
    assert_allclose(grad_x.numpy(), expected.numpy(), rtol=1e-12)
    assert torch_module.autograd.gradcheck(
        lambda x: mlp_kernels(x, depth=3, negative_slope=slope), (x,)
    )
    assert torch_module.autograd.gradcheck(
        lambda z: z_input_kernel(z, encoding=encoding, length_scale=[0.7, 1.3]), (z,)
    )


@pytest.mark.parametrize("slope", [0.0, 0.2])
def test_correlation_recursions_gradients_match_finite_differences(torch_module, slope):
    generator = torch_module.Generator().manual_seed(2)

    def correlations(*shape):
        uniform = torch_module.rand(*shape, generator=generator, dtype=torch_module.float64)
        values = 1.9 * uniform - 0.95
        return values.requires_grad_(True)

    rho, rho_f, rho_z = correlations(3, 4), correlations(3, 4), correlations(3, 4)
    gradcheck = torch_module.autograd.gradcheck
    assert gradcheck(lambda r: recursions.dual_correlations(r, slope), (rho,))
    assert gradcheck(lambda r: tuple(recursions.mlp_correlations(r, 4, slope)[:2]), (rho,))
    z_direction = [recursions.Direction(z=True)]

    def g_recursion(f, z):
        g = recursions.hyper_correlations(f, z, 3, slope, directions=z_direction)
        return g.nngp, g.ntk_g, *g.nngp_tangents, *g.ntk_g_tangents

    assert gradcheck(g_recursion, (rho_f, rho_z))
    var_a, var_b = (
        torch_module.rand(n, generator=generator, dtype=torch_module.float64) + 0.5 for n in (3, 4)
    )
    cov = (rho * torch_module.sqrt(var_a[:, None] * var_b[None, :])).detach().requires_grad_(True)
    var_a.requires_grad_(True)
    var_b.requires_grad_(True)
    assert gradcheck(lambda a, b, c: relu_duals(a, b, c, slope), (var_a, var_b, cov))
    # the input is left alone while gradients are recorded
    before = rho.detach().clone()
    recursions.dual_correlations(rho * 1.1, slope)
    assert torch_module.equal(rho.detach(), before)


def test_in_place_evaluation_without_gradients(torch_module):
    # no recorded gradient: the fast in-place path (numpy clips its input in place, as documented)
    rho = np.array([[1.0 + 1e-15, 0.3]])
    kappa1, kappa0 = recursions.dual_correlations(rho)
    assert rho[0, 0] == 1.0
    assert kappa1[0, 0] == 1.0 and kappa0[0, 0] == 1.0
    x = torch_module.randn(3, 4, dtype=torch_module.float64, requires_grad=True)
    z = torch_module.randn(3, 2, dtype=torch_module.float64)
    with torch_module.no_grad():
        nngp, ntk = hyper_kernels(x, z)
    assert not ntk.requires_grad
    assert_allclose(ntk.numpy(), hyper_kernels(x.detach().numpy(), z.numpy())[1], rtol=1e-12)


@pytest.mark.parametrize("slope", [0.0, 0.01, 0.2, 0.5, 1.0])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_duals_map_one_to_exactly_one(slope, dtype):
    # relu * 1 + linear * 1 would be 1 +- ulp, and the next layer's arccos sqrt(ulp)
    kappa1, kappa0 = recursions.dual_correlations(np.ones((1, 3), dtype=dtype), slope)
    assert_array_equal(kappa1, 1.0)
    assert_array_equal(kappa0, 1.0)
    rho_f, ntk, _, _ = recursions.mlp_correlations(np.ones((2, 2), dtype=dtype), 5, slope)
    assert_array_equal(rho_f, 1.0)
    assert_array_equal(ntk, 5.0)


# ---------------------------------------------------------------------------
# Biases of f and of g (docs/math.md, "Biases"; ../shared/docs/biases.md)
# ---------------------------------------------------------------------------

BIAS_VARIANCES = [0.0, 0.1, 1.3]


def _bias_rows() -> tuple[np.ndarray, ...]:
    """Rows with a zero x, a zero z, equal rows, equal x only and equal z only (4 x, 2 z)."""
    rng = np.random.default_rng(11)
    x_a, z_a = rng.normal(size=(5, 4)), rng.normal(size=(5, 2))
    x_b, z_b = rng.normal(size=(4, 4)), rng.normal(size=(4, 2))
    x_a[1] = 0.0  # x = 0
    z_a[2] = 0.0  # z = 0 (linear: an input of variance 0)
    x_b[0], z_b[0] = x_a[0], z_a[0]  # an equal row
    x_b[1] = x_a[3]  # equal x only
    z_b[2] = z_a[4]  # equal z only
    x_a[4] = x_a[0]  # equal x within one set of rows
    return x_a, z_a, x_b, z_b


@pytest.mark.parametrize("f_bias", BIAS_VARIANCES)
@pytest.mark.parametrize("g_bias", BIAS_VARIANCES)
@pytest.mark.parametrize("encoding", ["linear", "fourier"])
@pytest.mark.parametrize("slope", [0.0, 0.2])
def test_biased_kernels_equal_the_covariance_space_reference(f_bias, g_bias, encoding, slope):
    x_a, z_a, x_b, z_b = _bias_rows()
    for f_depth in (1, 2, 3):
        for g_depth in (1, 2, 3):
            architecture = dict(
                f_depth=f_depth,
                g_depth=g_depth,
                z_encoding=encoding,
                length_scale=0.8,
                negative_slope=slope,
                f_bias_variance=f_bias,
                g_bias_variance=g_bias,
            )
            for rows in ((x_a, z_a, None, None), (x_a, z_a, x_b, z_b)):
                nngp, ntk = hyper_kernels(*rows, **architecture)
                expected_nngp, expected_ntk = hyper_grams(*rows, **architecture)
                assert np.all(np.isfinite(nngp)) and np.all(np.isfinite(ntk))
                # relative to the largest entry: zero rows have exact zeros
                assert_allclose(
                    nngp, expected_nngp, rtol=0, atol=1e-9 * np.abs(expected_nngp).max()
                )
                assert_allclose(ntk, expected_ntk, rtol=0, atol=1e-7 * np.abs(expected_ntk).max())
            # the diagonal: the closed forms of biases.md, "Diagonals"
            s = np.sum(x_a * x_a, axis=1) / 4
            e = np.sum(z_a * z_a, axis=1) / 2 if encoding == "linear" else np.ones(5)
            for kind, i in (("nngp", 0), ("ntk", 1)):
                sigma = recursions.f_output_variance(s, f_depth, f_bias)
                theta = recursions.f_ntk_variance(s, f_depth, f_bias)
                closed = recursions.hyper_diagonal(sigma, theta, e, g_depth, kind, g_bias)
                reference = np.diag(hyper_grams(x_a, z_a, **architecture)[i])
                assert_allclose(closed, reference, rtol=1e-13, atol=1e-300)
                assert_allclose(np.diag(hyper_kernels(x_a, z_a, **architecture)[i]), closed, 1e-13)


@pytest.mark.parametrize("g_bias", [0.1, 1.3])
def test_zero_x_rows_are_zero_without_f_biases_even_with_g_biases(g_bias):
    x_a, z_a, x_b, z_b = _bias_rows()
    for rows in ((x_a, z_a, None, None), (x_a, z_a, x_b, z_b), (x_b, z_b, x_a, z_a)):
        with no_floating_point_warnings():
            grams = hyper_kernels(*rows, f_depth=3, g_depth=3, g_bias_variance=g_bias)
        for gram in grams:
            if rows[2] is None or rows[0] is x_a:
                assert_array_equal(gram[1], 0.0)  # x_a[1] = 0: f(0) = 0 generates no bias
            else:
                assert_array_equal(gram[:, 1], 0.0)


@pytest.mark.parametrize("f_bias,g_bias", [(0.1, 0.0), (1.3, 0.1), (0.1, 1.3)])
def test_zero_x_is_an_ordinary_input_with_f_biases(f_bias, g_bias):
    x_a, z_a, x_b, z_b = _bias_rows()
    architecture = dict(f_depth=3, g_depth=2, f_bias_variance=f_bias, g_bias_variance=g_bias)
    with no_floating_point_warnings():
        nngp, ntk = hyper_kernels(x_a, z_a, x_b, z_b, **architecture)
    expected_nngp, expected_ntk = hyper_grams(x_a, z_a, x_b, z_b, **architecture)
    assert np.all(np.abs(ntk[1]) > 0) and np.all(np.abs(nngp[1]) > 0)
    assert_allclose(nngp[1], expected_nngp[1], rtol=1e-12)
    assert_allclose(ntk[1], expected_ntk[1], rtol=1e-12)
    # it depends on x' only through |x'|: rotating the other rows' x changes nothing
    rotation = np.linalg.qr(np.random.default_rng(3).normal(size=(4, 4)))[0]
    _, rotated = hyper_kernels(x_a, z_a, x_b @ rotation, z_b, **architecture)
    assert_allclose(rotated[1], ntk[1], rtol=1e-13)


def test_zero_z_is_an_ordinary_input_with_g_biases():
    x_a, z_a, x_b, z_b = _bias_rows()  # z_a[2] = 0
    for f_bias in (0.0, 0.1):
        architecture = dict(f_depth=2, g_depth=3, f_bias_variance=f_bias, g_bias_variance=0.1)
        nngp, ntk = hyper_kernels(x_a, z_a, x_b, z_b, **architecture)
        expected = hyper_grams(x_a, z_a, x_b, z_b, **architecture)
        assert np.all(np.abs(ntk[2]) > 0)
        assert_allclose(nngp[2], expected[0][2], rtol=1e-12)
        assert_allclose(ntk[2], expected[1][2], rtol=1e-12)
        # without g's biases the z = 0 row is exactly 0
        plain = hyper_kernels(x_a, z_a, x_b, z_b, f_depth=2, g_depth=3, f_bias_variance=f_bias)
        assert_array_equal(plain[1][2], 0.0)


def test_biases_break_homogeneity_in_x():
    x_a, z_a, x_b, z_b = _bias_rows()
    plain = hyper_kernels(x_a, z_a, x_b, z_b, f_depth=3, g_depth=2)[1]
    scaled = hyper_kernels(2.0 * x_a, z_a, x_b, z_b, f_depth=3, g_depth=2)[1]
    # degree H = 2 without biases (x_b[1] = x_a[3] becomes parallel, not equal: rho_x = 1
    # only up to rounding, which kappa0 turns into sqrt(ulp))
    assert_allclose(scaled, 4.0 * plain, rtol=1e-7)
    for f_bias, g_bias in ((0.1, 0.0), (0.0, 0.1)):
        architecture = dict(f_depth=3, g_depth=2, f_bias_variance=f_bias, g_bias_variance=g_bias)
        biased = hyper_kernels(x_a, z_a, x_b, z_b, **architecture)[1]
        biased_scaled = hyper_kernels(2.0 * x_a, z_a, x_b, z_b, **architecture)[1]
        assert np.max(np.abs(biased_scaled - 4.0 * biased)) > 1e-3 * np.abs(biased).max()


def test_biased_mlp_kernels_equal_the_reference():
    x_a, _, x_b, _ = _bias_rows()
    for depth in (1, 2, 4):
        S_f, theta_f = mlp_kernels(x_a, x_b, depth=depth, negative_slope=0.2, bias_variance=0.7)
        for i in range(len(x_a)):
            for j in range(len(x_b)):
                S, theta = mlp_pair(x_a[i], x_b[j], depth, 0.2, bias_variance=0.7)
                assert_allclose(S_f[i, j], S[2], rtol=1e-13)
                assert_allclose(theta_f[i, j], theta, rtol=1e-13)


def test_no_biases_are_the_bias_free_kernels_bitwise():
    # values of the package before the biases existed (same rows, same calls)
    rng = np.random.default_rng(5)
    U, V = rng.normal(size=(3, 6)), rng.normal(size=(4, 6))
    U[1, :4] = 0.0
    V[0] = U[0]
    from sklearn_hyperkernel import HyperKernel, HyperNNGP

    before = {
        "ntk": [
            [2.6046550048739183, -0.0021442693723310725, 0.06896897775529721, 0.8585857089486236],
            [0.0, 0.0, 0.0, 0.0],
            [-0.038790887960673995, 0.2637237255716299, 0.25047261951698524, 0.254053330640014],
        ],
        "nngp": [
            [0.18629102089845975, 0.013911949996563288, 0.019012771464223296, 0.19939537754409056],
            [0.0, 0.0, 0.0, 0.0],
            [0.02589754495086047, 0.18200558262742755, 0.11846750657828155, 0.27068744706246173],
        ],
        "gradient": [[0.0, 0.0], [0.0, 0.0], [0.04502429935835925, 0.010445685578029482]],
    }
    for zero in (PAPER_KERNEL,):  # both variances 0 (the paper's raw rows)
        ntk = HyperKernel(activation="leaky_relu", negative_slope=0.2, **zero)(U, V)
        nngp = HyperNNGP(z_encoding="linear", f_depth=2, g_depth=3, **zero)(U, V)
        kernel = HyperKernel(z_encoding="fourier", length_scale=[0.6, 1.3], **zero)
        _, gradient = kernel(U, eval_gradient=True)
        assert_array_equal(ntk, before["ntk"])
        assert_array_equal(nngp, before["nngp"])
        assert_array_equal(gradient[0], before["gradient"])
