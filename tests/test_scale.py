"""Tests of the scaling machinery: devices, dtypes, streamed products, Dask, progress, interrupts.

* torch (CPU, and CUDA where there is a GPU) gives the numpy values: float64 to
  1e-10 relative, float32 to 1e-4, for both kernels, both encodings and both
  activations, on rows that share images and on all-distinct rows;
* bad ``device`` / ``dtype`` values are clear errors at call (kernel) or fit
  (regressor) time;
* ``gram_matvec`` is ``K @ V`` without ``K``;
* ``HyperKernelRegressor`` is the same model on every device and dtype;
* inside ``joblib.parallel_config(backend="dask")`` the panels run on the
  workers of a local two-process cluster and give the local values;
* an interrupted computation leaving no work behind
  (threads and Dask).

"Relative" below is ``max |a - b| / max |b|``. Budget: about a minute on two
loaded CPU cores, of which the Dask cluster costs a few seconds once.
"""

from __future__ import annotations

import sys
import threading
import time
import warnings

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_hyperkernel import HyperKernel, HyperNNGP, _evaluate, _progress
from sklearn_hyperkernel._evaluate import Placement, resolve_placement
from sklearn_hyperkernel.datasets import pixel_regression
from sklearn_hyperkernel.kernel_ridge import HyperKernelRegressor

try:
    import torch
except ImportError:  # the torch tests skip themselves
    torch = None

CUDA = torch is not None and torch.cuda.is_available()
GPU = [
    pytest.mark.gpu,
    pytest.mark.skipif(not CUDA, reason="needs CUDA (torch.cuda.is_available() is False)"),
]
# torch devices compared with numpy: the CPU always, a GPU where there is one
TORCH_DEVICES = ["cpu", pytest.param("cuda", marks=GPU)]

KERNEL_CLASSES = [HyperKernel, HyperNNGP]
ENCODINGS = {
    "linear": dict(z_encoding="linear"),
    "fourier-iso": dict(z_encoding="fourier", length_scale=0.8),
    "fourier-aniso": dict(z_encoding="fourier", length_scale=[0.6, 1.7]),
}
ACTIVATIONS = {
    "relu": dict(activation="relu"),
    "leaky": dict(activation="leaky_relu", negative_slope=0.2),
}
PIXEL_PARAMS = {"z_encoding": "fourier", "length_scale": 0.5}


def relative_error(actual, desired) -> float:
    """``max |actual - desired| / max |desired|`` (both as float64 arrays of one shape)."""
    actual, desired = np.asarray(actual), np.asarray(desired)
    assert actual.shape == desired.shape
    scale = np.max(np.abs(desired))
    assert scale > 0
    return float(np.max(np.abs(actual - desired)) / scale)


def assert_close(actual, desired, rtol: float) -> None:
    assert isinstance(actual, np.ndarray) and actual.dtype == np.float64
    error = relative_error(actual, desired)
    assert error <= rtol, f"relative error {error:.3g} > {rtol:.3g}"


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
    """Rows ``[x | z]`` whose x rows all differ."""
    return np.random.default_rng(seed).normal(size=(n_rows, 10))


DATASETS = {"shared-x": shared_image_rows, "distinct-x": distinct_rows}


@pytest.fixture
def torch_module():
    return pytest.importorskip("torch")




@pytest.fixture(scope="module")
def pixel_task() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """192 training rows (12 digits, 16 pixels each) and 48 rows of 3 other digits."""
    images = load_digits().images
    X, y = pixel_regression(images[:12], pixels_per_image=16, random_state=0)
    X_test, _ = pixel_regression(images[12:15], pixels_per_image=16, random_state=1)
    return X, y, X_test


# ------------------------------------------------------------ torch = numpy


def _all_values(kernel, X, Y):
    """Symmetric Gram, cross Gram, (Gram, gradient) and diagonal of one kernel."""
    K = kernel(X)
    K_cross = kernel(X, Y)
    K_again, gradient = kernel(X, eval_gradient=True)
    return {"gram": K, "cross": K_cross, "gram_with_gradient": K_again, "gradient": gradient,
            "diag": kernel.diag(X)}


def _compare_with_numpy(kernel_class, params, X, Y, device, dtype, rtol):
    reference = _all_values(kernel_class(**params), X, Y)
    candidate = _all_values(kernel_class(**params, device=device, dtype=dtype), X, Y)
    for name, value in reference.items():
        if name == "gradient" and value.shape[2] == 0:  # linear encoding: no hyperparameter
            assert candidate[name].shape == value.shape
            continue
        assert isinstance(candidate[name], np.ndarray) and candidate[name].dtype == np.float64, name
        error = relative_error(candidate[name], value)
        assert error <= rtol, f"{name}: relative error {error:.3g} > {rtol:.3g}"
    # the closed-form diagonal is written into the Gram on every device
    np.testing.assert_array_equal(np.diag(candidate["gram"]), candidate["diag"])
    np.testing.assert_array_equal(candidate["gram"], candidate["gram"].T)
    if candidate["gradient"].shape[2]:
        gradient = candidate["gradient"]
        np.testing.assert_array_equal(gradient, gradient.transpose(1, 0, 2))


@pytest.mark.parametrize("device", TORCH_DEVICES)
@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("kernel_class", KERNEL_CLASSES)
def test_torch_float64_equals_numpy(
    torch_module, kernel_class, encoding, activation, dataset, device
):
    X, Y = DATASETS[dataset](), shared_image_rows(n_images=3, pixels=4, n_rows=11, seed=5)
    for block_size in (None, 7):
        params = dict(**ENCODINGS[encoding], **ACTIVATIONS[activation], block_size=block_size)
        _compare_with_numpy(kernel_class, params, X, Y, device, "float64", 1e-10)


@pytest.mark.parametrize("device", [None, *TORCH_DEVICES])
@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("kernel_class", KERNEL_CLASSES)
def test_float32_is_within_1e4_of_float64(kernel_class, encoding, activation, dataset, device):
    if device is not None:
        pytest.importorskip("torch")
    X, Y = DATASETS[dataset](), DATASETS[dataset](seed=9)[:11]
    params = dict(**ENCODINGS[encoding], **ACTIVATIONS[activation], block_size=7)
    _compare_with_numpy(kernel_class, params, X, Y, device, "float32", 1e-4)


@pytest.mark.parametrize("device", [None, *TORCH_DEVICES])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("kernel_class", KERNEL_CLASSES)
def test_float32_agreement_on_pixel_rows(pixel_task, kernel_class, encoding, activation, device):
    # rows that share images and pixel coordinates, and test rows that are training images'
    # pixels (inpainting): equal x and equal z have correlation exactly 1 in float32 too, so
    # float32 agrees with float64 to a few float32 roundings (measured: <= 4e-7)...
    if device is not None:
        pytest.importorskip("torch")
    X, _, X_test = pixel_task
    X_paint = np.vstack([X[::7], X_test])
    params = dict(**ENCODINGS[encoding], **ACTIVATIONS[activation])
    rtol = 2e-6
    if encoding == "linear" and kernel_class is HyperKernel:
        # ... except the linear encoding's parallel pixel coordinates (z' = c z, c != 1),
        # whose correlation is 1 +- ulp: kappa0 moves by sqrt(ulp) (measured: 5.5e-5)
        rtol = 1e-4
    for args in ((X,), (X_paint, X)):
        reference = kernel_class(**params)(*args)
        candidate = kernel_class(**params, device=device, dtype="float32")(*args)
        assert_close(candidate, reference, rtol)


def test_float32_really_computes_in_single_precision(torch_module):
    # guards against a dtype that is accepted and ignored: float32 differs from float64
    X = shared_image_rows()
    reference = HyperKernel(z_encoding="fourier")(X)
    for device in (None, "cpu"):
        single = HyperKernel(z_encoding="fourier", device=device, dtype="float32")(X)
        assert single.dtype == np.float64
        assert 1e-9 < relative_error(single, reference) < 1e-4


@pytest.mark.parametrize("device", TORCH_DEVICES)
def test_torch_results_do_not_depend_on_blocks_or_threads(torch_module, device):
    X = shared_image_rows(n_images=8, pixels=6, n_rows=47)
    kernel = HyperKernel(z_encoding="fourier", length_scale=[0.5, 2.0])
    reference, reference_gradient = kernel(X, eval_gradient=True)
    for block_size, n_jobs in [(1, None), (5, 2), (7, None), (46, 2), (1000, None)]:
        K, gradient = clone(kernel).set_params(device=device, block_size=block_size, n_jobs=n_jobs)(
            X, eval_gradient=True
        )
        assert_close(K, reference, 1e-10)
        assert_close(gradient, reference_gradient, 1e-10)


def test_auto_device_resolves_to_cuda_only_with_a_gpu(torch_module):
    placement = resolve_placement("auto")
    assert placement == Placement("cuda" if CUDA else None, "float64")
    assert resolve_placement("auto", "float32").dtype == "float32"
    assert resolve_placement(None) == Placement(None, "float64")
    assert resolve_placement("cpu").device == "cpu"
    X = shared_image_rows()
    assert_close(HyperKernel(device="auto")(X), HyperKernel()(X), 1e-10)


def test_auto_device_without_torch_is_numpy_and_explicit_devices_need_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    assert resolve_placement("auto") == Placement(None, "float64")
    X = shared_image_rows()
    assert_close(HyperKernel(device="auto")(X), HyperKernel()(X), 0.0)
    with pytest.raises(ImportError, match="torch"):
        resolve_placement("cpu")
    with pytest.raises(ImportError, match="torch"):
        HyperKernel(device="cpu")(X)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA (torch.cuda.is_available() is False)")
def test_cuda_index_is_checked_and_regressor_runs_on_cuda(pixel_task):
    assert resolve_placement("cuda:0").device == "cuda:0"
    with pytest.raises(ValueError, match="CUDA"):
        resolve_placement(f"cuda:{torch.cuda.device_count()}")
    X, y, X_test = pixel_task
    on_cpu = HyperKernelRegressor(solver="cholesky", **PIXEL_PARAMS).fit(X, y).predict(X_test)
    for solver in ("cholesky", "cg"):
        model = HyperKernelRegressor(solver=solver, tol=1e-10, device="cuda", **PIXEL_PARAMS)
        model.fit(X, y)
        assert_close(model.predict(X_test), on_cpu, 1e-6)


# ------------------------------------------------------------ bad device / dtype


@pytest.mark.skipif(CUDA, reason="tests the error raised when CUDA is missing")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_is_a_clear_error(torch_module, device):
    X, y = shared_image_rows(), np.arange(23.0)
    with pytest.raises(ValueError, match="CUDA"):
        resolve_placement(device)
    kernel = HyperKernel(device=device)  # constructing does not check
    with pytest.raises(ValueError, match="CUDA"):
        kernel(X)
    model = HyperKernelRegressor(device=device)
    with pytest.raises(ValueError, match="CUDA"):
        model.fit(X, y)


@pytest.mark.parametrize(
    "params, name",
    [
        ({"device": "tpu9"}, "device"),
        ({"device": 3}, "device"),
        ({"device": ""}, "device"),
        ({"dtype": "float16"}, "dtype"),
        ({"dtype": np.float32}, "dtype"),
    ],
)
@pytest.mark.parametrize("kernel_class", KERNEL_CLASSES)
def test_bad_device_or_dtype_is_a_value_error_at_call_time(
    torch_module, kernel_class, params, name
):
    X = shared_image_rows()
    kernel = kernel_class(**params)  # scikit-learn convention: no checks in __init__
    assert kernel.get_params()[name] is params[name]
    rows = HyperKernel().factorize_rows(X)
    calls = {
        "gram": lambda: kernel(X),
        "cross": lambda: kernel(X, X[:3]),
        "gradient": lambda: kernel(X, eval_gradient=True),
        "diag": lambda: kernel.diag(X),
        "factorize_rows": lambda: kernel.factorize_rows(X),
        "gram_factorized": lambda: kernel.gram_factorized(rows),
        "gram_matvec": lambda: kernel.gram_matvec(rows, np.ones(X.shape[0])),
    }
    for what, call in calls.items():
        with pytest.raises(ValueError, match=name):
            call()
            pytest.fail(f"{what} accepted {params}")


@pytest.mark.parametrize(
    "params, error, name",
    [
        ({"device": "tpu9"}, ValueError, "device"),
        ({"device": 3}, InvalidParameterError, "device"),
        ({"dtype": "float16"}, InvalidParameterError, "dtype"),
    ],
)
@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_regressor_checks_device_and_dtype_at_fit(torch_module, params, error, name, solver):
    X, y = shared_image_rows(), np.arange(23.0)
    model = HyperKernelRegressor(solver=solver, **params)
    with pytest.raises(error, match=name):
        model.fit(X, y)
    assert not hasattr(model, "dual_coef_")


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


# ------------------------------------------------------------ the regressor


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_regressor_on_torch_cpu_equals_numpy(torch_module, pixel_task, solver):
    X, y, X_test = pixel_task
    params = dict(solver=solver, tol=1e-10, **PIXEL_PARAMS)
    numpy_model = HyperKernelRegressor(**params).fit(X, y)
    torch_model = HyperKernelRegressor(**params, device="cpu").fit(X, y)
    assert torch_model.kernel_.device == "cpu" and torch_model.solver_ == solver
    assert_close(torch_model.predict(X_test), numpy_model.predict(X_test), 1e-8)
    assert_close(torch_model.dual_coef_, numpy_model.dual_coef_, 1e-8)


@pytest.mark.parametrize("device", [None, "cpu"])
def test_regressor_float32_is_within_1e3_of_float64(pixel_task, device):
    if device is not None:
        pytest.importorskip("torch")
    X, y, X_test = pixel_task
    reference = HyperKernelRegressor(solver="cholesky", **PIXEL_PARAMS).fit(X, y).predict(X_test)
    for solver in ("cholesky", "cg"):
        model = HyperKernelRegressor(
            solver=solver, tol=1e-10, dtype="float32", device=device, **PIXEL_PARAMS
        )
        model.fit(X, y)
        assert model.kernel_.dtype == "float32"
        prediction = model.predict(X_test)
        assert prediction.dtype == np.float64
        assert relative_error(prediction, reference) < 1e-3


def test_regressor_cg_equals_cholesky_through_the_streamed_product(pixel_task, monkeypatch):
    X, y, X_test = pixel_task
    cholesky = HyperKernelRegressor(solver="cholesky", **PIXEL_PARAMS).fit(X, y)
    products = []
    original = HyperKernel.gram_matvec

    def counted(self, rows, vectors):
        products.append(np.shape(vectors))
        return original(self, rows, vectors)

    monkeypatch.setattr(HyperKernel, "gram_matvec", counted)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cg = HyperKernelRegressor(solver="cg", tol=1e-10, cg_rank=20, block_size=37, n_jobs=2,
                                  **PIXEL_PARAMS).fit(X, y)
    assert len(products) >= cg.n_iter_ > 1  # every CG product is streamed by the kernel
    np.testing.assert_allclose(cg.predict(X_test), cholesky.predict(X_test), rtol=0, atol=1e-6)
    np.testing.assert_allclose(cg.predict(X), cholesky.predict(X), rtol=0, atol=1e-6)


def test_regressor_params_round_trip_device_and_dtype(torch_module, pixel_task):
    model = HyperKernelRegressor(device="cpu", dtype="float32", **PIXEL_PARAMS)
    params = model.get_params()
    assert params["device"] == "cpu" and params["dtype"] == "float32"
    copy = clone(model)
    assert copy.get_params() == params
    assert HyperKernelRegressor().get_params()["device"] is None
    assert HyperKernelRegressor().get_params()["dtype"] == "float64"
    copy.set_params(device=None, dtype="float64")
    assert (copy.device, copy.dtype) == (None, "float64")
    assert (model.device, model.dtype) == ("cpu", "float32")
    X, y, _ = pixel_task
    fitted = model.fit(X, y)
    assert fitted.kernel_.get_params()["device"] == "cpu"
    assert fitted.kernel_.get_params()["dtype"] == "float32"
    # a kernel instance keeps its own device and dtype (the regressor's are for "ntk"/"nngp")
    instance = HyperKernel(device="cpu", dtype="float32", **PIXEL_PARAMS)
    fitted = HyperKernelRegressor(kernel=instance, device=None, dtype="float64").fit(X, y)
    assert (fitted.kernel_.device, fitted.kernel_.dtype) == ("cpu", "float32")
    kernel = HyperNNGP(device="cpu", dtype="float32", verbose=1)
    assert clone(kernel).get_params() == kernel.get_params()
    expected = {"device": "cpu", "dtype": "float32", "verbose": 1}
    assert expected.items() <= kernel.get_params().items()


# ------------------------------------------------------------ interruption


def _wait_for(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _interrupt_after_first_step(monkeypatch) -> list:
    steps = []

    def step(self, count=1):
        steps.append(count)
        raise KeyboardInterrupt

    monkeypatch.setattr(_progress.ProgressLog, "step", step)
    return steps


@pytest.mark.parametrize("what", ["gram", "gram_matvec"])
def test_interrupted_threaded_computation_stops_and_leaves_no_threads(monkeypatch, what):
    X = distinct_rows(n_rows=120)
    kernel = HyperKernel(block_size=4, n_jobs=2, verbose=1)
    rows = kernel.factorize_rows(X)
    total = 30
    task_name = "_gram_panel" if what == "gram" else "_matvec_panel"
    original = getattr(_evaluate, task_name)
    calls = []

    def slow_panel(*args):
        calls.append(threading.get_ident())
        time.sleep(0.05)  # long enough that the interruption comes while most panels wait
        return original(*args)

    monkeypatch.setattr(_evaluate, task_name, slow_panel)
    steps = _interrupt_after_first_step(monkeypatch)
    threads_before = threading.active_count()
    with pytest.raises(KeyboardInterrupt):
        if what == "gram":
            kernel(X)
        else:
            kernel.gram_matvec(rows, np.ones(120))
    assert len(steps) == 1  # the first progress step raised
    assert threading.get_ident() not in calls  # the panels ran on worker threads
    computed = len(calls)
    print(f"{computed} of {total} panels computed before the interruption")
    assert 1 <= computed <= 10 < total, computed
    time.sleep(0.3)
    assert len(calls) == computed  # nothing goes on running after the interruption
    assert _wait_for(lambda: threading.active_count() <= threads_before), threading.enumerate()

    monkeypatch.undo()
    expected = HyperKernel()(X)
    if what == "gram":
        assert_close(kernel.set_params(verbose=0)(X), expected, 1e-12)
    else:
        product = kernel.set_params(verbose=0).gram_matvec(rows, np.ones(120))
        assert_close(product, expected.sum(axis=1), 1e-12)


# ------------------------------------------------------------ Dask




def _task_stream(client):
    from distributed import get_task_stream

    return get_task_stream(client)


def _panel_tasks(stream, name: str = "_gram_panel") -> list[dict]:
    return [task for task in stream.data if name in task["key"] and task["status"] == "OK"]


def _cluster_is_idle(client) -> bool:
    if any(client.processing().values()):
        return False
    states = client.run_on_scheduler(
        lambda dask_scheduler: [task.state for task in dask_scheduler.tasks.values()]
    )
    return not {"processing", "waiting", "queued", "no-worker"} & set(states)


@pytest.mark.dask
def test_dask_gram_runs_on_the_workers_and_equals_local(dask_client):
    X, Y = shared_image_rows(n_images=10, pixels=6, n_rows=59), distinct_rows(n_rows=31, seed=4)
    kernel = HyperKernel(z_encoding="fourier", length_scale=[0.6, 1.7], block_size=7, n_jobs=2)
    local = kernel(X), kernel(X, Y), kernel(X, eval_gradient=True)
    workers = set(dask_client.scheduler_info()["workers"])
    with _task_stream(dask_client) as stream, joblib.parallel_config(backend="dask"):
        on_dask = kernel(X), kernel(X, Y), kernel(X, eval_gradient=True)
    assert_close(on_dask[0], local[0], 1e-12)
    assert_close(on_dask[1], local[1], 1e-12)
    assert_close(on_dask[2][0], local[2][0], 1e-12)
    assert_close(on_dask[2][1], local[2][1], 1e-12)
    tasks = _panel_tasks(stream)
    assert len(tasks) == 3 * 9  # ceil(59 / 7) panels per Gram, one task each
    assert {task["worker"] for task in tasks} <= workers


@pytest.mark.dask
def test_dask_gram_matvec_and_nngp_equal_local(dask_client):
    X = distinct_rows(n_rows=53)
    kernel = HyperNNGP(activation="leaky_relu", block_size=6)
    rows = kernel.factorize_rows(X)
    V = np.random.default_rng(2).normal(size=(53, 2))
    local_product, local_gram = kernel.gram_matvec(rows, V), kernel(X)
    # n_jobs from the context this time
    with _task_stream(dask_client) as stream, joblib.parallel_config(backend="dask", n_jobs=2):
        product, gram = kernel.gram_matvec(rows, V), kernel(X)
    assert_close(product, local_product, 1e-12)
    assert_close(product, local_gram @ V, 1e-12)
    assert_close(gram, local_gram, 1e-12)
    assert len(_panel_tasks(stream, "_matvec_panel")) == 9
    assert len(_panel_tasks(stream, "_gram_panel")) == 9


@pytest.mark.dask
def test_dask_runs_torch_panels_on_the_workers(dask_client, torch_module):
    # the torch tensors of the rows travel to the worker processes, which compute with torch
    X = shared_image_rows(n_images=6, pixels=5, n_rows=29)
    kernel = HyperKernel(z_encoding="fourier", block_size=7, n_jobs=2, device="cpu")
    expected, expected_gradient = HyperKernel(z_encoding="fourier")(X, eval_gradient=True)
    with _task_stream(dask_client) as stream, joblib.parallel_config(backend="dask"):
        K, gradient = kernel(X, eval_gradient=True)
    assert_close(K, expected, 1e-10)
    assert_close(gradient, expected_gradient, 1e-10)
    assert len(_panel_tasks(stream)) == 5


@pytest.mark.dask
def test_dask_backend_with_default_n_jobs_uses_the_cluster(dask_client):
    # as joblib's Parallel(n_jobs=None): the Dask backend's default is every worker
    X = distinct_rows(n_rows=30)
    with _task_stream(dask_client) as stream, joblib.parallel_config(backend="dask"):
        HyperKernel(block_size=7)(X)
    assert len(_panel_tasks(stream)) == 5


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
@pytest.mark.dask
def test_dask_regressor_equals_local(dask_client, pixel_task, solver):
    X, y, X_test = pixel_task
    if solver == "cg":
        # the constructed kernel streams K @ v in panels of block_size training rows
        params = dict(
            solver="cg", tol=1e-10, cg_rank=20, block_size=64, n_jobs=2, alpha_scale="absolute",
            normalize_x=False, normalize_y=False, **PIXEL_PARAMS,
        )
        task_name = "_matvec_panel"
    else:
        # the training Gram in panels of the kernel's block_size
        kernel = HyperKernel(block_size=64, n_jobs=2, **PIXEL_PARAMS)
        params = dict(solver="cholesky", kernel=kernel)
        task_name = "_gram_panel"
    local = HyperKernelRegressor(**params).fit(X, y)
    with _task_stream(dask_client) as stream, joblib.parallel_config(backend="dask"):
        on_dask = HyperKernelRegressor(**params).fit(X, y)
        prediction = on_dask.predict(X_test)
    assert on_dask.solver_ == solver and on_dask.n_iter_ == local.n_iter_
    assert_close(on_dask.dual_coef_, local.dual_coef_, 1e-12)
    assert_close(prediction, local.predict(X_test), 1e-12)
    # 3 panels (192 rows) per Gram or per product
    assert len(_panel_tasks(stream, task_name)) >= (3 * on_dask.n_iter_ if solver == "cg" else 3)


@pytest.mark.filterwarnings("ignore:.*tasks which were still being processed:UserWarning")
@pytest.mark.dask
def test_interrupted_dask_gram_cancels_its_tasks(dask_client, monkeypatch):
    # 100 panels of 2 x 10000 entries (a few ms each)
    X, Y = distinct_rows(n_rows=200), distinct_rows(n_rows=10000, seed=8)
    kernel = HyperKernel(block_size=2, n_jobs=2, verbose=1)
    total = 100
    steps = _interrupt_after_first_step(monkeypatch)
    with _task_stream(dask_client) as stream:
        with pytest.raises(KeyboardInterrupt), joblib.parallel_config(backend="dask"):
            kernel(X, Y)
        assert _wait_for(lambda: _cluster_is_idle(dask_client)), dask_client.processing()
    assert len(steps) == 1
    computed = len(_panel_tasks(stream))
    print(f"{computed} of {total} panels computed before the interruption")
    assert 1 <= computed < total // 2, computed

    monkeypatch.undo()
    with joblib.parallel_config(backend="dask"):
        K = kernel.set_params(verbose=0, block_size=50)(X, Y[:500])
    assert_close(K, HyperKernel()(X, Y[:500]), 1e-12)
    assert _cluster_is_idle(dask_client)
