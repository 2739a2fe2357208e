"""Tests of the finite-hypernetwork estimators in :mod:`sklearn_hyperkernel.hypernetwork`.

Budget: well under 90 s on two CPU cores. Networks are small except where the
infinite-width limit is the point (empirical NTK, kernel regime), and those use
a few rows only. Numbers in comments are measured values.
"""

from __future__ import annotations

import ast
import io
import pickle
import subprocess
import sys
import warnings

import joblib
import numpy as np
import pytest
from conftest import PAPER_KERNEL
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_hyperkernel import DeviceFallbackWarning, HyperKernel, set_config
from sklearn_hyperkernel.datasets import pixel_regression
from sklearn_hyperkernel.hypernetwork import HypernetworkClassifier, HypernetworkRegressor

torch = pytest.importorskip("torch")

CUDA = torch.cuda.is_available()

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


SMALL = {
    "f_width": 16,
    "g_width": 8,
    "optimizer": "adam",
    "learning_rate": 0.02,
    "max_epochs": 20,
    "device": "cpu",
}
# The paper's network (whose wide limit is HyperKernel with z_encoding="linear"),
# on inputs it sees unchanged.
PAPER = {
    "parameterization": "ntk",
    "z_encoding": "linear",
    "normalize_x": False,
    "normalize_y": False,
}


# ----------------------------------------------------------------------------- data
def random_rows(n_rows: int = 40, n_x: int = 3, z_dim: int = 2, seed: int = 0):
    """Rows [x | z] with standard normal entries and a smooth target."""
    rng = np.random.default_rng(seed)
    U = rng.standard_normal((n_rows, n_x + z_dim))
    y = np.sin(U[:, 0]) * U[:, -2] + 0.5 * U[:, -1]
    return U, y


def rotation_task(n_images: int, seed: int = 0):
    """Rotation prediction on 8x8 digits (the paper's Fig. 2 task, with 90-degree steps).

    x is a digit rotated by a random multiple of 90 degrees, z is x rotated
    further by ``k`` quarter turns (z_dim = 64); the class is ``k``.
    """
    rng = np.random.default_rng(seed)
    images = load_digits().images / 16.0
    chosen = rng.choice(len(images), n_images, replace=False)
    first_turns, label = rng.integers(0, 4, n_images), rng.integers(0, 4, n_images)
    x = np.stack([np.rot90(images[i], k) for i, k in zip(chosen, first_turns, strict=True)])
    z = np.stack([np.rot90(image, k) for image, k in zip(x, label, strict=True)])
    return np.hstack([x.reshape(n_images, -1), z.reshape(n_images, -1)]), label


# ------------------------------------------------------------ scikit-learn's checks
# Default instances, no expected failures: X with exactly z_dim columns is a plain
# network of z (constant x), the defaults learn the checks' blobs and regression
# data, and float64 makes predictions independent of the batch.
@parametrize_with_checks(
    [
        HypernetworkRegressor(random_state=0),
        HypernetworkClassifier(random_state=0),
        # non-default instances: biases, the linear encoding, x on the sphere
        HypernetworkRegressor(
            random_state=0,
            f_bias_variance=0.5,
            g_bias_variance=0.5,
            z_encoding="linear",
            normalize_x=True,
            max_epochs=30,
        ),
        HypernetworkClassifier(
            random_state=0, f_bias_variance=1.0, g_bias_variance=0.1, f_depth=2, max_epochs=5
        ),
    ],
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ----------------------------------------------------------------- optional torch
def test_package_imports_without_torch():
    code = (
        "import sys\n"
        "class BlockTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch is blocked in this test')\n"
        "sys.meta_path.insert(0, BlockTorch())\n"
        "import sklearn_hyperkernel, sklearn_hyperkernel.hypernetwork as h\n"
        "try:\n"
        "    h.HypernetworkRegressor().fit([[0.0, 1.0, 2.0]], [1.0])\n"
        "except ImportError as error:\n"
        "    print(error)\n"
        "assert 'torch' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="."
    )
    assert "pip install sklearn-hyperkernel[torch]" in result.stdout


# ----------------------------------------------------------------- real tasks
def test_regression_on_digit_pixels_beats_the_mean():
    U, y = pixel_regression(load_digits().images[:10])
    train = np.random.default_rng(0).random(y.shape[0]) < 0.5
    model = HypernetworkRegressor(
        f_width=64,
        z_encoding="fourier",
        length_scale=0.5,
        n_fourier_features=64,
        optimizer="adam",
        learning_rate=0.003,
        batch_size=50,
        max_epochs=60,
        random_state=0,
        device="cpu",
    ).fit(U[train], y[train])
    # measured: loss 0.232 -> 0.009, held-out MSE ratio 0.41
    assert model.loss_curve_[-1] < 0.2 * model.loss_curve_[0]
    mse = np.mean((model.predict(U[~train]) - y[~train]) ** 2)
    mse_mean = np.mean((y[train].mean() - y[~train]) ** 2)
    assert mse / mse_mean < 0.6
    assert model.score(U[~train], y[~train]) > 0.4


def test_the_default_fit_stops_by_its_own_rule_without_a_warning():
    """The README's data (200 rows): the default network stops when its training loss
    levels off (n_iter_no_change epochs without a tol improvement), well within
    max_epochs, so it does not warn (with max_epochs=20 every default fit warned)."""
    rng = np.random.default_rng(0)
    U = rng.normal(size=(400, 5))
    y = np.sin(U[:, 0]) * np.cos(2 * U[:, 3]) + 0.05 * rng.normal(size=400)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model = HypernetworkRegressor(random_state=0, device="cpu").fit(U[:200], y[:200])
    assert model.n_iter_ < model.max_epochs
    mse = np.mean((model.predict(U[200:]) - y[200:]) ** 2)
    assert mse < 0.5 * np.mean((y[:200].mean() - y[200:]) ** 2)  # measured: 0.42


def test_rotation_classification_beats_the_majority_class():
    X, y = rotation_task(1000)
    model = HypernetworkClassifier(
        z_dim=64,
        z_encoding="linear",
        f_width=64,
        g_width=16,
        optimizer="adam",
        learning_rate=0.003,
        max_epochs=30,
        random_state=0,
        device="cpu",
    ).fit(X[:700], y[:700])
    # measured: loss 1.40 -> 0.07, test accuracy 0.78 (majority 0.30)
    assert model.loss_curve_[-1] < 0.3 * model.loss_curve_[0]
    majority = np.bincount(y[700:]).max() / 300
    accuracy = model.score(X[700:], y[700:])
    assert accuracy > 0.6 and accuracy > 2 * majority
    assert_array_equal(model.classes_, [0, 1, 2, 3])
    proba = model.predict_proba(X[700:])
    assert_allclose(proba.sum(axis=1), 1.0)
    assert_array_equal(model.classes_[proba.argmax(axis=1)], model.predict(X[700:]))
    assert_allclose(np.exp(model.predict_log_proba(X[700:705])), proba[:5], rtol=1e-10)


def test_the_papers_setting_is_one_argument_away_and_trains():
    """NTK parameterisation, SGD with momentum, linear z: the paper's network."""
    U, y = random_rows(200)
    model = HypernetworkRegressor(
        f_width=32,
        max_epochs=15,
        random_state=0,
        device="cpu",
        parameterization="ntk",
        optimizer="sgd",
        learning_rate=0.01,
        z_encoding="linear",
    )
    model.fit(U, y)
    assert model.module_.parameterization == "ntk"
    assert isinstance(model._optimizer, torch.optim.SGD)
    assert model.module_.g_layer_sizes[0] == 2  # z itself
    # measured: 1.72 -> 0.65
    assert model.loss_curve_[-1] < 0.5 * model.loss_curve_[0]


@pytest.mark.parametrize(
    "params",
    [
        {"parameterization": "standard", "learning_rate": 0.003},
        {"activation": "leaky_relu", "negative_slope": 0.2},
        {"z_encoding": "fourier", "length_scale": [0.5, 2.0], "n_fourier_features": 16},
    ],
)
def test_variants_train(params):
    U, y = random_rows(200)
    model = HypernetworkRegressor(
        f_width=32, max_epochs=15, random_state=0, device="cpu", **params
    ).fit(U, y)
    assert model.loss_curve_[-1] < 0.7 * model.loss_curve_[0]


def test_multi_output_regression():
    U, y = random_rows(60)
    Y = np.column_stack([y, -2 * y, U[:, 0]])
    model = HypernetworkRegressor(**SMALL, random_state=0).fit(U, Y)
    assert model.predict(U).shape == (60, 3)
    assert model.module_.n_outputs == 3
    assert model.empirical_ntk(U[:5]).shape == (5, 5)


# --------------------------------------------------------------- reproducibility
def test_same_random_state_gives_identical_predictions():
    U, y = random_rows(80)
    first = HypernetworkRegressor(**SMALL, random_state=3).fit(U, y).predict(U)
    second = HypernetworkRegressor(**SMALL, random_state=3).fit(U, y).predict(U)
    other = HypernetworkRegressor(**SMALL, random_state=4).fit(U, y).predict(U)
    assert_array_equal(first, second)
    assert not np.allclose(first, other)


def test_fitted_attributes_and_device():
    U, y = random_rows(50)
    model = HypernetworkRegressor(**SMALL, random_state=0).fit(U, y)
    assert model.n_features_in_ == 5
    assert model.device_ == torch.device("cpu")
    assert model.n_iter_ == len(model.loss_curve_) <= SMALL["max_epochs"]
    assert model.validation_scores_ is None
    assert isinstance(model.module_, torch.nn.Module)
    assert model.module_.x_dim == 3 and model.module_.z_dim == 2
    assert next(model.module_.parameters()).dtype == torch.float64  # the default
    single = HypernetworkRegressor(**SMALL, dtype="float32", random_state=0).fit(U, y)
    assert next(single.module_.parameters()).dtype == torch.float32
    assert single.predict(U).dtype == np.float64
    auto = HypernetworkRegressor(max_epochs=1, f_width=8, random_state=0).fit(U, y)
    assert auto.device_.type == ("cuda" if CUDA else "cpu")


def test_repeated_x_path_equals_plain_path():
    """Batches whose rows share images run f once per distinct x: same training."""
    U, y = pixel_regression(load_digits().images[:3], pixels_per_image=30, random_state=0)
    params = {**SMALL, "batch_size": 16, "random_state": 0, "max_epochs": 4}
    deduplicated = HypernetworkRegressor(**params).fit(U, y)
    set_config(deduplicate_below=0.0)
    plain = HypernetworkRegressor(**params).fit(U, y)
    assert_allclose(deduplicated.loss_curve_, plain.loss_curve_, rtol=1e-10)
    assert_allclose(deduplicated.predict(U), plain.predict(U), rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------- training API
def test_early_stopping_records_scores_and_keeps_the_best_weights():
    X, y = rotation_task(300, seed=1)
    model = HypernetworkClassifier(
        z_dim=64,
        z_encoding="linear",
        f_width=32,
        g_width=8,
        optimizer="adam",
        learning_rate=0.003,
        max_epochs=40,
        early_stopping=True,
        validation_fraction=0.2,
        n_iter_no_change=3,
        random_state=0,
        device="cpu",
    ).fit(X, y)
    assert len(model.validation_scores_) == model.n_iter_ == len(model.loss_curve_)
    assert model.best_validation_score_ == max(model.validation_scores_)
    assert all(0.0 <= s <= 1.0 for s in model.validation_scores_)
    U, t = random_rows(100)
    regressor = HypernetworkRegressor(
        **{**SMALL, "max_epochs": 5}, early_stopping=True, random_state=0
    ).fit(U, t)
    assert len(regressor.validation_scores_) == regressor.n_iter_


def test_warm_start_and_partial_fit_continue_training():
    U, y = random_rows(60)
    model = HypernetworkRegressor(
        **{**SMALL, "max_epochs": 3}, tol=0.0, random_state=0, warm_start=True
    )
    model.fit(U, y)
    weights = [p.detach().clone() for p in model.module_.parameters()]
    model.fit(U, y)
    assert model.n_iter_ == 6 and len(model.loss_curve_) == 6
    assert any(
        not torch.equal(a, b) for a, b in zip(weights, model.module_.parameters(), strict=True)
    )
    cold = HypernetworkRegressor(**{**SMALL, "max_epochs": 3}, tol=0.0, random_state=0)
    cold.fit(U, y)
    cold.fit(U, y)
    assert cold.n_iter_ == 3

    incremental = HypernetworkRegressor(**SMALL, random_state=0)
    for _ in range(3):
        incremental.partial_fit(U, y)
    assert incremental.n_iter_ == 3
    with pytest.raises(ValueError, match="X has 4 features"):
        incremental.partial_fit(U[:, 1:], y)

    X, labels = rotation_task(60)
    classifier = HypernetworkClassifier(z_dim=64, z_encoding="linear", **SMALL)
    with pytest.raises(ValueError, match="classes must be passed"):
        classifier.partial_fit(X, labels)
    classifier.partial_fit(X[:10], labels[:10], classes=[0, 1, 2, 3])
    classifier.partial_fit(X[10:], labels[10:])
    assert_array_equal(classifier.classes_, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="not in classes_"):
        classifier.partial_fit(X[:3], [0, 1, 7])


def test_verbose_prints_the_running_loss_and_default_is_silent(capsys, monkeypatch):
    U, y = random_rows(50)
    HypernetworkRegressor(**{**SMALL, "max_epochs": 2}, random_state=0).fit(U, y)
    assert capsys.readouterr().out == ""
    HypernetworkRegressor(
        **{**SMALL, "max_epochs": 2}, batch_size=5, random_state=0, verbose=2
    ).fit(U, y)
    out = capsys.readouterr().out
    assert "[HypernetworkRegressor] Epoch 1: loss" in out and "Epoch 2: loss" in out
    assert "running loss" in out
    # on a terminal: a progress bar over the epochs instead of the lines
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    HypernetworkRegressor(**{**SMALL, "max_epochs": 2}, random_state=0, verbose=1).fit(U, y)
    out = capsys.readouterr().out
    assert "[HypernetworkRegressor] fit, up to" in out and "2/2" in out and "epochs" in out
    assert "Epoch 1" not in out


def test_max_epochs_reached_warns():
    U, y = random_rows(30)
    with pytest.warns(ConvergenceWarning, match="max_epochs=2"):
        HypernetworkRegressor(**{**SMALL, "max_epochs": 2}, tol=0.0, random_state=0).fit(U, y)


def test_pipeline_grid_search_cross_val_score_and_clone():
    U, y = random_rows(90)
    pipeline = make_pipeline(FunctionTransformer(), HypernetworkRegressor(**SMALL, random_state=0))
    scores = cross_val_score(pipeline, U, y, cv=3)
    assert scores.shape == (3,) and np.all(np.isfinite(scores))
    search = GridSearchCV(
        HypernetworkRegressor(**SMALL, random_state=0),
        {"g_width": [4, 8], "learning_rate": [0.01, 0.02]},
        cv=2,
    ).fit(U, y)
    assert search.best_params_["g_width"] in (4, 8)
    fitted = HypernetworkRegressor(**SMALL, random_state=0).fit(U, y)
    fresh = clone(fitted)
    assert not hasattr(fresh, "module_")
    assert fresh.get_params() == fitted.get_params()


# -------------------------------------------------------------------- persistence
@pytest.mark.parametrize("dump", ["pickle", "joblib"])
def test_pickle_round_trip_predicts_the_same(dump):
    U, y = random_rows(60)
    model = HypernetworkRegressor(**SMALL, random_state=0).fit(U, y)
    if dump == "pickle":
        loaded = pickle.loads(pickle.dumps(model))
    else:
        buffer = io.BytesIO()
        joblib.dump(model, buffer)
        buffer.seek(0)
        loaded = joblib.load(buffer)
    assert_array_equal(loaded.predict(U), model.predict(U))
    # the optimizer state travels too: continuing gives the same weights
    model.partial_fit(U, y)
    loaded.partial_fit(U, y)
    assert_array_equal(loaded.predict(U), model.predict(U))


@pytest.mark.parametrize(("saved_on", "n_gpus"), [("cuda:0", 0), ("cuda:1", 1), ("cuda:1", 0)])
def test_model_saved_on_a_missing_gpu_loads_on_the_cpu_with_a_warning(
    monkeypatch, saved_on, n_gpus
):
    """The pickled state holds CPU tensors only; a GPU this machine lacks (no CUDA,
    or fewer GPUs than the index) falls back to the CPU with DeviceFallbackWarning."""
    U, y = random_rows(40)
    model = HypernetworkRegressor(**SMALL, random_state=0).fit(U, y)
    expected = model.predict(U)
    model.device_ = torch.device(saved_on)  # as if fitted on that GPU
    copies = []
    real_to = torch.nn.Module.to

    def recording_to(module, *args, **kwargs):
        copies.append((args, kwargs))
        return real_to(module, *args, **kwargs)

    state = model.__getstate__()
    assert all(t.device.type == "cpu" for t in state["module_"].state_dict().values())
    assert all(
        t.device.type == "cpu"
        for s in state["_optimizer_state"]["state"].values()
        for t in s.values()
        if isinstance(t, torch.Tensor)
    )
    blob = pickle.dumps(model)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n_gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n_gpus)
    monkeypatch.setattr(torch.nn.Module, "to", recording_to)
    with pytest.warns(DeviceFallbackWarning, match=f"device='{saved_on}'"):
        loaded = pickle.loads(blob)
    assert loaded.device_ == torch.device("cpu")
    assert isinstance(loaded.device_, torch.device)
    assert copies == []  # nothing was moved to a (missing) GPU
    assert_array_equal(loaded.predict(U), expected)
    loaded.partial_fit(U, y)  # the optimizer state loads on the CPU
    assert loaded.n_iter_ == model.n_iter_ + 1


def test_set_params_device_moves_a_fitted_model_and_validates(monkeypatch):
    U, y = random_rows(40)
    model = HypernetworkRegressor(
        **{**SMALL, "optimizer": "sgd", "learning_rate": 0.01}, random_state=0
    ).fit(U, y)
    expected = model.predict(U)
    moved = []
    real_to = torch.nn.Module.to

    def recording_to(module, *args, **kwargs):
        moved.append(torch.device(args[0]))
        return real_to(module, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", recording_to)
    model.device_ = torch.device("meta")  # pretend it lives elsewhere: set_params moves it
    assert model.set_params(device=None) is model
    assert moved == [torch.device("cpu")] and model.device_ == torch.device("cpu")
    assert model.device is None
    buffers = [s["momentum_buffer"] for s in model._optimizer.state.values()]
    assert buffers and all(b.device.type == "cpu" for b in buffers)
    assert_array_equal(model.predict(U), expected)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device='cuda:1' but torch finds no CUDA GPU"):
        model.set_params(device="cuda:1")
    assert model.device is None and model.device_ == torch.device("cpu")  # unchanged
    with pytest.raises(ValueError, match="device"):
        model.set_params(device=3)
    # unfitted: stored only, checked by fit
    assert HypernetworkRegressor().set_params(device="cuda:7").device == "cuda:7"


# -------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": -5}, "batch_size"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"f_width": 0}, "f_width"),
        ({"dtype": "float16"}, "dtype"),
        ({"parameterization": "mup"}, "parameterization"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"normalize_x": "yes"}, "normalize_x"),
        ({"normalize_y": 1.5}, "normalize_y"),
        ({"f_bias_variance": -0.5}, "f_bias_variance"),
        ({"g_bias_variance": "big"}, "g_bias_variance"),
    ],
)
def test_bad_parameters_raise_naming_the_parameter(params, name):
    U, y = random_rows(20)
    with pytest.raises(InvalidParameterError, match=name):
        HypernetworkRegressor(**{**SMALL, **params}).fit(U, y)


@pytest.mark.parametrize("device", [3, "not-a-device", "tpu", "cuda:x"])
def test_bad_device_is_a_value_error_naming_the_parameter(device):
    U, y = random_rows(20)
    with pytest.raises(ValueError, match="device"):
        HypernetworkRegressor(**{**SMALL, "device": device}).fit(U, y)


@pytest.mark.skipif(CUDA, reason="tests the error raised when CUDA is missing")
def test_cuda_device_without_cuda_is_a_clear_error():
    U, y = random_rows(20)
    with pytest.raises(ValueError, match="device='cuda' but torch finds no CUDA GPU"):
        HypernetworkRegressor(**{**SMALL, "device": "cuda"}).fit(U, y)
    # None is the CPU for the networks
    model = HypernetworkRegressor(**{**SMALL, "device": None}, random_state=0).fit(U, y)
    assert model.device_ == torch.device("cpu")


def test_bad_input_raises():
    U, y = random_rows(20)
    model = HypernetworkRegressor(**SMALL, random_state=0)
    for bad_value in (np.nan, np.inf):
        bad = U.copy()
        bad[3, 1] = bad_value
        with pytest.raises(ValueError, match="NaN|infinity"):
            clone(model).fit(bad, y)
    bad_y = y.copy()
    bad_y[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clone(model).fit(U, bad_y)
    with pytest.raises(ValueError, match="0 sample"):
        clone(model).fit(U[:0], y[:0])
    with pytest.raises(ValueError, match=r"X has 1 feature\(s\), but z_dim=2 needs at least 2"):
        clone(model).fit(U[:, :1], y)
    with pytest.raises(NotFittedError):
        clone(model).predict(U)
    model.fit(U, y)
    with pytest.raises(ValueError, match="X has 4 features"):
        model.predict(U[:, :4])
    with pytest.raises(ValueError, match="NaN"):
        model.predict(np.full_like(U, np.nan))
    with pytest.raises(ValueError, match="early_stopping needs at least 2 validation rows"):
        HypernetworkRegressor(**SMALL, early_stopping=True).fit(U[:5], y[:5])


def test_diverging_run_stops_with_an_error_naming_the_learning_rate():
    U, y = random_rows(40)
    model = HypernetworkRegressor(
        f_width=16,
        g_width=8,
        learning_rate=1e4,
        max_epochs=20,
        optimizer="sgd",
        **PAPER,
        random_state=0,
        device="cpu",
    )
    with pytest.raises(ValueError, match=r"diverged.*learning_rate \(currently 10000.0\)"):
        model.fit(U, y)


# ------------------------------------------------------- kernels of the finite network
def test_empirical_ntk_approaches_hyperkernel_only_when_g_is_wide():
    """Paper Fig. 1: wide f and g -> HyperKernel; a narrow g keeps the kernel random.

    Measured (f_depth = g_depth = 2, 6 seeds): wide (2048, 512): error of the
    seed-averaged kernel 0.01, single networks 0.02-0.16; narrow g (2048, 4):
    0.23 averaged, single networks 0.2-1.8.
    """
    rng = np.random.default_rng(20200611)
    x = rng.standard_normal((6, 3))
    x *= np.sqrt(3) / np.linalg.norm(x, axis=1, keepdims=True)  # |x|^2/n0 = 1: normalize_x moot
    U = np.hstack([np.concatenate([x, x[[0, 3]]]), rng.standard_normal((8, 2))])
    U_other = rng.standard_normal((3, 5))
    limit = HyperKernel(z_dim=2, f_depth=2, g_depth=2, z_encoding="linear", **PAPER_KERNEL)(U)

    def kernels(g_width):
        return np.stack(
            [
                HypernetworkRegressor(
                    f_depth=2,
                    g_depth=2,
                    f_width=2048,
                    g_width=g_width,
                    **PAPER,
                    random_state=seed,
                    device="cpu",
                )
                .initialize(U)
                .empirical_ntk(U)
                for seed in range(6)
            ]
        )

    def error(kernel):
        return np.linalg.norm(kernel - limit) / np.linalg.norm(limit)

    wide, narrow = kernels(512), kernels(4)
    assert error(wide.mean(axis=0)) < 0.04
    assert np.median([error(k) for k in wide]) < 0.15
    assert error(narrow.mean(axis=0)) > 2 * error(wide.mean(axis=0))
    assert np.median([error(k) for k in narrow]) > 2 * np.median([error(k) for k in wide])
    spread = lambda ks: np.mean(ks.std(axis=0)) / np.mean(np.abs(limit))  # noqa: E731
    assert spread(narrow) > 3 * spread(wide)

    model = HypernetworkRegressor(**SMALL, random_state=0).fit(U, U[:, 0])
    cross = model.empirical_ntk(U, U_other)
    assert cross.shape == (8, 3)
    assert_allclose(model.empirical_ntk(U)[:, :3], model.empirical_ntk(U, U[:3]), rtol=1e-10)


def _linearisation_deviation(g_width: int, g_depth: int, seed: int) -> float:
    """|f_T - f_lin| / |f_T - f_0| after 20 full-batch SGD steps, lr 0.1.

    ``f_lin(u) = f_0(u) + J(u) (w_T - w_0)``, the kernel-regime prediction,
    computed with a Jacobian-vector product at the initial weights.
    """
    from torch.func import functional_call, jvp

    U, y = random_rows(32)
    model = HypernetworkRegressor(
        f_depth=2,
        f_width=256,
        g_depth=g_depth,
        g_width=g_width,
        optimizer="sgd",
        momentum=0.0,
        learning_rate=0.1,
        batch_size=32,
        max_epochs=20,
        tol=0.0,
        **PAPER,
        random_state=seed,
        device="cpu",
    )
    initial = clone(model).initialize(U, y).module_
    model.fit(U, y)
    assert model.loss_curve_[-1] < 0.6 * model.loss_curve_[0]
    x, z = torch.as_tensor(U[:, :-2]), torch.as_tensor(U[:, -2:])
    w0 = {name: p.detach() for name, p in initial.named_parameters()}
    step = {name: p.detach() - w0[name] for name, p in model.module_.named_parameters()}
    with torch.no_grad():
        f0, f_trained = initial(x, z), model.module_(x, z)
    _, change = jvp(lambda w: functional_call(initial, w, (x, z)), (w0,), (step,))
    f_lin = f0 + change
    return float(torch.linalg.norm(f_trained - f_lin) / torch.linalg.norm(f_trained - f0))


def test_wide_network_trains_in_the_kernel_regime_and_narrow_deep_g_does_not():
    """Paper Thm. 1 / Fig. 2 trend. Measured deviations: wide g (256, depth 2):
    0.02-0.04; narrow deep g (8, depth 4): 0.30-1.65."""
    wide = [_linearisation_deviation(256, 2, seed) for seed in range(2)]
    narrow_deep = [_linearisation_deviation(8, 4, seed) for seed in range(2)]
    assert max(wide) < 0.08
    assert min(narrow_deep) > 0.15
    assert min(narrow_deep) > 4 * max(wide)


# ------------------------------------------------------------- defaults that learn
def digit_pixel_task(n_train: int = 40, n_test: int = 10, pixels: int = 20):
    """The package's pixel task on 8x8 digits: random pixels of training images,
    every pixel of held-out images."""
    images = load_digits().images[np.random.RandomState(2024).permutation(1797)]
    U, y = pixel_regression(images[:n_train], pixels_per_image=pixels, random_state=1)
    U_test, y_test = pixel_regression(images[n_train : n_train + n_test])
    return U, y, U_test, y_test


def test_default_regressor_learns_digit_pixels():
    U, y, U_test, y_test = digit_pixel_task()
    with warnings.catch_warnings():
        # it learns (it may still be improving at max_epochs, and says so)
        warnings.filterwarnings(
            "error", "(The network did not learn|Training stopped)", ConvergenceWarning
        )
        model = HypernetworkRegressor(random_state=0).fit(U, y)
    ratio = np.mean((model.predict(U_test) - y_test) ** 2) / np.mean((y.mean() - y_test) ** 2)
    # measured: 0.39 (the old defaults, NTK + SGD 0.01 + linear z, 100 epochs: 1.67)
    assert ratio < 0.75


def test_default_classifier_is_as_accurate_as_mlp_classifier():
    from sklearn.neural_network import MLPClassifier

    U, y, U_test, y_test = digit_pixel_task()
    model = HypernetworkClassifier(random_state=0).fit(U, y > 0.5)
    accuracy = model.score(U_test, y_test > 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = MLPClassifier(random_state=0).fit(U, y > 0.5).score(U_test, y_test > 0.5)
    majority = max(np.mean(y_test > 0.5), np.mean(y_test <= 0.5))
    # measured: 0.864, MLPClassifier() 0.803, majority class 0.702
    assert accuracy >= mlp - 0.05
    assert accuracy > majority + 0.05


def test_X_with_exactly_z_dim_columns_is_an_ordinary_network_of_z():
    """No x columns: every row shares x = (1,), the kernels' definition for n_x = 0."""
    rng = np.random.default_rng(0)
    z = rng.uniform(-1, 1, (150, 2))
    y = np.sin(3 * z[:, 0]) + z[:, 1] ** 2
    params = {**SMALL, "z_encoding": "fourier", "random_state": 0}
    model = HypernetworkRegressor(**params).fit(z, y)
    assert model.n_features_in_ == 2 and model.module_.x_dim == 1
    x, _ = model._x_and_z(z[:3])
    assert_array_equal(x.numpy(), np.ones((3, 1)))
    with_ones = HypernetworkRegressor(**params).fit(np.hstack([np.ones((150, 1)), z]), y)
    assert_allclose(
        model.predict(z), with_ones.predict(np.hstack([np.ones((150, 1)), z])), rtol=1e-12
    )
    assert model.score(z, y) > 0.9  # measured 0.99: it is a network of z
    classifier = HypernetworkClassifier(**params).fit(z, y > 0.5)
    assert classifier.score(z, y > 0.5) > 0.9
    with pytest.raises(ValueError, match=r"1 feature\(s\)"):
        HypernetworkRegressor(**params).fit(z[:, :1], y)


def test_normalize_x_scales_each_x_row_to_unit_mean_square():
    U, y = random_rows(60, n_x=4)
    scales = np.random.default_rng(1).uniform(0.01, 100.0, 60)
    U_scaled = U.copy()
    U_scaled[:, :-2] *= scales[:, None]
    model = HypernetworkRegressor(**SMALL, random_state=0).fit(U, y)
    x, z = model._x_and_z(U_scaled)
    assert_allclose((x**2).mean(dim=1).numpy(), 1.0, rtol=1e-12)
    assert_array_equal(z.numpy(), U[:, -2:])
    rescaled = HypernetworkRegressor(**SMALL, random_state=0).fit(U_scaled, y)
    assert_allclose(rescaled.predict(U_scaled), model.predict(U), rtol=1e-7, atol=1e-9)
    assert_allclose(model.predict(U_scaled), model.predict(U), rtol=1e-10)
    # zero rows stay zero: the bias-free f gives g zero weights, the output is y's mean
    U_zero = U.copy()
    U_zero[:4, :-2] = 0.0
    assert_array_equal(model._x_and_z(U_zero)[0][:4].numpy(), 0.0)
    assert_allclose(model.predict(U_zero[:4]), y.mean(), rtol=1e-12)
    raw = HypernetworkRegressor(**SMALL, normalize_x=False, random_state=0).fit(U, y)
    assert not np.allclose(raw.predict(U_scaled), raw.predict(U), rtol=1e-3)


def test_normalize_x_network_has_the_kernel_of_normalised_rows():
    """The option acts on the input only: the empirical NTK with normalize_x on raw
    rows is the one of the plain network on normalised rows, so the wide network
    still tends to the kernel with normalize_x (checked when the kernel has it)."""
    rng = np.random.default_rng(3)
    U = np.hstack(
        [rng.standard_normal((6, 3)) * rng.uniform(0.1, 5, (6, 1)), rng.standard_normal((6, 2))]
    )
    U_normalised = U.copy()
    U_normalised[:, :3] *= np.sqrt(3) / np.linalg.norm(U[:, :3], axis=1, keepdims=True)
    params = {
        **PAPER,
        "f_depth": 2,
        "g_depth": 2,
        "f_width": 1024,
        "g_width": 256,
        "random_state": 0,
        "device": "cpu",
    }
    on = HypernetworkRegressor(**{**params, "normalize_x": True}).initialize(U)
    off = HypernetworkRegressor(**params).initialize(U_normalised)
    assert_allclose(on.empirical_ntk(U), off.empirical_ntk(U_normalised), rtol=1e-12)
    if "normalize_x" in HyperKernel().get_params():
        kernels = np.mean(
            [
                HypernetworkRegressor(**{**params, "normalize_x": True, "random_state": seed})
                .initialize(U)
                .empirical_ntk(U)
                for seed in range(4)
            ],
            axis=0,
        )

        def error(normalize_x):
            limit = HyperKernel(
                z_dim=2,
                f_depth=2,
                g_depth=2,
                z_encoding="linear",
                f_bias_variance=0.0,  # the network's default: no biases
                g_bias_variance=0.0,
                normalize_x=normalize_x,
            )(U)
            return np.linalg.norm(kernels - limit) / np.linalg.norm(limit)

        # measured: 0.067 against the kernel with normalize_x, 1.00 without
        assert error(True) < 0.1
        assert error(False) > 3 * error(True)


def test_normalize_y_standardises_the_targets_and_predict_undoes_it():
    U, y = random_rows(60)
    model = HypernetworkRegressor(**SMALL, random_state=0).fit(U, y)
    shifted = HypernetworkRegressor(**SMALL, random_state=0).fit(U, 1000.0 * y + 5000.0)
    assert_allclose(shifted._y_mean, [1000.0 * y.mean() + 5000.0])
    assert_allclose(shifted._y_scale, [1000.0 * y.std()])
    assert_allclose(shifted.loss_curve_, model.loss_curve_, rtol=1e-6)
    assert_allclose(shifted.predict(U), 1000.0 * model.predict(U) + 5000.0, rtol=1e-6)
    # without it, the loss is in the targets' units (and this lr does not reach them)
    raw = HypernetworkRegressor(**SMALL, normalize_y=False, random_state=0)
    raw.fit(U, 1000.0 * y + 5000.0)
    assert raw.loss_curve_[0] > 1e7
    assert raw.score(U, 1000.0 * y + 5000.0) < 0.0 < shifted.score(U, 1000.0 * y + 5000.0)
    # per column; a constant column is only centred
    Y = np.column_stack([y, np.full(60, 7.0)])
    multi = HypernetworkRegressor(**SMALL, random_state=0).fit(U, Y)
    assert_allclose(multi._y_mean, [y.mean(), 7.0])
    assert_allclose(multi._y_scale, [y.std(), 1.0])
    assert abs(multi.predict(U)[:, 1].mean() - 7.0) < 0.05


# ------------------------------------------------------------ training that tells the truth
def test_a_run_that_does_not_learn_warns_naming_the_remedy():
    U, y = random_rows(100)
    params = {**SMALL, "learning_rate": 1e-12, "random_state": 0}
    with pytest.warns(ConvergenceWarning, match="did not learn") as record:
        HypernetworkRegressor(**params).fit(U, y)
    # the remedy (after the ";") names what to change, never what is already set
    remedy = str(record[0].message).split(";")[1]
    assert "learning_rate" in remedy and "max_epochs" in remedy
    assert "optimizer='adam'" not in remedy and "parameterization='standard'" not in remedy
    with pytest.warns(ConvergenceWarning, match="did not learn") as record:
        HypernetworkRegressor(**{**params, **PAPER, "optimizer": "sgd"}).fit(U, y)
    remedy = str(record[0].message).split(";")[1]
    assert "optimizer='adam'" in remedy and "parameterization='standard'" in remedy
    with pytest.warns(ConvergenceWarning, match="did not learn"):
        HypernetworkClassifier(**params).fit(U, y > 0)
    # stopped by tol as early as it can (n_iter_no_change + 1 epochs)
    with pytest.warns(ConvergenceWarning, match="Training stopped after 3 epochs") as record:
        model = HypernetworkRegressor(**SMALL, tol=10.0, n_iter_no_change=2, random_state=0).fit(
            U, y
        )
    assert model.n_iter_ == 3 and "learning_rate" in str(record[0].message).split(";")[1]
    # the old defaults (the paper's network, SGD 0.01) on tiny inputs did that silently
    old_defaults = {
        **SMALL,
        **PAPER,
        "optimizer": "sgd",
        "learning_rate": 0.01,
        "max_epochs": 100,
        "n_iter_no_change": 10,
        "random_state": 0,
    }
    with pytest.warns(ConvergenceWarning, match="did not learn|Training stopped"):
        HypernetworkRegressor(**old_defaults).fit(np.hstack([U[:, :-2] * 1e-2, U[:, -2:]]), y)


def test_runs_that_learn_or_have_nothing_to_learn_do_not_warn():
    U, y = random_rows(100)
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "error", "(The network did not learn|Training stopped)", ConvergenceWarning
        )
        model = HypernetworkRegressor(**SMALL, random_state=0).fit(U, y)
        one_class = HypernetworkClassifier(**SMALL, random_state=0).fit(U, ["a"] * 100)
        constant = HypernetworkRegressor(**SMALL, random_state=0).fit(U, np.full(100, 3.0))
    assert model.loss_curve_[-1] < 0.2  # normalised units: the constant predictor's is 1
    assert np.abs(constant.predict(U) - 3.0).mean() < 0.02
    assert_array_equal(one_class.classes_, ["a"])


def test_initialize_draws_the_network_fit_starts_from():
    U, y = random_rows(30)
    labels = np.where(y > 0, "up", "down")
    for model, target in (
        (HypernetworkRegressor, np.column_stack([y, y])),
        (HypernetworkClassifier, labels),
    ):
        started = model(**SMALL, random_state=0).initialize(U, target)
        assert started.n_iter_ == 0 and started.module_.n_outputs == 2
        # one SGD step of rate 0 leaves the weights where initialize put them
        fitted = model(
            **{**SMALL, "optimizer": "sgd", "learning_rate": 1e-300, "max_epochs": 1},
            momentum=0.0,
            random_state=0,
        ).fit(U, target)
        for a, b in zip(started.module_.parameters(), fitted.module_.parameters(), strict=True):
            assert torch.equal(a, b)
    assert_array_equal(started.classes_, ["down", "up"])
    with pytest.raises(ValueError, match="needs y"):
        HypernetworkClassifier(**SMALL).initialize(U)
    assert HypernetworkRegressor(**SMALL).initialize(U).module_.n_outputs == 1  # y=None: zeros


def test_one_class_classifier_behaves_as_sklearn_classifiers():
    from sklearn.utils.estimator_checks import check_classifiers_one_label

    U, _ = random_rows(30)
    model = HypernetworkClassifier(**SMALL, random_state=0).fit(U, np.full(30, 4))
    assert_array_equal(model.predict(U[:5]), [4] * 5)
    assert_array_equal(model.predict_proba(U[:5]), np.ones((5, 1)))
    assert_array_equal(model.predict_log_proba(U[:5]), np.zeros((5, 1)))
    assert model.score(U, np.full(30, 4)) == 1.0
    check_classifiers_one_label("HypernetworkClassifier", HypernetworkClassifier(random_state=0))


# --------------------------------------------------------- warm start and optimizer
def test_warm_start_fit_uses_the_current_optimizer_parameters():
    """As MLPRegressor(warm_start=True): the second fit trains with the values set
    since; the optimizer state is kept while the optimizer type is unchanged."""
    U, y = random_rows(60)
    model = HypernetworkRegressor(
        **{**SMALL, "max_epochs": 2, "optimizer": "sgd", "learning_rate": 0.01},
        tol=0.0,
        warm_start=True,
        random_state=0,
    ).fit(U, y)
    sgd = model._optimizer
    model.set_params(learning_rate=1e-5, momentum=0.0, weight_decay=0.5).fit(U, y)
    assert model._optimizer is sgd
    group = model._optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (1e-5, 0.0, 0.5)
    before = [p.detach().clone() for p in model.module_.parameters()]
    model.set_params(learning_rate=1e-14, weight_decay=0.0).fit(U, y)
    change = max(
        float((p - b).abs().max()) for p, b in zip(model.module_.parameters(), before, strict=True)
    )
    assert change < 1e-10  # the new learning rate was used (0.01 moves weights ~1e-2)
    model.set_params(optimizer="adam", learning_rate=3e-3).fit(U, y)
    adam = model._optimizer
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["lr"] == 3e-3
    steps = [float(s["step"]) for s in adam.state.values()]
    assert steps == [2.0] * len(steps)  # a fresh Adam: 2 epochs of 1 batch
    model.fit(U, y)
    assert model._optimizer is adam
    assert [float(s["step"]) for s in adam.state.values()] == [4.0] * len(steps)  # state kept
    assert model.n_iter_ == 10


def test_optimizer_switch_after_pickling_and_partial_fit_use_current_values():
    U, y = random_rows(60)
    model = HypernetworkRegressor(
        **{**SMALL, "max_epochs": 2, "optimizer": "sgd", "learning_rate": 0.01},
        tol=0.0,
        warm_start=True,
        random_state=0,
    ).fit(U, y)
    loaded = pickle.loads(pickle.dumps(model))
    loaded.set_params(optimizer="adam", learning_rate=1e-3).fit(U, y)  # was KeyError: 'step'
    assert isinstance(loaded._optimizer, torch.optim.Adam)
    assert loaded.n_iter_ == 4
    # same type after pickling: the saved state (momentum buffers) is loaded, values updated
    again = pickle.loads(pickle.dumps(model))
    again.set_params(momentum=0.5, learning_rate=0.02).partial_fit(U, y)
    group = again._optimizer.param_groups[0]
    assert (group["lr"], group["momentum"]) == (0.02, 0.5)
    assert all("momentum_buffer" in s for s in again._optimizer.state.values())
    again.set_params(optimizer="adam", learning_rate=0.004).partial_fit(U, y)
    assert isinstance(again._optimizer, torch.optim.Adam)
    assert again._optimizer.param_groups[0]["lr"] == 0.004


# ----------------------------------------------------------------- prediction memory
def test_predict_converts_and_evaluates_x_block_by_block(monkeypatch):
    """No tensor of more than predict_block_rows rows is built from X at prediction."""

    U, y = random_rows(300)
    regressor = HypernetworkRegressor(**SMALL, random_state=0).fit(U, y)
    classifier = HypernetworkClassifier(**SMALL, random_state=0).fit(U, y > 0)
    expected = regressor.predict(U), classifier.predict_proba(U)
    set_config(predict_block_rows=64)
    rows = []
    for name in ("as_tensor", "from_numpy", "tensor"):
        real = getattr(torch, name)

        def spy(data, *args, _real=real, **kwargs):
            rows.append(len(data) if np.ndim(data) else 1)
            return _real(data, *args, **kwargs)

        monkeypatch.setattr(torch, name, spy)
    got = regressor.predict(U), classifier.predict_proba(U)
    assert len(rows) >= 2 * 5 and max(rows) == 64
    assert_allclose(got[0], expected[0], rtol=1e-12)
    assert_allclose(got[1], expected[1], rtol=1e-12)
    # float32 input is not copied to float64 first
    assert_allclose(regressor.predict(U.astype(np.float32)), expected[0], atol=1e-5)


# ----------------------------------------------------------------------- docstrings
@pytest.mark.parametrize("estimator_class", [HypernetworkRegressor, HypernetworkClassifier])
def test_docstring_documents_every_parameter(estimator_class):
    from numpydoc.docscrape import ClassDoc

    documented = {p.name: p for p in ClassDoc(estimator_class)["Parameters"]}
    assert set(documented) == set(estimator_class().get_params())
    for name, value in estimator_class().get_params().items():
        default = documented[name].type.rsplit("default=", 1)[1]
        assert ast.literal_eval(default) == value, name
        assert len(" ".join(documented[name].desc)) > 30, name  # a sentence, not a stub
    assert "See :class:`HypernetworkRegressor`" not in estimator_class.__doc__


# ---------------------------------------------------------------------------- GPU
@pytest.mark.parametrize("estimator_class", [HypernetworkRegressor, HypernetworkClassifier])
@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA (torch.cuda.is_available() is False)")
def test_gpu_fit_matches_cpu_and_pickles_to_cpu(estimator_class):
    X, labels = rotation_task(200)
    y = labels if estimator_class is HypernetworkClassifier else labels.astype(float)
    params = {**SMALL, "z_dim": 64, "z_encoding": "linear", "max_epochs": 3, "random_state": 0}
    on_gpu = estimator_class(**{**params, "device": "cuda"}).fit(X, y)
    on_cpu = estimator_class(**params).fit(X, y)
    assert on_gpu.device_.type == "cuda"
    assert_allclose(on_gpu.loss_curve_, on_cpu.loss_curve_, rtol=1e-6)
    state = on_gpu.__getstate__()
    assert all(t.device.type == "cpu" for t in state["module_"].state_dict().values())
    loaded = pickle.loads(pickle.dumps(on_gpu))
    assert loaded.device_.type == "cuda"
    assert next(on_gpu.module_.parameters()).device.type == "cuda"  # the original stays
    method = "predict_proba" if estimator_class is HypernetworkClassifier else "predict"
    assert_allclose(getattr(loaded, method)(X), getattr(on_cpu, method)(X), rtol=1e-6, atol=1e-8)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA (torch.cuda.is_available() is False)")
def test_gpu_set_params_device_moves_the_network_and_adam_state():
    U, y = random_rows(80)
    model = HypernetworkRegressor(**SMALL, random_state=0).fit(U, y)
    on_cpu = pickle.loads(pickle.dumps(model))
    model.set_params(device="cuda")
    assert model.device_.type == "cuda"
    assert all(p.device.type == "cuda" for p in model.module_.parameters())
    assert all(s["exp_avg"].device.type == "cuda" for s in model._optimizer.state.values())
    model.partial_fit(U, y)
    on_cpu.partial_fit(U, y)
    assert_allclose(model.predict(U), on_cpu.predict(U), rtol=1e-6, atol=1e-8)
    model.set_params(device=None)
    assert all(p.device.type == "cpu" for p in model.module_.parameters())


def test_warm_start_refuses_a_changed_architecture():
    """A warm fit continues the fitted network: changing its shape (or the scaling of its
    inputs and targets) is an error naming the parameters, not a silent no-op."""
    U, y = random_rows(60)
    model = HypernetworkRegressor(**SMALL, warm_start=True, random_state=0).fit(U, y)
    model.set_params(learning_rate=1e-4).fit(U, y)  # optimizer settings may change
    changes = (
        {"f_depth": 1},
        {"g_width": 3},
        {"z_encoding": "linear"},
        {"normalize_y": False},
        {"f_bias_variance": 0.5},
        {"g_bias_variance": 0.5},
    )
    for change in changes:
        clone_ = pickle.loads(pickle.dumps(model)).set_params(**change)
        with pytest.raises(ValueError, match=f"{next(iter(change))}=.*fitted with"):
            clone_.fit(U, y)
        with pytest.raises(ValueError, match="architecture"):
            clone_.partial_fit(U, y)
    # warm_start=False starts afresh with the new shape
    fresh = clone(model).set_params(warm_start=False, g_width=3).fit(U, y)
    assert fresh.module_.g_width == 3


def test_bad_device_names_the_accepted_values():
    U, y = random_rows(20)
    accepted = r"device='gpu' is not supported; use None \(the CPU\), 'auto'"
    with pytest.raises(ValueError, match=accepted):
        HypernetworkRegressor(**{**SMALL, "device": "gpu"}).fit(U, y)


def test_n_jobs_sets_torch_threads_for_the_call_and_restores_them(monkeypatch):
    """n_jobs=None runs torch on one CPU thread during fit/predict (sklearn's convention;
    two threads on two shared cores made the default fit 12 times slower) and restores the
    caller's setting; n_jobs=2 asks for two."""
    import torch

    U, y = random_rows(40)
    before = torch.get_num_threads()
    seen = []
    original_epoch = HypernetworkRegressor._run_epoch

    def spy(self, *args):
        seen.append(torch.get_num_threads())
        return original_epoch(self, *args)

    monkeypatch.setattr(HypernetworkRegressor, "_run_epoch", spy)
    model = HypernetworkRegressor(**{**SMALL, "max_epochs": 2}, random_state=0).fit(U, y)
    assert seen == [1, 1] and torch.get_num_threads() == before
    seen.clear()
    model.set_params(n_jobs=2, warm_start=True).fit(U, y)
    assert seen == [2, 2] and torch.get_num_threads() == before
    assert np.all(np.isfinite(model.predict(U))) and torch.get_num_threads() == before


# --------------------------------------------------------------------------- biases
def test_biases_reach_the_network_train_and_survive_clone_and_pickle():
    """f_bias_variance / g_bias_variance: f's trained biases, g's biases generated by f."""
    U, y = random_rows(200)
    params = {"f_width": 32, "max_epochs": 15, "device": "cpu", "random_state": 0}
    model = HypernetworkRegressor(f_bias_variance=0.5, g_bias_variance=0.5, **params).fit(U, y)
    module = model.module_
    assert (module.f_bias_variance, module.g_bias_variance) == (0.5, 0.5)
    assert [tuple(b.shape) for b in module.f_biases] == [(32,), (32,), (module.n_generated,)]
    plain = HypernetworkRegressor(**params).fit(U, y)
    # g's biases: g_width + 1 more outputs of f per row
    assert module.n_generated == plain.module_.n_generated + 32 + 1
    assert len(plain.module_.f_biases) == 0
    # The output variance at initialisation is HyperNNGP(u, u) = 2.5 (2.5 (1 + 0.5) + 0.5)
    # = 10.6 here (|x|^2/n0 = 1, L = 3, H = 2; ../shared/docs/biases.md), not 1: measured
    # loss 11.0 -> 0.63 (constant predictor: 1), R^2 0.41 (bias-free: 1.43 -> 0.31, 0.71).
    assert model.loss_curve_[0] > 5 * plain.loss_curve_[0]
    assert model.loss_curve_[-1] < 0.7 and model.score(U, y) > 0.3
    fresh = clone(model)
    assert not hasattr(fresh, "module_")
    assert fresh.get_params() == model.get_params()
    assert fresh.get_params()["f_bias_variance"] == 0.5
    assert_array_equal(fresh.fit(U, y).predict(U), model.predict(U))
    loaded = pickle.loads(pickle.dumps(model))
    assert_array_equal(loaded.predict(U), model.predict(U))
    assert_array_equal(loaded.empirical_ntk(U[:4]), model.empirical_ntk(U[:4]))


@pytest.mark.parametrize("estimator_class", [HypernetworkRegressor, HypernetworkClassifier])
def test_empirical_ntk_with_biases_is_the_depth_one_closed_form(estimator_class):
    """f_depth = g_depth = 1, "ntk": K = (x.x'/n0 + bf)(z.z'/m0 + bg) at any width, so the
    estimator's kernel counts the gradients of f's biases and g's generated biases."""
    U, y = random_rows(30)
    U[0, :3] = 0.0  # x = 0: K = bf (z.z'/m0 + bg)
    target = y > 0 if estimator_class is HypernetworkClassifier else y
    paper = {k: v for k, v in PAPER.items() if k in estimator_class().get_params()}
    model = estimator_class(
        **SMALL,
        **paper,
        f_depth=1,
        g_depth=1,
        f_bias_variance=0.3,
        g_bias_variance=1.5,
        random_state=0,
    ).initialize(U, target)
    x, z = U[:6, :3], U[:6, 3:]
    expected = (x @ x.T / 3 + 0.3) * (z @ z.T / 2 + 1.5)
    assert_allclose(model.empirical_ntk(U[:6]), expected, rtol=1e-10)
