"""Tests of the Gram operator (``_operator``): every answer against the kernel evaluated directly.

Both implementations are checked on the same questions: :class:`FactorizedGramOperator`
(the hypernetwork kernels, rows factorised once) and :class:`GramOperator` (any
scikit-learn kernel, here an RBF).
"""

from __future__ import annotations

import joblib
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.gaussian_process.kernels import RBF, DotProduct
from test_kernel_ridge import random_rows

from sklearn_hyperkernel import HyperKernel, HyperNNGP, get_config
from sklearn_hyperkernel._operator.gram_operator import (
    FactorizedGramOperator,
    GramOperator,
    block_partition,
    gram_operator,
)

KERNELS = [
    pytest.param(HyperKernel(z_encoding="fourier", length_scale=0.7), id="hyperkernel"),
    pytest.param(HyperNNGP(z_encoding="linear", normalize_x=True), id="nngp"),
    pytest.param(RBF(1.3), id="rbf"),
]


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    """53 rows sharing 6 images (x), so that blocks hold several rows of one x."""
    return random_rows(n_images=6, pixels_per_image=9, n_x=5, seed=3)[:53]


def test_gram_operator_factorises_rows_for_the_hypernetwork_kernels(rows):
    operator = gram_operator(HyperKernel(), rows)
    assert type(operator) is FactorizedGramOperator
    assert operator.rows.x_distinct.shape[0] == 6 and operator.n_rows == 53
    assert type(gram_operator(RBF(), rows)) is GramOperator


@pytest.mark.parametrize("kernel", KERNELS)
def test_gram_diagonal_rows_columns_and_blocks_are_the_kernels(rows, kernel):
    operator = gram_operator(kernel, rows)
    K = kernel(rows)
    gram = operator.gram()
    assert gram.dtype == np.float64 and gram.flags.writeable
    assert_allclose(gram, K, rtol=1e-14, atol=1e-300)
    assert_allclose(operator.diagonal, kernel.diag(rows), rtol=1e-15)
    block = operator.block(slice(5, 17), slice(3, None))
    assert_allclose(block, kernel(rows[5:17], rows[3:]), rtol=1e-14)
    index = np.array([40, 2, 2, 17])
    assert_allclose(operator.block(index, slice(None)), kernel(rows[index], rows), rtol=1e-14)
    # a row, and columns, with the exact diagonal written in
    expected_row = kernel(rows[11:12], rows)[0]
    expected_row[11] = kernel.diag(rows)[11]
    assert_array_equal(operator.row(11), expected_row)
    expected_columns = kernel(rows, rows[index])
    expected_columns[index, np.arange(4)] = kernel.diag(rows)[index]
    assert_array_equal(operator.columns(index), expected_columns)


@pytest.mark.parametrize("block_size", [None, 1, 7, 53, 100])
@pytest.mark.parametrize("kernel", KERNELS)
def test_matvec_is_the_gram_times_the_vectors(rows, kernel, block_size):
    if isinstance(kernel, HyperKernel | HyperNNGP):
        kernel = kernel.set_params(block_size=block_size)  # the engine's own blocks
    operator = gram_operator(kernel, rows, block_size=block_size)
    V = np.random.default_rng(0).normal(size=(53, 3))
    K = kernel(rows)
    np.fill_diagonal(K, kernel.diag(rows))
    assert_allclose(operator.matvec(V), K @ V, rtol=1e-12, atol=1e-12 * np.abs(K @ V).max())


def test_matvec_of_any_kernel_runs_the_one_loop_in_blocks_of_matvec_block_bytes(rows):
    """A kernel that does not factorise its rows: ``K @ V`` is the one upper-triangle loop
    over kernel calls ``K[i:i+b, i:]``, ``b`` rows of ``matvec_block_bytes`` (here 10 rows of
    53 columns), each entry of the triangle computed once."""
    from sklearn_hyperkernel import config_context

    calls = []

    class CountedRBF(RBF):
        def __call__(self, X, Y=None, eval_gradient=False):
            calls.append((X.shape[0], X.shape[0] if Y is None else Y.shape[0]))
            return super().__call__(X, Y, eval_gradient)

    kernel = CountedRBF(length_scale=2.0)
    operator = gram_operator(kernel, rows)
    V = np.random.default_rng(1).normal(size=(53, 2))
    K = RBF(length_scale=2.0)(rows)
    with config_context(matvec_block_bytes=8 * 53 * 10):
        calls.clear()
        product = operator.matvec(V)
    assert calls == [(10, 53), (10, 43), (10, 33), (10, 23), (10, 13), (3, 3)]
    assert_allclose(product, K @ V, rtol=1e-13, atol=1e-13 * np.abs(K @ V).max())


@pytest.mark.parametrize("kernel", KERNELS)
def test_cross_is_the_kernel_between_other_rows_and_these(rows, kernel):
    operator = gram_operator(kernel, rows)
    new = random_rows(n_images=2, pixels_per_image=7, n_x=5, seed=9)
    assert_allclose(operator.cross(new), kernel(new, rows), rtol=1e-14)
    other = gram_operator(kernel, new)
    assert_allclose(operator.cross(other), kernel(new, rows), rtol=1e-14)
    assert_allclose(other.cross(operator.take(slice(4, 20))), kernel(rows[4:20], new), rtol=1e-14)


@pytest.mark.parametrize("kernel", KERNELS)
def test_take_is_the_operator_of_the_subset(rows, kernel):
    operator = gram_operator(kernel, rows)
    diagonal = operator.diagonal
    index = np.array([3, 17, 4, 8, 50])
    subset = operator.take(index)
    assert subset.n_rows == 5
    assert_allclose(subset.gram(), kernel(rows[index]), rtol=1e-14)
    assert_array_equal(subset.diagonal, diagonal[index])
    assert_allclose(subset.cross(rows), kernel(rows, rows[index]), rtol=1e-14)
    assert_allclose(operator.take(slice(2, 9)).gram(), kernel(rows[2:9]), rtol=1e-14)


def test_a_factorised_subset_keeps_only_the_distinct_x_it_uses(rows):
    kernel = HyperKernel()
    operator = gram_operator(kernel, rows)
    subset = operator.take(np.array([3, 17, 4, 8]))  # images 0, 1, 0, 0
    assert subset.rows.x_distinct.shape[0] == 2
    assert_array_equal(subset.rows.z, rows[[3, 17, 4, 8], -2:])
    assert_array_equal(subset.X, rows[[3, 17, 4, 8]])
    assert_allclose(operator.cross(subset), kernel(rows[[3, 17, 4, 8]], rows), rtol=1e-14)


def test_sequential_runs_one_quiet_worker_and_keeps_the_operator(rows):
    kernel = HyperKernel(n_jobs=2, verbose=2)
    operator = gram_operator(kernel, rows)
    task = operator.sequential()
    assert task.kernel is not kernel and task.kernel.n_jobs == 1 and task.kernel.verbose == 0
    assert kernel.n_jobs == 2 and kernel.verbose == 2  # the estimator's kernel is unchanged
    assert task.X is None and task.rows is operator.rows  # blocks do not read X
    assert_allclose(task.cross(rows[:5]), operator.cross(rows[:5]), rtol=1e-15)
    assert operator.n_jobs == 2 and task.n_jobs == 1
    rbf = gram_operator(RBF(), rows)
    assert rbf.sequential() is rbf and rbf.n_jobs is None  # nothing to change


def test_a_non_finite_diagonal_raises(rows):
    huge = rows.copy()
    huge[:, :-2] *= 1e200
    # the hypernetwork kernels refuse such rows themselves (tests/test_extreme_scales.py);
    # a kernel without that check reaches the operator's own
    with pytest.raises(ValueError, match="overflow"):
        _ = gram_operator(HyperKernel(normalize_x=False), huge).diagonal
    operator = gram_operator(DotProduct(sigma_0=0.0), huge)
    with pytest.raises(ValueError, match="non-finite values"):
        _ = operator.diagonal


@pytest.mark.parametrize(
    ("n_rows", "n_cols", "block_size", "min_blocks"),
    [
        (1000, 50, None, 1),
        (1000, 50, None, 8),
        (100_000, 2000, None, 8),
        (10, 5, None, 8),
        (1000, 50, 7, 8),
        (1000, 50, 7, 1),
        (5, 10**7, None, 1),
    ],
)
def test_block_partition_covers_the_rows_in_whole_tiles(n_rows, n_cols, block_size, min_blocks):
    blocks, tile_rows = block_partition(n_rows, n_cols, block_size, min_blocks=min_blocks)
    assert blocks[0].start == 0 and blocks[-1].stop == n_rows
    assert all(a.stop == b.start for a, b in zip(blocks, blocks[1:], strict=False))
    sizes = [block.stop - block.start for block in blocks]
    if block_size is not None:  # the Gram engine's rule: blocks of block_size rows, one tile each
        assert tile_rows == block_size and max(sizes) == block_size
        return
    tile_bytes = get_config()["operator_tile_bytes"]
    assert 8 * n_cols * tile_rows <= max(tile_bytes, 8 * n_cols)  # a tile fits the budget
    assert all(size % tile_rows == 0 for size in sizes[:-1])  # whole tiles
    assert max(sizes) <= 16 * tile_rows
    n_tiles = -(-n_rows // tile_rows)
    assert len(blocks) >= min(min_blocks, n_tiles)
    at_least = min(256, tile_bytes // (8 * n_cols), -(-n_rows // min_blocks))
    assert tile_rows >= max(at_least, 1)


@pytest.mark.parametrize("n_jobs", [None, 2])
@pytest.mark.parametrize("kernel", KERNELS)
def test_cross_product_is_the_cross_kernel_times_the_coefficients(rows, kernel, n_jobs):
    if "n_jobs" in kernel.get_params():
        kernel = kernel.set_params(n_jobs=n_jobs)
    operator = gram_operator(kernel, rows)
    new = random_rows(n_images=7, pixels_per_image=11, n_x=5, seed=4)
    coef = np.random.default_rng(1).normal(size=(53, 2))
    expected = kernel(new, rows) @ coef
    for block_size, min_blocks in [(None, 1), (None, 8), (1, 1), (10, 8)]:
        product = operator.cross_product(new, coef, block_size=block_size, min_blocks=min_blocks)
        assert_allclose(product, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.dask
def test_dask_receives_an_operator_once_per_computation(rows, dask_client, monkeypatch):
    """The operator reports its arrays' bytes (``__sizeof__``), so joblib's Dask backend
    scatters it to the cluster once instead of serialising it into every task."""
    operator = gram_operator(HyperKernel(n_jobs=2), rows)
    pickled = []
    reduce = FactorizedGramOperator.__reduce_ex__

    def counting(self, protocol):
        pickled.append(self)
        return reduce(self, protocol)

    monkeypatch.setattr(FactorizedGramOperator, "__reduce_ex__", counting, raising=False)
    assert operator.__sizeof__() > rows.nbytes / 2
    new = random_rows(n_images=3, pixels_per_image=10, n_x=5, seed=5)
    coef = np.ones((53, 1))
    with joblib.parallel_config(backend="dask", n_jobs=2):
        product = operator.cross_product(new, coef, block_size=3)  # 10 tasks
    assert_allclose(product, HyperKernel()(new, rows) @ coef, rtol=1e-12)
    assert len(pickled) == 1


class _NaNOffDiagonal(RBF):
    """RBF whose entries between rows with x_0 exactly 0.5 apart are NaN (its diagonal is 1)."""

    def __call__(self, X, Y=None, eval_gradient=False):
        K = super().__call__(X, Y)
        Y = X if Y is None else Y
        K[np.subtract.outer(X[:, 0], Y[:, 0]) == 0.5] = np.nan
        return K


@pytest.mark.parametrize(
    "params",
    [
        {"solver": "cholesky"},
        {"solver": "cg", "cg_rank": 0},
        {"solver": "nystrom", "n_components": 40},
    ],
    ids=["cholesky", "cg", "nystrom"],
)
def test_every_solver_names_a_non_finite_kernel(params):
    # one check (check_finite_kernel) on what each solver reads of the kernel:
    # the dense Gram, the products K @ V, the centres' Gram
    from sklearn_hyperkernel import HyperKernelRegressor

    X = np.random.default_rng(0).normal(size=(40, 4))
    X[3, 0], X[7, 0] = 1.0, 0.5
    y = X[:, 1]
    with pytest.raises(ValueError, match="non-finite values on the training data"):
        HyperKernelRegressor(kernel=_NaNOffDiagonal(), **params).fit(X, y)
