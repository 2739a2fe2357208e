"""The convolutional f on the kernels (issue 19): the Gram engine with f's kernel of a conv f.

Tiny images (5 x 4 x 2 unless said), so every test is fast. The closed forms are
``../shared/docs/conv-f.md``'s; :func:`closed_form` composes f's closed forms (the conv
recursion's functions) with g's recursion by hand, on all pairs of rows at once, without
the engine's blocks, tiles, distinct-x tables, coincidence ids or fused pass. To compare
with another reference (``tests/reference.py``'s literal conv recursion), point
:data:`CLOSED_FORM` at a function of the same signature.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from conftest import TORCH_DEVICES, relative_error
from numpy.testing import assert_allclose
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score

from sklearn_hyperkernel import (
    HyperKernel,
    HyperKernelRegressor,
    HyperNNGP,
    config_context,
    recursions,
)

# the conv recursion (engineer conv-rec's branch); until it is merged these tests skip
conv_recursion = pytest.importorskip("sklearn_hyperkernel._f.conv_recursion")

IMAGE = (5, 4, 2)
N_X = 5 * 4 * 2
Z_DIM = 2


def images(n: int = 6, seed: int = 0, shape: tuple = IMAGE) -> np.ndarray:
    """``n`` flattened images: 0 is all zeros, 1 sparse (3 pixels), 3 equals 2, 4 is 2.5 x 2."""
    rng = np.random.default_rng(seed)
    width = int(np.prod(shape))
    x = rng.normal(size=(n, width))
    x[0] = 0.0
    x[1] = 0.0
    x[1, [0, 7, width - 1]] = (1.5, -2.0, 0.7)
    x[3] = x[2]
    x[4] = 2.5 * x[2]
    return x


def rows(n_rows: int = 23, seed: int = 0, shape: tuple = IMAGE) -> np.ndarray:
    """Rows ``[x | z]``: the :func:`images` shared among pixels, z uniform in [-1, 1]."""
    rng = np.random.default_rng(seed + 100)
    x = images(seed=seed, shape=shape)
    index = rng.integers(0, x.shape[0], n_rows)
    index[:6] = np.arange(6)  # every image at least once
    z = rng.uniform(-1.0, 1.0, size=(n_rows, Z_DIM))
    z[5] = z[2]  # a repeated row [x | z]: rows 2 and 5 have images 2 and 5; and a repeat:
    out = np.hstack([x[index], z])
    if n_rows > 7:
        out[7] = out[3]
    return out


def _prepared(A: np.ndarray, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """``(x, z)`` of rows ``A``, x as the kernel reads it: with ``normalize_x`` each non-zero
    image rescaled to ``|x|^2 / n0 = 1``."""
    n_x = A.shape[1] - Z_DIM
    x = A[:, :n_x].copy()
    if params["normalize_x"]:
        s = np.sum(x * x, axis=1) / n_x
        x[s > 0] /= np.sqrt(s[s > 0])[:, None]
    return x, A[:, n_x:]


def _composed(X, Y, kernel) -> np.ndarray:
    """conv-rec's closed forms of f composed with g's recursion by hand, on all pairs.

    ``normalize_x`` is applied to x first (each non-zero image to ``|x|^2 / n0 = 1``).
    Equal images have f's correlation exactly 1 (the kernel's rule).
    """
    p = kernel.get_params()
    height, width, channels = (*p["image_shape"], 1)[:3]
    (a, z_a), (b, z_b) = _prepared(X, p), _prepared(Y, p)
    a, b = (x.reshape(-1, height, width, channels) for x in (a, b))
    L, k, bf = p["f_depth"], p["filter_size"], p["f_bias_variance"]
    slope = 0.0 if p["activation"] == "relu" else p["negative_slope"]
    var_a = conv_recursion.conv_variances(a, k, L, bf)
    var_b = conv_recursion.conv_variances(b, k, L, bf)
    n_x = X.shape[1] - Z_DIM
    same = np.all(X[:, None, :n_x] == Y[None, :, :n_x], axis=2)
    f = conv_recursion.conv_correlations(
        a, b, var_a, var_b, k, L, slope, need_ntk=True, bias_variance=bf, same=same
    )
    scales = recursions.length_scale_array(p["length_scale"], Z_DIM)
    rho_z, e_a, e_b = recursions.z_correlations(z_a, z_b, p["z_encoding"], scales)
    kernels = recursions.hyper_from_correlations(
        f,
        rho_z,
        (np.asarray(var_a.sigma), np.asarray(var_b.sigma), e_a, e_b),
        p["g_depth"],
        slope,
        g_bias_variance=p["g_bias_variance"],
    )
    return kernels.ntk if isinstance(kernel, HyperKernel) else kernels.nngp


def _literal(X, Y, kernel) -> np.ndarray:
    """tests/reference.py's literal recursion on full position-pair maps (entry by entry)."""
    import reference

    p = kernel.get_params()
    (x_a, z_a), (x_b, z_b) = _prepared(X, p), _prepared(Y, p)
    nngp, ntk = reference.hyper_grams(
        x_a,
        z_a,
        x_b,
        z_b,
        f_depth=p["f_depth"],
        g_depth=p["g_depth"],
        z_encoding=p["z_encoding"],
        length_scale=p["length_scale"],
        negative_slope=0.0 if p["activation"] == "relu" else p["negative_slope"],
        f_bias_variance=p["f_bias_variance"],
        g_bias_variance=p["g_bias_variance"],
        f_architecture=p["f_architecture"],
        image_shape=p["image_shape"],
        filter_size=p["filter_size"],
    )
    return ntk if isinstance(kernel, HyperKernel) else nngp


def _reference_has_the_conv_f() -> bool:
    import inspect

    import reference

    return (
        "f_architecture" in inspect.signature(reference.f_pair).parameters
        if hasattr(reference, "f_pair")
        else False
    )


#: the closed form the kernels are compared with: ``(X, Y, kernel) -> K(X, Y)``
CLOSED_FORM = _composed


def conv_kernel(cls=HyperKernel, **params):
    base = dict(
        z_dim=Z_DIM,
        f_architecture="conv",
        image_shape=IMAGE,
        f_depth=3,
        g_depth=2,
        normalize_x=False,
        activation="leaky_relu",
        negative_slope=0.1,
    )
    return cls(**{**base, **params})


BIASES = [(0.0, 0.0), (0.7, 0.2)]
KINDS = [HyperKernel, HyperNNGP]


@pytest.mark.parametrize("cls", KINDS)
@pytest.mark.parametrize("bf, bg", BIASES)
@pytest.mark.parametrize("normalize_x", [False, True])
def test_f_depth_one_is_the_dense_f(cls, bf, bg, normalize_x):
    """``f_depth=1``: one dense layer on the flattened image, the dense f of depth 1."""
    X, Y = rows(), rows(9, seed=1)
    params = dict(f_depth=1, f_bias_variance=bf, g_bias_variance=bg, normalize_x=normalize_x)
    conv, dense = conv_kernel(cls, **params), conv_kernel(cls, f_architecture="dense", **params)
    assert relative_error(conv(X), dense(X)) < 1e-14
    assert relative_error(conv(X, Y), dense(X, Y)) < 1e-14
    assert_allclose(conv.diag(X), dense.diag(X), rtol=1e-14)
    # deeper, the two f differ (the parameter reaches the engine)
    deep = dict(params, f_depth=3)
    assert (
        relative_error(
            conv_kernel(cls, **deep)(X), conv_kernel(cls, f_architecture="dense", **deep)(X)
        )
        > 1e-3
    )


@pytest.mark.parametrize("cls", KINDS)
@pytest.mark.parametrize("bf, bg", BIASES)
@pytest.mark.parametrize("z_encoding", ["fourier", "linear"])
@pytest.mark.parametrize("f_depth, filter_size, g_depth", [(2, 3, 1), (3, 3, 2), (3, 5, 3)])
def test_kernel_equals_the_closed_form(cls, bf, bg, z_encoding, f_depth, filter_size, g_depth):
    """Symmetric, cross and diag against :data:`CLOSED_FORM`, with zero, sparse, repeated and
    scaled images (1e-10 for the NNGP, 1e-7 for the NTK, relative to the largest entry)."""
    kernel = conv_kernel(
        cls,
        f_depth=f_depth,
        g_depth=g_depth,
        filter_size=filter_size,
        z_encoding=z_encoding,
        f_bias_variance=bf,
        g_bias_variance=bg,
    )
    X, Y = rows(), rows(9, seed=1)
    Y[0] = X[4]  # a row of X among Y's
    rtol = 1e-7 if cls is HyperKernel else 1e-10
    K = kernel(X)
    assert np.all(np.isfinite(K))
    assert relative_error(K, CLOSED_FORM(X, X, kernel)) < rtol
    assert relative_error(kernel(X, Y), CLOSED_FORM(X, Y, kernel)) < rtol
    assert_allclose(kernel.diag(X), np.diag(CLOSED_FORM(X, X, kernel)), rtol=rtol, atol=0)
    assert_allclose(kernel.diag(X), np.diag(K), rtol=0, atol=0)  # the closed form, written in
    assert np.array_equal(K, K.T)
    assert relative_error(kernel(X, X), K) < 1e-14
    if bf == 0.0:  # the zero image's rows: zero with every row, without f's biases
        zero = np.all(X[:, :N_X] == 0.0, axis=1)
        assert np.all(K[zero] == 0.0)


@pytest.mark.parametrize("bf", [0.0, 0.4])
def test_diagonal_identities(bf):
    """``Theta^f(x, x) = f_depth S_f(x, x)`` without biases: ``HyperKernel(u, u) = L H
    HyperNNGP(u, u)`` with g's biases 0; and the variances are not ``|x|^2 / n0``."""
    X = rows()
    params = dict(f_depth=3, g_depth=2, f_bias_variance=bf, g_bias_variance=0.0)
    ntk, nngp = conv_kernel(HyperKernel, **params), conv_kernel(HyperNNGP, **params)
    if bf == 0.0:
        assert_allclose(ntk.diag(X), 3 * 2 * nngp.diag(X), rtol=1e-14)
    # zero padding loses energy at the border: S_f(x, x) < |x|^2 / n0 + L bf (the dense f's)
    dense = conv_kernel(HyperNNGP, f_architecture="dense", **params)
    nonzero = np.any(X[:, :N_X] != 0.0, axis=1)
    assert np.all(nngp.diag(X)[nonzero] < dense.diag(X)[nonzero] * (1 - 1e-3))


@pytest.mark.parametrize("cls", KINDS)
def test_scaled_images(cls):
    """Without biases the kernels are positively homogeneous of degree ``g_depth`` in one
    image; with ``normalize_x`` a scaled image is the same image."""
    X, Y = rows(), rows(9, seed=1)
    kernel = conv_kernel(cls, g_depth=3, f_bias_variance=0.0, g_bias_variance=0.0)
    scaled = X.copy()
    scaled[:, :N_X] *= 3.0
    # (1e-8: images 1 of X and Y are equal, correlation exactly 1, and scaled only up to
    # rounding; the NTK's kappa0 moves by ~sqrt(ulp) there)
    assert relative_error(kernel(scaled, Y), 3.0**3 * kernel(X, Y)) < 1e-8
    assert relative_error(kernel(scaled), 3.0**6 * kernel(X)) < 1e-8
    normalized = conv_kernel(cls, g_depth=3, normalize_x=True, f_bias_variance=0.5)
    assert relative_error(normalized(scaled, Y), normalized(X, Y)) < 1e-8


@pytest.mark.parametrize("cls", KINDS)
@pytest.mark.parametrize("bf, bg", BIASES + [(0.5, 0.0), (0.0, 0.3)])
@pytest.mark.parametrize("block_size", [None, 4])
def test_fused_pass_equals_the_tiles(cls, bf, bg, block_size):
    """The compiled pass (f's table and g per entry) gives the numpy path's values (1e-12)."""
    pytest.importorskip("numba")
    X, Y = rows(), rows(9, seed=1)
    kernel = conv_kernel(cls, f_bias_variance=bf, g_bias_variance=bg, block_size=block_size)
    with config_context(fused=False):
        K, cross = kernel(X), kernel(X, Y)
    with config_context(fused=True):
        fused, fused_cross = kernel(X), kernel(X, Y)
        product = kernel.gram_matvec(X, np.arange(X.shape[0], dtype=float))
        single = clone(kernel).set_params(dtype="float32")(X, Y)  # f's table in float32
    assert relative_error(fused, K) < 1e-12
    assert relative_error(fused_cross, cross) < 1e-12
    assert np.array_equal(fused, fused.T)
    assert relative_error(product, K @ np.arange(X.shape[0], dtype=float)) < 1e-12
    assert relative_error(single, cross) < 1e-5


@pytest.mark.parametrize("device", TORCH_DEVICES)
@pytest.mark.parametrize("cls", KINDS)
def test_torch_equals_numpy(torch_module, device, cls):
    """The torch path (f's correlations on torch tensors) gives numpy's values; float32 to 1e-5."""
    X, Y = rows(), rows(9, seed=1)
    kernel = conv_kernel(cls, f_bias_variance=0.5, g_bias_variance=0.1)
    K, cross = kernel(X), kernel(X, Y)
    on_torch = clone(kernel).set_params(device=device)
    assert relative_error(on_torch(X), K) < 1e-12
    assert relative_error(on_torch(X, Y), cross) < 1e-12
    single = clone(kernel).set_params(device=device, dtype="float32")
    assert relative_error(single(X), K) < 1e-5
    assert relative_error(clone(kernel).set_params(dtype="float32")(X), K) < 1e-5


@pytest.mark.parametrize("cls", KINDS)
@pytest.mark.parametrize("z_encoding", ["fourier", "linear"])
def test_gradient_matches_finite_differences(cls, z_encoding):
    """``eval_gradient`` in both bias variances and the length scale, against central
    differences in log space."""
    X = rows(15)
    kernel = conv_kernel(cls, f_bias_variance=0.6, g_bias_variance=0.2, z_encoding=z_encoding)
    K, gradient = kernel(X, eval_gradient=True)
    theta = kernel.theta
    assert gradient.shape == (15, 15, theta.shape[0])
    assert theta.shape[0] == (3 if z_encoding == "fourier" else 2)
    step = 1e-5
    for i in range(theta.shape[0]):
        up, down = theta.copy(), theta.copy()
        up[i] += step
        down[i] -= step
        numeric = (kernel.clone_with_theta(up)(X) - kernel.clone_with_theta(down)(X)) / (2 * step)
        assert relative_error(gradient[..., i], numeric) < 1e-6
    assert relative_error(K, kernel(X)) < 1e-13  # conv_correlations vs the compiled table


def test_threads_and_dask_give_the_same_gram(dask_client):
    """Blocks on threads and on Dask workers (tasks carry the images) give the one-task Gram."""
    from joblib import parallel_config

    X = rows(23)
    kernel = conv_kernel(HyperKernel, f_bias_variance=0.5, block_size=5)
    one = clone(kernel).set_params(n_jobs=1)(X)
    assert np.array_equal(clone(kernel).set_params(n_jobs=2)(X), one)
    with parallel_config(backend="dask"):
        on_dask = clone(kernel).set_params(n_jobs=2)(X)
    assert relative_error(on_dask, one) < 1e-15


def _pixel_task(n_images: int = 8, pixels: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_images, N_X))
    z = rng.uniform(-1, 1, size=(n_images * pixels, Z_DIM))
    X = np.hstack([np.repeat(x, pixels, axis=0), z])
    y = np.sin(2 * z[:, 0]) * np.repeat(x[:, 0], pixels) + z[:, 1]
    return X, y


def test_every_solver_fits_the_same_model():
    """cholesky, cg and nystrom with every row a component fit and predict the same model."""
    X, y = _pixel_task()
    X_new = _pixel_task(3, 4, seed=1)[0]
    params = dict(f_architecture="conv", image_shape=IMAGE, f_depth=3, alpha=1e-2)
    exact = HyperKernelRegressor(solver="cholesky", **params).fit(X, y)
    cg = HyperKernelRegressor(solver="cg", tol=1e-12, **params).fit(X, y)
    nystrom = HyperKernelRegressor(solver="nystrom", n_components=X.shape[0], **params).fit(X, y)
    dense = HyperKernelRegressor(solver="cholesky", **dict(params, f_architecture="dense"))
    expected = exact.predict(X_new)
    assert relative_error(cg.predict(X_new), expected) < 1e-6
    assert relative_error(nystrom.predict(X_new), expected) < 1e-6
    assert relative_error(dense.fit(X, y).predict(X_new), expected) > 1e-4
    # the regressor's kernel is the conv kernel on the scaled rows
    assert exact.kernel_.get_params()["f_architecture"] == "conv"
    assert exact.kernel_.get_params()["image_shape"] == IMAGE


def test_grid_search_over_f_architecture_and_filter_size():
    """GridSearchCV over ``f_architecture`` and ``filter_size``: each candidate's score is
    that of the regressor built with those parameters."""
    X, y = _pixel_task()
    base = HyperKernelRegressor(image_shape=IMAGE, alpha=1e-2)
    grid = {"f_architecture": ["dense", "conv"], "filter_size": [1, 3]}
    cv = KFold(3, shuffle=True, random_state=0)
    search = GridSearchCV(base, grid, cv=cv).fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    for params, score in zip(search.cv_results_["params"], scores, strict=True):
        expected = cross_val_score(clone(base).set_params(**params), X, y, cv=cv).mean()
        assert score == pytest.approx(expected, rel=1e-10)
    conv_scores = [
        s
        for p, s in zip(search.cv_results_["params"], scores, strict=True)
        if p["f_architecture"] == "conv"
    ]
    assert conv_scores[0] != conv_scores[1]  # filter_size reaches the conv f


@pytest.mark.parametrize("cls", KINDS)
def test_clone_pickle_repr(cls):
    kernel = conv_kernel(cls, filter_size=5, image_shape=(5, 4, 2))
    X = rows()
    copy = clone(kernel)
    assert copy == kernel and copy.get_params()["filter_size"] == 5
    assert copy != clone(kernel).set_params(filter_size=3)
    assert copy != clone(kernel).set_params(f_architecture="dense")
    restored = pickle.loads(pickle.dumps(kernel))
    assert restored == kernel
    assert np.array_equal(restored(X), kernel(X))
    assert "f_architecture='conv'" in repr(kernel) and "filter_size=5" in repr(kernel)
    assert "f_architecture" not in repr(cls())


def test_pickles_without_the_parameters_load_as_the_dense_f():
    """A kernel pickled before ``f_architecture`` existed is the dense f."""
    kernel = HyperKernel()
    state = kernel.__getstate__()
    for name in ("f_architecture", "image_shape", "filter_size"):
        del state[name]
    state["_sklearn_hyperkernel_version"] = "0.1.0"
    old = HyperKernel.__new__(HyperKernel)
    with pytest.warns(Warning):
        old.__setstate__(state)
    assert old.get_params()["f_architecture"] == "dense"
    assert old.get_params()["filter_size"] == 3 and old.get_params()["image_shape"] is None


BAD = [
    (dict(image_shape=(5, 5, 2)), "image_shape"),  # 50 values, x has 40
    (dict(image_shape=None), "image_shape"),
    (dict(filter_size=4), "filter_size"),
    (dict(filter_size=0), "filter_size"),
    (dict(filter_size=-3), "filter_size"),
    (dict(f_architecture="pooling"), "f_architecture"),
]


@pytest.mark.parametrize("params, name", BAD)
def test_bad_input_raises_naming_the_parameter(params, name):
    """At call time on the kernels, at fit time on the regressor; never a wrong kernel."""
    X = rows()
    kernel = conv_kernel(HyperKernel, **params)
    for call in (lambda: kernel(X), lambda: kernel.diag(X), lambda: kernel(X, X)):
        with pytest.raises(ValueError, match=name):
            call()
    regressor = HyperKernelRegressor(f_architecture="conv", image_shape=IMAGE).set_params(**params)
    with pytest.raises(ValueError, match=name):
        regressor.fit(X, X[:, -1])


def test_rows_factorised_by_the_dense_kernel_evaluated_by_the_conv_kernel():
    """f's per-x quantities are the evaluating kernel's, whichever kernel factorised the rows."""
    X, Y = rows(), rows(9, seed=1)
    conv = conv_kernel(HyperKernel, f_bias_variance=0.5)
    dense = clone(conv).set_params(f_architecture="dense")
    rows_x, rows_y = dense.factorize_rows(X), dense.factorize_rows(Y)
    assert np.array_equal(conv.gram_factorized(rows_x), conv(X))
    assert np.array_equal(conv.gram_factorized(rows_x, rows_y), conv(X, Y))
    assert np.array_equal(dense.gram_factorized(conv.factorize_rows(X)), dense(X))


@pytest.mark.skipif(not _reference_has_the_conv_f(), reason="tests/reference.py has no conv f yet")
@pytest.mark.parametrize("cls", KINDS)
@pytest.mark.parametrize("bf, bg", BIASES)
@pytest.mark.parametrize("f_depth, filter_size", [(2, 3), (3, 5)])
def test_kernel_equals_the_literal_reference(cls, bf, bg, f_depth, filter_size):
    """The kernel against tests/reference.py's recursion on full position-pair maps (a few
    rows: zero, sparse, repeated and scaled images; 1e-10 NNGP, 1e-7 NTK)."""
    X = rows(8)
    Y = rows(6, seed=1)
    kernel = conv_kernel(
        cls, f_depth=f_depth, filter_size=filter_size, f_bias_variance=bf, g_bias_variance=bg
    )
    rtol = 1e-7 if cls is HyperKernel else 1e-10
    literal = _literal(X, X, kernel)
    assert relative_error(kernel(X), literal) < rtol
    assert relative_error(kernel(X, Y), _literal(X, Y, kernel)) < rtol
    assert_allclose(kernel.diag(X), np.diag(literal), rtol=rtol, atol=0)
