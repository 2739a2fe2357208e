"""Tests of the scikit-learn kernels :class:`HyperKernel` and :class:`HyperNNGP`.

Three groups of checks:

* the generic contract of a ``sklearn.gaussian_process.kernels.Kernel`` (gradient, theta,
  bounds, hyperparameters, clone, params, equality, repr, auto/cross, diag, pairwise use,
  pickling), for both kernels alone and inside sums and products with sklearn kernels;
* the mathematics: symmetry, positive semi-definiteness, homogeneity and the exact identities
  of ``docs/hyperkernel-math.md``, values against an independent extended-precision
  evaluation of the recursions written in this file, numerics at correlations of +-1;
* engineering: block sizes and threads, rows sharing one x, input validation, use inside
  ``GaussianProcessRegressor``.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from conftest import (
    PAPER_KERNEL,
    distinct_rows,
    no_floating_point_warnings,
    relative_error,
    shared_image_rows,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.testing import assert_allclose, assert_array_equal
from reference import hyper_grams
from sklearn.base import clone
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import (
    RBF,
    ConstantKernel,
    Kernel,
    WhiteKernel,
)
from sklearn.metrics.pairwise import pairwise_kernels

from sklearn_hyperkernel import HyperKernel, HyperNNGP, recursions
from sklearn_hyperkernel.recursions import mlp_kernels

KERNEL_CLASSES = [HyperKernel, HyperNNGP]
N_X_COLUMNS = 4

# Architectures covering both encodings, iso- and anisotropic length scales, relu and
# leaky relu, the bilinear depth (1, 1) and deeper networks, z_dim 1, 2 and 3.
CONFIGS = {
    "lin-z1-L1H1": dict(z_dim=1, f_depth=1, g_depth=1, z_encoding="linear"),
    "lin-z2-L3H2": dict(z_dim=2, f_depth=3, g_depth=2, z_encoding="linear"),
    "lin-z3-L2H3-leaky": dict(
        z_dim=3,
        f_depth=2,
        g_depth=3,
        z_encoding="linear",
        activation="leaky_relu",
        negative_slope=0.1,
    ),
    "four-z2-L2H2-iso": dict(z_dim=2, f_depth=2, g_depth=2, z_encoding="fourier", length_scale=0.7),
    "four-z3-L3H2-aniso": dict(
        z_dim=3, f_depth=3, g_depth=2, z_encoding="fourier", length_scale=[0.5, 1.0, 2.0]
    ),
    "four-z1-L4H3-leaky": dict(
        z_dim=1,
        f_depth=4,
        g_depth=3,
        z_encoding="fourier",
        length_scale=1.3,
        activation="leaky_relu",
        negative_slope=0.2,
    ),
    "four-z2-L1H1-aniso": dict(
        z_dim=2, f_depth=1, g_depth=1, z_encoding="fourier", length_scale=[0.8, 1.5]
    ),
}

SINGLE_CASES = [
    pytest.param(cls, name, id=f"{cls.__name__}-{name}")
    for cls in KERNEL_CLASSES
    for name in CONFIGS
]


def make_single(cls: type, name: str) -> Kernel:
    # the paper's kernels: their hyperparameters are the length scale alone
    return cls(**PAPER_KERNEL, **CONFIGS[name])


# Compound kernels: (builder, z_dim, contains a WhiteKernel)
COMPOUNDS = {
    "C*NNGP(four-aniso)+White": (
        lambda: ConstantKernel(1.5) * HyperNNGP(**CONFIGS["four-z3-L3H2-aniso"]) + WhiteKernel(0.1),
        3,
        True,
    ),
    "C*Hyper(four-iso)+White": (
        lambda: ConstantKernel(0.7) * HyperKernel(**CONFIGS["four-z2-L2H2-iso"]) + WhiteKernel(0.2),
        2,
        True,
    ),
    "C*NNGP(lin)+White": (
        lambda: ConstantKernel() * HyperNNGP(**CONFIGS["lin-z2-L3H2"]) + WhiteKernel(),
        2,
        True,
    ),
    "Hyper(lin-leaky)*RBF": (
        lambda: HyperKernel(**CONFIGS["lin-z3-L2H3-leaky"]) * RBF(1.3),
        3,
        False,
    ),
    "Hyper(four)+NNGP(four)": (
        lambda: (
            HyperKernel(**CONFIGS["four-z1-L4H3-leaky"])
            + HyperNNGP(z_dim=1, f_depth=2, g_depth=2, z_encoding="fourier", length_scale=0.4)
        ),
        1,
        False,
    ),
}

ALL_CASES = [
    pytest.param(
        lambda cls=cls, name=name: make_single(cls, name),
        CONFIGS[name]["z_dim"],
        False,
        id=f"{cls.__name__}-{name}",
    )
    for cls in KERNEL_CLASSES
    for name in CONFIGS
] + [
    pytest.param(builder, z_dim, has_white, id=name)
    for name, (builder, z_dim, has_white) in COMPOUNDS.items()
]


def make_rows(seed: int, n: int, z_dim: int, n_x: int = N_X_COLUMNS) -> np.ndarray:
    """Random rows [x | z]."""
    return np.random.default_rng(seed).normal(size=(n, n_x + z_dim))


def split(U: np.ndarray, z_dim: int) -> tuple[np.ndarray, np.ndarray]:
    return U[:, : U.shape[1] - z_dim], U[:, U.shape[1] - z_dim :]


def slope_of(config: dict) -> float:
    if config.get("activation", "relu") == "leaky_relu":
        return config.get("negative_slope", 0.01)
    return 0.0


def max_abs(K: np.ndarray) -> float:
    return float(np.max(np.abs(K))) if K.size else 0.0


# ---------------------------------------------------------------------------
# Independent reference: the math page's recursions, pair by pair, in extended precision
# (tests/reference.py)
# ---------------------------------------------------------------------------


def reference_gram(
    cls: type, config: dict, X: np.ndarray, Y: np.ndarray | None = None
) -> np.ndarray:
    Y = X if Y is None else Y
    z_dim = config["z_dim"]
    (x_a, z_a), (x_b, z_b) = split(X, z_dim), split(Y, z_dim)
    grams = hyper_grams(
        x_a,
        z_a,
        x_b,
        z_b,
        precision="longdouble",
        f_depth=config["f_depth"],
        g_depth=config["g_depth"],
        z_encoding=config.get("z_encoding", "linear"),
        length_scale=config.get("length_scale", 1.0),
        negative_slope=slope_of(config),
    )
    return grams[1] if cls is HyperKernel else grams[0]


def test_reference_matches_the_pure_functions():
    """Sanity check of the reference in long double (test_recursions checks it in float64)."""
    config = CONFIGS["four-z3-L3H2-aniso"]
    X = make_rows(0, 4, 3)
    x, z = split(X, 3)
    nngp, ntk = recursions.hyper_kernels(
        x, z, f_depth=3, g_depth=2, z_encoding="fourier", length_scale=[0.5, 1.0, 2.0]
    )
    assert_allclose(nngp, reference_gram(HyperNNGP, config, X), rtol=1e-10)
    assert_allclose(ntk, reference_gram(HyperKernel, config, X), rtol=1e-6)


# ---------------------------------------------------------------------------
# Generic kernel contract, single and compound kernels
# ---------------------------------------------------------------------------


def finite_difference_gradient(kernel: Kernel, X: np.ndarray, step: float = 1e-6) -> np.ndarray:
    theta = kernel.theta.copy()
    columns = []
    for i in range(theta.shape[0]):
        up, down = theta.copy(), theta.copy()
        up[i] += step
        down[i] -= step
        difference = kernel.clone_with_theta(up)(X) - kernel.clone_with_theta(down)(X)
        columns.append(difference / (2 * step))
    return np.stack(columns, axis=-1) if columns else np.empty(X.shape[:1] * 2 + (0,))


@pytest.mark.parametrize("build,z_dim,has_white", ALL_CASES)
def test_gradient_matches_finite_differences(build, z_dim, has_white):
    kernel = build()
    X = make_rows(1, 6, z_dim)
    K, K_gradient = kernel(X, eval_gradient=True)
    assert K_gradient.shape == (6, 6, kernel.theta.shape[0])
    assert_allclose(K, kernel(X), rtol=1e-13, atol=1e-15 * max_abs(K))
    expected = finite_difference_gradient(kernel, X)
    assert_allclose(K_gradient, expected, rtol=1e-5, atol=1e-7 * max(max_abs(expected), max_abs(K)))


@pytest.mark.parametrize("build,z_dim,has_white", ALL_CASES)
def test_theta_round_trip(build, z_dim, has_white):
    kernel = build()
    X = make_rows(2, 5, z_dim)
    K = kernel(X)
    theta = kernel.theta.copy()
    kernel.theta = kernel.theta
    assert_array_equal(kernel.theta, theta)
    assert_allclose(kernel(X), K, rtol=1e-12)
    same = kernel.clone_with_theta(theta)
    assert same == kernel
    assert_allclose(same(X), K, rtol=1e-12)
    if theta.size:
        moved = kernel.clone_with_theta(theta + np.log(2.0))
        assert_allclose(moved.theta, theta + np.log(2.0), rtol=1e-12)
        assert_array_equal(kernel.theta, theta)  # the original is untouched


@pytest.mark.parametrize("build,z_dim,has_white", ALL_CASES)
def test_bounds_shape(build, z_dim, has_white):
    kernel = build()
    if kernel.theta.shape[0] == 0:
        assert kernel.bounds.size == 0  # sklearn's Kernel.bounds gives np.array([]) then
        return
    assert kernel.bounds.shape == (kernel.theta.shape[0], 2)
    assert np.all(kernel.bounds[:, 0] < kernel.bounds[:, 1])


@pytest.mark.parametrize("build,z_dim,has_white", ALL_CASES)
def test_clone_equality_and_params(build, z_dim, has_white):
    kernel = build()
    cloned = clone(kernel)
    assert cloned == kernel and cloned is not kernel
    assert cloned.get_params().keys() == kernel.get_params().keys()
    assert_array_equal(cloned.theta, kernel.theta)
    X = make_rows(3, 5, z_dim)
    assert_array_equal(cloned(X), kernel(X))


@pytest.mark.parametrize("build,z_dim,has_white", ALL_CASES)
def test_pickle_round_trip(build, z_dim, has_white):
    kernel = build()
    restored = pickle.loads(pickle.dumps(kernel))
    assert restored == kernel
    X = make_rows(4, 5, z_dim)
    assert_array_equal(restored(X), kernel(X))


@pytest.mark.parametrize("build,z_dim,has_white", ALL_CASES)
def test_auto_versus_cross(build, z_dim, has_white):
    kernel = build()
    X = make_rows(5, 7, z_dim)
    K_auto, K_cross = kernel(X), kernel(X, X)
    if has_white:  # WhiteKernel adds its noise to k(X) only
        noise = [p for n, p in kernel.get_params().items() if n.endswith("noise_level")][0]
        K_cross = K_cross + noise * np.eye(7)
    assert_allclose(K_auto, K_cross, rtol=1e-6, atol=1e-12 * max_abs(K_auto))


@pytest.mark.parametrize("build,z_dim,has_white", ALL_CASES)
def test_diag_equals_diagonal_of_gram(build, z_dim, has_white):
    kernel = build()
    X = make_rows(6, 8, z_dim)
    d = kernel.diag(X)
    assert d.shape == (8,) and d.dtype == np.float64
    assert_allclose(d, np.diag(kernel(X)), rtol=1e-6, atol=1e-14 * max_abs(d))


@pytest.mark.parametrize("build,z_dim,has_white", ALL_CASES)
def test_pairwise_kernels_agree(build, z_dim, has_white):
    kernel = build()
    X, Y = make_rows(7, 6, z_dim), make_rows(8, 4, z_dim)
    K = kernel(X, Y)
    assert K.shape == (6, 4) and K.dtype == np.float64
    assert_allclose(pairwise_kernels(X, Y, metric=kernel), K, rtol=1e-12)
    if not has_white:
        assert_allclose(pairwise_kernels(X, metric=kernel), kernel(X), rtol=1e-6)


@pytest.mark.parametrize("build,z_dim,has_white", ALL_CASES)
def test_vector_input_and_not_stationary(build, z_dim, has_white):
    kernel = build()
    assert kernel.requires_vector_input is True
    assert kernel.is_stationary() is False


@pytest.mark.parametrize("build,z_dim,has_white", ALL_CASES)
def test_gram_is_symmetric_positive_semidefinite(build, z_dim, has_white):
    kernel = build()
    X = make_rows(9, 12, z_dim)
    K = kernel(X)
    assert_allclose(K, K.T, rtol=1e-12, atol=1e-15 * max_abs(K))
    eigenvalues = np.linalg.eigvalsh(K)
    assert eigenvalues.min() >= -1e-10 * eigenvalues.max()


@pytest.mark.parametrize("build,z_dim,has_white", ALL_CASES)
def test_gradient_rejected_with_second_argument(build, z_dim, has_white):
    kernel = build()
    X = make_rows(10, 3, z_dim)
    with pytest.raises(ValueError, match="[Gg]radient"):
        kernel(X, X, eval_gradient=True)


def test_compound_kernel_exposes_the_hyper_length_scale():
    kernel = ConstantKernel(2.0) * HyperNNGP(
        **PAPER_KERNEL, **CONFIGS["four-z2-L2H2-iso"]
    ) + WhiteKernel(0.1)
    names = [h.name for h in kernel.hyperparameters if not h.fixed]
    assert names == ["k1__k1__constant_value", "k1__k2__length_scale", "k2__noise_level"]
    fixed = [h.name for h in kernel.hyperparameters if h.fixed]  # bias variances of 0
    assert fixed == ["k1__k2__f_bias_variance", "k1__k2__g_bias_variance"]
    assert_allclose(kernel.theta, np.log([2.0, 0.7, 0.1]))
    kernel.set_params(k1__k2__length_scale=0.3)
    assert_allclose(kernel.theta[1], np.log(0.3))
    X = make_rows(11, 5, 2)
    inner = HyperNNGP(**PAPER_KERNEL, **{**CONFIGS["four-z2-L2H2-iso"], "length_scale": 0.3})
    expected = 2.0 * inner(X) + 0.1 * np.eye(5)
    assert_allclose(kernel(X), expected, rtol=1e-12)


# ---------------------------------------------------------------------------
# Single-kernel contract: hyperparameters, params, equality, repr
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls,name", SINGLE_CASES)
def test_hyperparameters_and_theta(cls, name):
    config = CONFIGS[name]
    kernel = make_single(cls, name)
    free = [h for h in kernel.hyperparameters if not h.fixed]
    if config.get("z_encoding", "linear") == "linear":
        assert free == []
        assert kernel.theta.shape == (0,)
        assert kernel.bounds.size == 0
        return
    assert [h.name for h in free] == ["length_scale"]
    length_scale = np.atleast_1d(config["length_scale"])
    assert kernel.theta.shape == (length_scale.size,)
    assert free[0].n_elements == length_scale.size
    if np.iterable(config["length_scale"]):
        assert kernel.theta.shape == (config["z_dim"],)
    assert_allclose(kernel.theta, np.log(length_scale), rtol=1e-14)
    assert_allclose(np.exp(kernel.bounds), np.tile([1e-5, 1e5], (length_scale.size, 1)), rtol=1e-12)
    # setting theta sets length_scale and back
    kernel.theta = np.log(np.full(length_scale.size, 0.25))
    assert_allclose(kernel.length_scale, 0.25, rtol=1e-12)
    new_length_scale = np.full(length_scale.size, 3.0) if length_scale.size > 1 else 3.0
    kernel.set_params(length_scale=new_length_scale)
    assert_allclose(kernel.theta, np.log(3.0), rtol=1e-12)


@pytest.mark.parametrize("cls", KERNEL_CLASSES)
def test_fixed_length_scale_bounds_empties_theta(cls):
    kernel = cls(
        **PAPER_KERNEL,
        z_dim=2,
        z_encoding="fourier",
        length_scale=[0.5, 2.0],
        length_scale_bounds="fixed",
    )
    assert kernel.theta.shape == (0,)
    X = make_rows(12, 4, 2)
    K, K_gradient = kernel(X, eval_gradient=True)
    assert K_gradient.shape == (4, 4, 0)


@pytest.mark.parametrize("cls,name", SINGLE_CASES)
def test_get_params_set_params_round_trip(cls, name):
    kernel = make_single(cls, name)
    params = kernel.get_params()
    expected_names = {
        "z_dim",
        "f_depth",
        "g_depth",
        "z_encoding",
        "length_scale",
        "length_scale_bounds",
        "activation",
        "negative_slope",
        "f_bias_variance",
        "g_bias_variance",
        "f_bias_variance_bounds",
        "g_bias_variance_bounds",
        "normalize_x",
        "f_architecture",
        "image_shape",
        "filter_size",
        "block_size",
        "n_jobs",
        "device",
        "dtype",
        "verbose",
    }
    assert set(params) == expected_names
    for key, value in CONFIGS[name].items():
        assert np.all(params[key] == value)
    other = cls().set_params(**params)
    assert other == kernel
    X = make_rows(13, 5, CONFIGS[name]["z_dim"])
    assert_array_equal(other(X), kernel(X))


@pytest.mark.parametrize("cls,name", SINGLE_CASES)
def test_clone_after_set_params(cls, name):
    config = CONFIGS[name]
    kernel = make_single(cls, name)
    z_dim = config["z_dim"]
    kernel.set_params(length_scale=[0.6] * z_dim, length_scale_bounds=(1e-3, 1e3), f_depth=2)
    cloned = clone(kernel)
    assert cloned is not kernel and cloned == kernel
    assert cloned.get_params() == kernel.get_params() or all(
        np.all(cloned.get_params()[k] == v) for k, v in kernel.get_params().items()
    )
    assert cloned.hyperparameter_length_scale == kernel.hyperparameter_length_scale
    if config.get("z_encoding", "linear") == "fourier":
        assert kernel.theta.shape[0] in (1, z_dim)  # [ell] with z_dim = 1 is one element
        assert_allclose(np.exp(cloned.bounds), np.tile([1e-3, 1e3], (cloned.theta.shape[0], 1)))
    X = make_rows(14, 5, z_dim)
    assert_array_equal(cloned(X), kernel(X))


@pytest.mark.parametrize("cls,name", SINGLE_CASES)
def test_equality(cls, name):
    config = CONFIGS[name]
    kernel = make_single(cls, name)
    assert kernel == cls(**PAPER_KERNEL, **config)
    assert kernel != cls(**PAPER_KERNEL, **{**config, "f_depth": config["f_depth"] + 1})
    assert kernel != cls(**PAPER_KERNEL, **{**config, "g_depth": config["g_depth"] + 1})
    other_cls = HyperNNGP if cls is HyperKernel else HyperKernel
    assert kernel != other_cls(**PAPER_KERNEL, **config)


@pytest.mark.parametrize("cls,name", SINGLE_CASES)
def test_repr_shows_parameters_and_evaluates(cls, name):
    config = CONFIGS[name]
    kernel = make_single(cls, name)
    text = repr(kernel)
    assert text.startswith(cls.__name__ + "(")
    for key in ("z_dim", "f_depth", "g_depth"):
        assert f"{key}={config[key]}" in text
    for key in ("z_encoding", "activation"):
        if key in config:
            assert repr(config[key]) in text or str(config[key]) in text
    rebuilt = eval(text, {"HyperKernel": HyperKernel, "HyperNNGP": HyperNNGP, "array": np.array})
    assert rebuilt == kernel


# ---------------------------------------------------------------------------
# Mathematics
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls,name", SINGLE_CASES)
def test_values_against_extended_precision_reference(cls, name):
    config = CONFIGS[name]
    X, Y = make_rows(15, 5, config["z_dim"]), make_rows(16, 4, config["z_dim"])
    expected = reference_gram(cls, config, X, Y)
    assert_allclose(
        cls(**PAPER_KERNEL, **config)(X, Y), expected, rtol=1e-10, atol=1e-14 * max_abs(expected)
    )
    expected_auto = reference_gram(cls, config, X)
    assert_allclose(
        cls(**PAPER_KERNEL, **config)(X),
        expected_auto,
        rtol=1e-6,
        atol=1e-14 * max_abs(expected_auto),
    )


@pytest.mark.parametrize("cls,name", SINGLE_CASES)
def test_exact_diagonal_identities(cls, name):
    config = CONFIGS[name]
    z_dim, L, H = config["z_dim"], config["f_depth"], config["g_depth"]
    X = make_rows(17, 9, z_dim)
    x, z = split(X, z_dim)
    s = (x**2).sum(axis=1) / x.shape[1]
    e = (z**2).sum(axis=1) / z_dim if config.get("z_encoding", "linear") == "linear" else np.ones(9)
    expected = (L * H if cls is HyperKernel else 1) * s**H * e
    kernel = cls(**PAPER_KERNEL, **config)
    assert_allclose(kernel.diag(X), expected, rtol=1e-12)
    assert_allclose(np.diag(kernel(X)), expected, rtol=1e-6)


@pytest.mark.parametrize("cls", KERNEL_CLASSES)
@pytest.mark.parametrize("z_dim", [1, 2, 3])
@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_depth_one_is_bilinear(cls, z_dim, activation):
    X, Y = make_rows(18, 6, z_dim), make_rows(19, 5, z_dim)
    (x_a, z_a), (x_b, z_b) = split(X, z_dim), split(Y, z_dim)
    kernel = cls(
        **PAPER_KERNEL,
        z_dim=z_dim,
        f_depth=1,
        g_depth=1,
        z_encoding="linear",
        activation=activation,
        negative_slope=0.3,
    )
    expected = (x_a @ x_b.T / N_X_COLUMNS) * (z_a @ z_b.T / z_dim)
    assert_allclose(kernel(X, Y), expected, rtol=1e-12, atol=1e-15)
    expected_auto = (x_a @ x_a.T / N_X_COLUMNS) * (z_a @ z_a.T / z_dim)
    assert_allclose(kernel(X), expected_auto, rtol=1e-12, atol=1e-15)


def test_depth_one_kernels_coincide_with_fourier_encoding():
    config = dict(z_dim=2, f_depth=1, g_depth=1, z_encoding="fourier", length_scale=[0.8, 1.5])
    X = make_rows(20, 6, 2)
    x, z = split(X, 2)
    rbf = np.exp(-0.5 * (((z[:, None] - z[None]) / [0.8, 1.5]) ** 2).sum(-1))
    expected = (x @ x.T / N_X_COLUMNS) * rbf
    assert_allclose(HyperKernel(**PAPER_KERNEL, **config)(X), expected, rtol=1e-12, atol=1e-15)
    assert_allclose(HyperNNGP(**PAPER_KERNEL, **config)(X), expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("cls,name", SINGLE_CASES)
@pytest.mark.parametrize("c", [2.0, 0.37])
def test_positive_homogeneity(cls, name, c):
    config = CONFIGS[name]
    z_dim, H = config["z_dim"], config["g_depth"]
    kernel = cls(**PAPER_KERNEL, **config)
    X, Y = make_rows(21, 5, z_dim), make_rows(22, 4, z_dim)
    K = kernel(X, Y)
    rtol = 1e-13 if c == 2.0 else 1e-9
    X_scaled = X.copy()
    X_scaled[:, :-z_dim] *= c  # x of the first argument
    assert_allclose(kernel(X_scaled, Y), c**H * K, rtol=rtol, atol=1e-15 * max_abs(K))
    Y_scaled = Y.copy()
    Y_scaled[:, :-z_dim] *= c  # x of the second argument
    assert_allclose(kernel(X, Y_scaled), c**H * K, rtol=rtol, atol=1e-15 * max_abs(K))
    if config.get("z_encoding", "linear") == "linear":
        X_scaled = X.copy()
        X_scaled[:, -z_dim:] *= c  # z of one argument
        assert_allclose(kernel(X_scaled, Y), c * K, rtol=rtol, atol=1e-15 * max_abs(K))


@pytest.mark.parametrize("cls", KERNEL_CLASSES)
@pytest.mark.parametrize("encoding", ["linear", "fourier"])
def test_zero_x_or_zero_z_rows(cls, encoding):
    kernel = cls(
        **PAPER_KERNEL, z_dim=2, f_depth=3, g_depth=3, z_encoding=encoding, length_scale=0.9
    )
    X = make_rows(23, 6, 2)
    X[1, :-2] = 0.0  # x = 0
    X[4, -2:] = 0.0  # z = 0
    Y = make_rows(24, 3, 2)
    Y[2, :-2] = 0.0
    with no_floating_point_warnings():
        K, K_cross, d = kernel(X), kernel(X, Y), kernel.diag(X)
        if encoding == "fourier":
            _, K_gradient = kernel(X, eval_gradient=True)
            assert np.isfinite(K_gradient).all()
    assert np.isfinite(K).all() and np.isfinite(K_cross).all() and np.isfinite(d).all()
    zero_rows = [1, 4] if encoding == "linear" else [1]
    for row in zero_rows:
        assert_array_equal(K[row], 0.0)
        assert_array_equal(K[:, row], 0.0)
        assert_array_equal(K_cross[row], 0.0)
        assert d[row] == 0.0
    assert_array_equal(K_cross[:, 2], 0.0)
    if encoding == "fourier":
        assert np.all(K[4, [0, 2, 3, 5]] != 0.0)  # z = 0 is an ordinary point for Fourier


# Correlations of exactly +-1 and nearly +-1 -------------------------------------------


def _pair_rows(x, z, x_other, z_other) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([x, z])[None], np.concatenate([x_other, z_other])[None]


@pytest.mark.parametrize("cls", KERNEL_CLASSES)
@pytest.mark.parametrize("g_depth", [1, 2, 3])
def test_opposite_x_with_two_layer_f_is_exactly_zero(cls, g_depth):
    # rho_x = -1: S^1(x, -x) = kappa1 = 0 for relu, so S_f = 0 and Theta^f = S^0 * kappa0 + S^1 = 0.
    x, z = np.array([0.3, -1.2, 0.8, 2.0]), np.array([0.5, -0.4])
    U, V = _pair_rows(x, z, -x, z)
    with no_floating_point_warnings():
        value = cls(**PAPER_KERNEL, z_dim=2, f_depth=2, g_depth=g_depth, z_encoding="linear")(U, V)[
            0, 0
        ]
    s, e = x @ x / 4, z @ z / 2
    if cls is HyperNNGP:
        assert abs(value) <= 1e-14 * s**g_depth * e
    else:
        # Theta^f = S^0 * kappa0(rho_x = -1) + S^1: kappa0 at a rounded rho = -1 + 1 ulp is
        # ~5e-9 instead of 0 (the math doc's conditioning caveat): tolerance 1e-6 of k(u, u).
        assert abs(value) <= 1e-6 * 2 * g_depth * s**g_depth * e


@pytest.mark.parametrize("cls", KERNEL_CLASSES)
def test_opposite_x_with_three_layer_f_closed_value(cls):
    # S^1(x,-x) = 0, Sdot^1 = 0, S^2 = kappa1(s, s, 0) = s/pi, Sdot^2 = 1/2:
    # S_f = s/pi and Theta^f = -s*0*(1/2) + 0*(1/2) + s/pi = s/pi. With g_depth = 1 both kernels
    # are S_f * e resp. Theta^f * e = s e / pi.
    x, z = np.array([1.0, -2.0, 0.5, 0.25]), np.array([1.5, 0.5])
    U, V = _pair_rows(x, z, -x, z)
    s, e = x @ x / 4, z @ z / 2
    with no_floating_point_warnings():
        value = cls(**PAPER_KERNEL, z_dim=2, f_depth=3, g_depth=1, z_encoding="linear")(U, V)[0, 0]
    assert value == pytest.approx(s * e / np.pi, rel=1e-12 if cls is HyperNNGP else 1e-6)


@pytest.mark.parametrize("cls", KERNEL_CLASSES)
@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
@pytest.mark.parametrize("f_depth,g_depth", [(2, 2), (3, 2), (2, 3)])
def test_opposite_and_parallel_rows_against_reference(cls, activation, f_depth, g_depth):
    config = dict(
        z_dim=2,
        f_depth=f_depth,
        g_depth=g_depth,
        z_encoding="linear",
        activation=activation,
        negative_slope=0.2,
    )
    x, z = np.array([0.7, -1.1, 0.3, 1.9]), np.array([0.5, -0.8])
    kernel = cls(**PAPER_KERNEL, **config)
    H, L = g_depth, f_depth
    s, e = x @ x / 4, z @ z / 2
    self_value = (L * H if cls is HyperKernel else 1) * s**H * e
    # x' = 2x, z' = z: rho = 1, kernel = 2^H * k(u, u); and z' = 3z adds a factor 3.
    for factor_x, factor_z in [(2.0, 1.0), (2.0, 3.0), (1.0, 1.0)]:
        U, V = _pair_rows(x, z, factor_x * x, factor_z * z)
        with no_floating_point_warnings():
            value = kernel(U, V)[0, 0]
        assert value == pytest.approx(factor_x**H * factor_z * self_value, rel=1e-6)
    # x' = -x, z' = z: rho_x = -1
    U, V = _pair_rows(x, z, -x, z)
    with no_floating_point_warnings():
        value = kernel(U, V)[0, 0]
    expected = float(reference_gram(cls, config, U, V)[0, 0])
    assert np.isfinite(value)
    if cls is HyperNNGP:
        assert value == pytest.approx(expected, rel=1e-9, abs=1e-13 * self_value)
    else:  # kappa0 at a rounded rho = -1: good to ~5e-9 only (math doc)
        assert value == pytest.approx(expected, rel=1e-6, abs=1e-6 * self_value)


@pytest.mark.parametrize("cls", KERNEL_CLASSES)
@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
@pytest.mark.parametrize("delta", [1e-4, 1e-6, 1e-8])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_nearly_parallel_rows_against_extended_precision(cls, activation, delta, sign):
    config = dict(
        z_dim=2,
        f_depth=3,
        g_depth=3,
        z_encoding="linear",
        activation=activation,
        negative_slope=0.1,
    )
    rng = np.random.default_rng(25)
    x, z = rng.normal(size=4), rng.normal(size=2)
    x_other = sign * x + delta * rng.normal(size=4)
    z_other = z + delta * rng.normal(size=2)
    U, V = _pair_rows(x, z, x_other, z_other)
    with no_floating_point_warnings():
        value = cls(**PAPER_KERNEL, **config)(U, V)[0, 0]
    expected = float(reference_gram(cls, config, U, V)[0, 0])
    scale = float(reference_gram(cls, config, U)[0, 0])
    assert np.isfinite(value)
    # near rho = +1 kappa0 is ill-conditioned (math doc): rtol 1e-6; near -1 values are tiny
    assert value == pytest.approx(expected, rel=1e-6, abs=1e-10 * scale)


# ---------------------------------------------------------------------------
# Inside a GaussianProcessRegressor
# ---------------------------------------------------------------------------


def _pixel_regression_data() -> tuple[np.ndarray, np.ndarray]:
    """4 "images" x in R^3, 15 random 1-D pixel coordinates each, y = (w.x) sin(z) + noise."""
    rng = np.random.default_rng(26)
    n_images, n_pixels = 4, 15
    images = rng.normal(size=(n_images, 3))
    coords = rng.uniform(-3, 3, size=(n_images * n_pixels, 1))
    X = np.concatenate([np.repeat(images, n_pixels, axis=0), coords], axis=1)
    signal = (images @ [1.0, -0.5, 0.3]).repeat(n_pixels) * np.sin(X[:, -1])
    return X, signal + 0.05 * rng.normal(size=len(X))


@pytest.mark.parametrize("initial_length_scale", [1.0, 0.2])
def test_gaussian_process_fits_the_fourier_length_scale(initial_length_scale):
    X, y = _pixel_regression_data()
    kernel = (
        ConstantKernel()
        * HyperNNGP(
            **PAPER_KERNEL,
            z_dim=1,
            f_depth=2,
            g_depth=2,
            z_encoding="fourier",
            length_scale=initial_length_scale,
        )
        + WhiteKernel()
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConvergenceWarning: no hyperparameter at a bound
        gp = GaussianProcessRegressor(kernel=kernel, random_state=0).fit(X, y)
    initial_lml = gp.log_marginal_likelihood(kernel.theta)
    fitted = gp.kernel_.k1.k2.length_scale
    # Both starting points reach the same optimum, ell ~ 1.94 (measured), far from where they began
    assert 1.5 < fitted < 2.5, fitted
    assert abs(np.log(fitted / initial_length_scale)) > np.log(1.5)
    assert gp.log_marginal_likelihood_value_ > initial_lml + 50.0  # measured: ~22.7 vs -75 / -87
    fitted_lml = gp.log_marginal_likelihood(gp.kernel_.theta)
    assert gp.log_marginal_likelihood_value_ == pytest.approx(fitted_lml)
    assert 0.0025 / 3 < gp.kernel_.k2.noise_level < 0.0025 * 3  # noise variance 0.05^2 recovered
    prediction = gp.predict(X[:7])
    assert prediction.shape == (7,) and np.isfinite(prediction).all()


# ---------------------------------------------------------------------------
# Blocks, threads, rows sharing one x
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls", KERNEL_CLASSES)
@pytest.mark.parametrize("name", ["lin-z2-L3H2", "four-z3-L3H2-aniso"])
def test_block_size_and_threads_do_not_change_results(cls, name):
    config = CONFIGS[name]
    z_dim = config["z_dim"]
    X, Y = make_rows(27, 11, z_dim), make_rows(28, 6, z_dim)
    reference = cls(**config)
    K, K_gradient = reference(X, eval_gradient=True)
    K_cross, d = reference(X, Y), reference.diag(X)
    for block_size in (1, 2, 5, 1000):
        for n_jobs in (1, 2):
            kernel = cls(**config, block_size=block_size, n_jobs=n_jobs)
            K_b, K_gradient_b = kernel(X, eval_gradient=True)
            assert_allclose(K_b, K, rtol=1e-12, atol=1e-15 * max_abs(K))
            gradient_scale = max(max_abs(K_gradient), 1.0)
            assert_allclose(K_gradient_b, K_gradient, rtol=1e-12, atol=1e-15 * gradient_scale)
            assert_allclose(kernel(X, Y), K_cross, rtol=1e-12, atol=1e-15 * max_abs(K_cross))
            assert_allclose(kernel.diag(X), d, rtol=1e-12)


def _image_pixel_rows(seed: int, n_images: int, n_pixels: int, z_dim: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n_images, 5))
    coords = rng.uniform(-1, 1, size=(n_images * n_pixels, z_dim))
    rows = np.concatenate([np.repeat(images, n_pixels, axis=0), coords], axis=1)
    return rows[rng.permutation(len(rows))]  # shared x rows are not adjacent


@pytest.mark.parametrize("encoding", ["linear", "fourier"])
@pytest.mark.parametrize("block_size", [None, 4])
def test_rows_sharing_one_x_match_the_pure_function(encoding, block_size):
    X, Y = _image_pixel_rows(29, 3, 6), _image_pixel_rows(30, 2, 5)
    (x, z), (x_y, z_y) = split(X, 2), split(Y, 2)
    config = dict(z_dim=2, f_depth=3, g_depth=2, z_encoding=encoding, length_scale=0.6)
    nngp, ntk = recursions.hyper_kernels(
        x, z, f_depth=3, g_depth=2, z_encoding=encoding, length_scale=0.6
    )
    nngp_xy, ntk_xy = recursions.hyper_kernels(
        x, z, x_y, z_y, f_depth=3, g_depth=2, z_encoding=encoding, length_scale=0.6
    )
    for cls, auto, cross in ((HyperNNGP, nngp, nngp_xy), (HyperKernel, ntk, ntk_xy)):
        kernel = cls(**PAPER_KERNEL, **config, block_size=block_size)
        # kappa0 at a rounded rho ~ 1 (rows sharing x) is only good to ~5e-9 (math doc)
        rtol = 1e-10 if cls is HyperNNGP else 1e-6
        assert_allclose(kernel(X), auto, rtol=rtol, atol=1e-14 * max_abs(auto))
        assert_allclose(kernel(X, Y), cross, rtol=rtol, atol=1e-14 * max_abs(cross))


# ---------------------------------------------------------------------------
# Input and parameter validation (at call time)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls", KERNEL_CLASSES)
def test_non_finite_inputs_raise(cls):
    kernel = cls(z_dim=2)
    X = make_rows(31, 4, 2)
    for bad_value in (np.nan, np.inf, -np.inf):
        bad = X.copy()
        bad[1, 2] = bad_value
        with pytest.raises(ValueError, match="(?i)nan|inf|finite"):
            kernel(bad)
        with pytest.raises(ValueError, match="(?i)nan|inf|finite"):
            kernel(X, bad)
        with pytest.raises(ValueError, match="(?i)nan|inf|finite"):
            kernel.diag(bad)


@pytest.mark.parametrize("cls", KERNEL_CLASSES)
def test_one_dimensional_input_raises(cls):
    with pytest.raises(ValueError, match="(?i)2d|1d|dimension"):
        cls(z_dim=1)(np.arange(5.0))
    with pytest.raises(ValueError, match="(?i)2d|1d|dimension"):
        cls(z_dim=1)(make_rows(32, 3, 1), np.arange(5.0))


@pytest.mark.parametrize("cls", KERNEL_CLASSES)
@pytest.mark.parametrize("z_dim", [4, 5, 0, -1])
def test_bad_z_dim_raises(cls, z_dim):
    X = np.random.default_rng(33).normal(size=(4, 3))
    kernel = cls(z_dim=z_dim)  # __init__ only stores
    with pytest.raises(ValueError, match="z_dim"):
        kernel(X)
    with pytest.raises(ValueError, match="z_dim"):
        kernel.diag(X)


@pytest.mark.parametrize("cls", KERNEL_CLASSES)
def test_column_count_mismatch_raises(cls):
    with pytest.raises(ValueError, match="(?i)column|feature"):
        cls(z_dim=2)(make_rows(34, 4, 2), make_rows(35, 3, 3))


BAD_PARAMETERS = [
    (dict(z_encoding="gaussian"), "z_encoding"),
    (dict(activation="tanh"), "activation"),
    (dict(f_depth=0), "f_depth"),
    (dict(g_depth=0), "g_depth"),
    (dict(f_depth=-2), "f_depth"),
    (dict(z_encoding="fourier", length_scale=0.0), "length_scale"),
    (dict(z_encoding="fourier", length_scale=-1.0), "length_scale"),
    (dict(z_encoding="fourier", length_scale=[1.0, -0.5]), "length_scale"),
    (dict(z_encoding="fourier", length_scale=[1.0, 2.0, 3.0]), "length_scale"),
]


@pytest.mark.parametrize("cls", KERNEL_CLASSES)
@pytest.mark.parametrize("params,pattern", BAD_PARAMETERS, ids=lambda v: str(v))
def test_bad_parameters_raise_at_call_time(cls, params, pattern):
    kernel = cls(z_dim=2, **params)  # construction never validates (sklearn convention)
    X = make_rows(36, 4, 2)
    with pytest.raises(ValueError, match=pattern):
        kernel(X)
    with pytest.raises(ValueError, match=pattern):
        kernel.diag(X)


# ---------------------------------------------------------------------------
# Property-based tests
# ---------------------------------------------------------------------------

VALUES = st.one_of(
    st.integers(-30, 30).map(lambda i: i / 10),  # exact zeros and repeated values
    st.floats(-3, 3).map(lambda v: 0.0 if abs(v) < 1e-3 else v),
)


@st.composite
def kernels_and_rows(draw, linear_only: bool = False):
    z_dim = draw(st.integers(1, 3))
    n_x = draw(st.integers(1, 6))
    n, m = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    X = draw(hnp.arrays(np.float64, (n, n_x + z_dim), elements=VALUES))
    Y = draw(hnp.arrays(np.float64, (m, n_x + z_dim), elements=VALUES))
    encoding = "linear" if linear_only else draw(st.sampled_from(["linear", "fourier"]))
    ell_strategy = st.floats(0.2, 5.0)
    per_column = st.lists(ell_strategy, min_size=z_dim, max_size=z_dim)
    length_scale = draw(st.one_of(ell_strategy, per_column))
    config = dict(
        z_dim=z_dim,
        f_depth=draw(st.integers(1, 4)),
        g_depth=draw(st.integers(1, 3)),
        z_encoding=encoding,
        length_scale=length_scale,
        activation=draw(st.sampled_from(["relu", "leaky_relu"])),
        negative_slope=draw(st.sampled_from([0.01, 0.2])),
    )
    cls = draw(st.sampled_from(KERNEL_CLASSES))
    return cls(**config), X, Y


HYPOTHESIS_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@HYPOTHESIS_SETTINGS
@given(kernels_and_rows())
def test_property_gram_symmetric_psd_finite_with_matching_diag(case):
    kernel, X, Y = case
    K = kernel(X)
    assert np.isfinite(K).all()
    scale = max_abs(K)
    assert_allclose(K, K.T, rtol=1e-12, atol=1e-15 * scale)
    eigenvalues = np.linalg.eigvalsh(K)
    assert eigenvalues.min() >= -1e-10 * max(eigenvalues.max(), 0.0)
    assert_allclose(kernel.diag(X), np.diag(K), rtol=1e-6, atol=1e-14 * scale)
    assert np.all(kernel.diag(X) >= 0)
    K_cross = kernel(X, Y)
    assert K_cross.shape == (len(X), len(Y)) and np.isfinite(K_cross).all()


@HYPOTHESIS_SETTINGS
@given(kernels_and_rows(), st.floats(0.1, 10.0))
def test_property_positive_homogeneity(case, c):
    kernel, X, Y = case
    kernel = clone(kernel).set_params(**PAPER_KERNEL)  # homogeneous without biases only
    z_dim, H = kernel.z_dim, kernel.g_depth
    K = kernel(X, Y)
    # Cauchy-Schwarz bound |k(u, v)| <= sqrt(k(u, u) k(v, v)) sets the absolute scale per entry:
    # entries that are 0 exactly (rho = -1) come out as rounding noise of that size.
    bound = np.sqrt(np.outer(kernel.diag(X), kernel.diag(Y)))
    noise = 1e-12 if isinstance(kernel, HyperNNGP) else 1e-7  # kappa0 at rho ~ +-1 (math doc)
    # rows of X and Y with equal x (or z) have correlation exactly 1; scaled, they are parallel
    # but different, with a rounded correlation: kappa0's noise there for either factor
    same = X[:, None, :] == Y[None, :, :]
    same_x, same_z = same[..., :-z_dim].all(axis=-1), same[..., -z_dim:].all(axis=-1)
    for factor, rtol in ((2.0, 1e-12), (c, 1e-6)):
        atol = (1e-14 if factor == 2.0 else noise) * bound
        X_scaled = X.copy()
        X_scaled[:, :-z_dim] *= factor
        expected = factor**H * K
        difference = np.abs(kernel(X_scaled, Y) - expected)
        tolerance = np.where(same_x, noise * bound, atol)
        assert np.all(difference <= rtol * np.abs(expected) + factor**H * tolerance), difference
        if kernel.z_encoding == "linear":
            X_scaled = X.copy()
            X_scaled[:, -z_dim:] *= factor
            difference = np.abs(kernel(X_scaled, Y) - factor * K)
            tolerance = np.where(same_z, noise * bound, atol)
            assert np.all(difference <= rtol * np.abs(factor * K) + factor * tolerance), difference


# No x columns: every row shares the constant x = (1,) ------------------------------------


@pytest.mark.parametrize("cls", KERNEL_CLASSES)
@pytest.mark.parametrize("encoding", ["linear", "fourier"])
@pytest.mark.parametrize("normalize_x", [False, True])
def test_no_x_columns_is_the_constant_x(cls, encoding, normalize_x):
    """X of exactly z_dim columns is the same as X with a prepended column of ones."""
    z = np.random.default_rng(40).normal(size=(7, 2))
    w = np.random.default_rng(41).normal(size=(3, 2))
    kernel = cls(
        z_dim=2,
        f_depth=3,
        g_depth=2,
        z_encoding=encoding,
        length_scale=0.8,
        normalize_x=normalize_x,
    )
    with_ones = np.hstack([np.ones((7, 1)), z]), np.hstack([np.ones((3, 1)), w])
    assert_array_equal(kernel(z), kernel(with_ones[0]))
    assert_array_equal(kernel(z, w), kernel(*with_ones))
    assert_array_equal(kernel.diag(z), kernel.diag(with_ones[0]))


@pytest.mark.parametrize("g_depth", [1, 2, 3])
def test_no_x_columns_gives_the_mlp_kernels_of_g(g_depth):
    """With one shared x, S_f = s = 1 and Theta^f = L: HyperNNGP is g's NNGP on z and
    HyperKernel is L times g's NTK on z (the ordinary MLP kernels, docs/math.md)."""
    z = np.random.default_rng(42).normal(size=(6, 3))
    w = np.random.default_rng(43).normal(size=(4, 3))
    nngp, ntk = mlp_kernels(z, w, depth=g_depth)
    for f_depth in (1, 3):
        config = dict(z_dim=3, f_depth=f_depth, g_depth=g_depth, z_encoding="linear")
        assert_allclose(HyperNNGP(**PAPER_KERNEL, **config)(z, w), nngp, rtol=1e-12, atol=1e-15)
        assert_allclose(
            HyperKernel(**PAPER_KERNEL, **config)(z, w), f_depth * ntk, rtol=1e-12, atol=1e-15
        )


@pytest.mark.parametrize("cls", KERNEL_CLASSES)
def test_normalize_x_puts_every_x_on_the_sphere(cls):
    """normalize_x=True is the kernel of the rows rescaled to |x|^2 / n0 = 1 (zero rows stay
    zero), so it is invariant to the scale of each x; on by default (off: the paper's kernel)."""
    X, Y = make_rows(44, 6, 2), make_rows(45, 4, 2)
    X[2, :-2] = 0.0
    config = dict(z_dim=2, f_depth=3, g_depth=2, z_encoding="fourier", length_scale=0.7)

    def on_sphere(rows):
        x = rows[:, :-2]
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        scaled = np.divide(x * np.sqrt(x.shape[1]), norm, out=np.zeros_like(x), where=norm > 0)
        return np.hstack([scaled, rows[:, -2:]])

    assert cls().normalize_x is True
    kernel = cls(**{**PAPER_KERNEL, "normalize_x": True}, **config)
    plain = cls(**PAPER_KERNEL, **config)
    assert plain.normalize_x is False
    assert_allclose(kernel(X), plain(on_sphere(X)), rtol=1e-12, atol=1e-15)
    assert_allclose(kernel(X, Y), plain(on_sphere(X), on_sphere(Y)), rtol=1e-12, atol=1e-15)
    assert_allclose(kernel.diag(X), plain.diag(on_sphere(X)), rtol=1e-12)
    scaled = X.copy()
    scaled[:, :-2] *= np.arange(1.0, 7.0)[:, None] * 10.0
    assert_allclose(kernel(scaled, Y), kernel(X, Y), rtol=1e-12, atol=1e-15)
    assert_array_equal(kernel(X)[2], 0.0)


@pytest.mark.parametrize("cls", KERNEL_CLASSES)
def test_unpickling_without_the_saved_gpu_falls_back_to_the_cpu(cls, monkeypatch):
    """A kernel saved with device='cuda' loads on a machine without CUDA with a warning and
    computes with numpy (skorch's rule); the GPU is simulated by the pickled parameter."""
    from sklearn_hyperkernel import DeviceFallbackWarning

    pytest.importorskip("torch")
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    kernel = cls(z_dim=2, z_encoding="fourier", length_scale=0.7)
    X = make_rows(46, 5, 2)
    expected = kernel(X)
    kernel.device = "cuda:1"  # as saved on a two-GPU machine
    with pytest.warns(DeviceFallbackWarning, match="cuda:1"):
        loaded = pickle.loads(pickle.dumps(kernel))
    assert loaded.device is None
    assert_array_equal(loaded(X), expected)
    with pytest.raises(ValueError, match="device='cuda'"):
        cls(device="cuda")(X)  # asked for explicitly on this machine: an error, not a fallback


def test_gram_matvec_and_gram_factorized_accept_the_rows_themselves():
    rng = np.random.default_rng(3)
    U, V = rng.normal(size=(9, 5)), rng.normal(size=(4, 5))
    kernel = HyperKernel(normalize_x=True)
    vectors = rng.normal(size=(9, 2))
    expected = kernel(U) @ vectors
    np.testing.assert_allclose(kernel.gram_matvec(U, vectors), expected, rtol=1e-12)
    np.testing.assert_allclose(
        kernel.gram_matvec(kernel.factorize_rows(U), vectors), expected, rtol=1e-12
    )
    np.testing.assert_allclose(kernel.gram_factorized(V, U), kernel(V, U), rtol=1e-12)
    np.testing.assert_allclose(kernel.gram_factorized(U), kernel(U), rtol=1e-12)
    with pytest.raises(ValueError, match="z_dim"):
        kernel.gram_matvec(U[:, :1], np.ones(9))


# ---------------------------------------------------------------------------
# Bias variances as hyperparameters (docs/math.md, "Biases")
# ---------------------------------------------------------------------------


def test_bias_variances_are_fixed_at_zero_and_learned_in_log_space():
    plain = HyperKernel(**PAPER_KERNEL, z_encoding="fourier", length_scale=0.7)
    assert plain.hyperparameter_f_bias_variance.fixed
    assert plain.hyperparameter_g_bias_variance.fixed
    assert_allclose(plain.theta, np.log([0.7]))
    kernel = HyperNNGP(z_encoding="fourier", length_scale=0.7, f_bias_variance=0.1)
    kernel.set_params(g_bias_variance=1.3, g_bias_variance_bounds=(1e-3, 10.0))
    names = [h.name for h in kernel.hyperparameters]
    assert names == ["f_bias_variance", "g_bias_variance", "length_scale"]  # sklearn's order
    assert_allclose(kernel.theta, np.log([0.1, 1.3, 0.7]))
    assert_allclose(kernel.bounds, np.log([[1e-5, 1e5], [1e-3, 10.0], [1e-5, 1e5]]))
    moved = kernel.clone_with_theta(np.log([0.2, 0.5, 0.9]))
    assert (moved.f_bias_variance, moved.g_bias_variance) == pytest.approx((0.2, 0.5))
    assert clone(kernel).get_params() == kernel.get_params()
    assert "f_bias_variance=0.1" in repr(kernel) and "g_bias_variance=1.3" in repr(kernel)
    default = HyperKernel()  # the defaults' biases are learned, in sklearn's order
    assert [h.name for h in default.hyperparameters if not h.fixed] == names
    assert_allclose(default.theta, np.log([1.0, 0.1, 0.5]))
    assert "bias" not in repr(default)
    fixed = HyperKernel(f_bias_variance=0.1, f_bias_variance_bounds="fixed")
    assert fixed.hyperparameter_f_bias_variance.fixed
    with pytest.raises(ValueError, match="f_bias_variance"):
        HyperKernel(f_bias_variance=-0.1)(make_rows(0, 3, 2))
    with pytest.raises(ValueError, match="g_bias_variance"):
        HyperNNGP(g_bias_variance="big")(make_rows(0, 3, 2))


@pytest.mark.parametrize("cls", KERNEL_CLASSES)
@pytest.mark.parametrize("f_bias,g_bias", [(0.1, 0.0), (0.0, 1.3), (1.3, 0.1), (0.1, 0.1)])
@pytest.mark.parametrize(
    "encoding,length_scale", [("linear", 1.0), ("fourier", 0.8), ("fourier", [0.6, 1.7])]
)
def test_bias_and_length_scale_gradients_match_central_differences(
    cls, f_bias, g_bias, encoding, length_scale
):
    X = make_rows(21, 7, 2)
    X[1, :-2] = 0.0  # x = 0
    X[3] = X[2]  # equal rows
    kernel = cls(
        z_dim=2,
        f_depth=3,
        g_depth=3,
        z_encoding=encoding,
        length_scale=length_scale,
        activation="leaky_relu",
        negative_slope=0.2,
        f_bias_variance=f_bias,
        g_bias_variance=g_bias,
        block_size=3,
    )
    K, gradient = kernel(X, eval_gradient=True)
    free = [h for h in kernel.hyperparameters if not h.fixed]
    n_columns = sum(h.n_elements for h in free)
    assert gradient.shape == (7, 7, n_columns) == (7, 7, kernel.theta.shape[0])
    assert [h.name for h in free][: (f_bias > 0) + (g_bias > 0)] == [
        name for name, value in (("f_bias_variance", f_bias), ("g_bias_variance", g_bias)) if value
    ]
    step = 1e-5
    for j in range(n_columns):
        up, down = kernel.theta.copy(), kernel.theta.copy()
        up[j] += step
        down[j] -= step
        central = (kernel.clone_with_theta(up)(X) - kernel.clone_with_theta(down)(X)) / (2 * step)
        assert np.abs(central).max() > 0
        assert_allclose(gradient[..., j], central, rtol=0, atol=1e-7 * np.abs(central).max())
    assert_array_equal(gradient, np.swapaxes(gradient, 0, 1))


def test_bias_gradients_on_the_torch_placement_equal_numpy():
    pytest.importorskip("torch")
    X = make_rows(22, 8, 2)
    config = dict(z_encoding="fourier", length_scale=[0.6, 1.7], f_bias_variance=0.3)
    config.update(g_bias_variance=0.2, block_size=5)
    for cls in KERNEL_CLASSES:
        K, gradient = cls(**config)(X, eval_gradient=True)
        K_torch, gradient_torch = cls(**config, device="cpu")(X, eval_gradient=True)
        assert_allclose(K_torch, K, rtol=1e-13)
        assert_allclose(gradient_torch, gradient, rtol=0, atol=1e-13 * np.abs(gradient).max())


def _sdf_rows(n_shapes: int, per: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shape codes: x = a sphere's radius and centre, z = a 3-D point, y = signed distance."""
    r = np.random.RandomState(seed)
    radius, centre = r.uniform(0.3, 1.0, n_shapes), r.uniform(-0.5, 0.5, (n_shapes, 3))
    index = np.repeat(np.arange(n_shapes), per)
    z = r.uniform(-1.5, 1.5, (n_shapes * per, 3))
    distance = np.linalg.norm(z - centre[index], axis=1) - radius[index]
    return np.hstack([radius[index, None], centre[index], z]), distance


def test_gaussian_process_learns_the_bias_variances_and_a_higher_likelihood():
    U, y = _sdf_rows(12, 10, 11)

    def fit(f_bias, g_bias):
        inner = HyperNNGP(z_dim=3, f_bias_variance=f_bias, g_bias_variance=g_bias)
        kernel = ConstantKernel() * inner + WhiteKernel()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the noise level reaches its bound
            return GaussianProcessRegressor(kernel, normalize_y=True, random_state=0).fit(U, y)

    biased, plain = fit(0.1, 0.1), fit(0.0, 0.0)
    learned = biased.kernel_.k1.k2
    assert learned.f_bias_variance != pytest.approx(0.1, rel=0.05)
    assert learned.g_bias_variance != pytest.approx(0.1, rel=0.05)
    assert plain.kernel_.k1.k2.f_bias_variance == 0.0  # fixed
    # biases let the norm of the code (the radius) shift the distance: a far better fit
    assert biased.log_marginal_likelihood_value_ > plain.log_marginal_likelihood_value_


@pytest.mark.parametrize("cls", [HyperKernel, HyperNNGP])
def test_rows_factorised_by_another_kernel_get_this_kernels_f(cls):
    """f's per-x quantities depend on f (its depth, bias variance, ``normalize_x``): rows
    factorised by one kernel and evaluated by another are that other kernel's Gram."""
    U, V = distinct_rows(), shared_image_rows()
    first = cls(f_depth=2, f_bias_variance=0.3, normalize_x=False)
    rows_u, rows_v = first.factorize_rows(U), first.factorize_rows(V)
    for params in (dict(f_depth=4), dict(f_bias_variance=1.7), dict(normalize_x=True)):
        other = clone(first).set_params(**params)
        assert_array_equal(other.gram_factorized(rows_u), other(U))
        assert_array_equal(other.gram_factorized(rows_u, rows_v), other(U, V))
        vectors = np.arange(U.shape[0], dtype=float)
        assert_array_equal(other.gram_matvec(rows_u, vectors), other.gram_matvec(U, vectors))
        assert relative_error(other(U), first(U)) > 1e-3
