"""Kernels of infinitely wide hypernetworks as scikit-learn tools.

* :class:`HyperKernel` -- the hyperkernel (NTK) of a hypernetwork g(z; f(x)).
* :class:`HyperNNGP` -- its Gaussian-process (NNGP) kernel.

Both are :class:`sklearn.gaussian_process.kernels.Kernel` objects over rows
``u = [x | z]`` (the last ``z_dim`` columns are z). The closed forms are in
:mod:`sklearn_hyperkernel.recursions`, which knows nothing of scikit-learn.
"""

from .kernels import HyperKernel, HyperNNGP

__version__ = "0.1.0"

__all__ = ["HyperKernel", "HyperNNGP", "__version__"]
