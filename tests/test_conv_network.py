"""The convolutional f: the literal reference, the torch network and its estimators.

* ``tests/reference.py``'s :func:`conv_pair` (../shared/docs/conv-f.md on full position-pair
  maps) is checked against the page's exact identities: ``f_depth=1`` is the dense f,
  ``filter_size=1`` is the pixel average of the dense kernel of the pixel vectors,
  ``Theta^f(x, x) = f_depth S_f(x, x)`` without bias, homogeneity, a zero image.
* The torch :class:`~sklearn_hyperkernel.network.Hypernetwork` with
  ``f_architecture="conv"`` is checked against a loop written here (padding, flatten order,
  multipliers, biases), against the dense network at ``f_depth=1``, and its
  :func:`~sklearn_hyperkernel.network.empirical_ntk` against ``torch.func.jacrev``.
* Wide finite conv hypernetworks converge to the reference: the empirical NTK (over f's
  weights and biases, NTK parameterisation) and the output covariance over seeds (the
  conditional estimator of ``tests/test_finite_width.py``) on 5 x 4 x 2 images, the error
  falling with width; the wrong models (a dense f on the flattened image, ``S_f`` in place
  of ``Theta^f``) are far away.
* The estimators take ``f_architecture``, ``image_shape``, ``filter_size`` (clone,
  ``set_params``, ``GridSearchCV``, pickling, bad input at ``fit``).

Budget: about 30 s on a busy two-core machine (torch on one thread), most of it the
512-channel networks of depth 3.
"""

from __future__ import annotations

import functools
import math
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from reference import conv_pair, hyper_grams, mlp_pair  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402

from sklearn_hyperkernel import (  # noqa: E402
    HypernetworkClassifier,
    HypernetworkRegressor,
    config_context,
)
from sklearn_hyperkernel.network import Hypernetwork, empirical_ntk  # noqa: E402

DTYPE = torch.float64
IMAGE = (5, 4, 2)
N_X = 40


def conv_network(seed: int = 0, **kwargs) -> Hypernetwork:
    arguments = {
        "x_dim": N_X,
        "z_dim": 2,
        "f_depth": 3,
        "f_width": 4,
        "g_width": 3,
        "f_architecture": "conv",
        "image_shape": IMAGE,
    }
    arguments.update(kwargs)
    return Hypernetwork(generator=torch.Generator().manual_seed(seed), **arguments)


def image_rows() -> tuple[np.ndarray, np.ndarray]:
    """Six rows of 5 x 4 x 2 images: four random, one sparse (4 non-zero values), one repeated."""
    generator = np.random.default_rng(20201207)
    x = generator.standard_normal((4, N_X))
    sparse = np.zeros(N_X)
    sparse[[0, 1, 17, 38]] = generator.standard_normal(4)
    x = np.concatenate([x, sparse[None], x[[1]]])
    z = generator.standard_normal((6, 2))
    return x, z


# ------------------------------------------------------------- the reference itself
@pytest.mark.parametrize("filter_size", [1, 3, 5])
@pytest.mark.parametrize("bias_variance", [0.0, 0.4])
def test_reference_depth_one_is_the_dense_f(filter_size, bias_variance):
    x, _ = image_rows()
    for a, b in ((x[0], x[1]), (x[4], x[2]), (x[3], x[3])):
        conv = conv_pair(a, b, IMAGE, filter_size, 1, 0.0, bias_variance=bias_variance)
        dense = mlp_pair(a, b, 1, 0.0, bias_variance=bias_variance)
        np.testing.assert_allclose(conv[0], dense[0], rtol=1e-14)
        assert conv[1] == pytest.approx(dense[1], rel=1e-14)


@pytest.mark.parametrize("depth", [2, 3])
@pytest.mark.parametrize("bias_variance, slope", [(0.0, 0.0), (0.3, 0.0), (0.3, 0.2)])
def test_reference_filter_one_is_the_pixel_average_of_the_dense_kernel(depth, bias_variance, slope):
    """k = 1: every position is a dense f of its pixel vector; the readout averages them."""
    x, _ = image_rows()
    for a, b in ((x[0], x[1]), (x[4], x[2]), (x[3], x[3])):
        S, theta = conv_pair(a, b, IMAGE, 1, depth, slope, bias_variance=bias_variance)
        pixels = [
            mlp_pair(
                a[2 * p : 2 * p + 2], b[2 * p : 2 * p + 2], depth, slope, "float64", bias_variance
            )
            for p in range(20)
        ]
        np.testing.assert_allclose(S, np.mean([pixel[0] for pixel in pixels], axis=0), rtol=1e-13)
        assert theta == pytest.approx(np.mean([pixel[1] for pixel in pixels]), rel=1e-13)


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("filter_size", [3, 5])
def test_reference_diagonal_identity_homogeneity_and_zero_image(depth, filter_size):
    """No bias: ``Theta^f(x, x) = f_depth S_f(x, x)``; ``c x`` scales both by c; 0 gives 0."""
    x, _ = image_rows()
    for image in (x[0], x[4]):
        S, theta = conv_pair(image, image, IMAGE, filter_size, depth, 0.0)
        assert theta == pytest.approx(depth * S[2], rel=1e-13)
        assert S[0] == S[1] == S[2]
    S, theta = conv_pair(x[0], x[2], IMAGE, filter_size, depth, 0.0)
    scaled = conv_pair(2.5 * x[0], x[2], IMAGE, filter_size, depth, 0.0)
    assert scaled[0][2] == pytest.approx(2.5 * S[2], rel=1e-13)
    assert scaled[1] == pytest.approx(2.5 * theta, rel=1e-13)
    zero = conv_pair(np.zeros(N_X), x[2], IMAGE, filter_size, depth, 0.0)
    assert (zero[0][0], zero[0][2], zero[1]) == (0.0, 0.0, 0.0)
    assert zero[0][1] == pytest.approx(S[1], rel=1e-15)


def neural_tangents_images() -> np.ndarray:
    """The 5 x 4 x 2 images of the neural-tangents values below (NHWC, seed 0)."""
    generator = np.random.default_rng(0)
    x = np.zeros((4, *IMAGE))
    x[0] = generator.standard_normal(IMAGE)
    x[1] = generator.standard_normal(IMAGE)
    x[3, 0, 0, :] = generator.standard_normal(2)  # sparse: its far positions have an
    x[3, 0, 1, 0] = 0.7  # all-zero receptive field at f_depth 3 (variance 0 there)
    return x.reshape(4, -1)


# neural-tangents 0.6.5 (jax 0.4.30, float64): stax.serial([Conv(8, (k, k), padding='SAME',
# W_std=1, b_std=sqrt(bf), parameterization='ntk'), ABRelu(0, sqrt(2))] * (f_depth - 1),
# Flatten(), Dense(1, W_std=1, b_std=sqrt(bf), parameterization='ntk')); kernel_fn's (nngp, ntk)
# of the pairs (0, 1), (0, 3), (1, 3) of neural_tangents_images(). Written by the issue's
# benchmark session (a scratch environment, not a dependency).
NEURAL_TANGENTS = {
    # (f_depth, filter_size, bf): [(nngp, ntk) of (0, 1), (0, 3), (1, 3)]
    (2, 3, 0.5): [
        (1.0776288855087155, 1.3183097463280518),
        (1.0405711823796762, 1.4300851925283802),
        (1.068124202036186, 1.4235036024953667),
    ],
    (3, 3, 0.0): [
        (0.2160873170295352, 0.2613615859868349),
        (0.022266316599502546, 0.03269372833817424),
        (0.026546373533937545, 0.03629632851656413),
    ],
    (3, 5, 0.5): [
        (1.330724598659339, 2.0546129755098352),
        (1.2889700358166472, 2.1458415751086832),
        (1.3097283887149673, 2.121099982599972),
    ],
}


@pytest.mark.parametrize("architecture", list(NEURAL_TANGENTS), ids=str)
def test_reference_equals_neural_tangents(architecture):
    """Distinct images, a sparse one with zero-variance positions among them: to 1e-14.

    (Over all 48 Grams of the benchmark session's file, 5 x 4 x 2 and 7 x 5 x 2 images,
    f_depth 1-3, k 3 and 5, bf 0 and 0.5, the reference agreed to 8.5e-16 between
    distinct images and 6e-9 on coincident ones, where neural-tangents' own rounding
    is that large.)"""
    f_depth, filter_size, bf = architecture
    x = neural_tangents_images()
    pairs = ((0, 1), (0, 3), (1, 3))
    for (i, j), (nngp, ntk) in zip(pairs, NEURAL_TANGENTS[architecture], strict=True):
        S, theta = conv_pair(x[i], x[j], IMAGE, filter_size, f_depth, 0.0, "float64", bf)
        assert S[2] == pytest.approx(nngp, rel=1e-14)
        assert theta == pytest.approx(ntk, rel=1e-14)


def test_reference_variance_is_not_the_input_norm_with_padding():
    """With zero padding the variance map loses energy at the border (conv-f.md):
    S_f(x, x) < |x|^2 / n0 for a constant image, equal with filter_size=1."""
    image = np.ones(N_X)
    S_one, _ = conv_pair(image, image, IMAGE, 1, 3, 0.0)
    S_three, _ = conv_pair(image, image, IMAGE, 3, 3, 0.0)
    assert S_one[2] == pytest.approx(1.0, rel=1e-14)
    assert S_three[2] < 0.9


def test_reference_precisions_agree():
    x, _ = image_rows()
    S, theta = conv_pair(x[0], x[4], IMAGE, 3, 3, 0.2, "float64", 0.1)
    S_ld, theta_ld = conv_pair(x[0], x[4], IMAGE, 3, 3, 0.2, "longdouble", 0.1)
    np.testing.assert_allclose(np.array(S_ld, dtype=float), S, rtol=1e-13)
    assert float(theta_ld) == pytest.approx(theta, rel=1e-13)


# ------------------------------------------------------------------- the torch model
def naive_f(model: Hypernetwork, x: np.ndarray) -> np.ndarray:
    """f of one row by loops: SAME-padded k x k windows, channels-last flatten, readout."""
    gain, ntk = math.sqrt(2.0), model.parameterization == "ntk"
    height, width, channels = model.image_shape
    k, half = model.filter_size, model.filter_size // 2
    image = x.reshape(height, width, channels)
    weights = [w.detach().numpy() for w in model.f_weights]
    biases = [b.detach().numpy() for b in model.f_biases]
    bias_scale = math.sqrt(model.f_bias_variance) if ntk else 1.0
    for layer, weight in enumerate(weights[:-1]):
        c_out, c_in = weight.shape[:2]
        scale = 1.0 / math.sqrt(k * k * c_in) if ntk else 1.0
        out = np.zeros((height, width, c_out))
        for i in range(height):
            for j in range(width):
                for a in range(k):
                    for b in range(k):
                        u, v = i + a - half, j + b - half
                        if 0 <= u < height and 0 <= v < width:
                            out[i, j] += weight[:, :, a, b] @ image[u, v]
        out = out * scale
        if biases:
            out = out + bias_scale * biases[layer]
        image = gain * np.maximum(out, 0.0)
    readout = weights[-1]
    y = readout @ image.reshape(-1) * (1.0 / math.sqrt(readout.shape[1]) if ntk else 1.0)
    return y + bias_scale * biases[-1] if biases else y


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("f_depth, filter_size, bias", [(2, 3, 0.0), (3, 3, 0.5), (3, 5, 0.2)])
def test_conv_f_equals_a_loop_over_windows(parameterization, f_depth, filter_size, bias):
    model = conv_network(
        3,
        f_depth=f_depth,
        filter_size=filter_size,
        f_bias_variance=bias,
        parameterization=parameterization,
    )
    x, _ = image_rows()
    flat = model.f_forward(torch.as_tensor(x)).detach().numpy()
    expected = np.stack([naive_f(model, row) for row in x])
    np.testing.assert_allclose(flat, expected, rtol=1e-12, atol=1e-12)
    assert [tuple(w.shape) for w in model.f_weights][:-1] == [
        (4, 2, filter_size, filter_size),
        *[(4, 4, filter_size, filter_size)] * (f_depth - 2),
    ]
    assert model.f_layer_sizes == (N_X, *[20 * 4] * (f_depth - 1), model.n_generated)


@pytest.mark.parametrize("bias", [0.0, 0.3])
def test_conv_depth_one_is_the_dense_network_of_the_same_seed(bias):
    x, z = (torch.as_tensor(a) for a in image_rows())
    conv = conv_network(7, f_depth=1, f_bias_variance=bias, g_bias_variance=bias)
    dense = Hypernetwork(
        N_X, 2, f_depth=1, f_width=4, g_width=3, f_bias_variance=bias, g_bias_variance=bias,
        generator=torch.Generator().manual_seed(7),
    )  # fmt: skip
    assert torch.equal(conv(x, z), dense(x, z))
    assert torch.equal(empirical_ntk(conv, x, z), empirical_ntk(dense, x, z))


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("f_depth, filter_size, biases", [(3, 3, (0.0, 0.0)), (3, 5, (0.5, 0.3))])
def test_conv_empirical_ntk_equals_jacobian_gram(parameterization, f_depth, filter_size, biases):
    model = conv_network(
        1,
        f_depth=f_depth,
        filter_size=filter_size,
        n_outputs=2,
        parameterization=parameterization,
        f_bias_variance=biases[0],
        g_bias_variance=biases[1],
    )
    x, z = (torch.as_tensor(a) for a in image_rows())
    parameters = dict(model.named_parameters())
    jacobian = torch.func.jacrev(lambda p: torch.func.functional_call(model, p, (x, z)))(parameters)
    expected = []
    for output in range(2):
        rows = torch.cat([jacobian[name][:, output].reshape(len(x), -1) for name in parameters], 1)
        expected.append(rows @ rows.T)
    expected = torch.stack(expected)
    kernel = empirical_ntk(model, x, z, reduce="none")
    torch.testing.assert_close(kernel, expected, rtol=1e-12, atol=1e-12)
    # cross blocks, and chunks of a few rows and one output at a time, give the same numbers
    with config_context(ntk_chunk_elements=500):
        cross = empirical_ntk(model, x[:4], z[:4], x[2:], z[2:], reduce="none")
        chunked = empirical_ntk(model, x, z, reduce="none")
    torch.testing.assert_close(cross, expected[:, :4, 2:], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chunked, expected, rtol=1e-12, atol=1e-12)


def test_conv_deduplicated_rows_and_pickle():
    model = conv_network(2, f_bias_variance=0.2, g_bias_variance=0.1)
    x, z = (torch.as_tensor(a) for a in image_rows())
    plain = model(x, z)
    torch.testing.assert_close(model(x, z, deduplicate_x=True), plain, rtol=1e-14, atol=1e-14)
    loaded = pickle.loads(pickle.dumps(model))
    assert (loaded.f_architecture, loaded.image_shape, loaded.filter_size) == ("conv", IMAGE, 3)
    assert torch.equal(loaded(x, z), plain)
    assert "f_architecture='conv', image_shape=(5, 4, 2), filter_size=3" in repr(model)


def test_a_network_pickled_before_the_conv_f_is_dense():
    model = Hypernetwork(3, 2, f_width=5, g_width=3, generator=torch.Generator().manual_seed(0))
    state = model.__getstate__()
    for name in ("f_architecture", "image_shape", "filter_size", "_sklearn_hyperkernel_version"):
        state.pop(name)
    old = Hypernetwork.__new__(Hypernetwork)
    with pytest.warns(UserWarning, match="0.1.0"):
        old.__setstate__(state)
    assert (old.f_architecture, old.image_shape, old.filter_size) == ("dense", None, 3)
    x, z = torch.randn(4, 3, dtype=DTYPE), torch.randn(4, 2, dtype=DTYPE)
    assert torch.equal(old(x, z), model(x, z))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image_shape": None}, "image_shape"),
        ({"image_shape": (5, 4)}, r"image_shape=\(5, 4\) holds 20 values.*40"),
        ({"image_shape": (5, 4, 2, 1)}, "image_shape must be 2 or 3"),
        ({"filter_size": 4}, r"filter_size must be a positive odd integer.*got 4"),
        ({"filter_size": 0}, "filter_size"),
        ({"f_architecture": "pool"}, "f_architecture"),
    ],
)
def test_bad_conv_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        conv_network(**kwargs)


# ------------------------------------------------------------------- finite width
@functools.cache
def _one_network(f_depth, filter_size, bf, bg, f_width, g_width, seed):
    """Empirical NTK and conditional output covariance of one conv hypernetwork."""
    x, z = (torch.as_tensor(a) for a in image_rows())
    model = conv_network(
        seed,
        f_depth=f_depth,
        filter_size=filter_size,
        f_width=f_width,
        g_width=g_width,
        f_bias_variance=bf,
        g_bias_variance=bg,
    )
    ntk = empirical_ntk(model, x, z).numpy()
    with torch.no_grad():
        flat, f_inputs, _ = model.f_forward(x, return_hidden=True)
        _, g_inputs = model.g_forward(model.split_generated(flat), z, return_hidden=True)
    # exact expectation over the readout's weights and biases given the rest
    # (tests/test_finite_width.py, "nngp_conditional")
    q, a = f_inputs[-1], g_inputs[-1]
    nngp = ((q @ q.T / q.shape[1] + bf) * (a @ a.T / a.shape[1] + bg)).numpy()
    return ntk, nngp


def seed_average(case, widths, n_seeds):
    kernels = [_one_network(*case, *widths, seed) for seed in range(n_seeds)]
    return tuple(np.mean([k[i] for k in kernels], axis=0) for i in range(2))


@functools.cache
def reference_kernels(case, f_architecture="conv"):
    f_depth, filter_size, bf, bg = case
    x, z = image_rows()
    return hyper_grams(
        x,
        z,
        f_depth=f_depth,
        g_depth=2,
        f_bias_variance=bf,
        g_bias_variance=bg,
        f_architecture=f_architecture,
        image_shape=IMAGE,
        filter_size=filter_size,
    )


def nngp_over_ntk_of_f(case) -> np.ndarray:
    """``S_f / Theta^f`` of each pair of images: ``HyperKernel`` times it is ``S_f K^g``."""
    f_depth, filter_size, bf, _ = case
    x, _ = image_rows()
    pairs = [
        [conv_pair(a, b, IMAGE, filter_size, f_depth, 0.0, "float64", bf) for b in x] for a in x
    ]
    return np.array([[pair[0][2] / pair[1] for pair in row] for row in pairs])


def relative_error(estimate, limit) -> float:
    return float(np.linalg.norm(estimate - limit) / np.linalg.norm(limit))


# (f_depth, filter_size, f_bias_variance, g_bias_variance); g_depth 2, linear z
CASES = [(2, 3, 0.0, 0.0), (3, 3, 0.0, 0.0), (3, 3, 0.1, 0.5), (2, 5, 1.0, 0.1)]
# (channels, g width): narrow and wide
NARROW, WIDE = (16, 4), (512, 128)
N_SEEDS = 8
# Relative Frobenius errors measured on four sets of 8 seeds (seeds 0-7, 1000-1007, ...):
# wide 2-8 % (NTK) and 3-13 % (output covariance), narrow 12-76 %; wide / narrow <= 0.45.
# The issue's bar, 3 seeds at the wide widths, on six sets of seeds: 2-16 % and 4-14 %.
WIDE_TOLERANCE = 0.16
ISSUE_TOLERANCE = 0.30


@pytest.mark.parametrize("case", CASES, ids=str)
def test_wide_conv_hypernetworks_converge_to_the_reference(case):
    nngp, ntk = reference_kernels(case)
    for index, limit in ((0, ntk), (1, nngp)):
        narrow = relative_error(seed_average(case, NARROW, N_SEEDS)[index], limit)
        wide = relative_error(seed_average(case, WIDE, N_SEEDS)[index], limit)
        assert wide < 0.5 * narrow, (index, narrow, wide)
        assert wide <= WIDE_TOLERANCE, (index, narrow, wide)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_issues_bar_three_seeds_at_512_channels(case):
    """The empirical NTK averaged over 3 seeds, 512 channels, g width 128: within 30 %."""
    nngp, ntk = reference_kernels(case)
    empirical_ntk_mean, empirical_nngp = seed_average(case, WIDE, 3)
    assert relative_error(empirical_ntk_mean, ntk) <= ISSUE_TOLERANCE
    assert relative_error(empirical_nngp, nngp) <= ISSUE_TOLERANCE


@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_wrong_models_are_far_from_the_wide_networks(case):
    """A dense f on the flattened image, and S_f in place of Theta^f, miss by far more
    than the Monte Carlo error (measured with these seeds, :func:`conv_width_table`: dense f
    33-71 %, S_f for Theta^f 60-211 %, against 3-7 % for the right kernel)."""
    nngp, ntk = reference_kernels(case)
    dense_nngp, dense_ntk = reference_kernels(case, "dense")
    empirical_ntk_mean, empirical_nngp = seed_average(case, WIDE, N_SEEDS)
    f_ratio = nngp_over_ntk_of_f(case)
    right = relative_error(empirical_ntk_mean, ntk)
    for wrong in (dense_ntk, ntk * f_ratio):
        assert relative_error(empirical_ntk_mean, wrong) > max(0.25, 3 * right)
    right = relative_error(empirical_nngp, nngp)
    assert relative_error(empirical_nngp, dense_nngp) > max(0.25, 3 * right)


# ------------------------------------------------------------------- the estimators
def pixel_rows(n_images: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows [image (4 x 3, flattened) | pixel coordinate], target the pixel's value."""
    generator = np.random.default_rng(seed)
    images = generator.random((n_images, 4, 3))
    coordinates = np.stack(np.meshgrid(np.linspace(-1, 1, 4), np.linspace(-1, 1, 3)), -1)
    coordinates = coordinates.transpose(1, 0, 2).reshape(-1, 2)
    X = np.array([[*image.ravel(), *c] for image in images for c in coordinates])
    y = np.array([value for image in images for value in image.ravel()])
    return X, y


CONV = {"f_architecture": "conv", "image_shape": (4, 3), "filter_size": 3}


@pytest.mark.parametrize("Estimator", [HypernetworkRegressor, HypernetworkClassifier])
def test_estimators_take_the_conv_parameters(Estimator):
    model = Estimator(f_width=8, g_width=4, max_epochs=2, random_state=0, device="cpu", **CONV)
    params = model.get_params()
    assert {name: params[name] for name in CONV} == CONV
    copy = clone(model)
    assert copy.get_params() == params
    copy.set_params(filter_size=5, image_shape=(2, 6))
    assert (copy.filter_size, copy.image_shape, model.filter_size) == (5, (2, 6), 3)
    X, y = pixel_rows()
    target = y if Estimator is HypernetworkRegressor else y > 0.5
    model.fit(X, target)
    assert model.module_.f_architecture == "conv"
    assert [tuple(w.shape) for w in model.module_.f_weights][:2] == [(8, 1, 3, 3), (8, 8, 3, 3)]
    loaded = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    # the estimator's kernel is the module's, on the rows the estimator feeds it
    kernel = model.empirical_ntk(X[:5], X[3:9])
    x, z = model._x_and_z(X[:5])
    x2, z2 = model._x_and_z(X[3:9])
    np.testing.assert_allclose(kernel, empirical_ntk(model.module_, x, z, x2, z2), rtol=1e-13)
    # a warm start cannot change the architecture
    with pytest.raises(ValueError, match=r"filter_size=5 \(fitted with 3\)"):
        model.set_params(warm_start=True, filter_size=5).fit(X, target)


def test_conv_estimator_at_initialisation_is_the_module_of_its_seed():
    X, _ = pixel_rows()
    model = HypernetworkRegressor(
        f_width=6, g_width=4, parameterization="ntk", z_encoding="linear", random_state=3,
        device="cpu", normalize_x=False, **CONV,
    ).initialize(X)  # fmt: skip
    dense = HypernetworkRegressor(
        f_width=6, g_width=4, parameterization="ntk", z_encoding="linear", random_state=3,
        device="cpu", normalize_x=False, f_depth=1,
    ).initialize(X)  # fmt: skip
    conv_depth_one = clone(dense).set_params(**CONV).initialize(X)
    np.testing.assert_array_equal(conv_depth_one.predict(X), dense.predict(X))
    assert not np.allclose(model.predict(X), dense.predict(X))


def test_conv_predictions_run_f_on_few_images_at_a_time():
    """A conv f's feature maps (H W f_width values per image) bound how many distinct images
    ``predict`` sends through f at once; the numbers do not change."""
    X, y = pixel_rows()
    X = X[np.random.default_rng(1).permutation(len(X))]  # blocks hold several images
    model = HypernetworkRegressor(
        f_width=64, g_width=4, max_epochs=1, random_state=0, device="cpu", **CONV
    ).initialize(X, y)
    x, z = model._x_and_z(X)
    with torch.no_grad():
        expected = model.module_(x, z).numpy()[:, 0] * model._y_scale[0] + model._y_mean[0]
    # rows per block: 6400 // (260 generated * 8 bytes) = 3; images per f call:
    # 6400 // (4 * 3 pixels * 64 channels * 8 bytes) = 1
    with config_context(predict_block_bytes=6400):
        np.testing.assert_allclose(model.predict(X), expected, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(model.predict(X), expected, rtol=1e-13, atol=1e-13)


def test_grid_search_over_the_architecture_and_filter_size():
    X, y = pixel_rows(8)
    search = GridSearchCV(
        HypernetworkRegressor(
            f_width=8, g_width=4, max_epochs=3, random_state=0, device="cpu", image_shape=(4, 3)
        ),
        {"f_architecture": ["dense", "conv"], "filter_size": [1, 3]},
        cv=2,
        error_score="raise",
    ).fit(X, y)
    assert len(search.cv_results_["params"]) == 4
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    assert search.best_estimator_.module_.f_architecture == search.best_params_["f_architecture"]


@pytest.mark.parametrize("Estimator", [HypernetworkRegressor, HypernetworkClassifier])
def test_an_estimator_pickled_before_the_conv_f_gets_the_dense_f(Estimator):
    """A state without the three parameters: of 0.1.0, upgraded to the dense f; of this
    version, refused naming them."""
    state = Estimator(f_width=8).__getstate__()
    for name in CONV:
        del state[name]
    recorded = dict(state)
    del state["_sklearn_hyperkernel_version"]
    old = Estimator.__new__(Estimator)
    with pytest.warns(UserWarning, match="0.1.0"):
        old.__setstate__(state)
    assert old.get_params() == Estimator(f_width=8).get_params()
    with pytest.raises(pickle.UnpicklingError, match="f_architecture, filter_size, image_shape"):
        Estimator.__new__(Estimator).__setstate__(recorded)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"f_architecture": "conv"}, "needs image_shape"),
        ({"f_architecture": "conv", "image_shape": (4, 4)}, "holds 16 values.*12 column"),
        ({"f_architecture": "conv", "image_shape": (4, 3), "filter_size": 2}, "filter_size"),
        ({"f_architecture": "pool"}, "f_architecture"),
        ({"filter_size": 0}, "filter_size"),
    ],
)
def test_bad_conv_parameters_raise_at_fit(params, match):
    X, y = pixel_rows(2)
    model = HypernetworkRegressor(f_width=4, g_width=2, max_epochs=1, device="cpu", **params)
    with pytest.raises(ValueError, match=match):
        model.fit(X, y)
    assert not hasattr(model, "module_")


# ------------------------------------------------------------- the issue's figures
def conv_width_table() -> str:
    """Relative Frobenius errors of the wide conv networks against the reference, per width.

    Empirical NTK | conditional output covariance, 8 seeds at (channels, g width) (16, 4),
    (64, 16), (512, 128), then 3 seeds at (512, 128) (the issue's bar), then the wrong
    models at (512, 128), 8 seeds (NTK against a dense f on the flattened image and against
    ``S_f K^g``). Print it from the repository root with
    ``PYTHONPATH=. python tests/test_conv_network.py``.
    """
    lines = [
        "case (L, k, bf, bg)   8 seeds at 16 / 64 / 512 ch: NTK | cov;  3 seeds 512: NTK | cov;"
        "  wrong: dense f | S_f for Theta^f"
    ]
    for case in CASES:
        nngp, ntk = reference_kernels(case)
        dense_nngp, dense_ntk = reference_kernels(case, "dense")
        widths = [(16, 4), (64, 16), WIDE]
        ntk_errors, cov_errors = [], []
        for width in widths:
            empirical = seed_average(case, width, N_SEEDS)
            ntk_errors.append(f"{relative_error(empirical[0], ntk):.3f}")
            cov_errors.append(f"{relative_error(empirical[1], nngp):.3f}")
        three = seed_average(case, WIDE, 3)
        wide = seed_average(case, WIDE, N_SEEDS)
        f_ratio = nngp_over_ntk_of_f(case)
        lines.append(
            f"{case}: "
            + " / ".join(ntk_errors)
            + " | "
            + " / ".join(cov_errors)
            + f";  {relative_error(three[0], ntk):.3f} | {relative_error(three[1], nngp):.3f};  "
            + f"{relative_error(wide[0], dense_ntk):.3f} | "
            + f"{relative_error(wide[0], ntk * f_ratio):.3f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(conv_width_table())


def test_a_network_too_large_for_the_memory_is_refused_before_training(monkeypatch):
    """Training keeps 4 copies of the parameters (Adam): beyond half the memory, a clear error
    naming the sizes instead of a fit killed for memory (the default f_width=256 on 28 x 28
    images is 418 million parameters)."""
    import sklearn_hyperkernel._network_estimator as base
    from sklearn_hyperkernel import HypernetworkRegressor

    rng = np.random.default_rng(0)
    X = np.hstack([rng.random((12, 20)), rng.random((12, 2))])
    y = rng.random(12)
    params = dict(f_architecture="conv", image_shape=(5, 4), f_width=8, max_epochs=1)
    model = HypernetworkRegressor(**params, random_state=0).fit(X, y)
    n_parameters = sum(int(p.numel()) for p in model.module_.parameters())
    # conv 8 * 1 * 9 weights; readout 5 * 4 * 8 = 160 inputs times g's 2080 weights
    assert n_parameters == 8 * 9 + 8 * 8 * 9 + 160 * model.module_.n_generated
    needed = 4 * 8 * n_parameters
    monkeypatch.setattr(base, "_physical_memory", lambda: 2 * needed - 2)
    fresh = HypernetworkRegressor(**params, random_state=0)
    with pytest.raises(ValueError, match=r"f_width=8.*") as error:
        fresh.fit(X, y)
    assert f"{n_parameters:,} parameters" in str(error.value)
    assert "5 * 4 * 8" in str(error.value)
    assert not hasattr(fresh, "module_") and not hasattr(fresh, "device_")
    monkeypatch.setattr(base, "_physical_memory", lambda: 2 * needed)  # exactly half: fits
    HypernetworkRegressor(**params, random_state=0).fit(X, y)
    # SGD keeps one moment fewer
    monkeypatch.setattr(base, "_physical_memory", lambda: 2 * needed - 2)
    HypernetworkRegressor(**params, optimizer="sgd", random_state=0).fit(X, y)
