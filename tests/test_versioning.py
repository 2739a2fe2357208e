"""Pickles say which version wrote them (issue 21, fault class 5).

As scikit-learn's ``_sklearn_version`` (#7135, PR #7248, PR #25297): kernels,
estimators and the torch ``Hypernetwork`` record the version that pickled
them; a pickle of another version warns with ``InconsistentVersionWarning``,
an older one is upgraded by the table of added parameters (and then works), and
what cannot work is refused at load time with a message naming both versions.

``fixtures/pickles_a0359df`` holds real pickles of commit a0359df (which said
0.1.0; ``make_pickles.py`` wrote them): before this, all of them loaded and then
failed with ``AttributeError`` (kernels) or failed with a bare
``ModuleNotFoundError`` (the fitted estimators and the network). Pickles "of
0.1.0" that the current code writes are simulated by editing the state: the
version key dropped, a parameter dropped.
"""

from __future__ import annotations

import inspect
import pathlib
import pickle
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose

import sklearn_hyperkernel
from sklearn_hyperkernel import (
    HyperKernel,
    HyperKernelRegressor,
    HypernetworkClassifier,
    HypernetworkRegressor,
    HyperNNGP,
    InconsistentVersionWarning,
)
from sklearn_hyperkernel._utils.versioning import (
    BIAS_PARAMETERS,
    ESTIMATOR_HISTORY,
    NETWORK_HISTORY,
    VERSION_KEY,
)
from sklearn_hyperkernel.network import Hypernetwork

OLD = pathlib.Path(__file__).parent / "fixtures" / "pickles_a0359df"
X = np.random.default_rng(0).normal(size=(30, 4))
Y = np.sin(X[:, 0]) + X[:, -1]
LABELS = (X[:, 0] > 0).astype(int)
SMALL_NET = {"z_dim": 2, "f_width": 8, "g_width": 4, "max_epochs": 2, "random_state": 0}


def fitted_objects() -> dict:
    """Each kind of pickle, made by this version."""
    regressor = HypernetworkRegressor(**SMALL_NET).fit(X, Y)
    return {
        "kernel": HyperKernel(length_scale=[0.4, 0.6], normalize_x=True),
        "nngp": HyperNNGP(z_encoding="linear"),
        "kernel_ridge": HyperKernelRegressor(normalize_x=False).fit(X, Y),
        "net_regressor": regressor,
        "net_classifier": HypernetworkClassifier(**SMALL_NET).fit(X, LABELS),
        "module": regressor.module_,
    }


def output(obj) -> np.ndarray:
    if isinstance(obj, Hypernetwork):
        import torch

        with torch.no_grad():
            return obj(torch.as_tensor(X[:, :2]), torch.as_tensor(X[:, 2:])).numpy()
    return obj(X) if callable(obj) and not hasattr(obj, "predict") else obj.predict(X)


def test_the_version_is_0_2_0():
    assert sklearn_hyperkernel.__version__ == "0.2.0"


# ------------------------------------------------------------- real pickles of a0359df
@pytest.mark.parametrize("name", ["kernel", "nngp"])
def test_old_kernels_are_upgraded_and_compute_what_they_did(name):
    with pytest.warns(InconsistentVersionWarning) as record:
        kernel = pickle.loads((OLD / f"{name}.pkl").read_bytes())
    warning = record[0].message
    assert (warning.original_version, warning.current_version) == ("0.1.0 or earlier", "0.2.0")
    assert "0.1.0 or earlier" in str(warning) and "0.2.0" in str(warning)
    assert kernel.normalize_x is False  # a0359df had raw x only
    if name == "kernel":
        # the values the old code computed (before: AttributeError 'normalize_x')
        assert_allclose(kernel(np.load(OLD / "X.npy")), np.load(OLD / "kernel_K.npy"), rtol=1e-12)
    else:
        assert kernel(X).shape == (30, 30)


@pytest.mark.parametrize(
    ("name", "module"),
    [
        ("kernel_ridge", "_evaluate"),
        ("net_regressor", "_network"),
        ("net_classifier", "_network"),
        ("module", "_network"),
    ],
)
def test_old_fitted_models_are_refused_at_load_time_naming_both_versions(name, module):
    with pytest.raises(ModuleNotFoundError, match=rf"_{module[1:]} .*0\.1\.0.*\(0\.2\.0\)"):
        pickle.loads((OLD / f"{name}.pkl").read_bytes())


def test_the_removed_modules_name_both_versions_on_import():
    with pytest.raises(ModuleNotFoundError, match="sklearn-hyperkernel 0.1.0 and earlier.*0.2.0"):
        import sklearn_hyperkernel._evaluate  # noqa: F401


# ---------------------------------------------------------------- this version's pickles
@pytest.mark.parametrize("name", list(fitted_objects()))
def test_this_versions_pickles_load_silently_and_work(name):
    obj = fitted_objects()[name]
    state = obj.__getstate__()
    assert state[VERSION_KEY] == "0.2.0"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = pickle.loads(pickle.dumps(obj))
    assert VERSION_KEY not in loaded.__dict__
    assert_allclose(output(loaded), output(obj), rtol=1e-12)


def unpickle_state(cls, state):
    """What pickle does with a state: a bare instance, then ``__setstate__``."""
    obj = cls.__new__(cls)
    obj.__setstate__(state)
    return obj


@pytest.mark.parametrize("name", list(fitted_objects()))
def test_pickles_of_0_1_0_load_with_a_warning_and_work(name):
    # what every version before 0.2.0 wrote: no version key
    obj = fitted_objects()[name]
    state = obj.__getstate__()
    del state[VERSION_KEY]
    with pytest.warns(InconsistentVersionWarning, match="0.1.0 or earlier .* 0.2.0"):
        loaded = unpickle_state(type(obj), state)
    assert_allclose(output(loaded), output(obj), rtol=1e-12)


@pytest.mark.parametrize(
    ("obj", "parameter", "old_value"),
    [
        (HyperKernel(normalize_x=True), "normalize_x", False),
        (HyperKernelRegressor(), "alpha_scale", "absolute"),
        (HyperKernelRegressor(), "normalize_y", False),
        (HypernetworkRegressor(), "normalize_y", False),
        (HypernetworkClassifier(n_jobs=2), "n_jobs", None),
    ],
)
def test_a_parameter_missing_from_an_old_pickle_gets_its_old_value(obj, parameter, old_value):
    state = obj.__getstate__()
    del state[VERSION_KEY], state[parameter]
    with pytest.warns(InconsistentVersionWarning):
        loaded = unpickle_state(type(obj), state)
    assert loaded.get_params()[parameter] == old_value


def test_a_parameter_missing_from_a_pickle_of_this_version_is_refused():
    state = HyperKernel().__getstate__()
    del state["normalize_x"]
    with pytest.raises(pickle.UnpicklingError, match=r"0\.2\.0 .*version 0\.2\.0.*normalize_x"):
        unpickle_state(HyperKernel, state)


@pytest.mark.parametrize("obj", [HyperNNGP(), HyperKernelRegressor(), HypernetworkRegressor()])
def test_a_newer_pickle_with_a_parameter_unknown_here_is_refused(obj):
    state = {**obj.__getstate__(), VERSION_KEY: "9.1.0", "new_parameter": 1.0}
    with pytest.warns(InconsistentVersionWarning, match="version 9.1.0 when using version 0.2.0"):
        with pytest.raises(pickle.UnpicklingError, match="9.1.0 and this is version 0.2.0"):
            unpickle_state(type(obj), state)


def test_a_newer_pickle_without_new_parameters_loads_with_a_warning():
    state = {**HyperKernel(f_depth=2).__getstate__(), VERSION_KEY: "0.3.0"}
    with pytest.warns(InconsistentVersionWarning, match="0.3.0"):
        kernel = unpickle_state(HyperKernel, state)
    assert_allclose(kernel(X), HyperKernel(f_depth=2)(X))


# ------------------------------------------------- the bias variances added in 0.2.0
def test_the_tables_hold_the_bias_variances_of_0_2_0():
    for history in (*ESTIMATOR_HISTORY.values(), NETWORK_HISTORY):
        entries = {entry.name: entry for entry in history}
        for name in ("f_bias_variance", "g_bias_variance"):
            assert (entries[name].version, entries[name].old_value) == ("0.2.0", 0.0)
    assert len(BIAS_PARAMETERS) == 2


class BiasedKernel(HyperKernel):
    """A kernel of 0.2.0 with the bias parameters (as the work on biases adds them)."""

    def __init__(self, f_bias_variance=0.5, g_bias_variance=0.5, **params):
        super().__init__(**params)
        self.f_bias_variance = f_bias_variance
        self.g_bias_variance = g_bias_variance

    @classmethod
    def _get_param_names(cls):
        names = [name for name in inspect.signature(HyperKernel.__init__).parameters][1:]
        return sorted([*names, "f_bias_variance", "g_bias_variance"])


def test_a_0_1_0_pickle_gets_zero_bias_variances_and_a_0_2_0_one_must_have_them():
    state = BiasedKernel().__getstate__()
    del state["f_bias_variance"], state["g_bias_variance"]
    recorded = dict(state)
    del state[VERSION_KEY]
    with pytest.warns(InconsistentVersionWarning):
        loaded = unpickle_state(BiasedKernel, state)
    assert (loaded.f_bias_variance, loaded.g_bias_variance) == (0.0, 0.0)
    with pytest.raises(pickle.UnpicklingError, match="f_bias_variance, g_bias_variance"):
        unpickle_state(BiasedKernel, recorded)


def test_a_pickle_that_names_the_modules_of_0_1_0_loads(recwarn):
    """0.2.0 moved the private modules into the layers' folders: a fitted regressor pickled
    with the old module names (as 0.1.0 wrote them) loads and predicts as before."""
    from sklearn_hyperkernel._utils.versioning import MOVED_MODULES

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 5)), rng.normal(size=40)
    model = HyperKernelRegressor().fit(X, y)
    data = pickle.dumps(model, protocol=0)  # text protocol: "c<module>\n<name>\n"
    renamed = 0
    for old, new in MOVED_MODULES.items():
        renamed += data.count(f"c{new}\n".encode())
        data = data.replace(f"c{new}\n".encode(), f"c{old}\n".encode())
    assert renamed > 0  # the fitted state does refer to moved modules
    loaded = pickle.loads(data)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
