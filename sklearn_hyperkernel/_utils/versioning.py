"""Which version of the package wrote a pickle, and what loading it here does.

Modelled on scikit-learn's ``_sklearn_version`` and
:class:`~sklearn.exceptions.InconsistentVersionWarning` (scikit-learn #7135,
PR #7248, PR #25297): every kernel, estimator and torch
:class:`~sklearn_hyperkernel.network.Hypernetwork` records the version that
pickled it (:func:`versioned_state`), and loading it (:func:`upgrade_state`):

* warns with :class:`InconsistentVersionWarning` whenever the versions differ;
* upgrades an older pickle by the table of parameters added since
  (:class:`AddedParameter`: the parameter, the version that added it and the
  value that reproduces the old behaviour), so that it works as it did;
* refuses, at load time and naming both versions, what cannot work: a
  parameter this version needs that the table cannot supply, a parameter this
  version does not know (a newer pickle), or a class from a private module
  that no longer exists (:class:`RemovedModuleFinder`).

A pickle that records no version was written by a version before 0.2.0, all
of which said ``0.1.0`` (:data:`UNRECORDED_VERSION`).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import inspect
import pickle
import re
import sys
import warnings
from dataclasses import dataclass
from typing import Any

from .._version import __version__

__all__ = [
    "BIAS_PARAMETERS",
    "ESTIMATOR_HISTORY",
    "KERNEL_HISTORY",
    "F_INPUT_PARAMETERS",
    "NETWORK_ESTIMATOR_HISTORY",
    "NETWORK_HISTORY",
    "REGRESSOR_HISTORY",
    "MOVED_MODULES",
    "REMOVED_MODULES",
    "UNRECORDED_VERSION",
    "VERSION_KEY",
    "AddedParameter",
    "InconsistentVersionWarning",
    "RemovedModuleFinder",
    "install_removed_module_finder",
    "upgrade_state",
    "versioned_state",
]

#: The key of the writing version in a pickled state (scikit-learn's is ``_sklearn_version``).
VERSION_KEY = "_sklearn_hyperkernel_version"
#: The version a pickle without :data:`VERSION_KEY` is taken to be: every version
#: before 0.2.0 (which began recording it) said 0.1.0.
UNRECORDED_VERSION = "0.1.0"


class InconsistentVersionWarning(UserWarning):
    """A kernel, estimator or network was pickled by another version of the package.

    As :class:`sklearn.exceptions.InconsistentVersionWarning`: it loaded (and,
    for an older pickle, was upgraded to this version's parameters with the
    values that reproduce its old behaviour), but results may differ; refit or
    re-save it with this version to silence the warning.

    Parameters
    ----------
    class_name : str
        The class of the unpickled object.
    current_version : str
        This version of sklearn-hyperkernel.
    original_version : str
        The version that pickled it (:data:`UNRECORDED_VERSION`, "or earlier",
        when the pickle records none).
    """

    def __init__(self, *, class_name: str, current_version: str, original_version: str) -> None:
        self.class_name = class_name
        self.current_version = current_version
        self.original_version = original_version

    def __str__(self) -> str:
        return (
            f"Trying to unpickle {self.class_name} from sklearn-hyperkernel version "
            f"{self.original_version} when using version {self.current_version}. This "
            "might lead to breaking code or invalid results. Use at your own risk."
        )


@dataclass(frozen=True)
class AddedParameter:
    """A parameter added to a class, for upgrading pickles written before it.

    Attributes
    ----------
    name : str
        The parameter (an ``__init__`` argument, stored as an attribute).
    version : str
        The version that added it (0.1.0 for those added while every version
        said 0.1.0).
    old_value : object
        The value that reproduces the behaviour of the versions without it.
    """

    name: str
    version: str
    old_value: Any


#: The biases of f and g (docs/math.md, "Biases"): variance 0 is the bias-free
#: network of every version before 0.2.0.
BIAS_PARAMETERS = (
    AddedParameter("f_bias_variance", "0.2.0", 0.0),
    AddedParameter("g_bias_variance", "0.2.0", 0.0),
)
#: f's input (docs/math.md, "A convolutional f"): the dense f of every version
#: before 0.2.0.
F_INPUT_PARAMETERS = (
    AddedParameter("f_architecture", "0.2.0", "dense"),
    AddedParameter("image_shape", "0.2.0", None),
    AddedParameter("filter_size", "0.2.0", 3),
)
#: :class:`~sklearn_hyperkernel.HyperKernel`, :class:`~sklearn_hyperkernel.HyperNNGP`.
KERNEL_HISTORY = (
    AddedParameter("normalize_x", "0.1.0", False),
    *BIAS_PARAMETERS,
    # the bounds matter only when the variance is positive (at 0 it is fixed)
    AddedParameter("f_bias_variance_bounds", "0.2.0", (1e-5, 1e5)),
    AddedParameter("g_bias_variance_bounds", "0.2.0", (1e-5, 1e5)),
    *F_INPUT_PARAMETERS,
)
#: :class:`~sklearn_hyperkernel.HyperKernelRegressor` (before these: an absolute
#: ridge, raw x and raw targets; every row a centre is moot without Nyström).
REGRESSOR_HISTORY = (
    AddedParameter("alpha_scale", "0.1.0", "absolute"),
    AddedParameter("normalize_x", "0.1.0", False),
    AddedParameter("normalize_y", "0.1.0", False),
    AddedParameter("n_components", "0.1.0", None),
    AddedParameter("center_selection", "0.1.0", "uniform"),
    # center_selection's new name (0.2.0); HyperKernelRegressor.__setstate__ moves an
    # older pickle's rule to it
    AddedParameter("component_selection", "0.2.0", "uniform"),
    AddedParameter("random_state", "0.1.0", None),
    *BIAS_PARAMETERS,
    *F_INPUT_PARAMETERS,
)
#: :class:`~sklearn_hyperkernel.HypernetworkRegressor` and
#: :class:`~sklearn_hyperkernel.HypernetworkClassifier`.
NETWORK_ESTIMATOR_HISTORY = (
    AddedParameter("normalize_x", "0.1.0", False),
    AddedParameter("normalize_y", "0.1.0", False),
    AddedParameter("n_jobs", "0.1.0", None),
    *BIAS_PARAMETERS,
    *F_INPUT_PARAMETERS,
)
#: Every estimator's table, by class name (for the docs and the tests).
ESTIMATOR_HISTORY = {
    "HyperKernel": KERNEL_HISTORY,
    "HyperNNGP": KERNEL_HISTORY,
    "HyperKernelRegressor": REGRESSOR_HISTORY,
    "HypernetworkRegressor": NETWORK_ESTIMATOR_HISTORY,
    "HypernetworkClassifier": NETWORK_ESTIMATOR_HISTORY,
}
#: The torch :class:`~sklearn_hyperkernel.network.Hypernetwork` (constructor
#: arguments it stores as attributes).
NETWORK_HISTORY = (*BIAS_PARAMETERS, *F_INPUT_PARAMETERS)

#: Private modules that pickles of older versions refer to, and the last version
#: that had each. Their classes cannot be rebuilt here: such a pickle is refused.
REMOVED_MODULES = {
    "sklearn_hyperkernel._evaluate": "0.1.0",  # a fitted HyperKernelRegressor's rows
    "sklearn_hyperkernel._network": "0.1.0",  # the torch Hypernetwork, now .network
    "sklearn_hyperkernel._progress": "0.1.0",
}

#: Private modules of 0.1.0 that 0.2.0 moved into the layers' folders
#: (docs/architecture.md), and where each is now: a pickle of 0.1.0 that refers to
#: one (a fitted estimator's operator, rows or settings) finds it there.
MOVED_MODULES = {
    f"sklearn_hyperkernel.{old}": f"sklearn_hyperkernel.{new}"
    for old, new in {
        "_architecture": "_params.architecture",
        "_kernel_parameters": "_params.kernel_parameters",
        "_network_parameters": "_params.network_parameters",
        "_arrays": "_utils.arrays",
        "_rows": "_utils.rows",
        "_device": "_utils.device",
        "_scheduling": "_utils.scheduling",
        "_linalg": "_utils.linalg",
        "_targets": "_utils.targets",
        "_versioning": "_utils.versioning",
        "_gram_engine": "_gram.engine",
        "_gram_tiles": "_gram.tiles",
        "_fused": "_gram.fused",
        "_fork": "_utils.fork",
        "_cg": "_solvers.cg",
        "_dense_solver": "_solvers.dense",
        "_nystrom": "_solvers.nystrom",
        "_nystrom_centers": "_solvers.nystrom_components",
        "_nystrom_system": "_solvers.nystrom_system",
    }.items()
}


class _MovedModuleLoader(importlib.abc.Loader):
    """Loads an old module name as a namespace holding the names of the module it moved to.

    The classes keep their own ``__module__``, so what is pickled now refers to
    the new place; only references of older pickles go through the old name.
    """

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec):  # noqa: D102 - importlib's
        return None  # the default module object

    def exec_module(self, module) -> None:  # noqa: D102 - importlib's
        moved = importlib.import_module(self.target)
        module.__dict__.update(
            {name: value for name, value in vars(moved).items() if not name.startswith("__")}
        )


def _release(version: str) -> tuple[int, ...]:
    """``"0.2.0"`` -> ``(0, 2, 0)``; pre-release and local tails are ignored."""
    match = re.match(r"\d+(\.\d+)*", str(version))
    return tuple(int(part) for part in match.group(0).split(".")) if match else (0,)


def versioned_state(state: dict) -> dict:
    """``state`` with this version recorded under :data:`VERSION_KEY` (a new dict)."""
    return {**state, VERSION_KEY: __version__}


def _parameter_names(cls: type) -> list[str]:
    """The ``__init__`` arguments of ``cls`` (scikit-learn's ``_get_param_names`` rule)."""
    getter = getattr(cls, "_get_param_names", None)
    if getter is not None:
        return list(getter())
    signature = inspect.signature(cls.__init__)
    return [
        name
        for name, parameter in signature.parameters.items()
        if name != "self"
        and parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)
    ]


def upgrade_state(
    cls: type,
    state: dict,
    history: tuple[AddedParameter, ...],
    *,
    stores_all_parameters: bool = True,
) -> dict:
    """The state of a pickle of ``cls`` as this version needs it, or an error.

    Parameters
    ----------
    cls : type
        The class being unpickled.
    state : dict
        What was pickled (not modified).
    history : tuple of AddedParameter
        ``cls``'s parameters added over the versions.
    stores_all_parameters : bool, default=True
        Whether ``cls`` stores every ``__init__`` argument as an attribute
        of its name (scikit-learn's convention): then each must be in the
        pickle or upgradable, and a name of the pickle that looks like a
        parameter (no leading or trailing underscore) must be one. False
        (a torch module): only the parameters of ``history`` that ``cls``
        takes are checked.

    Returns
    -------
    dict
        The state without :data:`VERSION_KEY`, with each parameter that the
        pickle's version predates set to its old value.

    Warns
    -----
    InconsistentVersionWarning
        When the pickle's version is not this one.

    Raises
    ------
    pickle.UnpicklingError
        Naming both versions, when a parameter of this version is missing and
        not in ``history`` for the pickle's version, or the pickle holds a
        parameter this version does not have (written by a newer version).
    """
    state = dict(state)
    recorded = state.pop(VERSION_KEY, None)
    original = UNRECORDED_VERSION if recorded is None else str(recorded)
    shown = original if recorded is not None else f"{UNRECORDED_VERSION} or earlier"
    name = cls.__name__
    if original != __version__:
        warnings.warn(
            InconsistentVersionWarning(
                class_name=name, current_version=__version__, original_version=shown
            ),
            stacklevel=3,
        )
    names = _parameter_names(cls)
    if not stores_all_parameters:
        names = [entry.name for entry in history if entry.name in names]
    older = _release(original) < _release(__version__)
    by_name = {entry.name: entry for entry in history}
    missing = []
    for parameter in names:
        if parameter in state:
            continue
        entry = by_name.get(parameter)
        if older and entry is not None and _release(original) <= _release(entry.version):
            state[parameter] = entry.old_value
        else:
            missing.append(parameter)
    unknown = []
    if stores_all_parameters:
        unknown = sorted(
            key
            for key in state
            if not key.startswith("_") and not key.endswith("_") and key not in names
        )
    if missing or unknown:
        problems = []
        if missing:
            problems.append(f"it lacks the parameter(s) {', '.join(missing)} of this version")
        if unknown:
            problems.append(f"it holds parameter(s) {', '.join(unknown)} this version lacks")
        raise pickle.UnpicklingError(
            f"Cannot unpickle {name}: it was written by sklearn-hyperkernel {shown} and this "
            f"is version {__version__}; {' and '.join(problems)}. Load it with version "
            f"{original} (pip install sklearn-hyperkernel=={original}) and refit it with "
            f"{__version__}, or refit it here."
        )
    return state


class RemovedModuleFinder(importlib.abc.MetaPathFinder):
    """Refuses the private modules of older versions with a message naming both versions.

    An older pickle refers to its classes by module; without this, loading it
    fails with a bare ``ModuleNotFoundError``. Installed on ``sys.meta_path``
    by :func:`install_removed_module_finder` when the package is imported.
    """

    def find_spec(self, fullname: str, path=None, target=None):  # noqa: D102 - importlib's
        if fullname in MOVED_MODULES:
            return importlib.util.spec_from_loader(
                fullname, _MovedModuleLoader(MOVED_MODULES[fullname])
            )
        last = REMOVED_MODULES.get(fullname)
        if last is None:
            return None
        raise ModuleNotFoundError(
            f"{fullname} is a private module of sklearn-hyperkernel {last} and earlier, which "
            f"this version ({__version__}) no longer has: a pickle that refers to it (a "
            f"fitted estimator or network of version {last} or earlier) cannot be loaded "
            f"with {__version__}. Load it with version {last} (pip install "
            f"sklearn-hyperkernel=={last}) and refit the model with {__version__}.",
            name=fullname,
        )


def install_removed_module_finder() -> None:
    """Put one :class:`RemovedModuleFinder` on ``sys.meta_path`` (idempotent)."""
    if not any(isinstance(finder, RemovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(RemovedModuleFinder())
