"""f's kernel: the pair quantities of the hypernetwork f, one file per architecture.

The Gram engine (:mod:`.._gram`) asks f, on the distinct x rows, for what g's
recursion needs (docs/math.md): per distinct x the output variance
``S_f(x, x)`` and ``Theta^f(x, x)``, per pair of distinct x the correlations
``S_f(x, x') / sqrt(S_f(x, x) S_f(x', x'))`` and ``Theta^f(x, x') / sqrt(...)``
(the interface: :class:`.base.FKernel`, :class:`.base.FRows`). g's part, the
coincidence rules, blocks, the fused pass, the operator and the solvers do not
depend on which f produced them. A new f is one file (a subclass of
:class:`.base.FKernel`) and one entry of :data:`F_KERNELS` (its name also among
the values the ``f_architecture`` parameter accepts,
:data:`.._params.architecture.F_ARCHITECTURES`).
"""

from __future__ import annotations

from .base import FKernel, FRows
from .conv import ConvF
from .dense import DenseF

__all__ = ["F_KERNELS", "FKernel", "FRows", "f_kernel"]

#: f's kernel of each ``f_architecture`` (:data:`.._params.architecture.F_ARCHITECTURES`).
F_KERNELS: dict[str, type[FKernel]] = {"dense": DenseF, "conv": ConvF}


def f_kernel(
    f_architecture: str,
    f_depth: int,
    negative_slope: float,
    bias_variance: float,
    image_shape: tuple[int, int, int] | None = None,
    filter_size: int = 3,
) -> FKernel:
    """The :class:`.base.FKernel` of ``f_architecture`` (validated parameters).

    ``image_shape`` (``(H, W, C)``, from
    :func:`.._params.architecture.check_f_input`) and ``filter_size`` are read
    by the f that read images only.
    """
    cls = F_KERNELS[f_architecture]
    return cls(f_depth, negative_slope, bias_variance, image_shape, filter_size)
