"""The finite hypernetwork in torch: the ground truth of the kernels.

Needs PyTorch (``pip install sklearn-hyperkernel[torch]``; without it, importing
this module raises an ImportError that says so); the package imports it lazily. The
estimators :class:`~sklearn_hyperkernel.HypernetworkRegressor` and
:class:`~sklearn_hyperkernel.HypernetworkClassifier` train a
:class:`Hypernetwork`; use it directly to train it with your own loop, or to
compare its empirical hyperkernel (:func:`empirical_ntk`) with the closed
form :class:`~sklearn_hyperkernel.HyperKernel` (the paper's Fig. 1).

``h(u) = g(z; f(x))`` for rows ``u = (x, z)``: ``f`` is a fully connected
network of ``f_depth`` layers and hidden width ``f_width`` (or, with
``f_architecture="conv"``, ``f_depth - 1`` convolutional layers of ``f_width``
channels and a dense readout, see below) whose output, of size
``n_L = sum_l m_l * m_{l-1}`` (plus ``sum_l m_l`` with g's biases), is cut into
the weight matrices ``V^1, ..., V^H`` (and biases ``c^1, ..., c^H``) of the
primary network ``g`` (``g_depth`` layers, hidden width ``g_width``), one set
per row; ``g`` runs for the whole batch with batched matrix products. In the
``"ntk"`` parameterisation, with ``bf = f_bias_variance`` and
``bg = g_bias_variance`` (docs/math.md, "Biases")::

    f:  y^l = W^l q^{l-1} / sqrt(n_{l-1}) + sqrt(bf) beta^l     l = 1..L
    g:  g^l = V^l a^{l-1} / sqrt(m_{l-1}) + sqrt(bg) c^l        l = 1..H

with ``q^0 = x``, ``q^l = phi(y^l)``, ``a^0`` the encoding of ``z``,
``a^l = phi(g^l)``, ``h = g^H``; ``W^l`` and ``beta^l ~ N(0, 1)`` are f's
trained parameters (f's output layer has biases too: neural-tangents'
``Dense(b_std=sqrt(bf))``), ``V^l`` and ``c^l`` are outputs of ``f``. ``bf =
bg = 0`` (the defaults) is the paper's bias-free network: f then has no bias
parameters and does not output biases of g, and a seed draws exactly the
weights it drew before biases existed (the biases are drawn last). Only ``f``'s
weights and biases are trainable (the module's only parameters); the Fourier
features of ``z`` are fixed buffers.

Parameterisations: ``"ntk"`` (the one the kernels describe) draws every
entry of ``f``'s weights from ``N(0, 1)`` and each layer computes
``y = W q / sqrt(fan_in)``; ``"standard"`` draws them from
``N(0, 1 / fan_in)`` and computes ``y = W q`` (with ``sqrt(2) * relu``, He
initialisation); f's biases are ``beta ~ N(0, 1)`` times ``sqrt(bf)`` under
``"ntk"``, drawn from ``N(0, bf)`` and added as they are under ``"standard"``.
The network function at initialisation has the same distribution under both
(with one seed, the same function); only the gradients (hence the empirical
NTK and the training dynamics) differ, by ``fan_in`` per layer (by ``bf`` for
the biases). In both, ``g`` divides by ``sqrt(m_{l-1})`` in layer ``l`` (and
multiplies its biases by ``sqrt(bg)``) because its weights are generated.

Activation (of ``f`` and ``g``): ``"relu"`` is ``sqrt(2) * relu(s)``,
``"leaky_relu"`` is ``sqrt(2 / (1 + a^2)) * leaky_relu(s, a)`` with
``a = negative_slope``; both keep the second moment of a centred Gaussian
input, the normalisation the dual activations of
:mod:`sklearn_hyperkernel.recursions` assume (docs/math.md).

z encodings: ``"linear"`` feeds ``z`` itself (``m_0 = z_dim``);
``"fourier"`` feeds ``k = n_fourier_features`` random features
``sqrt(2) * cos(W (z / ell) + b)`` with fixed ``W ~ N(0, 1)`` of shape
``(k, z_dim)`` and ``b ~ U[-pi, pi]`` (``m_0 = k``); as ``k -> infinity`` the
input kernel ``a0(z) . a0(z') / k`` tends to
``exp(-0.5 * sum_d (z_d - z'_d)^2 / ell_d^2)`` (Rahimi & Recht, 2007).

A convolutional f (``f_architecture="conv"``, docs/math.md "A convolutional
f"): x is read as an image ``x.reshape(H, W, C0)`` (``image_shape``, row-major,
channels last), then ``D = f_depth - 1`` layers

    y^l = conv(W^l, q^{l-1}) / sqrt(k * k * C_{l-1}) + sqrt(bf) beta^l     l = 1..D

(``k = filter_size`` square filters ``W^l`` of shape (C_l, C_{l-1}, k, k),
stride 1, SAME zero padding ``k // 2``, ``C_l = f_width``, one bias per
channel, ``q^l = phi(y^l)``), then the dense readout
``y^L = W^L vec(q^D) / sqrt(H W C_D) + sqrt(bf) beta^L`` of the last map
flattened channels last (``H W C_D`` inputs), whose output is cut into g's
weights (and biases) as for the dense f. At the border the window sum still
divides by ``k * k`` (padded zeros count). ``f_depth=1`` is the dense f of
depth 1, drawn identically from one seed. Under ``"standard"`` the conv
weights are drawn from ``N(0, 1 / (k k C_{l-1}))``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ._params.architecture import activation_gain, activation_slope, check_f_input
from ._params.network_parameters import validate_network
from ._training.loop import import_torch
from ._utils.rows import distinct_rows
from ._utils.versioning import NETWORK_HISTORY, upgrade_state, versioned_state
from .config import get_config

torch = import_torch()  # an ImportError that says how to install it

__all__ = ["Hypernetwork", "empirical_ntk"]


class Hypernetwork(torch.nn.Module):
    """Finite hypernetwork ``h(x, z) = g(z; f(x))`` with per-row generated weights.

    In the ``"ntk"`` parameterisation (module text; docs/math.md, "Biases")::

        f:  y^l = W^l q^{l-1} / sqrt(n_{l-1}) + sqrt(bf) beta^l     l = 1..L
        g:  g^l = V^l a^{l-1} / sqrt(m_{l-1}) + sqrt(bg) c^l        l = 1..H

    ``W^l`` and ``beta^l`` (entries ``N(0, 1)``) are trained; ``V^l`` and
    ``c^l`` are cut from ``f``'s output, one set per row.

    The defaults are the paper's network (``"ntk"`` parameterisation, ``z``
    fed as it is), whose empirical hyperkernel (:func:`empirical_ntk`) tends
    to :class:`~sklearn_hyperkernel.HyperKernel` with ``z_encoding="linear"``
    as ``f_width`` and ``g_width`` grow; the estimators pass their own
    defaults. Call it as ``model(x, z)`` (see :meth:`forward`).

    Parameters
    ----------
    x_dim : int
        Number of input columns of ``f`` (``n0``), at least 1. Rows without
        x columns (the estimators' ``X`` with exactly ``z_dim`` columns, the
        kernels' ``n_x = 0``) are fed as the constant ``x = (1,)`` with
        ``x_dim=1``, so ``h`` is then an ordinary network of ``z``.
    z_dim : int
        Number of input columns of ``g`` before encoding.
    f_depth : int, default=3
        Number of weight matrices of ``f`` (``L``).
    f_width : int, default=256
        Hidden width of ``f`` (unused when ``f_depth == 1``); for a conv
        ``f``, the number of channels of every convolutional layer.
    g_depth : int, default=2
        Number of weight matrices of ``g`` (``H``).
    g_width : int, default=32
        Hidden width of ``g`` (unused when ``g_depth == 1``).
    n_outputs : int, default=1
        Output width of ``g`` (``m_H``).
    z_encoding : {"linear", "fourier"}, default="linear"
        Input of ``g``: ``z`` itself, or ``n_fourier_features`` random
        Fourier features of ``z / length_scale`` (see the module's text).
    length_scale : float or sequence of float, default=1.0
        Length scale of the Fourier features, one value or one per z column.
        Ignored by the linear encoding.
    n_fourier_features : int, default=256
        Number ``k`` of random Fourier features (``m_0`` of ``g``).
    parameterization : {"ntk", "standard"}, default="ntk"
        Initialisation and layer multipliers of ``f`` (see the module's
        text): the same function at initialisation, gradients scaled
        differently.
    activation : {"relu", "leaky_relu"}, default="relu"
        Activation of ``f`` and ``g``, scaled to keep the variance of its
        input.
    negative_slope : float, default=0.01
        Slope of the leaky relu for negative inputs; ignored by ``"relu"``.
    f_bias_variance : float >= 0, default=0.0
        ``bf``: variance of the biases of ``f``'s layers, its output layer
        included; trained parameters ``beta^l`` of ``f`` (drawn after all
        other random draws). 0: no bias parameters (the paper's ``f``).
    g_bias_variance : float >= 0, default=0.0
        ``bg``: ``g``'s layer ``l`` adds ``sqrt(bg) c^l``, where ``c^l`` (``m_l``
        numbers per row) are further outputs of ``f``. 0: ``f`` outputs no
        biases of ``g`` (the paper's ``g``).
    f_architecture : {"dense", "conv"}, default="dense"
        ``f`` an MLP on x, or ``f_depth - 1`` convolutional layers on x read as
        an image and a dense readout (see the module's text).
    image_shape : tuple (H, W) or (H, W, C) of int or None, default=None
        With ``"conv"`` (required there): the image x's ``x_dim`` columns
        hold, flattened row-major, channels last (``C = 1`` when omitted);
        ``H * W * C`` must equal ``x_dim``. Ignored by the dense ``f``.
    filter_size : int, default=3
        Side ``k`` of the square filters of a conv ``f``, a positive odd
        integer. Ignored by the dense ``f``.
    generator : torch.Generator or None, default=None
        CPU generator for all random draws (weights and Fourier features);
        ``None`` uses torch's global generator.
    dtype : torch.dtype, default=torch.float64
        Floating-point type of the weights and buffers.
    device : torch.device, str or None, default=None
        Where the module is moved after its weights are drawn (on the CPU,
        so that a generator gives the same network on every device); None
        leaves it on the CPU.

    Attributes
    ----------
    f_weights : torch.nn.ParameterList
        The trainable weight matrices of ``f``, each of shape (fan_out, fan_in);
        for a conv ``f`` the ``f_depth - 1`` filters first, each of shape
        (C_l, C_{l-1}, k, k), then the readout of shape
        (n_generated, H * W * C_D).
    f_biases : torch.nn.ParameterList
        The trainable biases of ``f``, each of shape (fan_out,) (``beta^l``,
        or ``sqrt(bf) beta^l`` under ``"standard"``; one per channel,
        shape (f_width,), for a conv layer); empty when
        ``f_bias_variance == 0``.
    g_layer_sizes : tuple of int
        ``(m_0, m_1, ..., m_H)``.
    f_layer_sizes : tuple of int
        ``(x_dim, f_width, ..., f_width, n_generated)``: the number of values
        per row of each layer's input and output; for a conv ``f``
        ``(H W C0, H W f_width, ..., H W f_width, n_generated)``.
    n_generated : int
        Number of weights (and biases) of ``g`` that ``f`` outputs per row.

    Raises
    ------
    ValueError
        Naming the parameter, when one is out of its range (a
        scikit-learn ``InvalidParameterError``; a negative bias variance
        included), when ``length_scale``
        has neither 1 nor ``z_dim`` entries or is not positive and finite, or
        (for ``"conv"``) when ``image_shape`` is missing, malformed or does not
        hold ``x_dim`` values, or ``filter_size`` is not a positive odd integer
        (:func:`~sklearn_hyperkernel._params.architecture.check_f_input`).

    Examples
    --------
    >>> import torch
    >>> from sklearn_hyperkernel.network import Hypernetwork, empirical_ntk
    >>> model = Hypernetwork(x_dim=3, z_dim=2, f_width=64, g_width=16,
    ...                      generator=torch.Generator().manual_seed(0))
    >>> x, z = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    >>> model(x, z).shape
    torch.Size([5, 1])
    >>> empirical_ntk(model, x, z).shape
    torch.Size([5, 5])

    A conv ``f`` on 5 x 4 images of 2 channels (``x_dim = 40``), 8 channels per layer:

    >>> conv = Hypernetwork(x_dim=40, z_dim=2, f_width=8, g_width=4, f_architecture="conv",
    ...                     image_shape=(5, 4, 2), generator=torch.Generator().manual_seed(0))
    >>> [tuple(w.shape) for w in conv.f_weights]
    [(8, 2, 3, 3), (8, 8, 3, 3), (12, 160)]
    >>> images = torch.randn(5, 40, dtype=torch.float64)
    >>> empirical_ntk(conv, images, z).shape
    torch.Size([5, 5])
    """

    # modules pickled before biases existed have none; before the conv f, a dense f
    f_bias_variance = g_bias_variance = 0.0
    _g_bias_sizes: tuple[int, ...] = ()
    f_architecture, image_shape, filter_size = "dense", None, 3
    _n_conv = 0  # number of convolutional layers of f (the first ones)

    def __init__(
        self,
        x_dim: int,
        z_dim: int,
        f_depth: int = 3,
        f_width: int = 256,
        g_depth: int = 2,
        g_width: int = 32,
        n_outputs: int = 1,
        z_encoding: str = "linear",
        length_scale: float | Sequence[float] = 1.0,
        n_fourier_features: int = 256,
        parameterization: str = "ntk",
        activation: str = "relu",
        negative_slope: float = 0.01,
        f_bias_variance: float = 0.0,
        g_bias_variance: float = 0.0,
        f_architecture: str = "dense",
        image_shape: Sequence[int] | None = None,
        filter_size: int = 3,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        architecture = {
            "x_dim": x_dim,
            "z_dim": z_dim,
            "f_depth": f_depth,
            "f_width": f_width,
            "g_depth": g_depth,
            "g_width": g_width,
            "n_outputs": n_outputs,
            "z_encoding": z_encoding,
            "n_fourier_features": n_fourier_features,
            "parameterization": parameterization,
            "activation": activation,
            "negative_slope": negative_slope,
            "f_bias_variance": f_bias_variance,
            "g_bias_variance": g_bias_variance,
            "f_architecture": f_architecture,
            "image_shape": image_shape,
            "filter_size": filter_size,
        }
        validate_network(architecture, caller_name=type(self).__name__)
        image = check_f_input(f_architecture, image_shape, filter_size, x_dim)
        for name, value in architecture.items():
            setattr(self, name, value)
        self.negative_slope = negative_slope = float(negative_slope)
        self.f_bias_variance = f_bias_variance = float(f_bias_variance)
        self.g_bias_variance = g_bias_variance = float(g_bias_variance)
        self.image_shape = None if image_shape is None else tuple(int(d) for d in image_shape)
        self._image = image  # (H, W, C0) of a conv f, else None
        self._n_conv = 0 if image is None else f_depth - 1
        self._activation_gain = activation_gain(activation, negative_slope)
        self._slope = activation_slope(activation, negative_slope)

        m0 = n_fourier_features if z_encoding == "fourier" else z_dim
        self.g_layer_sizes: tuple[int, ...] = (m0,) + (g_width,) * (g_depth - 1) + (n_outputs,)
        self._g_weight_shapes = [
            (self.g_layer_sizes[layer + 1], self.g_layer_sizes[layer]) for layer in range(g_depth)
        ]
        # f's flat output: V^1, ..., V^H (row-major), then c^1, ..., c^H when bg > 0
        self._g_bias_sizes = self.g_layer_sizes[1:] if g_bias_variance > 0 else ()
        self.n_generated = sum(rows * cols for rows, cols in self._g_weight_shapes) + sum(
            self._g_bias_sizes
        )
        # values per row of each layer's input and output (a conv map: H W channels)
        pixels = 1 if image is None else image[0] * image[1]
        self.f_layer_sizes: tuple[int, ...] = (
            (x_dim,) + (pixels * f_width,) * (f_depth - 1) + (self.n_generated,)
        )
        # each weight's shape (fan_out, fan_in) or (C_out, C_in, k, k) and fan-in
        shapes, fan_ins = [], []
        for layer, (size_in, size_out) in enumerate(
            zip(self.f_layer_sizes[:-1], self.f_layer_sizes[1:], strict=True)
        ):
            if layer < self._n_conv:
                channels_in = size_in // pixels
                shapes.append((f_width, channels_in, filter_size, filter_size))
                fan_ins.append(filter_size * filter_size * channels_in)
            else:
                shapes.append((size_out, size_in))
                fan_ins.append(size_in)

        def normal(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=generator, dtype=dtype)

        weights = []
        for shape, fan_in in zip(shapes, fan_ins, strict=True):
            w = normal(*shape)
            if parameterization == "standard":
                w = w / math.sqrt(fan_in)
            weights.append(torch.nn.Parameter(w))
        self.f_weights = torch.nn.ParameterList(weights)
        # multiplier of each f layer: y = c * W q
        self._f_multipliers = [
            1.0 / math.sqrt(fan_in) if parameterization == "ntk" else 1.0 for fan_in in fan_ins
        ]

        if z_encoding == "fourier":
            scales = torch.as_tensor(length_scale, dtype=dtype).reshape(-1)
            if scales.numel() not in (1, z_dim):
                raise ValueError(
                    f"length_scale must be a float or have z_dim={z_dim} entries, "
                    f"got {scales.numel()}."
                )
            if not bool(torch.all(torch.isfinite(scales) & (scales > 0))):
                raise ValueError("length_scale must be positive and finite.")
            self.register_buffer("length_scale", scales.expand(z_dim).clone())
            self.register_buffer("fourier_weight", normal(n_fourier_features, z_dim))
            phase = torch.rand(n_fourier_features, generator=generator, dtype=dtype)
            self.register_buffer("fourier_phase", (2.0 * phase - 1.0) * math.pi)
        # f's biases come last, so that bf = 0 draws the bias-free network of the same seed
        biases = []
        if f_bias_variance > 0:
            for shape in shapes:
                beta = normal(shape[0])  # one per output unit, or per channel
                if parameterization == "standard":
                    beta = beta * math.sqrt(f_bias_variance)
                biases.append(torch.nn.Parameter(beta))
        self.f_biases = torch.nn.ParameterList(biases)
        # multiplier of each bias: y = c W q + b beta (sqrt(bf) under "ntk", 1 under "standard")
        self._f_bias_multiplier = math.sqrt(f_bias_variance) if parameterization == "ntk" else 1.0
        if device is not None:
            self.to(device)

    # ------------------------------------------------------------------ pieces
    def _phi(self, s: torch.Tensor) -> torch.Tensor:
        if self._slope == 0.0:
            return self._activation_gain * torch.relu(s)
        return self._activation_gain * torch.nn.functional.leaky_relu(s, self._slope)

    def _phi_derivative(self, s: torch.Tensor) -> torch.Tensor:
        ones = torch.ones((), dtype=s.dtype, device=s.device)
        slope = torch.full((), self._slope, dtype=s.dtype, device=s.device)
        return self._activation_gain * torch.where(s > 0, ones, slope)

    def encode_z(self, z: torch.Tensor) -> torch.Tensor:
        """Input ``a^0`` of ``g``: ``z`` itself or its Fourier features.

        Parameters
        ----------
        z : torch.Tensor of shape (n_rows, z_dim)
            The z columns of the rows.

        Returns
        -------
        a0 : torch.Tensor of shape (n_rows, m_0)
            ``z``, or ``sqrt(2) * cos(W (z / length_scale) + b)``.
        """
        if self.z_encoding == "linear":
            return z
        projected = (z / self.length_scale) @ self.fourier_weight.T + self.fourier_phase
        return math.sqrt(2.0) * torch.cos(projected)

    def f_forward(
        self, x: torch.Tensor, return_hidden: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Output of ``f``: the flat generated weights, one row per x row.

        Parameters
        ----------
        x : torch.Tensor of shape (n_rows, x_dim)
            The x columns of the rows (for a conv ``f``, each an image
            flattened row-major, channels last).
        return_hidden : bool, default=False
            Also return the layer inputs ``q^0..q^{L-1}`` and pre-activations
            ``y^1..y^L`` (used by :func:`empirical_ntk`).

        Returns
        -------
        y : torch.Tensor of shape (n_rows, n_generated)
            The generated weights of ``g``, flat (see :meth:`split_generated`).
        layer_inputs, preactivations : lists of torch.Tensor
            Only with ``return_hidden``. Of shape (n_rows, fan_in) and
            (n_rows, fan_out) for a dense layer; for a conv layer its input
            map (n_rows, C_{l-1}, H, W) and pre-activation map
            (n_rows, C_l, H, W); the readout's input is the last map flattened
            channels last, shape (n_rows, H * W * C_D).
        """
        q = x
        if self._n_conv:
            height, width, channels = self._image
            q = x.reshape(-1, height, width, channels).permute(0, 3, 1, 2)
        layer_inputs, preactivations = [], []
        for index, (weight, multiplier) in enumerate(
            zip(self.f_weights, self._f_multipliers, strict=True)
        ):
            conv = index < self._n_conv
            if self._n_conv and index == self._n_conv:
                q = q.permute(0, 2, 3, 1).reshape(q.shape[0], -1)  # the readout's input
            layer_inputs.append(q)
            if conv:
                y = torch.nn.functional.conv2d(q, weight, padding=weight.shape[-1] // 2)
            else:
                y = q @ weight.T
            if multiplier != 1.0:
                y = y * multiplier
            if self.f_bias_variance > 0:
                bias = self.f_biases[index] * self._f_bias_multiplier
                y = y + (bias[:, None, None] if conv else bias)
            preactivations.append(y)
            if index < self.f_depth - 1:
                q = self._phi(y)
        if return_hidden:
            return y, layer_inputs, preactivations
        return y

    def split_generated(
        self, flat_weights: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Cut ``f``'s flat output into the per-row weights and biases of ``g``.

        The flat output holds ``V^1, ..., V^H`` (each row-major), then, when
        ``g_bias_variance > 0``, ``c^1, ..., c^H``.

        Parameters
        ----------
        flat_weights : torch.Tensor of shape (n_rows, n_generated)
            Output of :meth:`f_forward`.

        Returns
        -------
        layers : list of (torch.Tensor, torch.Tensor or None)
            ``(V^l, c^l)`` for l = 1..H (views): ``V^l`` of shape
            (n_rows, m_l, m_{l-1}), ``c^l`` of shape (n_rows, m_l), or None
            when ``g_bias_variance == 0``.
        """
        matrices, start = [], 0
        for rows, cols in self._g_weight_shapes:
            stop = start + rows * cols
            matrices.append(flat_weights[:, start:stop].reshape(-1, rows, cols))
            start = stop
        biases: list[torch.Tensor | None] = [None] * len(matrices)
        for layer, size in enumerate(self._g_bias_sizes):
            biases[layer] = flat_weights[:, start : start + size]
            start += size
        return list(zip(matrices, biases, strict=True))

    def g_forward(
        self,
        generated: list[tuple[torch.Tensor, torch.Tensor | None]],
        z: torch.Tensor,
        return_hidden: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Primary network ``g`` with per-row weights and biases, evaluated batched.

        Layer ``l`` computes ``V^l a^{l-1} / sqrt(m_{l-1}) + sqrt(bg) c^l``.

        Parameters
        ----------
        generated : list of (torch.Tensor, torch.Tensor or None)
            ``(V^l, c^l)`` as from :meth:`split_generated`: ``V^l`` of shape
            (n_rows, m_l, m_{l-1}), ``c^l`` of shape (n_rows, m_l) or None
            (no bias).
        z : torch.Tensor of shape (n_rows, z_dim)
            The z columns of the rows (encoded by :meth:`encode_z`).
        return_hidden : bool, default=False
            Also return the layer inputs ``a^0..a^{H-1}`` of ``g``.

        Returns
        -------
        out : torch.Tensor of shape (n_rows, n_outputs)
            ``g`` of every row, with its own weights.
        layer_inputs : list of torch.Tensor
            Only with ``return_hidden``.
        """
        activation = self.encode_z(z)
        layer_inputs = []
        for index, (matrix, bias) in enumerate(generated):
            layer_inputs.append(activation)
            fan_in = matrix.shape[-1]
            pre = torch.bmm(matrix, activation.unsqueeze(-1)).squeeze(-1) / math.sqrt(fan_in)
            if bias is not None:
                pre = pre + bias * math.sqrt(self.g_bias_variance)
            activation = self._phi(pre) if index < self.g_depth - 1 else pre
        if return_hidden:
            return activation, layer_inputs
        return activation

    def __getstate__(self) -> dict:
        # the version that pickles it, checked by __setstate__
        return versioned_state(super().__getstate__())

    def __setstate__(self, state: dict) -> None:
        # an older pickle gains the architecture arguments added since, at their
        # old values, or is refused naming both versions
        super().__setstate__(
            upgrade_state(type(self), state, NETWORK_HISTORY, stores_all_parameters=False)
        )

    def forward(
        self,
        x: torch.Tensor,
        z: torch.Tensor,
        x_index: torch.Tensor | None = None,
        deduplicate_x: bool = False,
    ) -> torch.Tensor:
        """Evaluate ``h(x, z)`` for a batch.

        Parameters
        ----------
        x : torch.Tensor of shape (n_rows, x_dim) or (n_unique, x_dim)
            One x per row, or, with ``x_index``, the distinct x's only.
        z : torch.Tensor of shape (n_rows, z_dim)
            The z columns of the rows.
        x_index : torch.Tensor of shape (n_rows,) or None, default=None
            Row ``i`` uses ``x[x_index[i]]``; ``f`` runs once per row of ``x``.
        deduplicate_x : bool, default=False
            Find the distinct rows of ``x`` first (exactly equal rows, by the
            package's row de-duplication) and run ``f`` on those only.
            Ignored when ``x_index`` is given. Pays off when many rows share
            one x (e.g. one image, many pixel coordinates).

        Returns
        -------
        out : torch.Tensor of shape (n_rows, n_outputs)
            ``h`` of every row.

        Raises
        ------
        ValueError
            If ``x`` (through ``x_index``) and ``z`` give different numbers
            of rows.
        """
        if x_index is None and deduplicate_x:
            x, x_index = distinct_rows(x)
        flat = self.f_forward(x)
        if x_index is not None:
            flat = flat[x_index]
        if flat.shape[0] != z.shape[0]:
            raise ValueError(
                f"x gives {flat.shape[0]} rows but z has {z.shape[0]}; pass x_index "
                "when x holds distinct rows only."
            )
        return self.g_forward(self.split_generated(flat), z)

    def extra_repr(self) -> str:
        return (
            f"x_dim={self.x_dim}, z_dim={self.z_dim}, f_depth={self.f_depth}, "
            f"f_width={self.f_width}, g_depth={self.g_depth}, g_width={self.g_width}, "
            f"n_outputs={self.n_outputs}, z_encoding={self.z_encoding!r}, "
            f"parameterization={self.parameterization!r}, activation={self.activation!r}, "
            f"f_bias_variance={self.f_bias_variance}, g_bias_variance={self.g_bias_variance}"
            + (
                f", f_architecture='conv', image_shape={self.image_shape}, "
                f"filter_size={self.filter_size}"
                if self.f_architecture == "conv"
                else ""
            )
        )


def _f_layer_inputs(model: Hypernetwork, x: torch.Tensor):
    with torch.no_grad():
        return model.f_forward(x, return_hidden=True)


def _backpropagated_vectors(
    model: Hypernetwork,
    flat: torch.Tensor,
    preactivations: list[torch.Tensor],
    z: torch.Tensor,
    outputs: range,
) -> list[torch.Tensor]:
    """``dh_o / dy^l`` for every row, output ``o`` in ``outputs`` and layer ``l`` of ``f``.

    Returns a list over the layers of ``f`` of tensors of shape
    (len(outputs), n_rows, fan_out_l), or (len(outputs), n_rows, C_l, H, W) for a
    conv layer.
    """
    with torch.enable_grad():
        flat_leaf = flat.detach().requires_grad_(True)
        out = model.g_forward(model.split_generated(flat_leaf), z)
        # Rows are independent, so the gradient of a column sum is the per-row gradient.
        selector = torch.zeros(len(outputs), *out.shape, dtype=out.dtype, device=out.device)
        for position, output in enumerate(outputs):
            selector[position, :, output] = 1.0
        (delta,) = torch.autograd.grad(out, flat_leaf, grad_outputs=selector, is_grads_batched=True)
    deltas = [delta]
    with torch.no_grad():
        for index in range(model.f_depth - 1, 0, -1):
            weight, multiplier = model.f_weights[index], model._f_multipliers[index]
            below = preactivations[index - 1]
            if index < model._n_conv:  # conv -> conv: the transposed convolution
                maps = deltas[0].reshape(-1, *deltas[0].shape[2:])
                back = torch.nn.functional.conv_transpose2d(
                    maps, weight, padding=weight.shape[-1] // 2
                ).reshape(*deltas[0].shape[:2], *below.shape[1:])
            else:
                back = deltas[0] @ weight
                if below.dim() == 4:  # readout -> the last map (flattened channels last)
                    _, channels, height, width = below.shape
                    back = back.reshape(*back.shape[:2], height, width, channels)
                    back = back.permute(0, 1, 4, 2, 3)
            deltas.insert(0, back * multiplier * model._phi_derivative(below))
    return deltas


def _conv_layer_kernel(
    q1: torch.Tensor,
    d1: torch.Tensor,
    q2: torch.Tensor,
    d2: torch.Tensor,
    filter_size: int,
    multiplier: float,
    bias_square: float,
) -> torch.Tensor:
    """A conv layer's term of ``J J^T``, of shape (n_outputs, n1, n2).

    ``q``: the layer's input maps, (n, C_in, H, W); ``d = dh / dy``, (n_outputs,
    n, C_out, H, W). Row ``i``'s gradient over the filters is ``c G_i`` with
    ``G_i = sum_p d_i(p) patch_i(p)^T`` (the ``k x k x C_in`` input values around
    ``p``, zero padded), over the channel biases ``b sum_p d_i(p)``; the term is
    ``c^2 <G_i, G_j> + b^2 (sum_p d_i(p)) . (sum_p d_j(p))``. ``G`` is formed for
    a chunk of rows at a time, at most ``ntk_chunk_elements`` values with the chunk's
    patches (``C_out C_in k^2 + C_in k^2 H W`` per row and output); a chunk of the
    second set of rows is formed again for every chunk of the first, so the time
    grows as ``n1 n2 / chunk`` row gradients when the rows do not fit one chunk.
    """
    n_outputs, n1, channels_out = d1.shape[:3]
    n2 = d2.shape[1]
    pixels = d1.shape[3] * d1.shape[4]
    patch = q1.shape[1] * filter_size * filter_size
    per_row = n_outputs * channels_out * patch + patch * pixels
    rows = max(1, get_config()["ntk_chunk_elements"] // max(1, per_row))

    def gradients(q: torch.Tensor, d: torch.Tensor, chunk: slice) -> torch.Tensor:
        patches = torch.nn.functional.unfold(q[chunk], filter_size, padding=filter_size // 2)
        flat = d[:, chunk].reshape(n_outputs, -1, channels_out, pixels)
        return (flat @ patches.transpose(1, 2).unsqueeze(0)).reshape(n_outputs, flat.shape[1], -1)

    same = q1 is q2 and d1 is d2  # a symmetric Gram: the blocks above the diagonal, mirrored
    kernel = torch.empty(n_outputs, n1, n2, dtype=d1.dtype, device=d1.device)
    for start1 in range(0, n1, rows):
        chunk1 = slice(start1, min(start1 + rows, n1))
        g1 = gradients(q1, d1, chunk1)
        for start2 in range(start1 if same else 0, n2, rows):
            chunk2 = slice(start2, min(start2 + rows, n2))
            g2 = g1 if same and start2 == start1 else gradients(q2, d2, chunk2)
            block = (multiplier * multiplier) * (g1 @ g2.transpose(1, 2))
            kernel[:, chunk1, chunk2] = block
            if same and start2 != start1:
                kernel[:, chunk2, chunk1] = block.transpose(1, 2)
    if bias_square:
        sums1, sums2 = d1.sum(dim=(3, 4)), d2.sum(dim=(3, 4))
        kernel += bias_square * (sums1 @ sums2.transpose(1, 2))
    return kernel


def empirical_ntk(
    model: Hypernetwork,
    x1: torch.Tensor,
    z1: torch.Tensor,
    x2: torch.Tensor | None = None,
    z2: torch.Tensor | None = None,
    reduce: str = "mean",
) -> torch.Tensor:
    """Empirical hyperkernel ``J J^T`` with respect to ``f``'s weights and biases.

    For a layer ``y = c W q + b beta`` the gradient of ``h`` with respect to
    ``W`` is ``c * delta q^T`` and with respect to ``beta`` is ``b * delta``,
    with ``delta = dh / dy``, so the layer contributes
    ``(c^2 (q . q') + b^2) (delta . delta')`` (``b = 0`` without biases); a
    conv layer (``f_architecture="conv"``) contributes
    ``c^2 <G, G'> + b^2 (sum_p delta(p)) . (sum_p delta'(p))`` with the filter
    gradient ``G = sum_p delta(p) patch(p)^T`` over the positions ``p``. The
    kernel is the sum of these layer terms. This is exactly ``J J^T`` (tested against
    ``torch.func.jacrev``) without ever forming ``J``.

    Parameters
    ----------
    model : Hypernetwork
        The network, at its current weights.
    x1 : torch.Tensor of shape (n1, x_dim)
        The x columns of the first set of rows.
    z1 : torch.Tensor of shape (n1, z_dim)
        Their z columns.
    x2, z2 : torch.Tensor of shape (n2, ...) or None, default=None
        Second set of rows; ``None`` means the first set again.
    reduce : {"mean", "none"}, default="mean"
        How the ``n_outputs`` output units are combined. Output unit ``o``
        has its own kernel ``<dh_o(u)/dw, dh_o(u')/dw>``; each is one sample
        of the same limit kernel. ``"mean"`` returns their average, shape
        (n1, n2) (for ``n_outputs == 1`` simply the kernel of the scalar
        output); ``"none"`` returns them all, shape (n_outputs, n1, n2).
        Cross-output blocks are not computed (their limit is zero).

    Returns
    -------
    kernel : torch.Tensor of shape (n1, n2) or (n_outputs, n1, n2)
        Detached, on the model's device and dtype.

    Raises
    ------
    ValueError
        If ``reduce`` is unknown, or only one of ``x2`` and ``z2`` is given.
    """
    if reduce not in ("mean", "none"):
        raise ValueError(f"reduce must be 'mean' or 'none', got {reduce!r}.")
    if (x2 is None) != (z2 is None):
        raise ValueError("Pass both x2 and z2, or neither.")
    same = x2 is None
    flat1, inputs1, pre1 = _f_layer_inputs(model, x1)
    if not same:
        flat2, inputs2, pre2 = _f_layer_inputs(model, x2)
    n1 = x1.shape[0]
    n2 = n1 if same else x2.shape[0]
    # Outputs are processed in chunks so the backpropagated vectors stay small.
    widest = max(model.f_layer_sizes[1:])
    chunk = max(1, get_config()["ntk_chunk_elements"] // max(1, (n1 + n2) * widest))
    # the squared multiplier of f's biases (0 without biases)
    bias_square = model._f_bias_multiplier**2 if model.f_bias_variance > 0 else 0.0
    kernels = []
    for first in range(0, model.n_outputs, chunk):
        outputs = range(first, min(first + chunk, model.n_outputs))
        deltas1 = _backpropagated_vectors(model, flat1, pre1, z1, outputs)
        deltas2 = deltas1 if same else _backpropagated_vectors(model, flat2, pre2, z2, outputs)
        kernel = None
        with torch.no_grad():
            for layer, c in enumerate(model._f_multipliers):
                q1 = inputs1[layer]
                q2 = q1 if same else inputs2[layer]
                d1 = deltas1[layer]
                d2 = d1 if same else deltas2[layer]
                if layer < model._n_conv:
                    term = _conv_layer_kernel(q1, d1, q2, d2, model.filter_size, c, bias_square)
                else:
                    inputs = (c * c) * (q1 @ q2.T) + bias_square
                    term = inputs * (d1 @ d2.transpose(1, 2))
                kernel = term if kernel is None else kernel + term
        kernels.append(kernel.sum(dim=0) if reduce == "mean" else kernel)
    if reduce == "mean":
        return torch.stack(kernels).sum(dim=0) / model.n_outputs
    return torch.cat(kernels, dim=0)
