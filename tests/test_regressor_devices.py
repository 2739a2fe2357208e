"""HyperKernelRegressor on every device, precision and joblib backend of its kernel.

* the regressor is the same model on torch (CPU, and CUDA where there is a GPU) as on
  numpy, in float32 within 1e-3 of float64, with the Cholesky and the CG solver (whose
  products are the kernel's streamed ``gram_matvec``);
* bad ``device`` / ``dtype`` are errors at fit; both round-trip through get/set_params;
* inside ``joblib.parallel_config(backend="dask")`` it fits and predicts on the workers
  of a local two-process cluster and gives the local values.

The kernels' own devices are tested in ``test_device.py``, their Dask blocks in
``test_scheduling.py``.
"""

from __future__ import annotations

import warnings

import joblib
import numpy as np
import pytest
from conftest import (
    CUDA,
    assert_close,
    dask_task_stream,
    finished_tasks,
    relative_error,
    shared_image_rows,
)
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_hyperkernel import HyperKernel, HyperNNGP
from sklearn_hyperkernel.kernel_ridge import HyperKernelRegressor

PIXEL_PARAMS = {"z_encoding": "fourier", "length_scale": 0.5}


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA (torch.cuda.is_available() is False)")
def test_regressor_runs_on_cuda(pixel_task):
    X, y, X_test = pixel_task
    on_cpu = HyperKernelRegressor(solver="cholesky", **PIXEL_PARAMS).fit(X, y).predict(X_test)
    for solver in ("cholesky", "cg"):
        model = HyperKernelRegressor(solver=solver, tol=1e-10, device="cuda", **PIXEL_PARAMS)
        model.fit(X, y)
        assert_close(model.predict(X_test), on_cpu, 1e-6)


@pytest.mark.skipif(CUDA, reason="tests the error raised when CUDA is missing")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_is_a_clear_error_at_fit(torch_module, device):
    X, y = shared_image_rows(), np.arange(23.0)
    model = HyperKernelRegressor(device=device)
    with pytest.raises(ValueError, match="CUDA"):
        model.fit(X, y)


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
    cholesky = HyperKernelRegressor("ntk", solver="cholesky", **PIXEL_PARAMS).fit(X, y)
    products = []
    original = HyperKernel.gram_matvec

    def counted(self, rows, vectors):
        products.append(np.shape(vectors))
        return original(self, rows, vectors)

    monkeypatch.setattr(HyperKernel, "gram_matvec", counted)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cg = HyperKernelRegressor(
            "ntk", solver="cg", tol=1e-10, cg_rank=20, block_size=37, n_jobs=2, **PIXEL_PARAMS
        ).fit(X, y)
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


# ------------------------------------------------------------ Dask


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
@pytest.mark.dask
def test_dask_regressor_equals_local(dask_client, pixel_task, solver):
    X, y, X_test = pixel_task
    if solver == "cg":
        # the constructed kernel streams K @ v in blocks of block_size training rows
        params = dict(
            solver="cg",
            tol=1e-10,
            cg_rank=20,
            block_size=64,
            n_jobs=2,
            alpha_scale="absolute",
            normalize_x=False,
            normalize_y=False,
            f_bias_variance=0.0,  # the bias-free kernel this 1e-12 comparison was tuned on
            g_bias_variance=0.0,
            **PIXEL_PARAMS,
        )
        task_name = "_matvec_block"
    else:
        # the training Gram in blocks of the kernel's block_size
        kernel = HyperKernel(block_size=64, n_jobs=2, **PIXEL_PARAMS)
        params = dict(solver="cholesky", kernel=kernel)
        task_name = "_gram_block"
    local = HyperKernelRegressor(**params).fit(X, y)
    with dask_task_stream(dask_client) as stream, joblib.parallel_config(backend="dask"):
        on_dask = HyperKernelRegressor(**params).fit(X, y)
        prediction = on_dask.predict(X_test)
    assert on_dask.solver_ == solver and on_dask.n_iter_ == local.n_iter_
    assert_close(on_dask.dual_coef_, local.dual_coef_, 1e-12)
    assert_close(prediction, local.predict(X_test), 1e-12)
    # 3 blocks (192 rows) per Gram or per product
    assert len(finished_tasks(stream, task_name)) >= (3 * on_dask.n_iter_ if solver == "cg" else 3)
