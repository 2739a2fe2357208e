"""The convolutional f: ``f_depth - 1`` SAME convolutions and a dense readout.

x is an image, ``x.reshape(H, W, C)`` (row-major, channels last); the closed
forms and their conventions are those of docs/math.md, "A convolutional f".
Per image the recursion's diagonal gives ``sigma = S_f(x, x)`` and ``theta =
Theta^f(x, x)`` (:func:`.conv_recursion.conv_variances`: they are not
functions of ``|x|`` alone, zero padding loses energy at the border); per pair
of distinct images f's correlations come from
:func:`.conv_recursion.conv_correlations` (numpy or torch, differentiable) or,
for the fused pass, the compiled :func:`.conv_compiled.conv_table`. Equal
images (the engine's coincidence ids, passed as a boolean matrix): correlation
exactly 1, NTK ``theta / sigma``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from array_api_compat import array_namespace
from array_api_compat import device as array_device

from ..recursions import Direction, MLPCorrelations
from .base import FKernel, FRows, input_variances

__all__ = ["ConvF"]


class ConvF(FKernel):
    """The conv f's kernel (``image_shape`` ``(H, W, C)``, ``filter_size`` odd)."""

    def __init__(
        self,
        f_depth: int,
        negative_slope: float,
        bias_variance: float,
        image_shape: tuple[int, int, int] | None = None,
        filter_size: int = 3,
    ) -> None:
        if image_shape is None or len(image_shape) != 3:
            raise ValueError(f"ConvF needs image_shape=(H, W, C); got {image_shape!r}.")
        super().__init__(f_depth, negative_slope, bias_variance, image_shape, filter_size)

    @staticmethod
    def _same_mask(same: Any, n_a: int, n_b: int, like: Any) -> Any:
        """A :data:`.._utils.rows.Coincidence` as the boolean matrix the conv recursion reads."""
        if same is None or not isinstance(same, tuple):
            return same
        xp = array_namespace(like)
        mask = xp.zeros((n_a, n_b), dtype=xp.bool, device=array_device(like))
        mask[same] = True
        return mask

    def _images(self, features: Any) -> Any:
        return features.reshape((features.shape[0], *self.image_shape))

    def _variances(self, images: Any, rows: FRows | None = None) -> Any:
        """:func:`.conv_recursion.conv_variances` of ``images``, from ``rows`` where computed."""
        from .conv_recursion import ConvVariances, conv_variances

        if rows is not None and rows.state is not None:
            fields = (rows.state, rows.sigma, rows.theta, rows.d_sigma, rows.d_theta)
            return ConvVariances(*fields)
        return conv_variances(images, self.filter_size, self.f_depth, self.bias_variance)

    def rows(self, x: np.ndarray, *, normalize: bool, need_features: bool = True) -> FRows:
        squared_norm, s = input_variances(x, normalize)
        if normalize:  # each non-zero image rescaled to |x|^2 / n0 = 1
            root = np.sqrt(squared_norm / max(x.shape[1], 1))
            x = x * np.divide(1.0, root, out=np.zeros_like(root), where=root > 0)[:, None]
        variances = self._variances(self._images(x))

        def host(value: Any) -> np.ndarray:
            return np.broadcast_to(np.asarray(value, dtype=np.float64), s.shape).copy()

        return FRows(
            x if need_features else None,
            s,
            host(variances.sigma),
            host(variances.theta),
            host(variances.d_sigma),
            host(variances.d_theta),
            self.key(normalize),
            np.asarray(variances.maps),  # per image, read by every pair
        )

    def correlations(
        self,
        a: FRows,
        b: FRows,
        same: Any,
        *,
        need_ntk: bool,
        directions: Sequence[Direction] = (),
    ) -> MLPCorrelations:
        from .conv_recursion import conv_correlations

        images_a, images_b = self._images(a.features), self._images(b.features)
        same = self._same_mask(same, images_a.shape[0], images_b.shape[0], images_a)
        return conv_correlations(
            images_a,
            images_b,
            self._variances(images_a, a),
            self._variances(images_b, b),
            self.filter_size,
            self.f_depth,
            self.negative_slope,
            need_ntk=need_ntk,
            bias_variance=self.bias_variance,
            same=same,
            directions=directions,
        )

    def table(self, a: FRows, b: FRows, same: Any, *, need_ntk: bool) -> tuple[Any, Any]:
        from .conv_compiled import conv_table

        images_a, images_b = self._images(a.features), self._images(b.features)
        same = self._same_mask(same, images_a.shape[0], images_b.shape[0], images_a)
        return conv_table(
            images_a,
            images_b,
            self._variances(images_a, a),
            self._variances(images_b, b),
            self.filter_size,
            self.f_depth,
            self.negative_slope,
            need_ntk=need_ntk,
            bias_variance=self.bias_variance,
            same_pairs=same,
        )
