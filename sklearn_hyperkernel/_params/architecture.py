"""The architecture of a hypernetwork, declared once.

The kernels (:mod:`~sklearn_hyperkernel.kernels`), the kernel estimator
(:class:`~sklearn_hyperkernel.HyperKernelRegressor`), the finite torch network
and its estimators all describe the same network: f of ``f_depth`` weight
matrices reads x, g of ``g_depth`` weight matrices reads (an encoding of) z,
with one activation. This module holds what they share, so that it cannot
drift between them:

* the accepted values and constraints of the architecture parameters, in
  scikit-learn's parameter-validation form (:data:`CONSTRAINTS`), and one
  validator (:func:`validate_architecture`) for classes that are not
  estimators (the kernels, the torch module);
* the rule for the columns of ``X`` (:func:`check_z_dim`, :func:`x_width`);
* the rule for f's input: an MLP on x, or a convolutional network on x read
  as an image (:data:`F_ARCHITECTURES`, :func:`check_f_input`);
* the activation's variance-keeping gain (:func:`activation_gain`), used by the
  closed forms' duals and by the finite network;
* the numpydoc text of the shared parameters (:func:`parameters_doc`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.utils._param_validation import (
    Interval,
    StrOptions,
    validate_parameter_constraints,
)

__all__ = [
    "ENCODINGS",
    "ACTIVATIONS",
    "F_ARCHITECTURES",
    "check_f_input",
    "CONSTRAINTS",
    "activation_gain",
    "activation_slope",
    "check_z_dim",
    "x_width",
    "validate_architecture",
    "parameters_doc",
]

#: encodings of z accepted by every class (the kernels' Gaussian limit, or z itself)
ENCODINGS = ("fourier", "linear")
#: activations of f and g
ACTIVATIONS = ("relu", "leaky_relu")
#: networks f can be: an MLP on x, or convolutions on x read as an image and a dense readout
F_ARCHITECTURES = ("dense", "conv")

#: scikit-learn parameter constraints of the architecture parameters
CONSTRAINTS: dict[str, list] = {
    "z_dim": [Interval(Integral, 1, None, closed="left")],
    "f_depth": [Interval(Integral, 1, None, closed="left")],
    "g_depth": [Interval(Integral, 1, None, closed="left")],
    "z_encoding": [StrOptions(set(ENCODINGS))],
    "length_scale": [Interval(Real, 0, None, closed="neither"), "array-like"],
    "activation": [StrOptions(set(ACTIVATIONS))],
    "negative_slope": [Interval(Real, None, None, closed="neither")],
    "normalize_x": ["boolean"],
    "f_bias_variance": [Interval(Real, 0, None, closed="left")],
    "g_bias_variance": [Interval(Real, 0, None, closed="left")],
    "f_architecture": [StrOptions(set(F_ARCHITECTURES))],
    "image_shape": [None, "array-like"],
    "filter_size": [Interval(Integral, 1, None, closed="left")],
}


def validate_architecture(params: Mapping[str, Any], caller_name: str) -> None:
    """Check the architecture parameters among ``params`` against :data:`CONSTRAINTS`.

    Parameters
    ----------
    params : mapping of str to object
        Parameter values by name; names that are not architecture parameters
        are ignored.
    caller_name : str
        The class named in the error message.

    Raises
    ------
    ValueError
        (scikit-learn's ``InvalidParameterError``) naming the parameter, its
        accepted values and the value given.
    """
    constraints = {name: CONSTRAINTS[name] for name in params if name in CONSTRAINTS}
    validate_parameter_constraints(constraints, dict(params), caller_name=caller_name)


def check_z_dim(z_dim: int, n_features: int) -> None:
    """Raise unless ``X`` of ``n_features`` columns has its ``z_dim`` columns of z.

    The last ``z_dim`` columns of each row are z and the columns before them
    x; ``X`` of exactly ``z_dim`` columns has no x (every row then shares the
    constant ``x = (1,)``, see :func:`x_width`).

    Raises
    ------
    ValueError
        When ``n_features < z_dim``; the message starts with ``"X has
        {n_features} feature(s)"``, as scikit-learn's checks expect.
    """
    if n_features < z_dim:
        raise ValueError(
            f"X has {n_features} feature(s), but z_dim={z_dim} needs at least {z_dim}: the "
            "last z_dim columns of each row are z (the columns before them are x; with none, "
            "x is the constant 1)."
        )


def x_width(n_features: int, z_dim: int) -> int:
    """Number of x columns f reads: ``n_features - z_dim``, or 1 for the constant x."""
    return max(n_features - z_dim, 1)


def check_f_input(
    f_architecture: str,
    image_shape: Any,
    filter_size: Any,
    n_x_features: int,
) -> tuple[int, int, int] | None:
    """Check f's input parameters against x's width; the image's ``(H, W, C)`` for a conv f.

    Parameters
    ----------
    f_architecture : {"dense", "conv"}
        ``"dense"``: f is an MLP on x (``image_shape`` and ``filter_size`` are
        then ignored). ``"conv"``: f reads x as an image, ``x.reshape(H, W, C)``
        (row-major, channels last), through ``f_depth - 1`` convolutions of
        ``filter_size x filter_size`` filters and a dense readout
        (docs/math.md, "A convolutional f").
    image_shape : tuple (H, W) or (H, W, C) of positive integers, or None
        Needed for ``"conv"``; ``C = 1`` when omitted.
    filter_size : int
        A positive odd integer (SAME padding needs a centre pixel).
    n_x_features : int
        Number of x columns f reads (:func:`x_width`).

    Returns
    -------
    tuple of 3 ints or None
        ``(H, W, C)`` for ``"conv"``; None for ``"dense"``.

    Raises
    ------
    ValueError
        Naming the parameter and the numbers: an unknown ``f_architecture``;
        ``"conv"`` without ``image_shape``; an ``image_shape`` that is not 2 or
        3 positive integers, or whose product is not ``n_x_features``; a
        ``filter_size`` that is not a positive odd integer.
    """
    if f_architecture not in F_ARCHITECTURES:
        raise ValueError(
            f"f_architecture must be one of {list(F_ARCHITECTURES)}; got {f_architecture!r}."
        )
    if f_architecture == "dense":
        return None
    if image_shape is None:
        raise ValueError(
            "f_architecture='conv' needs image_shape=(H, W) or (H, W, C): the shape of the "
            f"image each row's {n_x_features} x columns hold (row-major, channels last)."
        )
    try:
        dims = [int(d) for d in image_shape]
        exact = all(int(d) == d for d in image_shape)
    except (TypeError, ValueError):
        dims, exact = [], False
    if not exact or len(dims) not in (2, 3) or min(dims) < 1:
        raise ValueError(
            "image_shape must be 2 or 3 positive integers, (H, W) or (H, W, C); "
            f"got {image_shape!r}."
        )
    height, width, channels = (*dims, 1) if len(dims) == 2 else dims
    if height * width * channels != n_x_features:
        raise ValueError(
            f"image_shape={tuple(dims)} holds {height * width * channels} values per image, "
            f"but x has {n_x_features} column(s): with f_architecture='conv' x's columns are "
            "the image flattened row-major, channels last."
        )
    if (
        isinstance(filter_size, bool)
        or not isinstance(filter_size, (int, np.integer))
        or filter_size < 1
        or filter_size % 2 == 0
    ):
        raise ValueError(
            f"filter_size must be a positive odd integer (SAME padding centres the filter); "
            f"got {filter_size!r}."
        )
    return height, width, channels


def activation_slope(activation: str, negative_slope: float) -> float:
    """Slope ``a`` for negative inputs: ``negative_slope`` for leaky ReLU, else 0."""
    return float(negative_slope) if activation == "leaky_relu" else 0.0


def activation_gain(activation: str, negative_slope: float) -> float:
    """Gain ``sqrt(2 / (1 + a^2))`` that makes the activation keep its input's variance.

    ``phi(s) = gain * leaky_relu_a(s)`` has ``E[phi(s)^2] = E[s^2]`` for a
    centred Gaussian ``s`` (``a = 0`` is the ReLU: ``sqrt(2) * relu``); the
    closed forms' duals (docs/math.md) assume exactly this normalisation.
    """
    slope = activation_slope(activation, negative_slope)
    return math.sqrt(2.0 / (1.0 + slope * slope))


_DOCS = {
    "z_dim": """\
    z_dim : int, default=2
        Number of trailing columns of each row that are z, the input of the
        primary network g; the columns before them are x, the input of the
        hypernetwork f. The default serves image + 2-D pixel-coordinate rows.
        Rows of exactly ``z_dim`` columns have no x: every row then shares
        the constant x = (1,) (docs/math.md, "No x columns").""",
    "f_depth": """\
    f_depth : int, default=3
        Number of weight matrices ``L`` of f (the paper's Table 1 setting).""",
    "g_depth": """\
    g_depth : int, default=2
        Number of weight matrices ``H`` of g.""",
    "z_encoding": """\
    z_encoding : {"fourier", "linear"}, default="fourier"
        How g reads z. ``"fourier"``: random Fourier features of
        ``z / length_scale``, whose infinite limit is the Gaussian kernel
        ``exp(-sum_d (z_d - z'_d)^2 / (2 length_scale_d^2))`` (paper, Remarks
        2-3); it can represent any smooth function of z, hence the default.
        ``"linear"``: z itself, input kernel ``z.z' / m0`` (the paper's
        bias-free g, positively homogeneous in z, so it cannot fit a general
        function of a coordinate: pass it for the paper's Theorem 2-3 forms).""",
    "length_scale": """\
    length_scale : float or array-like of shape (z_dim,), default=0.5
        Length scale of the Fourier encoding, in the units of z; one per z
        column gives an anisotropic encoding; unused with ``"linear"``. 0.5
        suits coordinates in ``[-1, 1]`` and standardised columns (the user
        guide explains the choice).""",
    "activation": """\
    activation : {"relu", "leaky_relu"}, default="relu"
        Activation of f and g: ``sqrt(2) * relu``, or
        ``sqrt(2 / (1 + a^2)) * leaky_relu_a`` with ``a = negative_slope``
        (normalised so that each layer keeps the variance of its input).""",
    "negative_slope": """\
    negative_slope : float, default=0.01
        Slope ``a`` of the leaky ReLU for negative inputs; ignored for
        ``"relu"``.""",
    "f_bias_variance": """\
    f_bias_variance : float >= 0, default=0.0
        Variance ``bf`` of the biases of f's layers, its output layer
        included: ``y^l = W^l q^{l-1} / sqrt(n_{l-1}) + sqrt(bf) beta^l`` with
        ``beta^l ~ N(0, 1)`` trained (NTK parameterisation, as
        neural-tangents' ``Dense(b_std=sqrt(bf))``). 0 is the paper's
        bias-free f (docs/math.md, "Biases").""",
    "g_bias_variance": """\
    g_bias_variance : float >= 0, default=0.0
        Variance ``bg`` of the biases of g's layers, which f generates like
        g's weights: ``g^l = V^l a^{l-1} / sqrt(m_{l-1}) + sqrt(bg) c^l`` with
        ``c^l`` further outputs of f. 0 is the paper's bias-free g
        (docs/math.md, "Biases").""",
    "f_architecture": """\
    f_architecture : {"dense", "conv"}, default="dense"
        The hypernetwork f. ``"dense"``: an MLP of ``f_depth`` weight layers on
        x. ``"conv"``: ``f_depth - 1`` convolutional layers (``filter_size``
        square filters, stride 1, SAME zero padding, the activation after
        each) on x read as an image of ``image_shape``, then one dense readout
        of the flattened feature map; ``f_depth=1`` is the same model for both
        (docs/math.md, "A convolutional f").""",
    "image_shape": """\
    image_shape : tuple of int (H, W) or (H, W, C), default=None
        With ``f_architecture="conv"`` (where it is required): the image each
        row's x columns hold, flattened row-major, channels last
        (``x.reshape(H, W, C)``; ``C = 1`` when omitted); ``H * W * C`` must
        be x's width. Ignored by the dense f.""",
    "filter_size": """\
    filter_size : int, default=3
        Side of the square filters of a conv f, a positive odd integer.
        Ignored by the dense f.""",
}


def parameters_doc(*names: str, extra: Mapping[str, str] | None = None) -> str:
    """numpydoc entries of the shared parameters ``names``, in that order.

    ``extra`` maps a name to a class's own entry (a parameter only it has, or
    one whose text differs, such as ``length_scale`` of a kernel, which is a
    hyperparameter); it takes precedence over the shared text.
    """
    entries = {**_DOCS, **(extra or {})}
    return "\n".join(entries[name] for name in names) + "\n"
