"""The interface between f's kernel and the Gram engine.

The engine (:mod:`.._gram`) asks an :class:`FKernel`, on the distinct x rows,
for what g's recursion needs (docs/math.md):

* per distinct x (:meth:`FKernel.rows`, an :class:`FRows`): f's output
  variance ``sigma = S_f(x, x)``, ``theta = Theta^f(x, x)``, their
  derivatives with respect to f's bias variance, and the features the pairs
  are computed from;
* per block of distinct pairs (:meth:`FKernel.correlations`, or compiled,
  :meth:`FKernel.table`): f's output correlation ``S_f(x, x') / sqrt(sigma
  sigma')`` and NTK ``Theta^f(x, x') / sqrt(sigma sigma')``, exactly
  ``1`` and ``theta / sigma`` at equal x.

g's part (:func:`..recursions.hyper_from_correlations`,
:func:`..recursions.hyper_diagonal`, :func:`.._gram.fused.hyper_block`) reads
only these. An f whose pair correlations are an elementwise function of one
input correlation per pair (the dense f: ``x.x' / (|x| |x'|)`` and the rows'
``|x|^2 / n0``) says so with :attr:`FKernel.elementwise`, and the engine then
runs f tile by tile, or entry by entry in the fused pass, instead of tabling it
per block. A new f is one file with a subclass and one entry of
:data:`.F_KERNELS` (and its name in ``f_architecture``'s values,
:data:`.._params.architecture.F_ARCHITECTURES`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..recursions import Direction, MLPCorrelations

__all__ = ["FKernel", "FRows", "input_variances"]


def input_variances(x: np.ndarray, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    """``|x|^2`` and ``s = |x|^2 / n0`` per row; with ``normalize``, ``s`` is 1 (0 for x = 0).

    ``normalize`` is the kernels' ``normalize_x``: each non-zero x rescaled to
    ``|x|^2 / n0 = 1`` (that rescaling is ``x / sqrt(|x|^2 / n0)``).
    """
    squared_norm = np.einsum("ij,ij->i", x, x)
    s = squared_norm / max(x.shape[1], 1)
    return squared_norm, ((s > 0).astype(np.float64) if normalize else s)


@dataclass(frozen=True)
class FRows:
    """f's quantities per distinct x (host float64 arrays, one entry per x).

    Attributes
    ----------
    features : ndarray of shape (n, n_features) or None
        What f's pairs are computed from (the dense f: ``x / |x|``; the conv
        f: the images, flattened); None where only the diagonal is needed.
    s : ndarray of shape (n,)
        ``|x|^2 / n0`` (1 or 0 with ``normalize_x``): the input variance the
        dense f's recursion reads; other f ignore it.
    sigma : ndarray of shape (n,)
        ``S_f(x, x)``, f's output variance.
    theta : ndarray of shape (n,)
        ``Theta^f(x, x)``.
    d_sigma, d_theta : ndarray of shape (n,)
        ``d sigma / d bf`` and ``d theta / d bf`` (``bf``: f's bias variance).
    key : tuple or None
        :meth:`FKernel.key` of the f that computed them (with ``normalize``):
        rows factorised by one kernel and evaluated by another are recomputed
        when the two f differ.
    state : ndarray of shape (n, ...) or None
        Whatever else the f computes once per x and reads per pair (the conv
        f: each image's per-position variance maps); None for the dense f.
    """

    features: np.ndarray | None
    s: np.ndarray
    sigma: np.ndarray
    theta: np.ndarray
    d_sigma: np.ndarray
    d_theta: np.ndarray
    key: tuple | None = None
    state: np.ndarray | None = None

    def take(self, index: Any) -> FRows:
        """The rows ``index`` (an index array or a slice) of every field."""
        features = None if self.features is None else self.features[index]
        return FRows(
            features,
            self.s[index],
            self.sigma[index],
            self.theta[index],
            self.d_sigma[index],
            self.d_theta[index],
            self.key,
            None if self.state is None else self.state[index],
        )


class FKernel(ABC):
    """f's kernel: what the Gram engine needs of the hypernetwork f.

    Parameters
    ----------
    f_depth : int
        f's weight layers.
    negative_slope : float
        Leaky ReLU slope of f's activations.
    bias_variance : float
        ``bf``, the variance of f's biases (0: none).
    image_shape : tuple (H, W, C) or None, default=None
        The image each x holds (f that read images; others ignore it).
    filter_size : int, default=3
        Filters' side (f that convolve; others ignore it).
    """

    #: Whether f's pair correlations are an elementwise function of the input
    #: correlation of :meth:`input_correlations` and the rows' ``s`` (the
    #: engine then evaluates f per tile and per entry of the fused pass).
    elementwise: bool = False

    def __init__(
        self,
        f_depth: int,
        negative_slope: float,
        bias_variance: float,
        image_shape: tuple[int, int, int] | None = None,
        filter_size: int = 3,
    ) -> None:
        self.f_depth = int(f_depth)
        self.negative_slope = float(negative_slope)
        self.bias_variance = float(bias_variance)
        self.image_shape = None if image_shape is None else tuple(int(d) for d in image_shape)
        self.filter_size = int(filter_size)

    def key(self, normalize: bool) -> tuple:
        """What f's per-x quantities depend on: its class, parameters and ``normalize``."""
        return (
            type(self).__name__,
            self.f_depth,
            self.negative_slope,
            self.bias_variance,
            self.image_shape,
            self.filter_size,
            bool(normalize),
        )

    @abstractmethod
    def rows(self, x: np.ndarray, *, normalize: bool, need_features: bool = True) -> FRows:
        """f's quantities of the rows of ``x`` (shape (n, n0), float64, validated).

        ``normalize``: each non-zero x is taken rescaled to ``|x|^2 / n0 = 1``
        (the kernels' ``normalize_x``). The result's ``key`` is :meth:`key`.
        """

    @abstractmethod
    def correlations(
        self,
        a: FRows,
        b: FRows,
        same: Any,
        *,
        need_ntk: bool,
        directions: Sequence[Direction] = (),
    ) -> MLPCorrelations:
        """f's output correlation and NTK over ``sqrt(sigma sigma')`` on all pairs of rows.

        ``a`` and ``b`` hold the distinct x of a block (numpy arrays, or torch
        tensors of the placement, the features included); ``same`` the pairs
        of equal x (a :data:`.._utils.rows.Coincidence`), where ``rho`` is
        exactly 1. Tangents along ``directions`` (their ``f_bias``), as
        :func:`..recursions.mlp_correlations`'. Differentiable with torch's
        autograd.
        """

    def table(self, a: FRows, b: FRows, same: Any, *, need_ntk: bool) -> tuple[Any, Any]:
        """``(rho, ntk)`` of :meth:`correlations` on numpy rows, without tangents.

        Arrays of the features' dtype (``ntk`` None unless asked). The Gram
        engine's f table on numpy (the fused pass, and the tiles without a
        gradient, where numba is installed); subclasses with a compiled
        evaluation override it.
        """
        f = self.correlations(a, b, same, need_ntk=need_ntk)
        return f.rho, f.ntk

    def input_correlations(self, a_features: Any, b_features: Any, same: Any, out=None) -> Any:
        """The input correlation an elementwise f reads (only where :attr:`elementwise`)."""
        raise NotImplementedError(f"{type(self).__name__} is not elementwise.")

    def from_input(
        self,
        rho_x: Any,
        s: tuple[Any, Any],
        *,
        need_ntk: bool,
        directions: Sequence[Direction] = (),
    ) -> MLPCorrelations:
        """An elementwise f's correlations from :meth:`input_correlations` (rows' ``s``)."""
        raise NotImplementedError(f"{type(self).__name__} is not elementwise.")
