"""The defaults work as they are: the kernel classes in scikit-learn's kernel tools (issue 21
item 7) and HyperKernelRegressor on shape codes as well as on pixels (issue 18 items 3-4).

Every figure is asserted against a baseline on real data: an RBF kernel in the same tool with
scikit-learn's defaults, the paper's raw-row closed forms (which these defaults replace), or a
tuned RBF kernel ridge. The margins were measured (see docs/user_guide.rst, "Why the defaults
are what they are") and leave room for rounding only.
"""

import warnings

import numpy as np
import pytest
from conftest import PAPER_KERNEL
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.decomposition import KernelPCA
from sklearn.gaussian_process import GaussianProcessClassifier
from sklearn.kernel_approximation import Nystroem
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR

from sklearn_hyperkernel import HyperKernel, HyperKernelRegressor, HyperNNGP
from sklearn_hyperkernel.datasets import make_sdf_shapes, pixel_regression
from sklearn_hyperkernel.kernel_ridge import LENGTH_SCALE_PER_Z_SPREAD

PAPER = PAPER_KERNEL  # the paper's raw-row closed forms


@pytest.fixture(scope="module")
def pixel_on_off():
    """Digits' pixel task: x a unit-norm image, z a coordinate, y the pixel's value."""
    images = load_digits().images
    pick = np.random.RandomState(2024).permutation(len(images))
    U, y = pixel_regression(images[pick[:30]], pixels_per_image=20, random_state=1)
    U_test, y_test = pixel_regression(images[pick[30:40]])
    return U, y, U_test, y_test


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    return train_test_split(X, y, test_size=0.5, random_state=0, stratify=y)


def test_the_defaults_and_the_papers_forms_one_argument_away():
    U = np.random.default_rng(0).normal(size=(6, 5))
    assert HyperKernel().get_params()["normalize_x"] is True
    assert HyperKernelRegressor().get_params()["normalize_x"] == "scale"
    # the regressor: the hyper-NNGP with a length scale fitted to z's spread
    assert HyperKernelRegressor().get_params()["kernel"] == "nngp"
    assert HyperKernelRegressor().get_params()["length_scale"] == "scale"
    for kernel in (HyperKernel(), HyperNNGP()):
        params = kernel.get_params()
        assert (params["f_bias_variance"], params["g_bias_variance"]) == (1.0, 0.1)
        # learnable by a Gaussian process: both variances and the length scale are free
        assert [h.name for h in kernel.hyperparameters if not h.fixed] == [
            "f_bias_variance",
            "g_bias_variance",
            "length_scale",
        ]
    # the paper's raw-row forms: homogeneous of degree g_depth = 2 in x
    paper = HyperKernel(**PAPER)
    scaled = U.copy()
    scaled[:, :3] *= 3.0
    np.testing.assert_allclose(paper(scaled, U), 9.0 * paper(U, U), rtol=1e-7)  # rho = 1 rounds
    assert not np.allclose(HyperKernel(normalize_x=False)(scaled, U), 9.0 * HyperKernel()(U, U))


def test_svc_with_the_default_kernel_beats_the_majority_and_matches_rbf(pixel_on_off):
    U, y, U_test, y_test = pixel_on_off
    labels, labels_test = y > 0.5, y_test > 0.5
    majority = max(labels_test.mean(), 1 - labels_test.mean())
    score = SVC(kernel=HyperKernel()).fit(U, labels).score(U_test, labels_test)
    rbf = SVC(kernel="rbf").fit(U, labels).score(U_test, labels_test)
    paper = SVC(kernel=HyperKernel(**PAPER)).fit(U, labels).score(U_test, labels_test)
    assert paper <= majority + 0.01  # the raw-row form learns nothing here (issue 21)
    assert score >= majority + 0.05 and score >= rbf - 0.02, (score, rbf, majority)


def test_gaussian_process_classifier_with_the_default_kernel(cancer):
    X, X_test, y, y_test = cancer
    gpc = GaussianProcessClassifier(HyperNNGP(z_dim=1), random_state=0).fit(X, y)
    rbf = GaussianProcessClassifier(random_state=0).fit(X, y)
    assert gpc.score(X_test, y_test) >= rbf.score(X_test, y_test) - 0.02 >= 0.9


def test_svr_with_the_default_kernel_matches_rbf(pixel_on_off):
    U, y, U_test, y_test = pixel_on_off
    score = SVR(kernel=HyperKernel()).fit(U, y).score(U_test, y_test)
    rbf = SVR(kernel="rbf").fit(U, y).score(U_test, y_test)
    assert score >= rbf - 0.02 and score > 0.5, (score, rbf)


def test_kernel_pca_then_a_classifier_and_nystroem_then_ridge(cancer):
    X, X_test, y, y_test = cancer

    def accuracy(kernel):
        features = KernelPCA(n_components=10, kernel=kernel, random_state=0)
        model = make_pipeline(features, LogisticRegression(max_iter=1000))
        return model.fit(X, y).score(X_test, y_test)

    ours, rbf = accuracy(HyperKernel(z_dim=1)), accuracy("rbf")
    assert ours >= rbf - 0.02 and ours > 0.9, (ours, rbf)

    def r2(kernel):
        model = make_pipeline(Nystroem(kernel=kernel, n_components=100, random_state=0), Ridge())
        return model.fit(X, y).score(X_test, y_test)

    ours, rbf = r2(HyperKernel(z_dim=1)), r2("rbf")
    assert ours >= rbf - 0.05 and ours > 0.6, (ours, rbf)


@pytest.mark.parametrize("kind", ["sphere", "box"])
def test_default_regressor_on_shape_codes_is_within_2x_of_a_tuned_rbf(kind):
    """Issue 18's bar: the default HyperKernelRegressor(z_dim=3) within 2x of an RBF
    KernelRidge tuned on the raw columns (measured, docs/performance.md "Defaults": 1.4x on
    spheres, 1.3x on boxes); the NTK with the same fitted length scale is not (4.4x, 1.9x),
    which is why the default kernel is the NNGP."""
    U, y = make_sdf_shapes(120, 20, kind, random_state=11)
    U_test, y_test = make_sdf_shapes(40, 20, kind, random_state=12)
    baseline = np.mean((y_test - y.mean()) ** 2)

    def ratio(model):
        return np.mean((model.fit(U, y).predict(U_test) - y_test) ** 2) / baseline

    ours = ratio(HyperKernelRegressor(z_dim=3))
    # the best of a small grid on the raw columns, chosen on the test set itself: a
    # generous baseline (on standardised columns the RBF is 4x worse here)
    rbf = min(
        ratio(KernelRidge(kernel="rbf", alpha=a, gamma=g))
        for a in (1e-4, 1e-3)
        for g in (0.1, 0.3, 1.0)
    )
    assert ours <= 1.6 * rbf, (ours, rbf)
    on_the_sphere = ratio(HyperKernelRegressor(z_dim=3, normalize_x=True))
    assert ours < 0.5 * on_the_sphere  # on the sphere a code loses its size
    if kind == "sphere":
        assert ratio(HyperKernelRegressor("ntk", z_dim=3)) > 3.0 * rbf
        # the kernels' length scale in z's units (0.5) is too short for 3-D points
        assert ratio(HyperKernelRegressor(z_dim=3, length_scale=0.5)) > 2.0 * ours


def test_default_regressor_on_digits_pixels():
    """No regression on images: the default call of ../shared/tools/default_call.py (digits,
    60 images x 20 pixels) stays below issue 18's 0.25 of the mean predictor's error
    (measured 0.198; the NTK default before the fitted length scale: 0.213)."""
    images = load_digits().images
    pick = np.random.RandomState(2024).permutation(len(images))
    U, y = pixel_regression(images[pick[:60]], pixels_per_image=20, random_state=1)
    U_test, y_test = pixel_regression(images[pick[60:80]])
    prediction = HyperKernelRegressor().fit(U, y).predict(U_test)
    ratio = np.mean((prediction - y_test) ** 2) / np.mean((y_test - y.mean()) ** 2)
    assert ratio <= 0.21, ratio


def test_the_fitted_length_scale_follows_z_spread():
    """length_scale="scale": length_scale_ = LENGTH_SCALE_PER_Z_SPREAD * sqrt(weighted mean
    |z - weighted mean z|^2); so z's units do not matter (z times c: the same predictions),
    an integer weight is a repeated row, and a number is used as it is."""
    U, y = make_sdf_shapes(12, 5, "sphere", random_state=3)
    U_test, _ = make_sdf_shapes(4, 5, "sphere", random_state=4)
    weights = np.random.default_rng(0).integers(0, 4, size=len(y))
    weights[0] = 0
    U[0, -3:] = 1e6  # dropped by its weight
    model = HyperKernelRegressor(z_dim=3).fit(U, y, sample_weight=weights)
    kept = np.repeat(U, weights, axis=0)[:, -3:]
    spread = np.sqrt(np.mean(np.sum((kept - kept.mean(axis=0)) ** 2, axis=1)))
    np.testing.assert_allclose(model.length_scale_, LENGTH_SCALE_PER_Z_SPREAD * spread, rtol=1e-13)
    assert LENGTH_SCALE_PER_Z_SPREAD == 0.45
    assert model.kernel_.length_scale == model.length_scale_
    repeated = HyperKernelRegressor(z_dim=3).fit(
        np.repeat(U, weights, axis=0), np.repeat(y, weights)
    )
    np.testing.assert_allclose(repeated.length_scale_, model.length_scale_, rtol=1e-13)
    np.testing.assert_allclose(model.predict(U_test), repeated.predict(U_test), rtol=1e-7)
    # z in other units (times 1000): the same model
    scale = np.ones(U.shape[1])
    scale[-3:] = 1000.0
    km = HyperKernelRegressor(z_dim=3).fit(U * scale, y, sample_weight=weights)
    np.testing.assert_allclose(km.length_scale_, 1000.0 * model.length_scale_, rtol=1e-13)
    np.testing.assert_allclose(km.predict(U_test * scale), model.predict(U_test), rtol=1e-8)
    # a number is in z's units, as the kernels' length_scale
    assert HyperKernelRegressor(z_dim=3, length_scale=0.7).fit(U, y).length_scale_ == 0.7
    # one z for every row: no spread, counted as 1
    U[:, -3:] = 0.25
    assert HyperKernelRegressor(z_dim=3).fit(U, y).length_scale_ == LENGTH_SCALE_PER_Z_SPREAD
    with pytest.raises(ValueError, match="length_scale"):
        HyperKernelRegressor(length_scale="auto").fit(U, y)


def test_the_fitted_x_scale_is_weighted_and_applied_in_predict():
    """x_scale_ is the root of the weighted mean of |x|^2 / n0: an integer weight is a
    repeated row, a weight of 0 a dropped one (however large its x); predict divides x by
    it, so the model is the regressor of x / x_scale_ with normalize_x=False."""
    U, y = make_sdf_shapes(12, 5, "sphere", random_state=3)
    U_test, _ = make_sdf_shapes(4, 5, "sphere", random_state=4)
    n_x = U.shape[1] - 3
    weights = np.random.default_rng(0).integers(0, 4, size=len(y))
    weights[0] = 0
    U[0, :n_x] *= 1e6  # dropped by its weight
    weighted = HyperKernelRegressor(z_dim=3).fit(U, y, sample_weight=weights)
    repeated = HyperKernelRegressor(z_dim=3).fit(
        np.repeat(U, weights, axis=0), np.repeat(y, weights)
    )
    kept = np.repeat(U, weights, axis=0)[:, :n_x]
    np.testing.assert_allclose(weighted.x_scale_, np.sqrt(np.mean(kept**2)), rtol=1e-13)
    np.testing.assert_allclose(weighted.x_scale_, repeated.x_scale_, rtol=1e-13)
    np.testing.assert_allclose(weighted.predict(U_test), repeated.predict(U_test), rtol=1e-7)
    # predict applies x_scale_: the same model as dividing x by hand with normalize_x=False
    divided, divided_test = U.copy(), U_test.copy()
    divided[:, :n_x] /= weighted.x_scale_
    divided_test[:, :n_x] /= weighted.x_scale_
    by_hand = HyperKernelRegressor(z_dim=3, normalize_x=False)
    by_hand.fit(divided, y, sample_weight=weights)
    np.testing.assert_allclose(weighted.predict(U_test), by_hand.predict(divided_test), rtol=1e-10)
    assert weighted.x_scale_ != 1.0 and by_hand.x_scale_ == 1.0


def test_predict_warns_when_x_is_far_outside_the_training_rows():
    """With the kernel seeing |x| (normalize_x="scale" or False), rows to predict whose x is
    many times larger than every training row's are an extrapolation: predict warns, naming
    the ratio and normalize_x=True; on the sphere (True) nothing is said."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 6))
    y = np.sin(X[:, 0]) + X[:, -1]
    inside, outside = X[:10] * 2.0, X[:10] * 50.0
    for normalize_x in ("scale", False):
        model = HyperKernelRegressor(normalize_x=normalize_x).fit(X, y)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model.predict(inside)
        with pytest.warns(UserWarning, match=r"times the largest x .* normalize_x=True"):
            model.predict(outside)
    model = HyperKernelRegressor(normalize_x=True).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.predict(outside)
