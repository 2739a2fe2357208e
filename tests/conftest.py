"""Fixtures shared by the test modules, and helpers they import (``from conftest import ...``)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    """A freshly seeded numpy generator, so every test draws the same numbers."""
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def blas_threads_restored():
    """Every test leaves BLAS's thread count as it found it: the package limits BLAS while
    its tasks run on threads, and a limit left behind would make every later default call
    (``n_jobs=None`` counts BLAS's threads) run on one thread without a sign."""
    from threadpoolctl import threadpool_info

    def blas_threads():
        return {
            info["filepath"]: info["num_threads"]
            for info in threadpool_info()
            if info["user_api"] == "blas"
        }

    before = blas_threads()
    yield
    # a BLAS loaded during the test (a module's first import, e.g. scipy.ndimage's) is not
    # one the test could have changed: compare the libraries that were there before
    after = {path: threads for path, threads in blas_threads().items() if path in before}
    assert after == before, "this test left BLAS with another number of threads"


@pytest.fixture(autouse=True)
def package_config_restored():
    """Every test leaves the package configuration as it found it: a test may change it
    with ``sklearn_hyperkernel.set_config`` (restored here, also when the test fails)."""
    from sklearn_hyperkernel import config_context, get_config

    before = get_config()
    with config_context():
        yield
    assert get_config() == before


@pytest.fixture(scope="session", autouse=True)
def torch_on_one_thread():
    """torch on one intra-op thread for the whole suite, restored at the end.

    The problems here are small and the machine has two cores: with another job on them,
    torch's OpenMP threads spin against each other and made single modules 3.5 to 10 times
    slower (test_hypernetwork.py: 135 s against 38 s). No value depends on the thread count.
    """
    try:
        import torch
    except ImportError:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dask_client():
    """A local Dask cluster of two single-threaded worker processes on loopback, per module."""
    import warnings

    distributed = pytest.importorskip("distributed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. a dashboard port already in use
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
        )
        client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture
def torch_module():
    """torch, or a skip where it is not installed."""
    return pytest.importorskip("torch")


@pytest.fixture(scope="module")
def pixel_task() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """192 training rows (12 digits, 16 pixels each) and 48 rows of 3 other digits."""
    from sklearn.datasets import load_digits

    from sklearn_hyperkernel.datasets import pixel_regression

    images = load_digits().images
    X, y = pixel_regression(images[:12], pixels_per_image=16, random_state=0)
    X_test, _ = pixel_regression(images[12:15], pixels_per_image=16, random_state=1)
    return X, y, X_test


# ------------------------------------------------------------------ helpers

try:
    import torch as _torch
except ImportError:  # the torch tests skip themselves
    _torch = None

#: whether torch sees a CUDA GPU
CUDA = _torch is not None and _torch.cuda.is_available()
#: marks of a test that needs a GPU
GPU = [
    pytest.mark.gpu,
    pytest.mark.skipif(not CUDA, reason="needs CUDA (torch.cuda.is_available() is False)"),
]
#: torch devices compared with numpy: the CPU always, a GPU where there is one
TORCH_DEVICES = ["cpu", pytest.param("cuda", marks=GPU)]


def shared_image_rows(
    n_images: int = 5, pixels: int = 5, n_rows: int = 23, seed: int = 0
) -> np.ndarray:
    """Rows ``[x | z]`` (8 x columns, 2 z columns) with each x repeated for several pixels.

    23 rows: not a multiple of the block sizes 5 and 7. One image is all zeros
    (its rows have kernel 0 with every row) and one pixel sits at z = 0.
    """
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n_images, 8))
    images[2] = 0.0
    x = np.repeat(images, pixels, axis=0)
    z = rng.uniform(-1.0, 1.0, size=(n_images * pixels, 2))
    z[3] = 0.0
    rows = np.hstack([x, z])[:n_rows]
    return rows[rng.permutation(n_rows)]  # shared x rows not consecutive


def distinct_rows(n_rows: int = 19, seed: int = 1) -> np.ndarray:
    """Rows ``[x | z]`` (8 x columns, 2 z columns) whose x rows all differ."""
    return np.random.default_rng(seed).normal(size=(n_rows, 10))


def relative_error(actual, desired) -> float:
    """``max |actual - desired| / max |desired|`` (both as float64 arrays of one shape)."""
    actual, desired = np.asarray(actual), np.asarray(desired)
    assert actual.shape == desired.shape
    scale = np.max(np.abs(desired))
    assert scale > 0
    return float(np.max(np.abs(actual - desired)) / scale)


def assert_close(actual, desired, rtol: float) -> None:
    """A float64 numpy result within ``rtol`` of ``desired`` in :func:`relative_error`."""
    assert isinstance(actual, np.ndarray) and actual.dtype == np.float64
    error = relative_error(actual, desired)
    assert error <= rtol, f"relative error {error:.3g} > {rtol:.3g}"


@contextmanager
def no_floating_point_warnings() -> Iterator[None]:
    """Turn numpy floating-point errors and every ``RuntimeWarning`` into exceptions.

    Underflow is left alone: ``exp`` of a very negative number legitimately underflows.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with np.errstate(divide="raise", invalid="raise", over="raise"):
            yield


#: the two kinds of rows of the engine's tests, by name
DATASETS = {"shared-x": shared_image_rows, "distinct-x": distinct_rows}


def dask_task_stream(client):
    """``distributed.get_task_stream(client)``: a context recording the tasks that ran."""
    from distributed import get_task_stream

    return get_task_stream(client)


def finished_tasks(stream, name: str = "_gram_block") -> list[dict]:
    """The tasks of a :func:`dask_task_stream` whose key names ``name`` and that succeeded."""
    return [task for task in stream.data if name in task["key"] and task["status"] == "OK"]


#: The paper's kernels of the raw rows (no biases, x as it is): the settings under which the
#: closed forms, the paper's identities, homogeneity in x and the bias-free reference hold.
#: Tests of those pass them explicitly; the package's defaults (x on the sphere, biases) are
#: tested in tests/test_defaults.py and wherever a test is about the defaults.
PAPER_KERNEL = {"normalize_x": False, "f_bias_variance": 0.0, "g_bias_variance": 0.0}
#: The regressor without biases, with each x on the sphere and the kernels' length scale in
#: z's units (its defaults before 0.2.0, but for the kernel): the settings of the tests that
#: check it against the bias-free closed forms.
BIAS_FREE_REGRESSOR = {
    "length_scale": 0.5,
    "normalize_x": True,
    "f_bias_variance": 0.0,
    "g_bias_variance": 0.0,
}
