"""Devices and precisions of the kernels: numpy, torch on the CPU, torch on a GPU; float64, float32.

* torch (CPU, and CUDA where there is a GPU) gives the numpy values: float64 to
  1e-10 relative, float32 to 1e-4, for both kernels, both encodings and both
  activations, on rows that share images and on all-distinct rows;
* the device rule (:func:`sklearn_hyperkernel._utils.device.resolve_placement`):
  ``"auto"``, a missing GPU or torch, bad ``device`` / ``dtype`` values are
  clear errors at call time.

The regressor on devices is tested in ``test_regressor_devices.py``. "Relative"
below is ``max |a - b| / max |b|``.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest import (
    CUDA,
    DATASETS,
    TORCH_DEVICES,
    assert_close,
    relative_error,
    shared_image_rows,
)
from sklearn.base import clone

from sklearn_hyperkernel import HyperKernel, HyperNNGP
from sklearn_hyperkernel._utils.device import Placement, resolve_placement

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


# ------------------------------------------------------------ torch = numpy


def _all_values(kernel, X, Y):
    """Symmetric Gram, cross Gram, (Gram, gradient) and diagonal of one kernel."""
    K = kernel(X)
    K_cross = kernel(X, Y)
    K_again, gradient = kernel(X, eval_gradient=True)
    return {
        "gram": K,
        "cross": K_cross,
        "gram_with_gradient": K_again,
        "gradient": gradient,
        "diag": kernel.diag(X),
    }


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
def test_cuda_index_is_checked():
    import torch

    assert resolve_placement("cuda:0").device == "cuda:0"
    with pytest.raises(ValueError, match="CUDA"):
        resolve_placement(f"cuda:{torch.cuda.device_count()}")


# ------------------------------------------------------------ bad device / dtype


@pytest.mark.skipif(CUDA, reason="tests the error raised when CUDA is missing")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_is_a_clear_error(torch_module, device):
    X = shared_image_rows()
    with pytest.raises(ValueError, match="CUDA"):
        resolve_placement(device)
    kernel = HyperKernel(device=device)  # constructing does not check
    with pytest.raises(ValueError, match="CUDA"):
        kernel(X)


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


def test_placement_puts_arrays_and_indices_and_brings_results_back(torch_module):
    values = np.arange(6.0).reshape(3, 2)
    index, mask = np.array([2, 0]), np.array([True, False, True])
    numpy_placement = Placement(None, "float32")
    assert numpy_placement.put(values).dtype == np.float32
    assert numpy_placement.put_index(index) is index and not numpy_placement.uses_torch
    torch_placement = Placement("cpu", "float32")
    placed = torch_placement.put(values)
    assert isinstance(placed, torch_module.Tensor) and placed.dtype == torch_module.float32
    assert torch_placement.put_index(index).dtype == torch_module.int64
    assert torch_placement.put_index(mask).dtype == torch_module.bool
    assert torch_placement.put_index(slice(1, 2)) == slice(1, 2)
    assert torch_placement.uses_torch and not torch_placement.on_gpu
    back = Placement.host(placed[torch_placement.put_index(mask)])
    assert back.dtype == np.float64
    np.testing.assert_array_equal(back, values[mask])
