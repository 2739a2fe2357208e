"""The finite hypernetwork in torch: the ground truth of the kernels.

Needs PyTorch (``pip install sklearn-hyperkernel[torch]``; without it, importing
this module raises an ImportError that says so); the package imports it lazily. The
estimators :class:`~sklearn_hyperkernel.HypernetworkRegressor` and
:class:`~sklearn_hyperkernel.HypernetworkClassifier` train a
:class:`Hypernetwork`; use it directly to train it with your own loop, or to
compare its empirical hyperkernel (:func:`empirical_ntk`) with the closed
form :class:`~sklearn_hyperkernel.HyperKernel` (the paper's Fig. 1).

``h(u) = g(z; f(x))`` for rows ``u = (x, z)``: ``f`` is a bias-free fully
connected network of ``f_depth`` weight matrices and hidden width ``f_width``
whose output, of size ``n_L = sum_l m_l * m_{l-1}``, is cut into the weight
matrices ``V^1, ..., V^H`` of the primary network ``g`` (bias-free,
``g_depth`` matrices, hidden width ``g_width``), one set per row; ``g`` runs
for the whole batch with batched matrix products. Only ``f``'s weights are
trainable (the module's only parameters); the Fourier features of ``z`` are
fixed buffers.

Parameterisations: ``"ntk"`` (the one the kernels describe) draws every
entry of ``f``'s weights from ``N(0, 1)`` and each layer computes
``y = W q / sqrt(fan_in)``; ``"standard"`` draws them from
``N(0, 1 / fan_in)`` and computes ``y = W q`` (with ``sqrt(2) * relu``, He
initialisation). The network function at initialisation has the same
distribution under both; only the gradients (hence the empirical NTK and the
training dynamics) differ, by ``fan_in`` per layer. In both, ``g`` divides by
``sqrt(m_{l-1})`` in layer ``l`` because its weights are generated.

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
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ._architecture import activation_gain, activation_slope
from ._network_parameters import validate_network
from ._rows import distinct_rows
from ._training import import_torch
from ._versioning import NETWORK_HISTORY, upgrade_state, versioned_state
from .config import get_config

torch = import_torch()  # an ImportError that says how to install it

__all__ = ["Hypernetwork", "empirical_ntk"]


class Hypernetwork(torch.nn.Module):
    """Finite hypernetwork ``h(x, z) = g(z; f(x))`` with per-row generated weights.

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
        Hidden width of ``f`` (unused when ``f_depth == 1``).
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
        The trainable weight matrices of ``f``, each of shape (fan_out, fan_in).
    g_layer_sizes : tuple of int
        ``(m_0, m_1, ..., m_H)``.
    f_layer_sizes : tuple of int
        ``(x_dim, f_width, ..., f_width, n_generated)``.
    n_generated : int
        Number of weights of ``g`` that ``f`` outputs per row.

    Raises
    ------
    ValueError
        Naming the parameter, when one is out of its range (a
        scikit-learn ``InvalidParameterError``), or when ``length_scale``
        has neither 1 nor ``z_dim`` entries or is not positive and finite.

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
    """

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
        }
        validate_network(architecture, caller_name=type(self).__name__)
        for name, value in architecture.items():
            setattr(self, name, value)
        self.negative_slope = negative_slope = float(negative_slope)
        self._activation_gain = activation_gain(activation, negative_slope)
        self._slope = activation_slope(activation, negative_slope)

        m0 = n_fourier_features if z_encoding == "fourier" else z_dim
        self.g_layer_sizes: tuple[int, ...] = (m0,) + (g_width,) * (g_depth - 1) + (n_outputs,)
        self._g_weight_shapes = [
            (self.g_layer_sizes[layer + 1], self.g_layer_sizes[layer]) for layer in range(g_depth)
        ]
        self.n_generated = sum(rows * cols for rows, cols in self._g_weight_shapes)
        self.f_layer_sizes: tuple[int, ...] = (
            (x_dim,) + (f_width,) * (f_depth - 1) + (self.n_generated,)
        )

        def normal(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=generator, dtype=dtype)

        weights = []
        for fan_in, fan_out in zip(self.f_layer_sizes[:-1], self.f_layer_sizes[1:], strict=True):
            w = normal(fan_out, fan_in)
            if parameterization == "standard":
                w = w / math.sqrt(fan_in)
            weights.append(torch.nn.Parameter(w))
        self.f_weights = torch.nn.ParameterList(weights)
        # multiplier of each f layer: y = c * W q
        self._f_multipliers = [
            1.0 / math.sqrt(fan_in) if parameterization == "ntk" else 1.0
            for fan_in in self.f_layer_sizes[:-1]
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
            The x columns of the rows.
        return_hidden : bool, default=False
            Also return the layer inputs ``q^0..q^{L-1}`` and pre-activations
            ``y^1..y^L`` (used by :func:`empirical_ntk`).

        Returns
        -------
        y : torch.Tensor of shape (n_rows, n_generated)
            The generated weights of ``g``, flat (see :meth:`split_generated`).
        layer_inputs, preactivations : lists of torch.Tensor
            Only with ``return_hidden``.
        """
        q = x
        layer_inputs, preactivations = [], []
        for index, (weight, multiplier) in enumerate(
            zip(self.f_weights, self._f_multipliers, strict=True)
        ):
            layer_inputs.append(q)
            y = (q @ weight.T) * multiplier if multiplier != 1.0 else q @ weight.T
            preactivations.append(y)
            if index < self.f_depth - 1:
                q = self._phi(y)
        if return_hidden:
            return y, layer_inputs, preactivations
        return y

    def split_generated(self, flat_weights: torch.Tensor) -> list[torch.Tensor]:
        """Cut ``f``'s flat output into the per-row weight matrices of ``g``.

        Parameters
        ----------
        flat_weights : torch.Tensor of shape (n_rows, n_generated)
            Output of :meth:`f_forward`.

        Returns
        -------
        matrices : list of torch.Tensor
            ``V^l`` of shape (n_rows, m_l, m_{l-1}), l = 1..H (views).
        """
        matrices, start = [], 0
        for rows, cols in self._g_weight_shapes:
            stop = start + rows * cols
            matrices.append(flat_weights[:, start:stop].reshape(-1, rows, cols))
            start = stop
        return matrices

    def g_forward(
        self, generated: list[torch.Tensor], z: torch.Tensor, return_hidden: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Primary network ``g`` with per-row weights, evaluated batched.

        Parameters
        ----------
        generated : list of torch.Tensor
            ``V^l`` of shape (n_rows, m_l, m_{l-1}) as from :meth:`split_generated`.
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
        for index, matrix in enumerate(generated):
            layer_inputs.append(activation)
            fan_in = matrix.shape[-1]
            pre = torch.bmm(matrix, activation.unsqueeze(-1)).squeeze(-1) / math.sqrt(fan_in)
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
            f"parameterization={self.parameterization!r}, activation={self.activation!r}"
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
    (len(outputs), n_rows, fan_out_l).
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
            back = (deltas[0] @ model.f_weights[index]) * model._f_multipliers[index]
            deltas.insert(0, back * model._phi_derivative(preactivations[index - 1]))
    return deltas


def empirical_ntk(
    model: Hypernetwork,
    x1: torch.Tensor,
    z1: torch.Tensor,
    x2: torch.Tensor | None = None,
    z2: torch.Tensor | None = None,
    reduce: str = "mean",
) -> torch.Tensor:
    """Empirical hyperkernel ``J J^T`` with respect to ``f``'s weights.

    For a bias-free layer ``y = c W q`` the gradient of ``h`` with respect to
    ``W`` is ``c * delta q^T`` with ``delta = dh / dy``, so
    ``<dh(u)/dW, dh(u')/dW> = c^2 (q . q') (delta . delta')``; the kernel is the
    sum of these layer terms. This is exactly ``J J^T`` (tested against
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
                term = (c * c) * (q1 @ q2.T) * (d1 @ d2.transpose(1, 2))
                kernel = term if kernel is None else kernel + term
        kernels.append(kernel.sum(dim=0) if reduce == "mean" else kernel)
    if reduce == "mean":
        return torch.stack(kernels).sum(dim=0) / model.n_outputs
    return torch.cat(kernels, dim=0)
