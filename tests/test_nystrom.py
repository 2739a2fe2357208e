"""Tests of ``HyperKernelRegressor(solver="nystrom")`` (Nyström kernel ridge regression).

References are computed independently of the solver: the exact Cholesky solve
of the package (itself tested against ``numpy.linalg.solve`` in
test_kernel_ridge.py), scikit-learn's ``make_pipeline(Nystroem(...), Ridge())``
on the same kernel and centres, and dense numpy formulas of the Nyström
problem.
"""

from __future__ import annotations

import time
import tracemalloc
import warnings

import joblib
import numpy as np
import pytest
from conftest import PAPER_KERNEL
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.gaussian_process.kernels import RBF
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_hyperkernel import HyperKernel, HyperNNGP
from sklearn_hyperkernel._solvers import nystrom as _nystrom
from sklearn_hyperkernel._solvers.nystrom_components import rpcholesky_components
from sklearn_hyperkernel.kernel_ridge import HyperKernelRegressor

# ----------------------------------------------------------------------------- data


def image_rows(n_images: int, pixels: int, n_x: int = 6, seed: int = 0) -> np.ndarray:
    """Rows ``[x | z]`` that share a few images x among many coordinates z."""
    rng = np.random.default_rng(seed)
    images = rng.random((n_images, n_x))
    coords = rng.uniform(-1.0, 1.0, size=(n_images * pixels, 2))
    return np.hstack([np.repeat(images, pixels, axis=0), coords])


def target(X: np.ndarray) -> np.ndarray:
    x, z = X[:, :-2], X[:, -2:]
    return np.sin(2.0 * z[:, 0]) * x.mean(axis=1) + 0.5 * z[:, 1] * x[:, 0]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = image_rows(n_images=10, pixels=16, seed=0)  # 160 rows
    X_test = image_rows(n_images=4, pixels=10, seed=1)
    return X, target(X), X_test


PAPER = {"alpha_scale": "absolute", "normalize_y": False, **PAPER_KERNEL}
#: The kernel the tests build by hand, HyperKernel(length_scale=0.5), in the regressor (whose
#: defaults are the NNGP and a length scale fitted to z's spread)
KERNEL_05 = {"kernel": "ntk", "length_scale": 0.5}

CASES = [
    pytest.param({}, id="defaults"),
    pytest.param(
        {"kernel": "nngp", "z_encoding": "linear", "alpha": 1e-2, **PAPER}, id="nngp-linear-paper"
    ),
    pytest.param(
        {"kernel": "ntk", "f_depth": 2, "g_depth": 3, "length_scale": 0.7, "alpha": 1e-4},
        id="ntk-deep",
    ),
    pytest.param({"kernel": RBF(1.5), "alpha": 1e-3}, id="rbf-object"),
]


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# --------------------------------------------------------------- exactness at m = n


@pytest.mark.parametrize("params", CASES)
def test_all_rows_as_centres_equals_the_exact_solve(data, params):
    X, y, X_test = data
    exact = HyperKernelRegressor(solver="cholesky", **params).fit(X, y)
    nystrom = HyperKernelRegressor(solver="nystrom", n_components=X.shape[0], **params).fit(X, y)
    assert nystrom.solver_ == "nystrom" and nystrom.n_components_ == X.shape[0]
    assert sorted(nystrom.component_indices_) == list(range(X.shape[0]))
    assert_allclose(nystrom.ridge_, exact.ridge_, rtol=1e-14)
    assert relative_error(nystrom.predict(X_test), exact.predict(X_test)) < 1e-9
    assert relative_error(nystrom.predict(X), exact.predict(X)) < 1e-9


def test_all_rows_as_centres_with_weights_and_targets_equals_the_exact_solve(data):
    X, y, X_test = data
    rng = np.random.default_rng(3)
    Y = np.column_stack([y, np.cos(3 * X[:, -1]), X[:, 0]])
    weights = rng.uniform(0.2, 3.0, size=X.shape[0])
    weights[:7] = 0.0
    params = {"alpha": [1e-3, 1e-2, 1e-3]}
    exact = HyperKernelRegressor(solver="cholesky", **params).fit(X, Y, sample_weight=weights)
    nystrom = HyperKernelRegressor(solver="nystrom", n_components=X.shape[0], **params)
    nystrom.fit(X, Y, sample_weight=weights)
    assert nystrom.dual_coef_.shape == (X.shape[0], 3)
    assert_allclose(nystrom.intercept_, exact.intercept_, rtol=1e-14)
    assert relative_error(nystrom.predict(X_test), exact.predict(X_test)) < 1e-9


def test_few_centres_approximate_and_improve_with_m():
    X = image_rows(n_images=12, pixels=25, seed=4)
    X_test = image_rows(n_images=3, pixels=20, seed=5)
    y, y_test = target(X), target(X_test)
    exact_mse = np.mean(
        (
            HyperKernelRegressor(normalize_x=True, solver="cholesky", **KERNEL_05)
            .fit(X, y)
            .predict(X_test)
            - y_test
        )
        ** 2
    )
    K = HyperKernel(z_encoding="fourier", length_scale=0.5, normalize_x=True)(X)
    for selection in ("uniform", "rpcholesky"):
        errors, traces = [], []
        for m in (10, 40, 150):
            model = HyperKernelRegressor(
                **KERNEL_05,
                normalize_x=True,
                solver="nystrom",
                n_components=m,
                component_selection=selection,
                random_state=0,
            )
            errors.append(np.mean((model.fit(X, y).predict(X_test) - y_test) ** 2))
            C = K[:, model.component_indices_]
            residual = K - C @ np.linalg.pinv(C[model.component_indices_], hermitian=True) @ C.T
            traces.append(np.trace(residual) / np.trace(K))
        assert errors[0] > errors[1] > errors[2]
        assert errors[2] < 1.5 * exact_mse
        assert traces[0] > traces[1] > traces[2]


def test_rpcholesky_approximates_the_kernel_better_than_uniform():
    """What randomly pivoted Cholesky optimises: the trace of ``K - K_nm K_mm^-1 K_mn``."""
    X = image_rows(n_images=12, pixels=25, seed=4)
    y = target(X)
    K = RBF(1.0)(X)  # a kernel with a fast-decaying spectrum, where the choice matters
    traces = {}
    for selection in ("uniform", "rpcholesky"):
        traces[selection] = []
        for seed in range(3):
            model = HyperKernelRegressor(
                kernel=RBF(1.0),
                solver="nystrom",
                n_components=30,
                component_selection=selection,
                random_state=seed,
            ).fit(X, y)
            C = K[:, model.component_indices_]
            residual = K - C @ np.linalg.pinv(C[model.component_indices_], hermitian=True) @ C.T
            traces[selection].append(np.trace(residual) / np.trace(K))
    assert np.mean(traces["rpcholesky"]) < 0.9 * np.mean(traces["uniform"])


# ------------------------------------------------------ scikit-learn's Nystroem + Ridge


@pytest.mark.parametrize("alpha_scale", ["relative", "absolute"])
def test_equals_sklearn_nystroem_ridge_pipeline(data, alpha_scale):
    """Nystroem + Ridge solves ``min |y - Phi w|^2 + a |w|^2`` with ``Phi = K_nm K_mm^-1/2``;
    with ``beta = K_mm^-1/2 w`` this is ``|y - K_nm beta|^2 + a beta^T K_mm beta``:
    our problem with the ridge ``a = ridge_`` (``alpha`` times the mean diagonal of
    ``kernel.diag(X)`` when relative), neither divided by n."""
    X, y, X_test = data
    m, alpha, seed = 40, 1e-2, 7
    kernel = HyperKernel(z_encoding="fourier", length_scale=0.5, normalize_x=True)
    model = HyperKernelRegressor(
        **KERNEL_05,
        normalize_x=True,
        solver="nystrom",
        n_components=m,
        random_state=seed,
        alpha=alpha,
        alpha_scale=alpha_scale,
        normalize_y=False,
    ).fit(X, y)
    ridge = alpha * np.mean(kernel.diag(X)) if alpha_scale == "relative" else alpha
    assert_allclose(model.ridge_, [ridge], rtol=1e-14)
    pipeline = make_pipeline(
        Nystroem(kernel=kernel, n_components=m, random_state=seed),
        Ridge(alpha=ridge, fit_intercept=False),
    ).fit(X, y)
    # same rule, same draw: the same centres
    assert_array_equal(model.component_indices_, pipeline[0].component_indices_)
    assert_allclose(model.components_, pipeline[0].components_)
    assert relative_error(model.predict(X_test), pipeline.predict(X_test)) < 1e-8


def test_equals_sklearn_pipeline_with_weights_and_normalized_targets(data):
    X, y, X_test = data
    weights = np.random.default_rng(0).integers(1, 4, size=X.shape[0]).astype(float)
    kernel = HyperKernel(z_encoding="fourier", length_scale=0.5, normalize_x=True)
    model = HyperKernelRegressor(
        **KERNEL_05,
        normalize_x=True,
        solver="nystrom",
        n_components=50,
        random_state=1,
        alpha=1e-3,
    )
    model.fit(X, y, sample_weight=weights)
    mean = np.average(y, weights=weights)
    std = np.sqrt(np.average((y - mean) ** 2, weights=weights))
    pipeline = make_pipeline(
        Nystroem(kernel=kernel, n_components=50, random_state=1),
        Ridge(alpha=model.ridge_[0], fit_intercept=False),
    ).fit(X, (y - mean) / std, ridge__sample_weight=weights)
    assert relative_error(model.predict(X_test), pipeline.predict(X_test) * std + mean) < 1e-8


# ----------------------------------------------------------------- invariances


def test_integer_weights_equal_repeated_rows(data):
    X, y, X_test = data
    counts = np.random.default_rng(1).integers(0, 4, size=X.shape[0])
    counts[:3] = [1, 2, 3]  # the centres below are present in both fits
    centres = np.array([0, 1, 2, 20, 40, 60, 80, 100, 120, 140])
    centres = centres[counts[centres] > 0]
    repeated = np.repeat(np.arange(X.shape[0]), counts)
    # the repeated data's first copy of each centre row
    first_copy = np.searchsorted(repeated, centres)
    weighted = HyperKernelRegressor(
        solver="nystrom", component_selection=centres, alpha_scale="absolute"
    )
    weighted.fit(X, y, sample_weight=counts.astype(float))
    copied = HyperKernelRegressor(
        solver="nystrom", component_selection=first_copy, alpha_scale="absolute"
    )
    copied.fit(X[repeated], y[repeated])
    assert weighted.n_components_ == centres.shape[0]
    assert_allclose(copied.components_, weighted.components_)
    assert relative_error(weighted.predict(X_test), copied.predict(X_test)) < 1e-9


def test_multi_output_with_one_alpha_per_target_equals_separate_fits(data):
    X, y, X_test = data
    Y = np.column_stack([y, np.cos(2 * X[:, -2]) + X[:, 1]])
    alphas = [1e-3, 1e-1]
    joint = HyperKernelRegressor(
        solver="nystrom", n_components=50, random_state=2, alpha=alphas
    ).fit(X, Y)
    prediction = joint.predict(X_test)
    assert prediction.shape == (X_test.shape[0], 2)
    for j, alpha in enumerate(alphas):
        single = HyperKernelRegressor(
            solver="nystrom", n_components=50, random_state=2, alpha=alpha
        )
        single.fit(X, Y[:, j])
        assert single.predict(X_test).shape == (X_test.shape[0],)
        assert relative_error(prediction[:, j], single.predict(X_test)) < 1e-10


def test_matches_the_dense_nystroem_formula(data):
    """``beta = (K_nm^T W K_nm + r K_mm)^-1 K_nm^T W y`` written densely with numpy."""
    X, y, X_test = data
    weights = np.random.default_rng(5).uniform(0.5, 2.0, size=X.shape[0])
    model = HyperKernelRegressor(
        **KERNEL_05,
        normalize_x=True,
        solver="nystrom",
        n_components=30,
        random_state=3,
        normalize_y=False,
        alpha=1e-2,
    )
    model.fit(X, y, sample_weight=weights)
    kernel = HyperKernel(z_encoding="fourier", length_scale=0.5, normalize_x=True)
    centres = X[model.component_indices_]
    K_nm, K_mm = kernel(X, centres), kernel(centres)
    A = K_nm.T @ (weights[:, None] * K_nm) + model.ridge_[0] * K_mm
    beta = np.linalg.solve(A, K_nm.T @ (weights * y))
    assert_allclose(model.dual_coef_, beta, rtol=1e-6, atol=1e-8 * np.abs(beta).max())
    assert relative_error(model.predict(X_test), kernel(X_test, centres) @ beta) < 1e-8


def test_the_fit_is_the_same_bit_for_bit_whichever_block_finishes_first(monkeypatch):
    """On threads the blocks of ``K_nm^T W K_nm`` finish in any order; their sums are added in
    the blocks' order, so a first block that finishes last changes nothing."""
    X = image_rows(n_images=30, pixels=20, seed=3)  # 600 rows: 12 blocks of 50
    y = target(X)
    params = {"solver": "nystrom", "n_components": 60, "random_state": 0, "block_size": 50}
    first = HyperKernelRegressor(n_jobs=2, **params).fit(X, y).dual_coef_
    original = _nystrom._normal_equations_task

    def first_block_last(operator, centres, block, *args):
        if block.start == 0:
            time.sleep(0.3)
        return original(operator, centres, block, *args)

    monkeypatch.setattr(_nystrom, "_normal_equations_task", first_block_last)
    assert_array_equal(HyperKernelRegressor(n_jobs=2, **params).fit(X, y).dual_coef_, first)


def test_fit_memory_does_not_grow_with_n_times_m():
    X = image_rows(n_images=60, pixels=100, seed=2)  # 6000 rows
    y = target(X)
    m = 100
    bias_free = {"normalize_x": True, "f_bias_variance": 0.0, "g_bias_variance": 0.0}
    for settings, share in ((bias_free, 0.5), ({}, 0.8)):
        # the defaults' biased tiles hold more temporaries (2.6 MB here): a peak below 0.8
        # of K_nm still shows that K_nm is never held
        normalize_x = settings.get("normalize_x", "scale")
        # one task at a time: with worker threads the peak depends on which blocks overlap
        # (it moved by 0.1 MB between runs under load), not on n * m
        model = HyperKernelRegressor(
            solver="nystrom", n_components=m, random_state=0, block_size=100, n_jobs=1, **settings
        )
        model.fit(X[:500], y[:500])  # imports and first-call caches outside the measurement
        peaks = []
        for n in (3000, 6000):
            tracemalloc.start()
            model.fit(X[:n], y[:n])
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        # 3,000 more rows would add 2.4 MB of K_nm; the O(n) arrays (rows, targets) add
        # 0.2 MB, and "scale" one copy of the rows with x divided by x_scale_ (O(n d))
        copy = 8 * 3000 * X.shape[1] if normalize_x == "scale" else 0
        assert peaks[1] - peaks[0] < 0.2 * 8 * 3000 * m + copy
        assert peaks[1] < share * 8 * X.shape[0] * m + 2 * copy  # K_nm would be 4.8 MB


# ------------------------------------------------------------------------- Dask


@pytest.mark.dask
@pytest.mark.parametrize("kernel", ["ntk", RBF(1.2)], ids=["hyperkernel", "rbf"])
def test_dask_blocks_run_on_the_workers_and_equal_local(data, dask_client, kernel):
    from distributed import get_task_stream

    X, y, X_test = data
    params = {
        "solver": "nystrom",
        "n_components": 40,
        "random_state": 0,
        "block_size": 13,
        "kernel": kernel,
    }
    if isinstance(kernel, str):
        params["n_jobs"] = 2
    local = HyperKernelRegressor(**params).fit(X, y)
    local_prediction = local.predict(X_test)
    workers = set(dask_client.scheduler_info()["workers"])
    with get_task_stream(dask_client) as stream, joblib.parallel_config(backend="dask", n_jobs=2):
        on_dask = HyperKernelRegressor(**params).fit(X, y)
        prediction = on_dask.predict(X_test)
    # the sums of the blocks come in another order: the coefficients agree to
    # rounding times the conditioning (an RBF's K_mm has a condition number of
    # 10^10 here), the predictions to rounding
    well_conditioned = isinstance(kernel, str)
    assert relative_error(on_dask.dual_coef_, local.dual_coef_) < (
        1e-9 if well_conditioned else 1e-5
    )
    assert relative_error(prediction, local_prediction) < (1e-12 if well_conditioned else 1e-8)
    done = [task for task in stream.data if task["status"] == "OK"]
    fit_tasks = [task for task in done if "_normal_equations_task" in task["key"]]
    predict_tasks = [task for task in done if "_predict_task" in task["key"]]
    assert len(fit_tasks) == 13  # ceil(160 / 13) blocks, one per task (at least 8 tasks)
    assert len(predict_tasks) == 4  # 40 test rows: ceil(40 / 13) blocks
    assert {task["worker"] for task in fit_tasks + predict_tasks} <= workers


# --------------------------------------------------------------------- centres


@pytest.mark.parametrize("selection", ["uniform", "rpcholesky"])
def test_centres_are_reproducible_with_random_state(data, selection):
    X, y, _ = data
    fits = [
        HyperKernelRegressor(
            solver="nystrom", n_components=30, component_selection=selection, random_state=seed
        ).fit(X, y)
        for seed in (0, 0, 1)
    ]
    assert_array_equal(fits[0].component_indices_, fits[1].component_indices_)
    assert_array_equal(fits[0].dual_coef_, fits[1].dual_coef_)
    assert not np.array_equal(
        np.sort(fits[0].component_indices_), np.sort(fits[2].component_indices_)
    )
    for fit in fits:
        assert fit.n_components_ == 30 and np.unique(fit.component_indices_).shape[0] == 30
        assert_array_equal(fit.components_, X[fit.component_indices_])
    rng = np.random.RandomState(0)
    a = HyperKernelRegressor(
        solver="nystrom", n_components=30, component_selection=selection, random_state=rng
    )
    assert a.fit(X, y).component_indices_.shape == (30,)


def test_rpcholesky_never_picks_duplicated_rows():
    X = image_rows(n_images=3, pixels=5, seed=0)
    X = np.repeat(X, 4, axis=0)  # 15 distinct rows, each 4 times
    y = target(X)
    with pytest.warns(UserWarning, match="found 15 centres"):
        model = HyperKernelRegressor(
            solver="nystrom", n_components=20, component_selection="rpcholesky", random_state=0
        )
        model.fit(X, y)
    assert model.n_components_ == 15
    assert np.unique(model.components_, axis=0).shape[0] == 15
    # 15 distinct centres span every row: the exact solution
    exact = HyperKernelRegressor(solver="cholesky", alpha=1e-3).fit(X, y)
    assert relative_error(model.predict(X[:20]), exact.predict(X[:20])) < 1e-6


def test_duplicated_uniform_centres_use_the_eigen_whitening(data):
    X, y, X_test = data
    centres = np.array([0, 0, 5, 9, 9, 33, 70])
    model = HyperKernelRegressor(solver="nystrom", component_selection=centres).fit(X, y)
    distinct = HyperKernelRegressor(solver="nystrom", component_selection=np.unique(centres)).fit(
        X, y
    )
    assert model.n_components_ == 7
    assert relative_error(model.predict(X_test), distinct.predict(X_test)) < 1e-8


def test_rpcholesky_on_a_low_rank_matrix_is_exact():
    rng = np.random.default_rng(0)
    F = rng.normal(size=(50, 6))
    A = F @ F.T
    pivots = rpcholesky_components(
        np.diag(A), lambda index: A[:, index], 10, np.random.RandomState(0)
    )
    assert pivots.shape[0] == 6 and np.unique(pivots).shape[0] == 6
    C = A[:, pivots]
    assert_allclose(
        C @ np.linalg.solve(A[np.ix_(pivots, pivots)], C.T), A, atol=1e-8 * np.abs(A).max()
    )


def test_rpcholesky_samples_in_proportion_to_the_diagonal():
    # a diagonal matrix: the first pivot is i with probability A_ii / trace
    diagonal = np.array([1.0, 2.0, 3.0, 4.0])
    A = np.diag(diagonal)
    rng = np.random.RandomState(0)
    first = [
        rpcholesky_components(diagonal, lambda index: A[:, index], 1, rng)[0] for _ in range(4000)
    ]
    frequencies = np.bincount(first, minlength=4) / 4000
    assert_allclose(frequencies, diagonal / diagonal.sum(), atol=0.03)


# ------------------------------------------------------------ parameters


@pytest.mark.parametrize("value", [0, -3, 2.5, "10"])
def test_bad_n_components_raises(data, value):
    X, y, _ = data
    with pytest.raises(ValueError, match="n_components"):
        HyperKernelRegressor(solver="nystrom", n_components=value).fit(X, y)


def test_too_many_components_are_clipped_with_a_warning(data):
    X, y, _ = data
    with pytest.warns(UserWarning, match="n_components=500 > n_samples=160"):
        model = HyperKernelRegressor(solver="nystrom", n_components=500).fit(X, y)
    assert model.n_components_ == 160


def test_default_n_components_and_other_solvers(data):
    X, y, _ = data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = HyperKernelRegressor(solver="nystrom").fit(X, y)  # None: min(n, 2000), no warning
    assert model.n_components_ == X.shape[0]
    exact = HyperKernelRegressor(solver="cholesky").fit(X, y)
    assert exact.n_components_ is None and exact.components_ is None
    assert HyperKernelRegressor().fit(X, y).solver_ == "cholesky"  # "auto" never chooses nystrom


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        ("kmeans", "component_selection"),
        (np.array([0.5, 1.0]), "integer row indices"),
        (np.array([[0, 1]]), "integer row indices"),
        (np.array([0, 160]), "outside"),
    ],
)
def test_bad_component_selection_raises(data, selection, message):
    X, y, _ = data
    with pytest.raises(ValueError, match=message):
        HyperKernelRegressor(solver="nystrom", component_selection=selection).fit(X, y)


def test_nngp_and_predict_in_blocks(data):
    X, y, X_test = data
    model = HyperKernelRegressor(
        normalize_x=True,
        kernel="nngp",
        length_scale=0.5,
        solver="nystrom",
        n_components=50,
        random_state=0,
    ).fit(X, y)
    kernel = HyperNNGP(z_encoding="fourier", length_scale=0.5, normalize_x=True)
    expected = kernel(X_test, model.components_) @ model.dual_coef_ + model.intercept_
    for block_size in (None, 1, 6):
        model.set_params(block_size=block_size)
        assert relative_error(model.predict(X_test), expected) < 1e-12


@parametrize_with_checks([HyperKernelRegressor(solver="nystrom", random_state=0)])
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="n_components=5 > n_samples")
        check(estimator)


def test_torch_device_equals_numpy(data):
    pytest.importorskip("torch")
    X, y, X_test = data
    numpy_model = HyperKernelRegressor(
        solver="nystrom", n_components=40, random_state=0, n_jobs=2
    ).fit(X, y)
    torch_model = HyperKernelRegressor(
        solver="nystrom", n_components=40, random_state=0, n_jobs=2, device="cpu"
    )
    torch_model.fit(X, y)
    assert relative_error(torch_model.predict(X_test), numpy_model.predict(X_test)) < 1e-10


def test_center_selection_is_the_deprecated_name_of_component_selection(data):
    """The former Falkon name still works, with a FutureWarning, and gives the same model;
    the new name alone warns nothing; both are parameters (clone, get_params)."""
    import pickle
    import warnings

    from sklearn.base import clone

    X, y, _ = data
    params = dict(solver="nystrom", n_components=30, random_state=0)
    new = HyperKernelRegressor(component_selection="rpcholesky", **params)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        new.fit(X, y)
    old = HyperKernelRegressor(center_selection="rpcholesky", **params)
    with pytest.warns(FutureWarning, match="renamed component_selection"):
        old.fit(X, y)
    np.testing.assert_array_equal(old.component_indices_, new.component_indices_)
    np.testing.assert_array_equal(old.predict(X), new.predict(X))
    assert clone(old).get_params()["center_selection"] == "rpcholesky"
    assert HyperKernelRegressor().get_params()["center_selection"] == "deprecated"
    # a pickle that predates the new name (its state has only center_selection) loads
    # with the rule moved to component_selection
    from sklearn_hyperkernel import InconsistentVersionWarning
    from sklearn_hyperkernel._utils.versioning import VERSION_KEY

    state = new.__getstate__()
    state["center_selection"] = state.pop("component_selection")
    state[VERSION_KEY] = "0.1.0"
    restored = HyperKernelRegressor.__new__(HyperKernelRegressor)
    with pytest.warns(InconsistentVersionWarning):
        restored.__setstate__(state)
    assert restored.component_selection == "rpcholesky"
    assert restored.center_selection == "deprecated"
    np.testing.assert_array_equal(restored.predict(X), new.predict(X))
    assert pickle.loads(pickle.dumps(old)).center_selection == "rpcholesky"
    with pytest.raises(ValueError, match="center_selection"):
        HyperKernelRegressor(center_selection="kmeans", **params).fit(X, y)
