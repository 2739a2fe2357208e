"""Kernels of infinitely wide hypernetworks as scikit-learn tools.

* :class:`HyperKernel` -- the hyperkernel (NTK) of a hypernetwork g(z; f(x)).
* :class:`HyperNNGP` -- its Gaussian-process (NNGP) kernel.
* :class:`HyperKernelRegressor` -- kernel ridge regression with either (the
  paper's Eq. 18), as a scikit-learn estimator.
* :class:`HypernetworkRegressor`, :class:`HypernetworkClassifier` -- the finite
  hypernetwork trained with torch (needs the ``torch`` extra); the torch
  network itself is :mod:`sklearn_hyperkernel.network`.
* :class:`DeviceFallbackWarning` -- a model saved on a device this machine
  lacks was loaded on the CPU.
* :class:`InconsistentVersionWarning` -- a kernel, estimator or network was
  pickled by another version of the package (older pickles are upgraded, or
  refused at load time naming both versions).
* :func:`get_config`, :func:`set_config`, :func:`config_context` -- the
  tuning constants (tile and block sizes, the fused-pass switch, solver
  thresholds), as scikit-learn's configuration (:mod:`sklearn_hyperkernel.config`).

Both are :class:`sklearn.gaussian_process.kernels.Kernel` objects over rows
``u = [x | z]`` (the last ``z_dim`` columns are z). The closed forms are in
:mod:`sklearn_hyperkernel.recursions`, which knows nothing of scikit-learn.
"""

from ._utils.device import DeviceFallbackWarning
from ._utils.versioning import InconsistentVersionWarning, install_removed_module_finder
from ._version import __version__
from .config import config_context, get_config, set_config
from .hypernetwork import HypernetworkClassifier, HypernetworkRegressor
from .kernel_ridge import HyperKernelRegressor
from .kernels import HyperKernel, HyperNNGP

__all__ = [
    "DeviceFallbackWarning",
    "HyperKernel",
    "HyperKernelRegressor",
    "HyperNNGP",
    "HypernetworkClassifier",
    "HypernetworkRegressor",
    "InconsistentVersionWarning",
    "__version__",
    "config_context",
    "get_config",
    "set_config",
]

# an older pickle's class from a private module removed since fails at load
# time naming both versions, not with a bare ModuleNotFoundError
install_removed_module_finder()
