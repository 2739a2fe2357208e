"""Coincident inputs: rows with equal x, equal z or both, within one set of rows or across two.

Equal x rows have ``rho_x = 1`` exactly, equal z rows ``rho_z = 1`` exactly (and a squared z
distance of exactly 0), on every path: symmetric and cross Grams, the length-scale gradient,
``gram_matvec``, numpy and torch, float64 and float32, and the pure functions of
:mod:`sklearn_hyperkernel.recursions`. Rounded, such a correlation is ``1 +- ulp`` and
``kappa0 = 1 - arccos(rho) / pi`` turns that into ``sqrt(ulp)``: 1e-8 in float64, 3e-4 in
float32 (the faults these tests pin down).

The expected values come from the math page's recursions in covariance space, evaluated with
40 significant digits (:mod:`mpmath`) one pair at a time by the tests' reference
(``tests/reference.py``); they share no code with the package.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from conftest import PAPER_KERNEL
from reference import hyper_pair

from sklearn_hyperkernel import HyperKernel, HyperNNGP, set_config
from sklearn_hyperkernel._utils import rows as _rows
from sklearn_hyperkernel.recursions import hyper_kernels, mlp_kernels, z_input_kernel

mp = pytest.importorskip("mpmath")

try:
    import torch
except ImportError:  # the torch cases skip themselves
    torch = None

Z_DIM = 2
F_DEPTH, G_DEPTH = 3, 2
SLOPE = 0.2
KERNELS = {"HyperKernel": HyperKernel, "HyperNNGP": HyperNNGP}
ENCODINGS = {
    "linear": dict(z_encoding="linear", length_scale=1.0),
    "fourier-iso": dict(z_encoding="fourier", length_scale=4.0),
    "fourier-aniso": dict(z_encoding="fourier", length_scale=[3.0, 8.0]),
}
ACTIVATIONS = {
    "relu": dict(activation="relu", negative_slope=SLOPE),
    "leaky": dict(activation="leaky_relu", negative_slope=SLOPE),
}
BACKENDS = {
    "numpy-float64": (None, "float64"),
    "numpy-float32": (None, "float32"),
    "torch-float64": ("cpu", "float64"),
    "torch-float32": ("cpu", "float32"),
}
# Relative tolerances (of an entry, in units of sqrt(K(u, u) K(v, v))):
# coincident rows (both x and z equal) against the closed-form diagonal ...
EQUAL_ROWS_RTOL = {"float64": 2e-15, "float32": 2e-6}
# ... and any entry against the 40-digit reference. Before the fix, rows sharing
# x or z only were off by up to 1e-8 (float64) and 1e-4 (float32).
ENTRY_RTOL = {"float64": 1e-13, "float32": 4e-6}


def make_kernel(kernel: str, encoding: str, activation: str, backend="numpy-float64", **extra):
    device, dtype = BACKENDS[backend]
    if device is not None:
        pytest.importorskip("torch")
    return KERNELS[kernel](
        z_dim=Z_DIM,
        f_depth=F_DEPTH,
        g_depth=G_DEPTH,
        **ENCODINGS[encoding],
        **ACTIVATIONS[activation],
        device=device,
        dtype=dtype,
        **{**PAPER_KERNEL, **extra},  # the exact values below are the paper's kernels'
    )


def coincident_rows(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two sets of rows ``[x | z]`` (24 x columns) with every kind of coincidence.

    ``A``: 4 images times some of 5 pixel coordinates (in [0, 27]: the cancellation in
    ``|a|^2 + |b|^2 - 2 a.b`` is visible), one row repeated. ``B``: copies of
    rows of ``A``, ``A``'s images at new coordinates, new images at ``A``'s coordinates,
    new rows, and copies with ``-0.0`` where ``A`` has ``0.0``.
    """
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(4, 24))
    images[1, 2] = 0.0
    coordinates = rng.uniform(0.0, 27.0, size=(5, 2))
    coordinates[2, 0] = 0.0
    pairs = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (1, 3), (2, 1), (2, 4), (3, 3), (3, 4), (0, 1)]
    A = np.array([np.concatenate([images[i], coordinates[j]]) for i, j in pairs])
    new_images = rng.normal(size=(2, 24))
    new_coordinates = rng.uniform(0.0, 27.0, size=(2, 2))
    B = [A[1], A[4], A[8]]  # equal rows
    B += [np.concatenate([images[0], new_coordinates[0]])]  # equal x only
    B += [np.concatenate([images[2], new_coordinates[1]])]
    B += [np.concatenate([new_images[0], coordinates[1]])]  # equal z only
    B += [np.concatenate([new_images[1], coordinates[3]])]
    B += [np.concatenate([new_images[1], new_coordinates[0]])]
    negative_zero = A[2].copy()  # images[0] with coordinates[2], which has a 0.0
    negative_zero[24] = -0.0
    other = A[4].copy()  # images[1], which has a 0.0, with coordinates[2]
    other[2] = -0.0
    other[24] = -0.0
    B += [negative_zero, other]
    return A, np.array(B)


def sharing(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boolean matrices: rows of A and B with equal x, with equal z (``-0.0 == 0.0``)."""
    same = A[:, None, :] == B[None, :, :]
    return same[..., :-Z_DIM].all(axis=-1), same[..., -Z_DIM:].all(axis=-1)


# ------------------------------------------------------------------ 40-digit reference


def _mp_entry(u, v, kind, encoding, length_scale, slope):
    """One kernel entry from docs/math.md, literally, in covariance space (40 digits)."""
    with mp.workdps(40):
        pair = hyper_pair(
            u[:-Z_DIM],
            u[-Z_DIM:],
            v[:-Z_DIM],
            v[-Z_DIM:],
            F_DEPTH,
            G_DEPTH,
            encoding,
            length_scale,
            slope,
            precision="mpmath",
        )
        return float(pair[0] if kind == "HyperNNGP" else pair[1])


@functools.cache
def reference(kernel: str, encoding: str, activation: str, which: str) -> np.ndarray:
    A, B = coincident_rows()
    left, right = (A, A) if which == "AA" else (A, B)
    params = ENCODINGS[encoding]
    slope = SLOPE if activation == "leaky" else 0.0
    encoding, length_scale = params["z_encoding"], params["length_scale"]
    return np.array(
        [[_mp_entry(u, v, kernel, encoding, length_scale, slope) for v in right] for u in left]
    )


def assert_entries(actual, desired, diag_a, diag_b, rtol, what=""):
    """``|actual - desired| <= rtol * sqrt(K(u, u) K(v, v))`` entry by entry.

    For matrices ``diag_a`` and ``diag_b`` are the diagonals of the rows and of the columns;
    for vectors of entries, those of each entry's two rows.
    """
    actual, desired = np.asarray(actual), np.asarray(desired)
    assert actual.shape == desired.shape
    scale = np.sqrt(np.outer(diag_a, diag_b) if actual.ndim == 2 else diag_a * diag_b)
    error = np.abs(actual - desired) / np.where(scale > 0, scale, 1.0)
    assert np.all(error <= rtol), f"{what}: max relative error {error.max():.3g} > {rtol:.3g}"


# ------------------------------------------------------------------ the kernels


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("kernel", KERNELS)
def test_equal_rows_equal_the_diagonal_in_symmetric_and_cross_grams(
    kernel, encoding, activation, backend
):
    A, B = coincident_rows()
    k = make_kernel(kernel, encoding, activation, backend)
    rtol = EQUAL_ROWS_RTOL[BACKENDS[backend][1]]
    diag_a, diag_b = k.diag(A), k.diag(B)
    # the example: the cross Gram of rows with themselves
    U = np.random.default_rng(0).normal(size=(5, 6))
    assert_entries(np.diag(k(U, U)), k.diag(U), k.diag(U), k.diag(U), rtol, "diag(k(U, U))")
    grams = (("k(A, A)", k(A, A), A, A), ("k(A, B)", k(A, B), A, B), ("k(A)", k(A), A, A))
    for name, K, left, right in grams:
        same_x, same_z = sharing(left, right)
        equal = same_x & same_z
        assert equal.any()
        i, j = np.nonzero(equal)
        left_diag = diag_a if left is A else diag_b
        right_diag = diag_a if right is A else diag_b
        assert_entries(K[i, j], left_diag[i], left_diag[i], right_diag[j], rtol, name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("kernel", KERNELS)
def test_entries_sharing_x_or_z_equal_the_exact_values(kernel, encoding, activation, backend):
    A, B = coincident_rows()
    k = make_kernel(kernel, encoding, activation, backend)
    rtol = ENTRY_RTOL[BACKENDS[backend][1]]
    diag_a, diag_b = k.diag(A), k.diag(B)
    same_x, same_z = sharing(A, B)
    assert (same_x & ~same_z).any() and (same_z & ~same_x).any() and (same_x & same_z).any()
    expected_ab = reference(kernel, encoding, activation, "AB")
    assert_entries(k(A, B), expected_ab, diag_a, diag_b, rtol, "k(A, B)")
    expected = reference(kernel, encoding, activation, "AA")
    assert_entries(k(A), expected, diag_a, diag_a, rtol, "k(A)")
    assert_entries(k(A, A), expected, diag_a, diag_a, rtol, "k(A, A)")
    # blocks of one row: every coincidence crosses a chunk or a panel boundary
    blocked = make_kernel(kernel, encoding, activation, backend, block_size=1)
    assert_entries(blocked(A, B), expected_ab, diag_a, diag_b, rtol, "blocks")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("kernel", KERNELS)
def test_gram_matvec_with_coincident_rows(kernel, encoding, backend):
    A, _ = coincident_rows()
    dtype = BACKENDS[backend][1]
    for block_size in (None, 3):
        k = make_kernel(kernel, encoding, "leaky", backend, block_size=block_size)
        rows = k.factorize_rows(A)
        V = np.random.default_rng(1).normal(size=(A.shape[0], 2))
        K = k.gram_factorized(rows)
        product = k.gram_matvec(rows, V)
        atol = (1e-13 if dtype == "float64" else 1e-5) * np.abs(K).sum()
        np.testing.assert_allclose(product, K @ V, rtol=0, atol=atol)
        # and the Gram it multiplies is the exact one
        expected = reference(kernel, encoding, "leaky", "AA")
        assert_entries(K, expected, k.diag(A), k.diag(A), ENTRY_RTOL[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("encoding", ["fourier-iso", "fourier-aniso"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_length_scale_gradient_with_coincident_rows(kernel, encoding, backend):
    A, _ = coincident_rows()
    k = make_kernel(kernel, encoding, "relu", backend)
    K, gradient = k(A, eval_gradient=True)
    assert np.all(np.isfinite(gradient))
    z = A[:, -Z_DIM:]
    if encoding == "fourier-iso":
        same_z = (z[:, None, :] == z[None, :, :]).all(axis=-1)[..., None]
    else:  # one length scale per z column: its derivative vanishes where that column agrees
        same_z = z[:, None, :] == z[None, :, :]
    assert same_z.any() and not same_z.all()
    np.testing.assert_array_equal(gradient[np.broadcast_to(same_z, gradient.shape)], 0.0)
    if BACKENDS[backend][1] == "float32":
        return
    # central differences in log(length_scale), off the diagonal
    theta, step = k.theta, 1e-5
    for d in range(theta.shape[0]):
        plus, minus = theta.copy(), theta.copy()
        plus[d] += step
        minus[d] -= step
        numeric = (k.clone_with_theta(plus)(A) - k.clone_with_theta(minus)(A)) / (2 * step)
        off = ~np.eye(A.shape[0], dtype=bool)
        np.testing.assert_allclose(
            gradient[..., d][off], numeric[off], rtol=1e-6, atol=1e-9 * np.abs(K).max()
        )


def test_negative_zero_is_zero():
    x = np.array([[1.0, 0.0, 2.0], [1.0, -0.0, 2.0], [-0.0, 0.0, 0.0], [0.0, -0.0, 0.0]])
    distinct, index = _rows.distinct_rows(x)
    np.testing.assert_array_equal(distinct, x[[0, 2]])
    np.testing.assert_array_equal(index, [0, 0, 1, 1])
    U = np.array([[0.5, 0.0, -1.0, 0.0, 0.3], [0.5, -0.0, -1.0, -0.0, 0.3]])
    for encoding in ENCODINGS:
        k = make_kernel("HyperKernel", encoding, "relu", "numpy-float32")
        K = k(U[:1], U[1:])
        np.testing.assert_allclose(K[0, 0], k.diag(U[:1])[0], rtol=EQUAL_ROWS_RTOL["float32"])


def _constant_keys(rows):
    return np.zeros(np.shape(rows)[0], dtype=np.uint64)


@pytest.mark.parametrize("verify_rows", [None, 1, 3])
def test_hash_collisions_fall_back_to_an_exact_comparison(monkeypatch, verify_rows):
    A, B = coincident_rows()
    if verify_rows is not None:
        # the hash is verified a slice of rows at a time: a collision in any slice counts
        set_config(rows_verify_bytes=8 * A.shape[1] * verify_rows)
    x = np.vstack([A, B])[:, :-Z_DIM]
    expected = _rows.distinct_rows(x)
    kernel = make_kernel("HyperKernel", "linear", "leaky")
    grams = kernel(A), kernel(A, B)
    # every row hashes alike: every group must be split by comparing values
    monkeypatch.setattr(_rows, "row_keys", _constant_keys)
    distinct, index = _rows.distinct_rows(x)
    np.testing.assert_array_equal(distinct, expected[0])
    np.testing.assert_array_equal(index, expected[1])
    np.testing.assert_array_equal(distinct[index], x)
    ids_a, ids_b = _rows.row_ids(A, B)
    same = (A[:, None, :] == B[None, :, :]).all(axis=-1)
    np.testing.assert_array_equal(ids_a[:, None] == ids_b[None, :], same)
    np.testing.assert_array_equal(kernel(A), grams[0])
    np.testing.assert_array_equal(kernel(A, B), grams[1])


def test_hash_separates_rows_of_round_numbers():
    # integers (and other short mantissas) leave the low bits of every word 0; without
    # folding the high half onto the low half, thousands of such rows collide
    rng = np.random.default_rng(0)
    rows = np.unique(rng.integers(0, 256, size=(4000, 16)).astype(float), axis=0)
    assert np.unique(_rows.row_keys(rows)).shape[0] == rows.shape[0]


# ------------------------------------------------------------------ the pure functions


def _pure_namespaces():
    yield "numpy", np.asarray, 1e-13
    if torch is not None:
        yield "torch-float64", lambda a: torch.as_tensor(a, dtype=torch.float64), 1e-13
        yield "torch-float32", lambda a: torch.as_tensor(a, dtype=torch.float32), 4e-6


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_reference_functions_give_coincident_rows_correlation_one(encoding, activation):
    A, B = coincident_rows()
    params = ENCODINGS[encoding]
    slope = SLOPE if activation == "leaky" else 0.0
    for name, put, rtol in _pure_namespaces():
        for left, right, which in ((A, B, "AB"), (A, None, "AA")):
            other = A if right is None else right
            nngp, ntk = hyper_kernels(
                put(left[:, :-Z_DIM]),
                put(left[:, -Z_DIM:]),
                None if right is None else put(right[:, :-Z_DIM]),
                None if right is None else put(right[:, -Z_DIM:]),
                f_depth=F_DEPTH,
                g_depth=G_DEPTH,
                z_encoding=params["z_encoding"],
                length_scale=params["length_scale"],
                negative_slope=slope,
            )
            for kernel, value in (("HyperNNGP", nngp), ("HyperKernel", ntk)):
                k = make_kernel(kernel, encoding, activation)
                value = np.asarray(value, dtype=np.float64)
                assert_entries(
                    value,
                    reference(kernel, encoding, activation, which),
                    k.diag(left),
                    k.diag(other),
                    rtol,
                    f"{name} {kernel} {which}",
                )


def test_mlp_and_z_kernels_of_equal_rows_are_their_closed_forms():
    A, B = coincident_rows()
    x_a, x_b, z_a, z_b = A[:, :-Z_DIM], B[:, :-Z_DIM], A[:, -Z_DIM:], B[:, -Z_DIM:]
    same_x, same_z = sharing(A, B)
    s = (x_a**2).sum(axis=1) / x_a.shape[1]
    e = (z_a**2).sum(axis=1) / Z_DIM
    for slope in (0.0, SLOPE):
        nngp, ntk = mlp_kernels(x_a, x_b, depth=4, negative_slope=slope)
        i, j = np.nonzero(same_x)
        np.testing.assert_allclose(nngp[i, j], s[i], rtol=1e-15)
        np.testing.assert_allclose(ntk[i, j], 4 * s[i], rtol=1e-15)
    i, j = np.nonzero(same_z)
    fourier = z_input_kernel(z_a, z_b, encoding="fourier", length_scale=0.3)
    np.testing.assert_array_equal(fourier[i, j], 1.0)
    np.testing.assert_allclose(z_input_kernel(z_a, z_b, encoding="linear")[i, j], e[i], rtol=1e-15)
    if torch is not None:
        single = [torch.as_tensor(z, dtype=torch.float32) for z in (z_a, z_b)]
        value = z_input_kernel(*single, encoding="fourier", length_scale=[0.3, 0.5])
        np.testing.assert_array_equal(value.numpy()[i, j], 1.0)


def test_squared_distances_of_many_columns_are_zero_for_equal_rows():
    # beyond a few columns the distance is |a|^2 + |b|^2 - 2 a.b, exact only through the rule
    rng = np.random.default_rng(3)
    z_a = rng.normal(size=(6, 12)) * 10
    z_b = np.vstack([z_a[[4, 1]], rng.normal(size=(3, 12))])
    value = z_input_kernel(z_a, z_b, encoding="fourier", length_scale=5.0)
    np.testing.assert_array_equal(value[[4, 1], [0, 1]], 1.0)
    k = HyperKernel(
        **PAPER_KERNEL, z_dim=12, f_depth=3, g_depth=2, z_encoding="fourier", length_scale=5.0
    )
    U = np.hstack([rng.normal(size=(6, 3)), z_a])
    V = np.hstack([rng.normal(size=(5, 3)), z_b])
    V[0, :3] = U[4, :3]
    K, gradient = k(np.vstack([U, V]), eval_gradient=True)
    assert gradient[4, 6, 0] == 0.0 and gradient[1, 7, 0] == 0.0
    np.testing.assert_allclose(k(U, V)[4, 0], k.diag(U)[4], rtol=2e-15)
