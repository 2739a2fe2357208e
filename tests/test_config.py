"""The package configuration (sklearn_hyperkernel.config): values, validation, scope, effect."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import sklearn_hyperkernel
from sklearn_hyperkernel import HyperKernel, HyperNNGP, config_context, get_config, set_config
from sklearn_hyperkernel._gram import fused as _fused
from sklearn_hyperkernel._gram import tiles as _gram_tiles
from sklearn_hyperkernel._utils import scheduling as _scheduling
from sklearn_hyperkernel._utils.device import Placement
from sklearn_hyperkernel.config import FUSED_ENV, fused_setting

Z_DIM = 2


def _rows(rng, n, x_dim=6):
    return np.hstack([rng.normal(size=(n, x_dim)), rng.uniform(-1.5, 1.5, size=(n, Z_DIM))])


def test_defaults_are_the_measured_values_and_get_config_returns_a_copy():
    config = get_config()
    assert config["gram_tile_elements"] == 2**17 and config["gram_block_elements"] == 2**22
    assert config["gram_min_block_rows"] == 256 and config["gpu_block_elements"] == 2**25
    assert config["fused_block_elements"] == 2**20 and config["fused_min_entries"] == 2**24
    assert config["fused"] == "env" and config["auto_cholesky_max_gram_bytes"] == 4 * 2**30
    config["gram_tile_elements"] = 1
    assert get_config()["gram_tile_elements"] == 2**17
    assert sklearn_hyperkernel.get_config is get_config  # exported at the top level


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("gram_tile_elements", 0),
        ("gram_tile_elements", 2.5),
        ("gram_tile_elements", True),
        ("gram_block_elements", "big"),
        ("fused_min_entries", -1),
        ("fused_table_fraction", 1.5),
        ("fused_table_fraction", float("nan")),
        ("cg_preconditioner_trace_fraction", 0.0),
        ("cg_preconditioner_trace_fraction", float("inf")),
        ("fused", "yes"),
        ("fused", 1),
    ],
)
def test_bad_values_raise_a_value_error_naming_the_entry_and_change_nothing(name, value):
    before = get_config()
    with pytest.raises(ValueError, match=name):
        set_config(gram_min_block_rows=7, **{name: value})
    with pytest.raises(ValueError, match=name):
        with config_context(**{name: value}):
            pass  # pragma: no cover - never entered
    assert get_config() == before


def test_unknown_entries_raise_a_type_error():
    with pytest.raises(TypeError, match="gram_tile_size"):
        set_config(gram_tile_size=4)


def test_config_context_restores_on_exit_and_on_exception():
    with config_context(gram_tile_elements=1024, fused=False):
        assert get_config()["gram_tile_elements"] == 1024 and get_config()["fused"] is False
        with config_context(gram_tile_elements=2048):  # nested
            assert get_config()["gram_tile_elements"] == 2048
            assert get_config()["fused"] is False
        assert get_config()["gram_tile_elements"] == 1024
        set_config(sweep_rows=3)  # set inside: undone on exit too
    assert get_config()["gram_tile_elements"] == 2**17 and get_config()["sweep_rows"] == 512
    with pytest.raises(RuntimeError), config_context(fused_min_entries=5):
        raise RuntimeError
    assert get_config()["fused_min_entries"] == 2**24
    # None leaves an entry as it is (scikit-learn's convention)
    set_config(sweep_rows=9)
    set_config(sweep_rows=None)
    assert get_config()["sweep_rows"] == 9


def test_each_thread_has_its_own_configuration():
    """As scikit-learn's: a new thread starts from the defaults, and what a thread sets is
    its own."""
    seen = {}
    set_config(gram_tile_elements=4096)
    started, release = threading.Event(), threading.Event()

    def other():
        seen["start"] = get_config()["gram_tile_elements"]
        set_config(gram_tile_elements=8192)
        started.set()
        release.wait(10)
        seen["end"] = get_config()["gram_tile_elements"]

    thread = threading.Thread(target=other)
    with config_context(fused=True):
        thread.start()
        started.wait(10)
        assert get_config()["gram_tile_elements"] == 4096  # not the other thread's 8192
        release.set()
        thread.join()
    assert seen == {"start": 2**17, "end": 8192}


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_the_package_tasks_run_with_the_callers_configuration(n_jobs):
    """The blocks' tasks on joblib's worker threads see the caller's configuration."""
    results = []
    calls = [(i,) for i in range(6)]
    with config_context(sweep_rows=7, fused_table_fraction=0.25):
        _scheduling.run_tasks(_read_config, calls, n_jobs, results.append)
    assert sorted(results) == [(i, 7, 0.25) for i in range(6)]
    results.clear()
    _scheduling.run_tasks(_read_config, calls, n_jobs, results.append)
    assert sorted(results) == [(i, 512, 0.125) for i in range(6)]


def _read_config(i):
    config = get_config()
    return i, config["sweep_rows"], config["fused_table_fraction"]


def test_the_block_and_tile_rule_follows_the_configuration():
    numpy = Placement()
    assert _gram_tiles.block_and_tile_rows(1000, None, numpy) == (4194, 131)
    with config_context(gram_tile_elements=10_000, gram_block_elements=50_000):
        assert _gram_tiles.block_and_tile_rows(1000, None, numpy) == (256, 10)
        with config_context(gram_min_block_rows=20):
            assert _gram_tiles.block_and_tile_rows(1000, None, numpy) == (50, 10)
    with config_context(fused_block_elements=2**18):
        assert _gram_tiles.block_and_tile_rows(512, None, numpy, fused=True) == (512, 512)
    assert _gram_tiles.block_and_tile_rows(1000, 33, numpy) == (33, 33)  # block_size wins


@pytest.mark.parametrize("kernel_class", [HyperKernel, HyperNNGP])
def test_smaller_tiles_and_blocks_give_the_same_gram(rng, kernel_class):
    A, B = _rows(rng, 90), _rows(rng, 70)
    kernel = kernel_class(z_dim=Z_DIM, n_jobs=1)
    expected, gradient = kernel(A, eval_gradient=True)
    cross = kernel(A, B)
    tiles = []
    original = _gram_tiles._tile

    def spy(*args, **kwargs):
        tiles.append(args[3])  # the tile's rows
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_gram_tiles, "_tile", spy)
        with config_context(fused=False, gram_tile_elements=700, gram_min_block_rows=30):
            small, small_gradient = kernel(A, eval_gradient=True)
            small_cross = kernel(A, B)
    assert len(tiles) > 10  # 90 rows in tiles of 10 (and 7) rows, not one tile
    np.testing.assert_allclose(small, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(small_gradient, gradient, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(small_cross, cross, rtol=1e-12, atol=1e-14)


@pytest.fixture
def fused_calls(monkeypatch):
    pytest.importorskip("numba")
    calls = []
    original = _fused.hyper_block

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(_fused, "hyper_block", counted)
    return calls


def test_the_fused_switch_and_threshold_follow_the_configuration(rng, monkeypatch, fused_calls):
    """fused_min_entries=0 forces the fused pass on a small Gram (same values to 1e-12);
    fused=True/False override the environment variable, which stays the default."""
    A = _rows(rng, 60)
    kernel = HyperKernel(z_dim=Z_DIM, n_jobs=1)
    monkeypatch.delenv(FUSED_ENV, raising=False)
    numpy_path = kernel(A)
    assert not fused_calls  # 3,600 entries: below 2^24
    with config_context(fused_min_entries=0):
        forced = kernel(A)
    assert len(fused_calls) == 1
    np.testing.assert_allclose(forced, numpy_path, rtol=1e-12, atol=1e-12 * numpy_path.max())
    assert not np.array_equal(forced, numpy_path)  # a different path, not the same one
    with config_context(fused=True):
        kernel(A)
    assert len(fused_calls) == 2
    monkeypatch.setenv(FUSED_ENV, "1")  # the default ('env') reads it at each call
    assert fused_setting() is True
    kernel(A)
    assert len(fused_calls) == 3
    with config_context(fused=False):  # the configuration overrides the variable
        np.testing.assert_array_equal(kernel(A), numpy_path)
    with config_context(fused="auto"):
        kernel(A)
    assert len(fused_calls) == 3
    monkeypatch.setenv(FUSED_ENV, "0")
    assert fused_setting() is False
    with config_context(fused_min_entries=0):  # 'env' with "0": never
        kernel(A)
    assert len(fused_calls) == 3


def test_the_auto_solver_threshold_follows_the_configuration(rng):
    from sklearn_hyperkernel import HyperKernelRegressor

    X, y = _rows(rng, 40), rng.normal(size=40)
    assert HyperKernelRegressor(z_dim=Z_DIM).fit(X, y).solver_ == "cholesky"
    with config_context(auto_cholesky_max_gram_bytes=8 * 39**2):
        assert HyperKernelRegressor(z_dim=Z_DIM).fit(X, y).solver_ == "nystrom"


@pytest.mark.dask
def test_the_package_tasks_on_dask_workers_run_with_the_callers_configuration(dask_client):
    import joblib

    results = []
    with config_context(sweep_rows=11), joblib.parallel_config(backend="dask"):
        # the task is the package's own get_config: the workers import it by reference
        _scheduling.run_tasks(get_config, [()] * 4, 2, results.append)
    assert [result["sweep_rows"] for result in results] == [11] * 4
