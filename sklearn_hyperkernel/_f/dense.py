"""The dense f: an MLP on x, the paper's hypernetwork (docs/math.md).

Per x: ``s = |x|^2 / n0``, ``sigma = s + L bf``
(:func:`..recursions.f_output_variance`), ``theta = L s + bf L (L + 1) / 2``
(:func:`..recursions.f_ntk_variance`). Per pair: the input correlation
``x.x' / (|x| |x'|)`` (one matrix product of the unit rows, exactly 1 at equal
x), through :func:`..recursions.mlp_correlations`, an elementwise map, so the
engine evaluates it tile by tile (and the fused pass entry by entry).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._utils.rows import set_where
from ..recursions import (
    Direction,
    MLPCorrelations,
    f_ntk_variance,
    f_output_variance,
    mlp_correlations,
)
from .base import FKernel, FRows, input_variances

__all__ = ["DenseF", "unit_rows"]


def unit_rows(x: np.ndarray, squared_norm: np.ndarray | None = None) -> np.ndarray:
    """``x / |x|`` per row, zero rows staying zero."""
    squared_norm = np.einsum("ij,ij->i", x, x) if squared_norm is None else squared_norm
    norm = np.sqrt(squared_norm)
    return x * np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)[:, None]


class DenseF(FKernel):
    """The dense f's kernel (an MLP of ``f_depth`` weight layers on x)."""

    elementwise = True

    def rows(self, x: np.ndarray, *, normalize: bool, need_features: bool = True) -> FRows:
        # normalize: correlations do not depend on |x|, only s changes
        squared_norm, s = input_variances(x, normalize)
        L, bf = self.f_depth, self.bias_variance
        return FRows(
            unit_rows(x, squared_norm) if need_features else None,
            s,
            f_output_variance(s, L, bf),
            f_ntk_variance(s, L, bf),
            np.full(s.shape, float(L)),
            np.full(s.shape, L * (L + 1) / 2.0),
            self.key(normalize),
        )

    def input_correlations(self, a_features: Any, b_features: Any, same: Any, out=None) -> Any:
        """``x.x' / (|x| |x'|)``, one matrix product (into ``out``), exactly 1 at ``same``.

        A unit row times itself is 1 only up to rounding, and ``kappa0`` moves
        by ``~sqrt(ulp)`` there.
        """
        if out is not None:
            rho_x = np.matmul(a_features, b_features.T, out=out)
        else:
            rho_x = a_features @ b_features.T
        return set_where(rho_x, same, 1.0, True)

    def from_input(
        self,
        rho_x: Any,
        s: tuple[Any, Any],
        *,
        need_ntk: bool,
        directions: Sequence[Direction] = (),
    ) -> MLPCorrelations:
        return mlp_correlations(
            rho_x,
            self.f_depth,
            self.negative_slope,
            need_ntk=need_ntk,
            variances=s,
            bias_variance=self.bias_variance,
            directions=directions,
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
        rho_x = self.input_correlations(a.features, b.features, same)
        return self.from_input(rho_x, (a.s, b.s), need_ntk=need_ntk, directions=directions)
