"""The Gram engine: factorised rows, blocks and tiles, the product ``K @ V`` without ``K``.

* :meth:`FactorizedRows.take` subsets rows sharing the distinct-x table, and
  :meth:`~FactorizedRows.compact` drops the distinct rows a subset does not use: the Grams
  of either equal those of the rows themselves;
* :func:`upper_block_product` and :func:`mirror_leading_square`: blocks of the upper block
  triangle of a symmetric matrix give exactly ``K @ V`` and the mirrored matrix, on numpy
  and torch;
* ``gram_matvec`` is ``K @ V`` without ``K`` (every device, thread count and block size),
  and rejects bad vectors.

Devices are tested in ``test_device.py``, the scheduling of the blocks (threads, Dask,
interruption) in ``test_scheduling.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DATASETS, assert_close, shared_image_rows
from sklearn.base import clone

from sklearn_hyperkernel import HyperKernel, HyperNNGP
from sklearn_hyperkernel._utils.linalg import mirror_leading_square, upper_block_product
from sklearn_hyperkernel.kernels import FactorizedRows

# ------------------------------------------------------------ FactorizedRows


def test_take_shares_the_distinct_x_and_gives_the_grams_of_the_rows():
    X = shared_image_rows()
    kernel = HyperKernel(z_encoding="fourier", length_scale=[0.7, 1.4], block_size=4)
    rows = kernel.factorize_rows(X)
    assert isinstance(rows, FactorizedRows) and rows.n_rows == 23 and not rows.all_distinct
    index = np.array([5, 0, 22, 5, 13])
    taken, sliced = rows.take(index), rows.take(slice(3, 17))
    assert taken.x_distinct is rows.x_distinct and sliced.x_distinct is rows.x_distinct
    assert (taken.n_rows, sliced.n_rows) == (5, 14)
    np.testing.assert_array_equal(taken.z, X[index, -2:])
    assert np.shares_memory(sliced.z, rows.z)  # a slice is a view
    assert_close(kernel.gram_factorized(taken, sliced), kernel(X[index], X[3:17]), 1e-14)
    assert_close(kernel.gram_factorized(taken), kernel(X[index]), 1e-14)
    assert_close(kernel.gram_factorized(rows.take([7])), kernel(X[[7]]), 0.0)


def test_compact_keeps_only_the_distinct_x_in_use():
    X = shared_image_rows()
    kernel = HyperNNGP(activation="leaky_relu")
    rows = kernel.factorize_rows(X)
    used = np.unique(rows.x_index[:6])
    compact = rows.take(slice(0, 6)).compact()
    assert compact.x_distinct.shape[0] == used.shape[0] < rows.x_distinct.shape[0]
    np.testing.assert_array_equal(compact.x_distinct[compact.x_index], X[:6, :-2])
    np.testing.assert_array_equal(compact.x_key, rows.x_key[used])
    assert rows.compact() is rows  # every distinct x in use
    assert_close(kernel.gram_factorized(compact, rows), kernel(X[:6], X), 1e-14)


# ------------------------------------------------------------ blocks of a symmetric matrix


def _namespaces():
    """numpy, and torch where it is installed."""
    yield np.asarray
    try:
        import torch
    except ImportError:
        return
    yield torch.as_tensor


@pytest.mark.parametrize("block_rows", [1, 3, 7, 11])
def test_upper_blocks_give_the_product_with_the_mirrored_matrix(block_rows):
    rng = np.random.default_rng(4)
    n = 11
    K = rng.normal(size=(n, n))
    upper = np.triu(K) + np.triu(K, 1).T  # the symmetric matrix of K's upper triangle
    diagonal = rng.normal(size=n)
    symmetric = upper - np.diag(np.diag(upper)) + np.diag(diagonal)
    V = rng.normal(size=(n, 3))
    garbage = np.tril(rng.normal(size=(n, n)), -1)  # what a block's lower part may hold
    for put in _namespaces():
        product = put(np.zeros_like(V))
        for start in range(0, n, block_rows):
            stop = min(start + block_rows, n)
            block = put((K + garbage)[start:stop, start:])
            before = np.asarray(block).copy()
            upper_block_product(block, put(V[start:]), put(diagonal[start:stop]), product[start:])
            np.testing.assert_array_equal(np.asarray(block), before)  # not modified
        np.testing.assert_allclose(np.asarray(product), symmetric @ V, rtol=1e-13, atol=1e-13)
    first = upper_block_product(K[:4, :], V, diagonal[:4])  # out=None starts from zeros
    assert first.shape == V.shape


def test_mirror_leading_square_makes_a_block_symmetric_where_it_straddles_the_diagonal():
    rng = np.random.default_rng(5)
    block = rng.normal(size=(3, 7, 2))  # a gradient block: one slice per hyperparameter
    expected = block.copy()
    mirror_leading_square(block)
    for d in range(2):
        square = block[:, :3, d]
        np.testing.assert_array_equal(square, square.T)
        np.testing.assert_array_equal(np.triu(square), np.triu(expected[:, :3, d]))
    np.testing.assert_array_equal(block[:, 3:], expected[:, 3:])


# ------------------------------------------------------------ gram_matvec


@pytest.mark.parametrize("block_size", [None, 5])
@pytest.mark.parametrize("n_jobs", [None, 2])
@pytest.mark.parametrize("device", [None, "cpu"])
@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize(
    "kernel",
    [
        HyperKernel(z_encoding="fourier", length_scale=[0.7, 1.4]),
        HyperNNGP(activation="leaky_relu"),
    ],
    ids=["ntk-fourier", "nngp-linear-leaky"],
)
def test_gram_matvec_equals_the_gram_times_the_vectors(kernel, dataset, device, n_jobs, block_size):
    if device is not None:
        pytest.importorskip("torch")
    X = DATASETS[dataset]()
    rows = kernel.factorize_rows(X)
    K = kernel.gram_factorized(rows)
    assert_close(K, kernel(X), 0.0)
    streamed = clone(kernel).set_params(device=device, n_jobs=n_jobs, block_size=block_size)
    rng = np.random.default_rng(3)
    n = X.shape[0]
    for vectors in (rng.normal(size=n), rng.normal(size=(n, 3)), np.eye(n)):
        product = streamed.gram_matvec(rows, vectors)
        assert product.shape == vectors.shape
        assert_close(product, K @ vectors, 1e-12)


def test_gram_matvec_accepts_lists_and_columns():
    X = shared_image_rows()
    kernel = HyperKernel(block_size=4)
    rows = kernel.factorize_rows(X)
    K = kernel.gram_factorized(rows)
    v = np.linspace(-1.0, 1.0, X.shape[0])
    assert_close(kernel.gram_matvec(rows, list(v)), K @ v, 1e-12)
    assert_close(kernel.gram_matvec(rows, v[:, None]), (K @ v)[:, None], 1e-12)
    assert kernel.gram_matvec(rows, np.zeros((X.shape[0], 0))).shape == (X.shape[0], 0)


@pytest.mark.parametrize(
    "make_vectors",
    [
        lambda n: np.ones(n + 1),
        lambda n: np.ones(n - 1),
        lambda n: np.ones((n, 2, 2)),
        lambda n: np.ones((1, n)),
        lambda n: np.ones(()),
        lambda n: np.where(np.arange(n) == 4, np.nan, 1.0),
        lambda n: np.where(np.arange(n) == 4, np.inf, 1.0)[:, None],
    ],
    ids=["too-long", "too-short", "3-d", "row", "scalar", "nan", "inf"],
)
def test_gram_matvec_rejects_bad_vectors(make_vectors):
    X = shared_image_rows()
    kernel = HyperKernel()
    rows = kernel.factorize_rows(X)
    with pytest.raises(ValueError, match="vectors"):
        kernel.gram_matvec(rows, make_vectors(X.shape[0]))


# ------------------------------------------------------------ biases on every path


def _biased_rows() -> tuple[np.ndarray, np.ndarray]:
    """Rows ``[x | z]`` (4 x, 2 z) with a zero x, a zero z, equal rows, equal x, equal z."""
    rng = np.random.default_rng(0)
    U, V = rng.normal(size=(9, 6)), rng.normal(size=(5, 6))
    U[1, :4] = 0.0
    U[2, 4:] = 0.0
    U[5] = U[4]
    V[0] = U[0]
    V[1, :4] = U[3, :4]
    V[2, 4:] = U[6, 4:]
    return U, V


# float32: the recursions round to ~6e-8 per operation over a dozen layers' worth of
# operations, and kappa0's slope near correlation 1 amplifies it; measured 6e-7 of the
# largest entry on these rows (torch and numpy alike)
BIAS_RTOL = {"float64": {"nngp": 1e-9, "ntk": 1e-7}, "float32": {"nngp": 4e-6, "ntk": 4e-6}}
PLACEMENTS = {"numpy": (None, "float64"), "numpy-float32": (None, "float32")}
PLACEMENTS.update({"torch-cpu": ("cpu", "float64"), "torch-cpu-float32": ("cpu", "float32")})


@pytest.mark.parametrize("kind", ["nngp", "ntk"])
@pytest.mark.parametrize("f_bias,g_bias", [(0.1, 0.0), (0.0, 1.3), (1.3, 0.1), (0.1, 0.1)])
@pytest.mark.parametrize("encoding", ["linear", "fourier"])
@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_biased_grams_on_every_path_equal_the_reference(kind, f_bias, g_bias, encoding, placement):
    from reference import hyper_grams

    device, dtype = PLACEMENTS[placement]
    if device is not None:
        pytest.importorskip("torch")
    U, V = _biased_rows()
    cls = HyperNNGP if kind == "nngp" else HyperKernel
    config = dict(z_dim=2, f_depth=3, g_depth=2, z_encoding=encoding, length_scale=0.8)
    config.update(activation="leaky_relu", negative_slope=0.2)
    kernel = cls(**config, f_bias_variance=f_bias, g_bias_variance=g_bias, block_size=4)
    kernel.set_params(device=device, dtype=dtype, normalize_x=False)  # the reference's raw rows
    architecture = dict(f_depth=3, g_depth=2, z_encoding=encoding, length_scale=0.8)
    architecture.update(negative_slope=0.2, f_bias_variance=f_bias, g_bias_variance=g_bias)
    index = 0 if kind == "nngp" else 1
    expected = hyper_grams(U[:, :4], U[:, 4:], **architecture)[index]
    expected_cross = hyper_grams(U[:, :4], U[:, 4:], V[:, :4], V[:, 4:], **architecture)[index]
    tolerance = BIAS_RTOL[dtype][kind] * np.abs(expected).max()
    K = kernel(U)
    np.testing.assert_allclose(K, expected, rtol=0, atol=tolerance)
    np.testing.assert_array_equal(K, K.T)
    np.testing.assert_allclose(kernel(U, V), expected_cross, rtol=0, atol=tolerance)
    # the closed-form diagonal, and equal rows (U[5] = U[4], V[0] = U[0]) exactly on it
    diagonal = kernel.diag(U)
    np.testing.assert_allclose(diagonal, np.diag(expected), rtol=1e-13)
    equal_rtol = 2e-15 if dtype == "float64" else 2e-6
    np.testing.assert_allclose(K[4, 5], diagonal[4], rtol=equal_rtol)
    np.testing.assert_allclose(kernel(U, V)[0, 0], diagonal[0], rtol=equal_rtol)
    vectors = np.random.default_rng(1).normal(size=(9, 2))
    product = kernel.gram_matvec(U, vectors)
    np.testing.assert_allclose(product, expected @ vectors, rtol=0, atol=9 * tolerance * 3)
    if f_bias == 0.0:  # x = 0 (row 1): exactly zero, whatever g's biases
        np.testing.assert_array_equal(K[1], 0.0)
    else:  # an ordinary input, except against z = 0 (row 2, linear) without g's biases
        zero_z = encoding == "linear" and g_bias == 0.0
        assert np.all(np.abs(np.delete(K[1], 2) if zero_z else K[1]) > 0)


# ------------------------------------------------------------ a third f: one file, one entry


def _tabled_dense_f():
    """The dense f as an f that is not elementwise: the engine tables its correlations per
    block (the conv f's paths) instead of running it per tile or per entry."""
    from sklearn_hyperkernel._f.dense import DenseF

    class TabledDenseF(DenseF):
        elementwise = False

    return TabledDenseF


@pytest.mark.parametrize("kind", ["ntk", "nngp"])
@pytest.mark.parametrize("bf, bg", [(0.0, 0.0), (0.4, 0.0), (0.0, 0.3), (0.7, 0.2)])
@pytest.mark.parametrize("device", [None, "cpu"])
def test_a_new_f_is_one_class_and_one_registry_entry(monkeypatch, kind, bf, bg, device):
    """An f registered in ``_f.F_KERNELS`` runs on every path of the engine (tiles, the fused
    pass's table mode, the gradient, ``K @ V``, torch): here the dense f's correlations
    tabled per block, which must give the dense kernel."""
    from sklearn_hyperkernel import _f, config_context
    from sklearn_hyperkernel._gram import engine, tiles
    from sklearn_hyperkernel._utils.device import resolve_placement

    if device is not None:
        pytest.importorskip("torch")
    monkeypatch.setitem(_f.F_KERNELS, "tabled-dense", _tabled_dense_f())
    arch = tiles.Architecture(
        f_depth=3,
        g_depth=2,
        z_encoding="fourier",
        length_scale=np.array([0.7, 1.3]),
        negative_slope=0.1,
        kind=kind,
        f_bias_variance=bf,
        g_bias_variance=bg,
    )
    new = tiles.Architecture(**{**arch.__dict__, "f_architecture": "tabled-dense"})
    U, V = shared_image_rows(), shared_image_rows(n_rows=11, seed=3)
    V[0] = U[4]
    placement = resolve_placement(device, "float64")
    names = tuple(n for n, v in (("f_bias_variance", bf), ("g_bias_variance", bg)) if v)
    names += ("length_scale",)
    for fused in (False, True):
        with config_context(fused=fused):
            for b in (None, V):
                results = []
                for a_arch in (arch, new):
                    f = a_arch.f_kernel()
                    rows_u = engine.factorize(U, 2, f)
                    rows_v = None if b is None else engine.factorize(b, 2, f)
                    results.append(
                        engine.gram(a_arch, rows_u, rows_v, placement=placement, block_size=5)[0]
                    )
                assert_close(results[1], results[0], 1e-12)
    f_dense, f_new = arch.f_kernel(), new.f_kernel()
    rows_dense, rows_new = engine.factorize(U, 2, f_dense), engine.factorize(U, 2, f_new)
    K, gradient = engine.gram(arch, rows_dense, eval_gradient=names, placement=placement)
    K_new, gradient_new = engine.gram(new, rows_new, eval_gradient=names, placement=placement)
    assert_close(K_new, K, 1e-13)
    assert_close(gradient_new, gradient, 1e-12)
    vectors = np.random.default_rng(0).normal(size=(U.shape[0], 2))
    diagonal = engine.diagonal(arch, rows_dense)
    assert_close(engine.diagonal(new, rows_new), diagonal, 0.0)
    assert_close(
        engine.gram_matvec(new, rows_new, vectors, diagonal),
        engine.gram_matvec(arch, rows_dense, vectors, diagonal),
        1e-12,
    )


def test_every_f_architecture_has_its_kernel():
    """The values of ``f_architecture`` are the f registered for the engine."""
    from sklearn_hyperkernel._f import F_KERNELS, FKernel
    from sklearn_hyperkernel._params.architecture import F_ARCHITECTURES

    assert set(F_KERNELS) == set(F_ARCHITECTURES)
    assert all(issubclass(cls, FKernel) for cls in F_KERNELS.values())
