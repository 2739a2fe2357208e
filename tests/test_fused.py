"""The fused (numba) pass of a Gram block against the numpy path of the recursions.

References: :func:`~sklearn_hyperkernel.recursions.hyper_kernels` (the direct numpy evaluation
on full matrices that the blocked Gram engine reproduces), :func:`~.recursions.dual_correlations`
for the scalar form of the dual, numpy's ``arccos`` and ``exp`` for the two elementary functions
written out for the compiled loop, and the closed-form diagonal where rows coincide. With bias
variances: ``reference.hyper_grams`` (tests/reference.py, the covariance-space recursions of
../shared/docs/biases.md one pair at a time in float64) and the closed-form diagonals there.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from sklearn.base import clone

numba = pytest.importorskip("numba")

from conftest import PAPER_KERNEL  # noqa: E402
from reference import hyper_grams  # noqa: E402

from sklearn_hyperkernel import HyperKernel, HyperKernelRegressor, HyperNNGP, set_config  # noqa: E402
from sklearn_hyperkernel._gram import engine as _gram_engine  # noqa: E402
from sklearn_hyperkernel._gram import fused as _fused  # noqa: E402
from sklearn_hyperkernel._gram import tiles as _gram_tiles  # noqa: E402
from sklearn_hyperkernel._utils.scheduling import default_workers  # noqa: E402
from sklearn_hyperkernel.recursions import dual_correlations, hyper_kernels  # noqa: E402

Z_DIM = 2
RTOL = 1e-12
# float32 inputs (rho_x, z rounded to float32; computed in float64, stored in float32), in
# units of the largest entry: the numpy path's float32 tolerance (tests/test_coincident_inputs.py)
FLOAT32_RTOL = 4e-6
ENCODINGS = {
    "linear": dict(z_encoding="linear", length_scale=1.0),
    "fourier-iso": dict(z_encoding="fourier", length_scale=0.7),
    "fourier-aniso": dict(z_encoding="fourier", length_scale=np.array([0.4, 2.5])),
}
SLOPES = {"relu": 0.0, "leaky": 0.2, "linear-ish": 0.9, "negative": -0.5}
DEPTHS = [(1, 1), (3, 2), (2, 4)]


def unit_correlations(x_a: np.ndarray, x_b: np.ndarray) -> np.ndarray:
    """``x.x' / (|x| |x'|)``, exactly 1 where the rows are equal (-0.0 == 0.0), 0 for x = 0."""
    norm_a, norm_b = np.linalg.norm(x_a, axis=1), np.linalg.norm(x_b, axis=1)
    unit_a = x_a * np.divide(1.0, norm_a, out=np.zeros_like(norm_a), where=norm_a > 0)[:, None]
    unit_b = x_b * np.divide(1.0, norm_b, out=np.zeros_like(norm_b), where=norm_b > 0)[:, None]
    rho = unit_a @ unit_b.T
    rho[(x_a[:, None, :] == x_b[None, :, :]).all(axis=-1)] = 1.0
    return rho


def fused_gram(
    A,
    B,
    *,
    kind="ntk",
    f_depth=3,
    g_depth=2,
    negative_slope=0.0,
    encoding="linear",
    table=False,
    dtype=np.float64,
    unused_rows=0,
    **options,
):
    """The Gram between rows ``[x | z]`` of A and B through :func:`_fused.hyper_block`.

    ``table``: x through its distinct rows and an index per row (the layout of images times
    pixels), else one x correlation per entry. ``unused_rows``: rows of zeros appended to the
    x correlations, which no row uses (a table that large is not filled: f runs per entry).
    ``options`` override the encoding's.
    """
    x_a, z_a, x_b, z_b = A[:, :-Z_DIM], A[:, -Z_DIM:], B[:, :-Z_DIM], B[:, -Z_DIM:]
    n0 = x_a.shape[1]
    s_a, s_b = np.einsum("ij,ij->i", x_a, x_a) / n0, np.einsum("ij,ij->i", x_b, x_b) / n0
    index_a = index_b = None
    if table:
        x_a, index_a = np.unique(x_a, axis=0, return_inverse=True)
        x_b, index_b = np.unique(x_b, axis=0, return_inverse=True)
        index_a, index_b = index_a.reshape(-1), index_b.reshape(-1)
    rho_x = unit_correlations(x_a, x_b).astype(dtype)
    rho_x = np.vstack([rho_x, np.zeros((unused_rows, rho_x.shape[1]), dtype=dtype)])
    return _fused.hyper_block(
        rho_x,
        z_a.astype(dtype),
        z_b.astype(dtype),
        s_a.astype(dtype),
        s_b.astype(dtype),
        f_depth=f_depth,
        g_depth=g_depth,
        negative_slope=negative_slope,
        kind=kind,
        x_index_a=index_a,
        x_index_b=index_b,
        **{**ENCODINGS[encoding], **options},
    )


def reference_gram(
    A, B, *, kind="ntk", f_depth=3, g_depth=2, negative_slope=0.0, encoding="linear"
):
    nngp, ntk = hyper_kernels(
        A[:, :-Z_DIM],
        A[:, -Z_DIM:],
        B[:, :-Z_DIM],
        B[:, -Z_DIM:],
        f_depth=f_depth,
        g_depth=g_depth,
        negative_slope=negative_slope,
        **ENCODINGS[encoding],
    )
    return ntk if kind == "ntk" else nngp


def assert_close(actual, expected, rtol=RTOL):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * np.max(np.abs(expected)))


def rows(rng, n, n_images=None, x_dim=7):
    """Rows ``[x | z]``: distinct x, or ``n_images`` images repeated over pixel coordinates."""
    if n_images is None:
        x = rng.normal(size=(n, x_dim))
    else:
        x = rng.normal(size=(n_images, x_dim))[rng.integers(0, n_images, n)]
    return np.hstack([x, rng.uniform(-1.5, 1.5, size=(n, Z_DIM))])


# ------------------------------------------------------------------ scalar forms


@numba.njit
def acos_of(x, out):
    for k in range(x.shape[0]):
        out[k] = _fused._acos(x[k])


@numba.njit
def exp_of(x, out):
    for k in range(x.shape[0]):
        out[k] = _fused._exp(x[k])


@numba.njit
def duals_of(rho, slope, kappa1, kappa0):
    for k in range(rho.shape[0]):
        kappa1[k], kappa0[k] = _fused._dual(rho[k], slope)


def test_acos_within_one_ulp_and_exact_at_the_ends(rng):
    x = np.concatenate(
        [
            rng.uniform(-1.0, 1.0, 200_000),
            1.0 - rng.uniform(0.0, 1e-6, 20_000),  # near the ends: the sqrt branch
            -1.0 + rng.uniform(0.0, 1e-6, 20_000),
            rng.uniform(-1e-9, 1e-9, 20_000),
            np.nextafter([0.5, -0.5, 1.0, -1.0], 0.0),
            [0.5, -0.5, 0.0, -0.0, 1e-300, 5e-324],
        ]
    )
    got = np.empty_like(x)
    acos_of(x, got)
    expected = np.arccos(x)
    assert np.max(np.abs(got - expected) / np.spacing(expected)) <= 1.0
    ends = np.empty(2)
    acos_of(np.array([1.0, -1.0]), ends)
    assert ends[0] == 0.0 and ends[1] == np.pi


def test_exp_within_one_ulp_down_to_underflow(rng):
    x = np.concatenate(
        [
            -rng.uniform(0.0, 1.0, 100_000),
            -rng.uniform(0.0, 40.0, 100_000),
            -rng.uniform(700.0, 746.0, 20_000),  # subnormal results and underflow
            [0.0, -0.0, -1e-300, -745.0, -745.2, -800.0, -np.inf],
        ]
    )
    got = np.empty_like(x)
    exp_of(x, got)
    expected = np.exp(x)
    normal = expected >= np.finfo(np.float64).tiny
    assert np.max(np.abs(got - expected)[normal] / np.spacing(expected[normal])) <= 1.0
    assert np.max(np.abs(got - expected)[~normal]) <= np.spacing(0.0)  # subnormals: 1 unit
    assert got[-7] == 1.0 and got[-6] == 1.0 and got[-2] == 0.0 and got[-1] == 0.0


@pytest.mark.parametrize("negative_slope", SLOPES.values(), ids=SLOPES.keys())
def test_scalar_dual_matches_dual_correlations(rng, negative_slope):
    rho = np.concatenate(
        [
            rng.uniform(-1.0, 1.0, 50_000),
            1.0 - rng.uniform(0.0, 1e-9, 1_000),
            -1.0 + rng.uniform(0.0, 1e-9, 1_000),
            [
                1.0,
                -1.0,
                0.0,
                -0.0,
                0.5,
                -0.5,
                1.0 + 2e-16,
                -1.0 - 2e-16,
                1.5,
                -3.0,
            ],  # outside: clipped
        ]
    )
    kappa1, kappa0 = np.empty_like(rho), np.empty_like(rho)
    duals_of(rho, _fused._relu_slope(negative_slope), kappa1, kappa0)
    expected1, expected0 = dual_correlations(rho.copy(), negative_slope)
    np.testing.assert_allclose(kappa1, expected1, rtol=RTOL, atol=1e-15)
    np.testing.assert_allclose(kappa0, expected0, rtol=RTOL, atol=1e-15)
    at_one = rho >= 1.0  # exactly 1 for every slope, as the array form
    assert np.all(kappa1[at_one] == 1.0) and np.all(kappa0[at_one] == 1.0)
    assert np.array_equal(kappa1[at_one], expected1[at_one])


# ------------------------------------------------------------------ blocks against the numpy path


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("negative_slope", SLOPES.values(), ids=SLOPES.keys())
@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_block_matches_numpy_path(rng, encoding, negative_slope, kind):
    A, B = rows(rng, 23), rows(rng, 300)  # more columns than one tile
    for f_depth, g_depth in DEPTHS:
        options = dict(
            kind=kind,
            f_depth=f_depth,
            g_depth=g_depth,
            negative_slope=negative_slope,
            encoding=encoding,
        )
        assert_close(fused_gram(A, B, **options), reference_gram(A, B, **options))


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_tabled_x_matches_numpy_path(rng, encoding, kind):
    """Few distinct x (images times pixels): f's layers on a table of distinct pairs."""
    A, B = rows(rng, 40, n_images=3), rows(rng, 700, n_images=4)
    options = dict(kind=kind, negative_slope=0.1, encoding=encoding, table=True)
    expected = reference_gram(A, B, kind=kind, negative_slope=0.1, encoding=encoding)
    tabled = fused_gram(A, B, **options)
    assert_close(tabled, expected)
    # f on the table, or per entry from the gathered x correlation: the same operations
    set_config(fused_table_fraction=0.0)
    np.testing.assert_array_equal(tabled, fused_gram(A, B, **options))


def test_kernel_classes_agree(rng):
    """Cross Grams of HyperKernel and HyperNNGP (the Gram engine), bias-free on raw rows."""
    A, B = rows(rng, 30, n_images=5), rows(rng, 50)
    for cls, kind in ((HyperKernel, "ntk"), (HyperNNGP, "nngp")):
        kernel = cls(**PAPER_KERNEL, z_dim=Z_DIM)  # fourier, length_scale 0.5, relu
        expected = kernel(A, B)
        got = fused_gram(A, B, kind=kind, encoding="fourier-iso", length_scale=0.5)
        assert_close(got, expected)


def test_many_z_columns_and_zero_rows(rng):
    """z of 10 columns (the numpy path expands |a - b|^2 there), zero x and zero z rows."""
    A, B = rows(rng, 12), rows(rng, 15)
    A[3, :-Z_DIM] = 0.0
    B[4, -Z_DIM:] = 0.0
    for kind in ("ntk", "nngp"):
        expected = reference_gram(A, B, kind=kind)
        got = fused_gram(A, B, kind=kind)
        assert_close(got, expected)
        assert np.all(got[3] == 0.0) and np.all(got[:, 4] == 0.0)
    x_a, x_b = rng.normal(size=(9, 5)), rng.normal(size=(11, 5))
    z_a, z_b = rng.normal(size=(9, 10)), rng.normal(size=(11, 10))
    z_b[2] = z_a[1]
    scales = rng.uniform(1.0, 3.0, 10)
    nngp, ntk = hyper_kernels(x_a, z_a, x_b, z_b, z_encoding="fourier", length_scale=scales)
    s_a, s_b = (x_a**2).mean(axis=1), (x_b**2).mean(axis=1)
    common = dict(
        f_depth=3, g_depth=2, z_encoding="fourier", length_scale=scales, negative_slope=0.0
    )
    got = _fused.hyper_block(unit_correlations(x_a, x_b), z_a, z_b, s_a, s_b, kind="ntk", **common)
    assert_close(got, ntk)


# ------------------------------------------------------------------ coincident rows


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_coincident_rows_give_the_closed_form(rng, encoding, kind):
    """Equal rows: every correlation exactly 1, so the entry is the closed-form diagonal.

    With unit scales (``s = e = 1``) the entry is exactly ``f_depth * g_depth`` (NTK) or 1
    (NNGP); with any scales it equals ``kernel.diag`` to the rounding of the scales. Rows that
    share only x or only z agree with the numpy path.
    """
    A = rows(rng, 6)
    A[1, 0], A[1, -1] = 0.0, 0.0  # copied below with -0.0: still equal rows
    B = np.vstack([A[[2, 0, 1]], rows(rng, 2)])
    B[2, 0], B[2, -1] = -0.0, -0.0
    B[3, :-Z_DIM] = A[4, :-Z_DIM]  # x only
    B[4, -Z_DIM:] = A[5, -Z_DIM:]  # z only
    got = fused_gram(A, B, kind=kind, encoding=encoding)
    kernel = (HyperKernel if kind == "ntk" else HyperNNGP)(
        **PAPER_KERNEL, z_dim=Z_DIM, f_depth=3, g_depth=2, **ENCODINGS[encoding]
    )
    diagonal = kernel.diag(A)
    for i, j in ((2, 0), (0, 1), (1, 2)):
        np.testing.assert_allclose(got[i, j], diagonal[i], rtol=2e-15)
    assert_close(got, reference_gram(A, B, kind=kind, encoding=encoding))
    # unit scales: exactly the closed form
    z = rng.normal(size=(3, Z_DIM))
    exact = _fused.hyper_block(
        np.ones((3, 3)),
        z,
        z,
        np.ones(3),
        np.ones(3),
        f_depth=3,
        g_depth=2,
        z_encoding="fourier",
        length_scale=1.3,
        negative_slope=0.2,
        kind=kind,
    )
    assert np.all(np.diag(exact) == (6.0 if kind == "ntk" else 1.0))


# ------------------------------------------------------------------ bias variances

# (f_bias_variance, g_bias_variance): every combination of {0, 0.1, 1.3} but (0, 0)
BIASES = [(bf, bg) for bf in (0.0, 0.1, 1.3) for bg in (0.0, 0.1, 1.3) if bf or bg]
BIAS_DEPTHS = [(1, 1), (1, 3), (2, 2), (3, 1), (3, 3)]
BIAS_ENCODINGS = ["linear", "fourier-aniso"]
BIAS_SLOPES = {"relu": 0.0, "leaky": 0.2}


def biased_reference(A, B, kind, encoding, **architecture):
    """``reference.hyper_grams`` of the rows ``[x | z]`` (float64, covariance space)."""
    nngp, ntk = hyper_grams(
        A[:, :-Z_DIM],
        A[:, -Z_DIM:],
        B[:, :-Z_DIM],
        B[:, -Z_DIM:],
        **ENCODINGS[encoding],
        **architecture,
    )
    return ntk if kind == "ntk" else nngp


def closed_form_diagonal(x, z, kind, f_depth, g_depth, bf, bg, encoding, length_scale=1.0):
    """``HyperKernel(u, u)`` or ``HyperNNGP(u, u)`` of ../shared/docs/biases.md ("Diagonals")."""
    s = float(np.dot(x, x)) / len(x)
    e = float(np.dot(z, z)) / len(z) if encoding == "linear" else 1.0
    sigma = s + f_depth * bf
    w = e
    for _ in range(g_depth):
        w = sigma * (w + bg)
    if kind == "nngp":
        return w
    theta_f = f_depth * s + bf * f_depth * (f_depth + 1) / 2
    k_g = g_depth * sigma ** (g_depth - 1) * e + bg * sum(
        (i + 1) * sigma**i for i in range(g_depth)
    )
    return theta_f * k_g


@pytest.mark.parametrize("negative_slope", BIAS_SLOPES.values(), ids=BIAS_SLOPES.keys())
@pytest.mark.parametrize("encoding", BIAS_ENCODINGS)
@pytest.mark.parametrize("bf, bg", BIASES)
def test_biases_match_the_reference(rng, bf, bg, encoding, negative_slope):
    """Cross and symmetric blocks with bias variances against the covariance-space reference.

    Rows with x = 0 (exactly 0 with ``bf = 0``, whatever ``bg``; ordinary with ``bf > 0``),
    linear z = 0 (exactly 0 with ``bg = 0``), a row equal to one of the other side and one
    sharing only x. Both kinds to 1e-12 of the largest entry (the two agree to ~1e-15).
    """
    A, B = rows(rng, 7), rows(rng, 6)
    A[2, :-Z_DIM] = 0.0  # x = 0
    A[4, -Z_DIM:] = 0.0  # z = 0
    B[1] = A[3]  # coincident rows
    B[5, :-Z_DIM] = A[5, :-Z_DIM]  # x only
    biases = dict(f_bias_variance=bf, g_bias_variance=bg)
    for f_depth, g_depth in BIAS_DEPTHS:
        architecture = dict(f_depth=f_depth, g_depth=g_depth, negative_slope=negative_slope)
        for kind in ("ntk", "nngp"):
            options = dict(kind=kind, encoding=encoding, **architecture, **biases)
            cross, symmetric = (
                fused_gram(A, B, **options),
                fused_gram(A, A, symmetric=True, **options),
            )
            assert_close(cross, biased_reference(A, B, **options))
            assert_close(symmetric, biased_reference(A, A, **options))
            np.testing.assert_array_equal(symmetric, symmetric.T)
            assert np.all(cross[2] == 0.0) == (bf == 0.0)
            if encoding == "linear":
                assert np.all(cross[4] == 0.0) == (bg == 0.0)
            diagonal = closed_form_diagonal(
                A[3, :-Z_DIM], A[3, -Z_DIM:], kind, f_depth, g_depth, bf, bg, encoding
            )
            np.testing.assert_allclose(cross[3, 1], diagonal, rtol=1e-14)


@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_biased_coincident_rows_exact(rng, kind):
    """Equal rows keep correlation exactly 1 at every layer: with dyadic variances every
    operation is exact, and the entry is exactly the closed form of ../shared/docs/biases.md
    (a correlation off by one rounding would move it by ~1e-8)."""
    x = np.array([[1.0, 1.0, 1.0, 1.0], [2.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0] * 4])
    z = np.array([[3.0, 4.0], [2.0, 0.0], [0.0, -1.0], [0.0, 0.0]])  # |z| exact
    for bf, bg in ((0.5, 0.25), (0.0, 0.25), (0.5, 0.0), (0.125, 1.5)):
        for f_depth, g_depth in ((1, 1), (3, 2), (2, 3), (3, 3)):
            for encoding in ("linear", "fourier"):
                got = _fused.hyper_block(
                    unit_correlations(x, x),
                    z,
                    z,
                    (x**2).mean(axis=1),
                    (x**2).mean(axis=1),
                    f_depth=f_depth,
                    g_depth=g_depth,
                    z_encoding=encoding,
                    length_scale=0.7,
                    negative_slope=0.2,
                    kind=kind,
                    f_bias_variance=bf,
                    g_bias_variance=bg,
                )
                expected = [
                    closed_form_diagonal(x[i], z[i], kind, f_depth, g_depth, bf, bg, encoding)
                    for i in range(4)
                ]
                np.testing.assert_array_equal(np.diag(got), expected)
                assert (got[3, 3] == 0.0) == (bf == 0.0 or (bg == 0.0 and encoding == "linear"))


@pytest.mark.parametrize("bf, bg", [(0.1, 1.3), (0.0, 0.1), (1.3, 0.0)])
def test_biased_table_of_distinct_x(rng, monkeypatch, bf, bg):
    """Few distinct x: f's layers on the table of distinct pairs carry f's output covariance
    and Theta^f, what g needs with biases; equal to f per entry bit for bit, and to the
    reference (columns over two tiles, repeated x rows coincident with x = 0 among them)."""
    A, B = rows(rng, 6, n_images=2), rows(rng, 300, n_images=4)
    A[1, :-Z_DIM] = 0.0
    B[::7, :-Z_DIM] = 0.0  # a fifth distinct x, equal to A[1]'s
    B[9] = A[4]
    n_distinct = np.unique(B[:, :-Z_DIM], axis=0).shape[0]
    tables = []
    original = _fused._f_table

    def counted(*args):
        tables.append(None if args[-1] is None else args[-1][2].shape)
        return original(*args)

    monkeypatch.setattr(_fused, "_f_table", counted)
    for kind in ("ntk", "nngp"):
        options = dict(kind=kind, f_depth=3, g_depth=2, negative_slope=0.2, encoding="fourier-iso")
        options.update(f_bias_variance=bf, g_bias_variance=bg)
        tabled = fused_gram(A, B, table=True, **options)
        assert tables and tables[-1] == (4, n_distinct)  # v_0..v_3 of the columns' distinct x
        assert_close(tabled, biased_reference(A, B, **options))
        assert np.all(tabled[1] == 0.0) == (bf == 0.0)
        count = len(tables)
        per_entry = fused_gram(A, B, table=True, unused_rows=300, **options)
        assert len(tables) == count  # f per entry, from the gathered x correlations
        np.testing.assert_array_equal(tabled, per_entry)


def test_zero_biases_are_the_bias_free_pass(rng):
    """``f_bias_variance = g_bias_variance = 0`` is today's pass bit for bit (the same code
    path: the biased loops round differently), and the numpy path's values to 1e-12."""
    A, B = rows(rng, 23, n_images=5), rows(rng, 300)
    A[3, :-Z_DIM] = 0.0
    for table in (False, True):
        for kind in ("ntk", "nngp"):
            options = dict(kind=kind, negative_slope=0.1, encoding="linear", table=table)
            default = fused_gram(A, B, **options)
            zeros = fused_gram(A, B, f_bias_variance=0.0, g_bias_variance=0.0, **options)
            np.testing.assert_array_equal(zeros, default)
            assert_close(zeros, reference_gram(A, B, kind=kind, negative_slope=0.1))
            tiny = fused_gram(A, B, f_bias_variance=1e-300, g_bias_variance=0.0, **options)
            assert_close(tiny, default)  # the biased loops: the same values, other roundings
            assert not np.array_equal(tiny, default)


def test_biased_float32(rng):
    A, B = rows(rng, 12, n_images=3), rows(rng, 40)
    options = dict(kind="ntk", f_depth=3, g_depth=2, negative_slope=0.0, encoding="fourier-aniso")
    options.update(f_bias_variance=0.1, g_bias_variance=1.3)
    for table in (False, True):
        got = fused_gram(A, B, table=table, dtype=np.float32, **options)
        assert got.dtype == np.float32
        assert_close(got, biased_reference(A, B, **options), FLOAT32_RTOL)


# ------------------------------------------------------------------ layout, threads, dtype


def test_symmetric_in_place_and_threads(rng):
    """A symmetric panel written into a larger Gram in place equals the full block."""
    U = rows(rng, 600)
    x, z = U[:, :-Z_DIM], U[:, -Z_DIM:]
    s = (x**2).mean(axis=1)
    common = dict(
        f_depth=3, g_depth=2, z_encoding="fourier", length_scale=0.5, negative_slope=0.0, kind="ntk"
    )
    rho_x = unit_correlations(x, x)
    full = _fused.hyper_block(rho_x, z, z, s, s, **common)
    K = np.full((600, 600), np.nan)
    start, stop = 100, 400  # the panel of rows 100:400 and columns 100:600
    panel = K[start:stop, start:]
    panel[...] = rho_x[start:stop, start:]
    out = _fused.hyper_block(
        panel,
        z[start:stop],
        z[start:],
        s[start:stop],
        s[start:],
        symmetric=True,
        out=panel,
        **common,
    )
    assert out is panel
    upper = np.triu(np.ones(panel.shape, dtype=bool))
    np.testing.assert_array_equal(panel[upper], full[start:stop, start:][upper])
    square = panel[:, : stop - start]
    np.testing.assert_array_equal(square, square.T)  # below the diagonal: mirrored
    assert_close(panel, full[start:stop, start:], rtol=1e-15)
    assert (
        np.all(np.isnan(K[:start]))
        and np.all(np.isnan(K[stop:]))
        and np.all(np.isnan(K[:, :start]))
    )
    for threads in (1, 2):
        again = _fused.hyper_block(rho_x, z, z, s, s, n_threads=threads, **common)
        np.testing.assert_array_equal(again, full)


def _small_block(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(40, Z_DIM))
    return _fused.hyper_block(
        rng.uniform(-1.0, 1.0, (40, 40)),
        z,
        z,
        np.ones(40),
        np.ones(40),
        f_depth=3,
        g_depth=2,
        z_encoding="fourier",
        length_scale=0.5,
        negative_slope=0.0,
        kind="ntk",
    )


def test_threads_only_where_safe():
    """Worker threads and processes forked after numba's OpenMP pool started compute serially.

    (Concurrent launches abort numba's "workqueue" layer; GNU OpenMP is not fork-safe.)
    """
    import multiprocessing
    import threading

    expected = _small_block()  # starts the pool in this process, from the main thread
    assert _fused._threads_are_safe()
    results = {}
    worker = threading.Thread(
        target=lambda: results.update(safe=_fused._threads_are_safe(), value=_small_block())
    )
    worker.start()
    worker.join()
    assert results["safe"] is False
    np.testing.assert_array_equal(results["value"], expected)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        np.testing.assert_array_equal(pool.apply(_small_block), expected)


def test_float32(rng):
    A, B = rows(rng, 30, n_images=4), rows(rng, 260)
    for table in (False, True):
        for kind in ("ntk", "nngp"):
            got = fused_gram(
                A, B, kind=kind, table=table, encoding="fourier-aniso", dtype=np.float32
            )
            assert got.dtype == np.float32
            assert_close(
                got, reference_gram(A, B, kind=kind, encoding="fourier-aniso"), FLOAT32_RTOL
            )


def test_empty_blocks(rng):
    z = rng.normal(size=(0, Z_DIM))
    out = _fused.hyper_block(
        np.zeros((0, 4)),
        z,
        rng.normal(size=(4, Z_DIM)),
        np.zeros(0),
        np.ones(4),
        f_depth=3,
        g_depth=2,
        z_encoding="linear",
        length_scale=1.0,
        negative_slope=0.0,
        kind="ntk",
    )
    assert out.shape == (0, 4)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(kind="gp"), "kind"),
        (dict(z_encoding="polar"), "z_encoding"),
        (dict(f_depth=0), "f_depth"),
        (dict(g_depth=2.0), "g_depth"),
        (dict(negative_slope=np.nan), "negative_slope"),
        (dict(length_scale=[1.0, 2.0, 3.0]), "length_scale"),
        (dict(length_scale=-1.0), "length_scale"),
        (dict(x_index_a=np.array([0, 1, 5])), "x_index_a"),
        (dict(s_a=np.ones(4)), "s_a"),
        (dict(out=np.empty((3, 5))), "out"),
        (dict(f_bias_variance=-0.1), "f_bias_variance"),
        (dict(f_bias_variance=np.nan), "f_bias_variance"),
        (dict(g_bias_variance=np.inf), "g_bias_variance"),
        (dict(g_bias_variance=-1e-300), "g_bias_variance"),
        (
            dict(symmetric=True, z_b=np.ones((2, Z_DIM)), s_b=np.ones(2), rho_x=np.ones((3, 2))),
            "symmetric",
        ),
    ],
)
def test_invalid_arguments(rng, change, message):
    arguments = dict(
        rho_x=rng.uniform(-1, 1, (3, 4)),
        z_a=rng.normal(size=(3, Z_DIM)),
        z_b=rng.normal(size=(4, Z_DIM)),
        s_a=np.ones(3),
        s_b=np.ones(4),
        f_depth=3,
        g_depth=2,
        z_encoding="fourier",
        length_scale=1.0,
        negative_slope=0.0,
        kind="ntk",
    )
    arguments.update(change)
    with pytest.raises(ValueError, match=message):
        _fused.hyper_block(**arguments)


def test_out_overlapping_a_table_is_refused(rng):
    rho_x = rng.uniform(-1, 1, (3, 3))
    with pytest.raises(ValueError, match="out"):
        _fused.hyper_block(
            rho_x,
            rng.normal(size=(3, 2)),
            rng.normal(size=(3, 2)),
            np.ones(3),
            np.ones(3),
            f_depth=2,
            g_depth=2,
            z_encoding="linear",
            length_scale=1.0,
            negative_slope=0.0,
            kind="ntk",
            x_index_a=np.array([0, 1, 2]),
            out=rho_x,
        )


def test_available():
    assert _fused.available()


def test_numba_disable_jit_keeps_the_numpy_path():
    """``NUMBA_DISABLE_JIT=1`` would run the fused loops as Python: not available then."""
    import os
    import subprocess
    import sys

    code = "from sklearn_hyperkernel import _fused; print(_fused.available())"
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == "False", done.stderr


# ------------------------------------------------------------------ in the Gram engine

FUSED_ENV = "SKLEARN_HYPERKERNEL_FUSED"


@pytest.fixture
def fused_calls(monkeypatch):
    """Counts the engine's calls of :func:`_fused.hyper_block` (looked up at each block)."""
    calls = []
    original = _fused.hyper_block

    def counted(*args, **kwargs):
        calls.append(threading.current_thread() is threading.main_thread())
        return original(*args, **kwargs)

    monkeypatch.setattr(_fused, "hyper_block", counted)
    return calls


def numpy_and_fused(monkeypatch, fused_calls, compute):
    """``compute()`` with the fused pass off, then forced on; checks which path each took."""
    monkeypatch.setenv(FUSED_ENV, "0")
    numpy_path = compute()
    assert not fused_calls
    monkeypatch.setenv(FUSED_ENV, "1")  # read at each call, not at import
    fused = compute()
    assert fused_calls
    return numpy_path, fused


@pytest.mark.parametrize("n_images", [None, 6], ids=["distinct-x", "shared-x"])
@pytest.mark.parametrize("cls", [HyperKernel, HyperNNGP])
@pytest.mark.parametrize("encoding", ["linear", "fourier-aniso"])
@pytest.mark.parametrize("block_size, n_jobs", [(None, None), (7, None), (7, 2)])
def test_engine_fused_pass_matches_its_numpy_path(
    rng, monkeypatch, fused_calls, n_images, cls, encoding, block_size, n_jobs
):
    """Symmetric and cross Grams and ``K @ V`` of the kernels, fused against numpy (1e-12).

    Blocks of 7 rows: symmetric blocks start at their diagonal and are mirrored by the fused
    pass itself (the result is exactly symmetric); n_jobs=2: blocks on joblib threads, where
    the fused pass runs on the calling thread.
    """
    A, B = rows(rng, 45, n_images=n_images), rows(rng, 31, n_images=n_images)
    A[3, :-Z_DIM] = 0.0
    B[5] = A[8]  # a coincident pair of rows: the closed form in both paths
    V = rng.normal(size=(45, 2))
    kernel = cls(
        z_dim=Z_DIM,
        f_depth=3,
        g_depth=2,
        negative_slope=0.1,
        block_size=block_size,
        n_jobs=n_jobs,
        **ENCODINGS[encoding],
    )
    factorized = kernel.factorize_rows(A)

    def compute():
        return kernel(A), kernel(A, B), kernel.gram_matvec(factorized, V)

    expected, got = numpy_and_fused(monkeypatch, fused_calls, compute)
    for value, reference in zip(got, expected, strict=True):
        assert_close(value, reference)
    np.testing.assert_array_equal(got[0], got[0].T)
    np.testing.assert_array_equal(np.diag(got[0]), np.diag(expected[0]))  # the closed form
    np.testing.assert_allclose(got[1][8, 5], kernel.diag(A[8:9])[0], rtol=2e-15)
    # one block (block_size None), or one worker (n_jobs=None where BLAS has one thread), on
    # the main thread: numba's threads; blocks on joblib's worker threads: serial
    on_main_thread = block_size is None or (n_jobs is None and default_workers() == 1)
    assert all(fused_calls) == on_main_thread
    assert not any(fused_calls) or on_main_thread


@pytest.mark.parametrize("n_jobs", [None, 1])
def test_nystrom_and_prediction_tiles_choose_the_fused_pass_by_the_whole_product(
    rng, monkeypatch, fused_calls, n_jobs
):
    """Nystroem's ``K_nm`` and a prediction's ``K(X, centres)`` are evaluated a tile at a
    time; the size threshold applies to the whole product, not to one tile (each below it
    here), and the fused fit and prediction equal the numpy path's (1e-12)."""
    X, X_test = rows(rng, 300, n_images=12), rows(rng, 200, n_images=5)
    y = np.sin(X[:, 0]) + X[:, -1]
    model = HyperKernelRegressor(
        "ntk",  # the kernel the 1e-12 was measured on (the default NNGP rounds to 4e-12)
        solver="nystrom",
        n_components=40,
        block_size=50,
        random_state=0,
        n_jobs=n_jobs,
        z_dim=Z_DIM,
        z_encoding="fourier",
        length_scale=0.7,
    )
    monkeypatch.delenv(FUSED_ENV, raising=False)
    # K_nm: 300 x 40 = 12,000 entries, its tiles 50 x 40 = 2,000; predicting: 200 x 40
    set_config(fused_min_entries=8000)
    fused = model.fit(X, y).predict(X_test)
    assert len(fused_calls) >= 300 // 50 + 1
    coef = model.dual_coef_.copy()
    set_config(fused_min_entries=12001)  # above the fit's K_nm
    fused_calls.clear()
    model.fit(X, y)
    assert not fused_calls
    monkeypatch.setenv(FUSED_ENV, "0")
    numpy_path = model.predict(X_test)
    assert not fused_calls
    assert_close(model.dual_coef_, coef)
    assert_close(fused, numpy_path)


def test_engine_keeps_the_numpy_path_for_gradients_small_grams_and_torch(
    rng, monkeypatch, fused_calls
):
    """The gradient, Grams below the size threshold (by default) and torch stay on numpy."""
    A = rows(rng, 40, n_images=5)
    kernel = HyperKernel(z_dim=Z_DIM, length_scale=[0.6, 1.3])
    monkeypatch.setenv(FUSED_ENV, "0")
    value, gradient = kernel(A, eval_gradient=True)
    small = kernel(A)
    monkeypatch.setenv(FUSED_ENV, "1")
    again, again_gradient = kernel(A, eval_gradient=True)
    np.testing.assert_array_equal(again, value)
    np.testing.assert_array_equal(again_gradient, gradient)
    monkeypatch.delenv(FUSED_ENV)
    np.testing.assert_array_equal(kernel(A), small)  # 1600 entries: below the threshold
    assert not fused_calls
    set_config(fused_min_entries=40 * 40)
    assert_close(kernel(A), small)
    assert len(fused_calls) == 1
    pytest.importorskip("torch")
    monkeypatch.setenv(FUSED_ENV, "1")
    on_torch = clone(kernel).set_params(device="cpu")(A)
    assert len(fused_calls) == 1
    assert_close(on_torch, small)


def test_engine_without_numba_keeps_the_numpy_path(rng, monkeypatch, fused_calls):
    A = rows(rng, 30)
    kernel = HyperNNGP(z_dim=Z_DIM)
    monkeypatch.setenv(FUSED_ENV, "0")
    expected = kernel(A)
    monkeypatch.setenv(FUSED_ENV, "1")
    monkeypatch.setattr(_fused, "numba", None)  # as if it were not installed
    np.testing.assert_array_equal(kernel(A), expected)
    assert not fused_calls


@pytest.mark.parametrize("n_images", [None, 4], ids=["distinct-x", "shared-x"])
@pytest.mark.parametrize("kind", ["ntk", "nngp"])
@pytest.mark.parametrize("bf, bg", [(0.1, 1.3), (1.3, 0.0), (0.0, 0.1)])
@pytest.mark.parametrize("block_size", [None, 7])
def test_engine_fused_pass_with_biases(
    rng, monkeypatch, fused_calls, n_images, kind, bf, bg, block_size
):
    """The Gram engine's fused pass (``SKLEARN_HYPERKERNEL_FUSED=1``) with an Architecture's
    bias variances: symmetric and cross Grams against the reference (1e-12), x = 0 rows, and
    coincident rows in the closed form (blocks of 7 rows: blocks start at their diagonal)."""
    A, B = rows(rng, 30, n_images=n_images), rows(rng, 20, n_images=n_images)
    A[3, :-Z_DIM] = 0.0
    B[5] = A[8]
    arch = _gram_tiles.Architecture(
        f_depth=2,
        g_depth=3,
        z_encoding="linear",
        length_scale=np.array([1.0]),
        negative_slope=0.2,
        kind=kind,
        f_bias_variance=bf,
        g_bias_variance=bg,
    )
    monkeypatch.setenv(FUSED_ENV, "1")
    f = arch.f_kernel()
    a, b = _gram_engine.factorize(A, Z_DIM, f), _gram_engine.factorize(B, Z_DIM, f)
    symmetric, _ = _gram_engine.gram(arch, a, block_size=block_size)
    cross, _ = _gram_engine.gram(arch, a, b, block_size=block_size)
    assert len(fused_calls) == (2 if block_size is None else 5 + 5)  # blocks of the 30 rows
    options = dict(kind=kind, f_depth=2, g_depth=3, negative_slope=0.2, encoding="linear")
    options.update(f_bias_variance=bf, g_bias_variance=bg)
    assert_close(symmetric, biased_reference(A, A, **options))
    assert_close(cross, biased_reference(A, B, **options))
    np.testing.assert_array_equal(symmetric, symmetric.T)
    assert np.all(cross[3] == 0.0) == (bf == 0.0)
    diagonal = closed_form_diagonal(A[8, :-Z_DIM], A[8, -Z_DIM:], kind, 2, 3, bf, bg, "linear")
    np.testing.assert_allclose([symmetric[8, 8], cross[8, 5]], diagonal, rtol=1e-14)


@pytest.mark.parametrize("n_images", [None, 6], ids=["distinct-x", "shared-x"])
@pytest.mark.parametrize("cls", [HyperKernel, HyperNNGP])
@pytest.mark.parametrize("bf, bg", [(0.1, 1.3), (0.0, 0.1), (1.3, 0.0)])
@pytest.mark.parametrize("block_size", [None, 7])
def test_kernels_with_biases_fused_match_their_numpy_path(
    rng, monkeypatch, fused_calls, n_images, cls, bf, bg, block_size
):
    """The kernels' bias variances through the engine: symmetric and cross Grams and ``K @ V``,
    fused against the numpy path (1e-12), with an x = 0 row and a coincident pair of rows
    (the kernel's closed-form diagonal, to rounding)."""
    A, B = rows(rng, 45, n_images=n_images), rows(rng, 31, n_images=n_images)
    A[3, :-Z_DIM] = 0.0
    B[5] = A[8]
    V = rng.normal(size=(45, 2))
    kernel = cls(
        z_dim=Z_DIM,
        f_depth=3,
        g_depth=2,
        negative_slope=0.1,
        f_bias_variance=bf,
        g_bias_variance=bg,
        block_size=block_size,
        **ENCODINGS["fourier-aniso"],
    )
    factorized = kernel.factorize_rows(A)

    def compute():
        return kernel(A), kernel(A, B), kernel.gram_matvec(factorized, V)

    expected, got = numpy_and_fused(monkeypatch, fused_calls, compute)
    for value, reference in zip(got, expected, strict=True):
        assert_close(value, reference)
    np.testing.assert_array_equal(got[0], got[0].T)
    assert np.all(got[1][3] == 0.0) == (bf == 0.0)
    np.testing.assert_allclose(got[1][8, 5], kernel.diag(A[8:9])[0], rtol=1e-14)


# ------------------------------------------------------------------ forked processes

# A script run in a fresh interpreter: numba's pool is started by ``START``, then a process
# forked with multiprocessing computes a fused Gram, which must equal its parent's (numba
# kills a child that runs a parallel loop on a GNU OpenMP pool its parent started).
_FORK_SCRIPT = """
import multiprocessing, os, sys, warnings
import numpy as np
os.environ["SKLEARN_HYPERKERNEL_FUSED"] = "1"
import numba

@numba.njit(parallel=True)
def user_sum(a):
    total = 0.0
    for i in numba.prange(a.shape[0]):
        total += a[i]
    return total

start = sys.argv[1]
if start == "user-before-import":
    user_sum(np.ones(100))
from sklearn_hyperkernel import HyperKernel

U = np.random.default_rng(0).normal(size=(300, 5))
def gram(_=None):
    return HyperKernel(z_dim=2)(U)

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    parent = gram() if start in ("package", "user-before-import") else None
    if start == "user":
        user_sum(np.ones(100))
    elif start == "get_num_threads":
        numba.get_num_threads()
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.apply_async(gram).get(timeout=90)
    parent = gram() if parent is None else parent
print([str(w.message).split(" (")[0] for w in caught])
assert np.array_equal(child, parent), np.abs(child - parent).max()
print("same Gram")
"""


def _run_fork_script(start: str, layer: str) -> str:
    import os
    import pathlib
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_THREADING_LAYER=layer)
    done = subprocess.run(
        [sys.executable, "-c", _FORK_SCRIPT, start],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=str(pathlib.Path(__file__).resolve().parents[1]),  # this checkout's package
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "same Gram" in done.stdout
    return done.stdout


@pytest.mark.parametrize(
    "start, layer",
    [
        ("package", "default"),
        ("user", "default"),
        ("get_num_threads", "default"),
        ("user-before-import", "default"),
        ("user", "workqueue"),
    ],
)
def test_a_forked_child_computes_its_parents_gram(start, layer):
    """Whoever started numba's pool before the fork (this package, the user's parallel code
    before or after importing it, ``numba.get_num_threads``), under the default layer (GNU
    OpenMP here when TBB is missing) and the fork-safe workqueue, the child is not killed
    and its Gram equals the parent's exactly (numba issues #7872, #5983)."""
    out = _run_fork_script(start, layer)
    assert "could not be loaded" not in out


def test_a_threading_layer_that_cannot_load_leaves_the_fused_pass_on_one_thread():
    """``NUMBA_THREADING_LAYER=tbb`` without TBB: numba raises at its first parallel call;
    the Gram is computed on one thread with a warning, in the parent and in a forked child."""
    from numba.np.ufunc import parallel

    try:
        from numba.np.ufunc import tbbpool  # noqa: F401

        parallel._check_tbb_version_compatible()
    except ImportError:
        pass
    else:
        pytest.skip("TBB is installed here: the layer loads")
    out = _run_fork_script("package", "tbb")
    assert "numba's threading layer 'tbb' could not be loaded" in out
