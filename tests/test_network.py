"""Tests of the finite torch hypernetwork (:mod:`sklearn_hyperkernel.network`)."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sklearn_hyperkernel import set_config  # noqa: E402
from sklearn_hyperkernel._utils.rows import distinct_rows  # noqa: E402
from sklearn_hyperkernel.network import Hypernetwork, empirical_ntk  # noqa: E402

DTYPE = torch.float64


def make_model(seed: int = 0, **kwargs) -> Hypernetwork:
    arguments = {"x_dim": 3, "z_dim": 2, "f_width": 9, "g_width": 5}
    arguments.update(kwargs)
    return Hypernetwork(generator=torch.Generator().manual_seed(seed), **arguments)


def make_rows(rng: np.random.Generator, n_rows: int = 6, x_dim: int = 3, z_dim: int = 2):
    x = torch.as_tensor(rng.standard_normal((n_rows, x_dim)), dtype=DTYPE)
    z = torch.as_tensor(rng.standard_normal((n_rows, z_dim)), dtype=DTYPE)
    return x, z


def naive_forward(model: Hypernetwork, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """h(x, z) one row at a time with plain matrix-vector products.

    ``y = W q / sqrt(n) + sqrt(bf) beta`` in f (``W q + b`` under "standard"), then g's
    layers ``V a / sqrt(m) + sqrt(bg) c`` with ``V^1..V^H`` then ``c^1..c^H`` read off f's
    output in that order.
    """
    if model.activation == "relu":
        slope, gain = 0.0, math.sqrt(2.0)
    else:
        slope = model.negative_slope
        gain = math.sqrt(2.0 / (1.0 + slope**2))

    def phi(s):
        return gain * torch.where(s > 0, s, slope * s)

    outputs = []
    for row in range(x.shape[0]):
        q = x[row]
        for layer, weight in enumerate(model.f_weights):
            ntk = model.parameterization == "ntk"
            scale = 1.0 / math.sqrt(weight.shape[1]) if ntk else 1.0
            y = (weight @ q) * scale
            if model.f_bias_variance > 0:
                bias_scale = math.sqrt(model.f_bias_variance) if ntk else 1.0
                y = y + bias_scale * model.f_biases[layer]
            q = phi(y) if layer < model.f_depth - 1 else y
        if model.z_encoding == "linear":
            a = z[row]
        else:
            a = math.sqrt(2.0) * torch.cos(
                model.fourier_weight @ (z[row] / model.length_scale) + model.fourier_phase
            )
        offset = 0
        sizes = model.g_layer_sizes
        matrices = []
        for layer in range(model.g_depth):
            n_out, n_in = sizes[layer + 1], sizes[layer]
            matrices.append(q[offset : offset + n_out * n_in].reshape(n_out, n_in))
            offset += n_out * n_in
        for layer in range(model.g_depth):
            pre = matrices[layer] @ a / math.sqrt(sizes[layer])
            if model.g_bias_variance > 0:
                n_out = sizes[layer + 1]
                pre = pre + math.sqrt(model.g_bias_variance) * q[offset : offset + n_out]
                offset += n_out
            a = phi(pre) if layer < model.g_depth - 1 else pre
        assert offset == q.shape[0]
        outputs.append(a)
    return torch.stack(outputs)


ARCHITECTURES = [
    {"f_depth": 1, "g_depth": 1},
    {"f_depth": 3, "g_depth": 2},
    {"f_depth": 2, "g_depth": 3, "n_outputs": 3},
    {"f_depth": 2, "g_depth": 2, "activation": "leaky_relu", "negative_slope": 0.2},
    {
        "f_depth": 2,
        "g_depth": 2,
        "z_encoding": "fourier",
        "n_fourier_features": 7,
        "length_scale": [0.5, 2.0],
    },
    {"f_depth": 3, "g_depth": 2, "parameterization": "standard", "n_outputs": 2},
    {"f_depth": 3, "g_depth": 2, "f_bias_variance": 0.5, "g_bias_variance": 0.3},
    {"f_depth": 2, "g_depth": 3, "n_outputs": 2, "f_bias_variance": 1.0},
    {"f_depth": 1, "g_depth": 2, "g_bias_variance": 0.7},
    {
        "f_depth": 2,
        "g_depth": 2,
        "parameterization": "standard",
        "f_bias_variance": 0.4,
        "g_bias_variance": 0.1,
        "z_encoding": "fourier",
        "n_fourier_features": 7,
        "activation": "leaky_relu",
        "negative_slope": 0.2,
    },
]


# ------------------------------------------------------------------------ shapes
def test_shapes_and_layer_sizes(rng):
    model = make_model(f_depth=3, g_depth=3, n_outputs=4, f_width=11, g_width=6)
    x, z = make_rows(rng, 5)
    assert model(x, z).shape == (5, 4)
    assert model.g_layer_sizes == (2, 6, 6, 4)
    assert model.n_generated == 2 * 6 + 6 * 6 + 6 * 4
    assert model.f_layer_sizes == (3, 11, 11, model.n_generated)
    generated = model.split_generated(model.f_forward(x))
    assert [tuple(v.shape) for v, _ in generated] == [(5, 6, 2), (5, 6, 6), (5, 4, 6)]
    assert [c for _, c in generated] == [None, None, None]
    # g's biases: f outputs m_1 + ... + m_H more numbers, after all of g's weights
    biased = make_model(f_depth=3, g_depth=3, n_outputs=4, f_width=11, g_width=6, g_bias_variance=1)
    assert biased.n_generated == model.n_generated + 6 + 6 + 4
    assert biased.f_layer_sizes == (3, 11, 11, biased.n_generated)
    flat = biased.f_forward(x)
    layers = biased.split_generated(flat)
    assert [tuple(v.shape) for v, _ in layers] == [(5, 6, 2), (5, 6, 6), (5, 4, 6)]
    assert [tuple(c.shape) for _, c in layers] == [(5, 6), (5, 6), (5, 4)]
    torch.testing.assert_close(layers[0][1], flat[:, 72:78], rtol=0, atol=0)
    torch.testing.assert_close(layers[2][1], flat[:, 84:], rtol=0, atol=0)
    torch.testing.assert_close(layers[2][0].reshape(5, -1), flat[:, 48:72], rtol=0, atol=0)
    fourier = make_model(z_encoding="fourier", n_fourier_features=13, g_depth=1)
    assert fourier.g_layer_sizes == (13, 1)
    assert fourier.encode_z(z).shape == (5, 13)
    assert fourier(x, z).shape == (5, 1)


def test_only_f_weights_are_trainable(rng):
    model = make_model(f_depth=3, z_encoding="fourier", n_fourier_features=8)
    parameters = list(model.parameters())
    assert len(parameters) == 3
    assert [tuple(p.shape) for p in parameters] == [tuple(w.shape) for w in model.f_weights]
    assert {name for name, _ in model.named_buffers()} == {
        "length_scale",
        "fourier_weight",
        "fourier_phase",
    }
    x, z = make_rows(rng)
    model(x, z).sum().backward()
    assert all(p.grad is not None and torch.any(p.grad != 0) for p in parameters)
    assert all(not b.requires_grad for b in model.buffers())


def test_float32_model(rng):
    model = make_model(dtype=torch.float32)
    x, z = make_rows(rng)
    out = model(x.float(), z.float())
    assert out.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())


# ------------------------------------------------------------------- per sample
def test_every_row_gets_its_own_generated_weights(rng):
    model = make_model(f_depth=2, g_depth=2)
    x, _ = make_rows(rng, 2)
    z = torch.tensor([[0.3, -1.2], [0.3, -1.2]], dtype=DTYPE)
    generated = model.split_generated(model.f_forward(x))
    for matrix, _ in generated:
        assert not torch.allclose(matrix[0], matrix[1])
    out = model(x, z)
    assert out[0, 0] != out[1, 0]  # same z, different x: different g
    same_x = model(x[[0, 0]], z)
    assert same_x[0, 0] == same_x[1, 0]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_batched_forward_equals_per_row_loop(rng, architecture):
    model = make_model(**architecture)
    x, z = make_rows(rng, 7)
    with torch.no_grad():
        batched = model(x, z)
        looped = naive_forward(model, x, z)
    torch.testing.assert_close(batched, looped, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("architecture", ARCHITECTURES[1:3])
def test_distinct_x_path_equals_plain_path(rng, architecture):
    model = make_model(**architecture)
    x_distinct, _ = make_rows(rng, 3)
    index = torch.tensor([0, 2, 2, 1, 0, 0, 1, 2])
    x = x_distinct[index]
    z = torch.as_tensor(rng.standard_normal((8, 2)), dtype=DTYPE)
    plain = model(x, z)
    torch.testing.assert_close(model(x_distinct, z, x_index=index), plain, rtol=1e-13, atol=0)
    torch.testing.assert_close(model(x, z, deduplicate_x=True), plain, rtol=1e-13, atol=0)
    # the package's one row de-duplication: f sees the 3 distinct rows only
    unique, inverse = distinct_rows(x)
    assert unique.shape == (3, 3) and inverse.dtype == torch.int64
    torch.testing.assert_close(unique[inverse], x, rtol=0, atol=0)
    seen = []
    original = model.f_forward
    model.f_forward = lambda rows, **kwargs: seen.append(rows.shape[0]) or original(rows, **kwargs)
    torch.testing.assert_close(model(x, z, deduplicate_x=True), plain, rtol=1e-13, atol=0)
    assert seen == [3]
    with pytest.raises(ValueError, match="x_index"):
        model(x_distinct, z)


def test_ntk_and_standard_parameterisations_compute_the_same_function(rng):
    x, z = make_rows(rng)
    ntk = make_model(seed=3, f_depth=3, parameterization="ntk")
    standard = make_model(seed=3, f_depth=3, parameterization="standard")
    torch.testing.assert_close(standard(x, z), ntk(x, z), rtol=1e-12, atol=1e-12)
    # depth-1 f: the standard NTK is n0 times the NTK-parameterised one
    ntk1 = make_model(seed=3, f_depth=1, g_depth=1, parameterization="ntk")
    standard1 = make_model(seed=3, f_depth=1, g_depth=1, parameterization="standard")
    torch.testing.assert_close(
        empirical_ntk(standard1, x, z), 3 * empirical_ntk(ntk1, x, z), rtol=1e-12, atol=1e-12
    )


# ------------------------------------------------------------------ determinism
def test_seeded_generator_is_deterministic(rng):
    x, z = make_rows(rng)
    first = make_model(seed=7, z_encoding="fourier", n_fourier_features=5)
    second = make_model(seed=7, z_encoding="fourier", n_fourier_features=5)
    other = make_model(seed=8, z_encoding="fourier", n_fourier_features=5)
    for (name, a), (_, b) in zip(
        first.state_dict().items(), second.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert torch.equal(first(x, z), second(x, z))
    assert not torch.allclose(first(x, z), other(x, z))
    torch.manual_seed(11)
    global_a = Hypernetwork(3, 2)(x, z)
    torch.manual_seed(11)
    global_b = Hypernetwork(3, 2)(x, z)
    assert torch.equal(global_a, global_b)


# ------------------------------------------------------------------------ biases
# Computed with the bias-free network of commit 1d692d5 (before biases existed):
# Hypernetwork(3, 2, f_depth=3, f_width=16, g_depth=2, g_width=6, n_outputs=2, generator
# seed 0) on the rows of default_rng(2024): outputs, then the empirical NTK.
BIAS_FREE_VALUES = {
    "linear": (
        [
            [0.1413522091761383, 1.4489547844268649],
            [0.31949574781089624, 0.0005827364108458076],
            [2.072360551742622, 1.8718112544939536],
        ],
        [
            [5.740621945854163, 0.025224060960085316, 5.90014742034767],
            [0.025224060960085316, 2.6209384377182605, -0.0946272561926726],
            [5.90014742034767, -0.0946272561926726, 18.881074023903423],
        ],
    ),
    "fourier": (
        [
            [-0.6552454475095844, 0.3972355213106296],
            [1.0463591726282357, -0.27362564500483644],
            [-0.24799049448324578, -0.09401609813975995],
        ],
        [
            [4.268765722417664, 0.2688481046999017, -0.03206497108224343],
            [0.2688481046999017, 16.8934248825163, -0.11612434127459782],
            [-0.03206497108224343, -0.11612434127459782, 1.0186257330378807],
        ],
    ),
}


@pytest.mark.parametrize("encoding", ["linear", "fourier"])
def test_zero_bias_variances_give_the_bias_free_network_of_the_same_seed(encoding):
    """bf = bg = 0: the same draws, outputs and NTK as the code before biases."""
    rng = np.random.default_rng(2024)
    x = torch.as_tensor(rng.standard_normal((3, 3)), dtype=DTYPE)
    z = torch.as_tensor(rng.standard_normal((3, 2)), dtype=DTYPE)
    fourier = {"n_fourier_features": 7, "length_scale": [0.5, 2.0]}
    model = make_model(
        f_depth=3,
        f_width=16,
        g_width=6,
        n_outputs=2,
        z_encoding=encoding,
        f_bias_variance=0.0,
        g_bias_variance=0.0,
        **(fourier if encoding == "fourier" else {}),
    )
    outputs, ntk = BIAS_FREE_VALUES[encoding]
    with torch.no_grad():
        torch.testing.assert_close(
            model(x, z), torch.tensor(outputs, dtype=DTYPE), rtol=1e-12, atol=0
        )
    torch.testing.assert_close(
        empirical_ntk(model, x, z), torch.tensor(ntk, dtype=DTYPE), rtol=1e-12, atol=1e-15
    )
    # no bias parameters, no generated biases
    assert len(model.f_biases) == 0 and len(list(model.parameters())) == 3
    assert model.n_generated == model.g_layer_sizes[0] * 6 + 6 * 2
    assert set(model.state_dict()) == set(make_model(z_encoding=encoding).state_dict())


def test_biases_are_drawn_after_every_other_parameter(rng):
    """bf > 0 keeps f's weights and the Fourier features of the same seed and adds biases."""
    arguments = {"f_depth": 3, "z_encoding": "fourier", "n_fourier_features": 5}
    plain = make_model(seed=4, **arguments)
    biased = make_model(seed=4, f_bias_variance=0.3, **arguments)
    for name, value in plain.state_dict().items():
        assert torch.equal(biased.state_dict()[name], value), name
    assert [tuple(b.shape) for b in biased.f_biases] == [(9,), (9,), (plain.n_generated,)]
    assert len(list(biased.parameters())) == 6
    # every bias gets a gradient (they are trained)
    x, z = make_rows(rng)
    biased(x, z).sum().backward()
    assert all(b.grad is not None and torch.any(b.grad != 0) for b in biased.f_biases)
    # the standard parameterisation stores sqrt(bf) beta and adds it as it is
    standard = make_model(seed=4, f_bias_variance=0.3, parameterization="standard", **arguments)
    for beta, bias in zip(biased.f_biases, standard.f_biases, strict=True):
        torch.testing.assert_close(bias, math.sqrt(0.3) * beta, rtol=1e-15, atol=0)
    torch.testing.assert_close(standard(x, z), biased(x, z), rtol=1e-12, atol=1e-12)


def test_rows_with_zero_x(rng):
    """x = 0: f(0) = 0 without f's biases, so g's generated biases vanish too."""
    x, z = make_rows(rng, 4)
    x[1] = 0.0
    for bg in (0.0, 0.8):
        model = make_model(f_depth=3, g_depth=2, g_bias_variance=bg)
        with torch.no_grad():
            out = model(x, z)
        assert torch.all(out[1] == 0) and torch.all(out[[0, 2, 3]] != 0)
        kernel = empirical_ntk(model, x, z)
        assert torch.all(kernel[1] == 0) and torch.all(kernel[:, 1] == 0)
    model = make_model(f_depth=3, g_depth=2, f_bias_variance=0.5, g_bias_variance=0.8)
    with torch.no_grad():
        assert torch.all(model(x, z)[1] != 0)
    assert torch.all(empirical_ntk(model, x, z)[1] != 0)


def test_module_pickled_before_biases_existed_still_runs(rng):
    """A module whose state has no bias attributes (pickled by an older version) is bias-free."""
    model = make_model(f_depth=3, g_depth=2)
    x, z = make_rows(rng)
    with torch.no_grad():
        expected = model(x, z)
    kernel = empirical_ntk(model, x, z)
    for name in ("f_bias_variance", "g_bias_variance", "_g_bias_sizes", "_f_bias_multiplier"):
        del model.__dict__[name]
    del model._modules["f_biases"]
    old = pickle.loads(pickle.dumps(model))
    with torch.no_grad():
        torch.testing.assert_close(old(x, z), expected, rtol=0, atol=0)
    torch.testing.assert_close(empirical_ntk(old, x, z), kernel, rtol=0, atol=0)


def test_extra_repr_names_the_bias_variances():
    text = repr(make_model(f_bias_variance=0.25, g_bias_variance=1.5))
    assert "f_bias_variance=0.25, g_bias_variance=1.5" in text


# ----------------------------------------------------------------- empirical NTK
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_empirical_ntk_equals_jacobian_gram(rng, architecture):
    """The layer-factorised kernel equals J J^T from torch.func.jacrev."""
    model = make_model(**architecture)
    x, z = make_rows(rng, 5)
    parameters = dict(model.named_parameters())
    jacobians = torch.func.jacrev(lambda p: torch.func.functional_call(model, p, (x, z)))(
        parameters
    )
    n_outputs = model.n_outputs
    jacobian = torch.cat([j.reshape(5, n_outputs, -1) for j in jacobians.values()], dim=-1)
    expected = torch.einsum("iop,jop->oij", jacobian, jacobian)
    per_output = empirical_ntk(model, x, z, reduce="none")
    assert per_output.shape == (n_outputs, 5, 5)
    torch.testing.assert_close(per_output, expected, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(empirical_ntk(model, x, z), expected.mean(0), rtol=1e-11, atol=1e-11)
    cross = empirical_ntk(model, x[:2], z[:2], x[1:], z[1:], reduce="none")
    torch.testing.assert_close(cross, expected[:, :2, 1:], rtol=1e-11, atol=1e-11)


def test_empirical_ntk_chunks_over_outputs(rng):
    model = make_model(f_depth=2, g_depth=2, n_outputs=5)
    x, z = make_rows(rng, 4)
    whole = empirical_ntk(model, x, z, reduce="none")
    set_config(ntk_chunk_elements=1)  # one output at a time
    torch.testing.assert_close(empirical_ntk(model, x, z, reduce="none"), whole, rtol=1e-14, atol=0)
    torch.testing.assert_close(empirical_ntk(model, x, z), whole.mean(0), rtol=1e-14, atol=0)


@pytest.mark.parametrize("f_width, g_width", [(1, 1), (4, 3), (300, 50)])
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("bf, bg", [(0.0, 0.0), (0.4, 0.0), (0.0, 0.6), (0.4, 0.6)])
def test_depth_one_ntk_is_bilinear_kernel_at_any_width(
    rng, f_width, g_width, parameterization, bf, bg
):
    """f_depth = g_depth = 1: K = (x.x'/n0 + bf)(z.z'/m0 + bg) exactly.

    ``h = u . y`` with ``u = (z / sqrt(m0), sqrt(bg))`` and ``y = W x / sqrt(n0) +
    sqrt(bf) beta``; "standard" (``y = W x + b``) gives ``(x.x' + [bf > 0])(z.z'/m0 + bg)``.
    """
    model = make_model(
        f_depth=1,
        g_depth=1,
        f_width=f_width,
        g_width=g_width,
        parameterization=parameterization,
        f_bias_variance=bf,
        g_bias_variance=bg,
    )
    x1, z1 = make_rows(rng, 6)
    x2, z2 = make_rows(rng, 4)
    x2[0] = 0.0
    if parameterization == "ntk":
        expected = (x1 @ x2.T / 3 + bf) * (z1 @ z2.T / 2 + bg)
    else:
        expected = (x1 @ x2.T + (1.0 if bf > 0 else 0.0)) * (z1 @ z2.T / 2 + bg)
    torch.testing.assert_close(
        empirical_ntk(model, x1, z1, x2, z2), expected, rtol=1e-10, atol=1e-14
    )


def test_fourier_features_approximate_the_gaussian_kernel(rng):
    length_scale = torch.tensor([0.7, 1.6], dtype=DTYPE)
    model = make_model(
        z_encoding="fourier",
        n_fourier_features=2**15,
        length_scale=length_scale.tolist(),
        g_depth=1,
    )
    _, z = make_rows(rng, 5)
    features = model.encode_z(z)
    approximate = features @ features.T / features.shape[1]
    scaled = z / length_scale
    exact = torch.exp(-0.5 * torch.cdist(scaled, scaled) ** 2)
    torch.testing.assert_close(approximate, exact, rtol=0, atol=0.03)


# ---------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"f_depth": 0}, "f_depth"),
        ({"g_depth": 0}, "g_depth"),
        ({"f_width": 0}, "f_width"),
        ({"g_width": -2}, "g_width"),
        ({"n_outputs": 0}, "n_outputs"),
        ({"x_dim": 0}, "x_dim"),
        ({"f_depth": 2.5}, "f_depth"),
        ({"n_fourier_features": 0}, "n_fourier_features"),
        ({"z_encoding": "rbf"}, "z_encoding"),
        ({"activation": "tanh"}, "activation"),
        ({"parameterization": "mup"}, "parameterization"),
        ({"negative_slope": float("nan")}, "negative_slope"),
        ({"z_encoding": "fourier", "length_scale": [1.0, 2.0, 3.0]}, "length_scale"),
        ({"z_encoding": "fourier", "length_scale": -1.0}, "length_scale"),
        ({"f_bias_variance": -0.1}, "f_bias_variance"),
        ({"g_bias_variance": -1}, "g_bias_variance"),
        ({"f_bias_variance": float("nan")}, "f_bias_variance"),
        ({"g_bias_variance": "1"}, "g_bias_variance"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_model(**kwargs)


def test_bad_empirical_ntk_arguments_raise(rng):
    model = make_model()
    x, z = make_rows(rng)
    with pytest.raises(ValueError, match="reduce"):
        empirical_ntk(model, x, z, reduce="sum")
    with pytest.raises(ValueError, match="both"):
        empirical_ntk(model, x, z, x2=x)
