"""Finite hypernetworks trained with torch, as scikit-learn estimators.

:class:`HypernetworkRegressor` (squared loss) and
:class:`HypernetworkClassifier` (cross-entropy) train the finite
hypernetwork ``h(u) = g(z; f(x))`` of :mod:`sklearn_hyperkernel._network` on
rows ``u = [x | z]`` (the last ``z_dim`` columns are ``z``). The model is the
one whose infinite-width limits are :class:`~sklearn_hyperkernel.HyperKernel`
and :class:`~sklearn_hyperkernel.HyperNNGP`; :meth:`empirical_ntk` gives its
finite-width hyperkernel.

Rows with exactly ``z_dim`` columns have no x: every row then shares the
constant ``x = (1,)`` (so ``|x|^2 / n0 = 1``) and ``h`` is an ordinary network
of ``z`` whose weights ``f`` generates from that constant, the same definition
the kernels use for ``n_x = 0``.

torch is an optional dependency of the package: this module imports it only
when an estimator is fitted or used, so ``import sklearn_hyperkernel`` works
without it.
"""

from __future__ import annotations

import contextlib
import copy
import sys
import time
import warnings
from numbers import Integral, Real
from typing import Any

import numpy as np
from joblib import effective_n_jobs
from sklearn.base import BaseEstimator, ClassifierMixin, MultiOutputMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from sklearn_hyperkernel._device import fallback_device, resolve_device

__all__ = ["HypernetworkClassifier", "HypernetworkRegressor"]

#: Most rows converted to tensors and evaluated at once by ``predict`` and friends.
PREDICT_BLOCK_ROWS = 8192
#: Bytes that one block's per-row generated weights of g may take at prediction
#: (each row carries its own copy of g's weights: 2,080 values with the defaults).
PREDICT_BLOCK_BYTES = 32 * 2**20
#: Training batches reuse f's output per distinct x when the training set has at
#: most this fraction of distinct x rows (e.g. one image, many pixel coordinates).
_DEDUPLICATE_BELOW = 0.5
_INSTALL_HINT = "pip install sklearn-hyperkernel[torch]"
#: A training loss this many times the first epoch's (or the constant predictor's)
#: means the run diverged.
_DIVERGENCE_FACTOR = 1e8
#: What to try when a run did not learn; named by the ConvergenceWarning.
def _remedy(estimator) -> str:
    """What to try when a run learned nothing, leaving out what is already set."""
    options = []
    if estimator.optimizer != "adam":
        options.append("optimizer='adam'")
    options.append(
        "a larger learning_rate" if estimator.optimizer == "sgd" else "another learning_rate (e.g. 3e-3 or 3e-4)"
    )
    if estimator.parameterization != "standard":
        options.append("parameterization='standard'")
    if not estimator.normalize_x:
        options.append("normalize_x=True")
    if getattr(estimator, "normalize_y", True) is False:
        options.append("normalize_y=True")
    options.append("a larger max_epochs")
    return "try " + ", ".join(options[:-1]) + " or " + options[-1]


# Parameters that fix the network's architecture or the scaling of its inputs
# and targets: a warm start cannot change them.
_ARCHITECTURE_PARAMS = (
    "z_dim", "f_depth", "f_width", "g_depth", "g_width", "z_encoding", "length_scale",
    "n_fourier_features", "parameterization", "activation", "negative_slope",
    "normalize_x", "normalize_y", "dtype",
)


def _import_torch():
    """Return the ``torch`` module, or raise an ImportError that says how to get it."""
    try:
        import torch
    except ImportError as error:  # pragma: no cover - exercised with a blocked import
        raise ImportError(
            "The hypernetwork estimators need PyTorch, which is an optional "
            f"dependency of sklearn-hyperkernel; install it with `{_INSTALL_HINT}`."
        ) from error
    return torch


def _network_module():
    """Return :mod:`sklearn_hyperkernel._network` (imports torch)."""
    _import_torch()
    from sklearn_hyperkernel import _network

    return _network


def _torch_device(device: Any):
    """The ``torch.device`` the package's device rule gives ``device`` (None: the CPU).

    Raises a ValueError naming the ``device`` parameter when it is not usable here.
    """
    torch = _import_torch()
    resolved = resolve_device(device, "device")
    return torch.device("cpu" if resolved is None else resolved)


def _tensors_to_cpu(value: Any) -> Any:
    """Copy of a nested structure (dicts, lists, tuples) with every tensor on the CPU."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return value.detach().to("cpu")
    if isinstance(value, dict):
        return {key: _tensors_to_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_tensors_to_cpu(item) for item in value)
    return value


def _optimizer_kind(optimizer_or_state) -> str:
    """``"adam"`` or ``"sgd"``: the type of a live optimizer or of its saved state_dict."""
    if isinstance(optimizer_or_state, dict):
        groups = optimizer_or_state.get("param_groups", [{}])
    else:
        groups = optimizer_or_state.param_groups
    return "adam" if groups and "betas" in groups[0] else "sgd"


# The parameters both estimators share, documented once (numpydoc) and inserted
# into each class docstring; the regressor adds ``normalize_y``.
_PARAMETERS_DOC = """\
    z_dim : int, default=2
        Number of trailing columns of ``X`` that form ``z``. The columns
        before them are ``x``; ``X`` with exactly ``z_dim`` columns has no
        ``x``, and every row then shares the constant ``x = (1,)``.
    f_depth : int, default=3
        Number of weight matrices of ``f`` (``L``); the paper's Table 1
        setting, as for the kernels.
    f_width : int, default=256
        Hidden width of ``f``. Wider ``f`` is closer to the kernel limit and
        slower; 256 trains a few thousand rows in seconds on a CPU.
    g_depth : int, default=2
        Number of weight matrices of ``g`` (``H``), the kernels' default.
    g_width : int, default=32
        Hidden width of ``g``. ``f`` outputs all of ``g``'s weights
        (``n_fourier_features * g_width + g_width * n_outputs`` for
        ``g_depth=2``), so the cost grows with it.
    z_encoding : {"linear", "fourier"}, default="fourier"
        ``"linear"`` feeds ``z`` to ``g`` (the paper's bias-free networks;
        with relu ``g`` is then positively homogeneous in ``z`` and cannot fit
        a general function of a pixel coordinate); ``"fourier"`` feeds
        ``n_fourier_features`` fixed random Fourier features of
        ``z / length_scale`` (the finite version of the kernels' Gaussian
        encoding). The default is ``"fourier"``, as for the kernel estimators,
        because it can represent any smooth function of ``z``.
    length_scale : float or array-like of shape (z_dim,), default=0.5
        Length scale of the Fourier encoding, in the units of ``z``; ignored
        for ``"linear"``. ``0.5`` suits coordinates in ``[-1, 1]`` (the
        package's pixel tasks) and is the kernel estimators' default too
        (1.0 is clearly worse there; 0.25 slightly better).
    n_fourier_features : int, default=64
        Number of random Fourier features of ``z``; ignored for ``"linear"``.
        ``f`` generates ``n_fourier_features * g_width`` weights of ``g``'s
        first layer per row, so this sets most of the cost; 64 trains four
        times faster than 256 for the same test error on the pixel tasks.
    parameterization : {"ntk", "standard"}, default="standard"
        ``"standard"``: weights ``N(0, 1/fan_in)``, no multiplier (He
        initialisation), the parameterisation optimisers' learning rates are
        tuned for, hence the default. ``"ntk"``: weights ``N(0, 1)``, each
        layer of ``f`` multiplies by ``1/sqrt(fan_in)`` (the paper's; its
        empirical NTK tends to :class:`~sklearn_hyperkernel.HyperKernel`).
        Same function at initialisation, gradients scaled by ``fan_in`` per
        layer. The paper's kernels describe ``"ntk"``; the authors' code
        trains standard layers with SGD at ``learning_rate=0.01``,
        ``momentum=0.9``. Under ``"ntk"`` that step moves ``f`` about
        ``fan_in`` times less per layer, so SGD there needs a rate of order 1
        (MNIST pixel task: 0.93 x the mean predictor's error at 0.01, 0.75 at
        1.0).
    activation : {"relu", "leaky_relu"}, default="relu"
        Activation of ``f`` and ``g``, scaled to keep the variance
        (``sqrt(2) * relu``), as in the kernels.
    negative_slope : float, default=0.01
        Slope of ``"leaky_relu"`` for negative inputs; ignored by ``"relu"``.
    normalize_x : bool, default=True
        Scale each ``x`` row to ``|x|^2 / n0 = 1`` (``n0`` its number of
        columns; zero rows stay zero) before ``f``, in :meth:`fit` and at
        prediction, as the kernels' ``normalize_x`` does, so the wide network
        still tends to the kernel with the same option. On by default because
        ``f``'s output scales with ``|x|``: images with values in ``[0, 1]``
        or smaller would otherwise give an almost constant network at
        initialisation that trains slowly.
    optimizer : {"sgd", "adam"}, default="adam"
        Adam adapts its step to the gradients' scale, so one learning rate
        works across widths, depths and parameterisations; ``"sgd"`` (with
        ``momentum``) is the paper's.
    learning_rate : float, default=1e-3
        Step size of the optimizer; ``1e-3`` is Adam's usual default (3e-3
        and 3e-4 gave higher test errors on the pixel tasks). SGD in the
        ``"ntk"`` parameterisation needs a rate of order 1.
    batch_size : int, default=100
        Rows per mini-batch (capped at the number of rows). Rows of one batch
        that share an ``x`` run ``f`` once, so pixel tasks (many ``z`` per
        image) cost less per row than distinct rows.
    max_epochs : int, default=20
        Most passes over the training rows in :meth:`fit`. Twenty keep the
        default fit on a few thousand rows to seconds on a CPU; raise it (or
        call :meth:`partial_fit` / ``warm_start``) to train further.
    momentum : float, default=0.9
        Momentum of ``"sgd"`` (the usual value); ignored by ``"adam"``.
    weight_decay : float, default=0.0
        L2 penalty of the optimizer on ``f``'s weights; none by default, as
        in the paper.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows, stop when their score
        (R^2, or accuracy for the classifier) has not improved by ``tol`` for
        ``n_iter_no_change`` epochs, and keep the weights of the best epoch.
        Otherwise training stops when the training loss has not improved by
        ``tol`` for ``n_iter_no_change`` epochs.
    validation_fraction : float, default=0.1
        Fraction of the rows held out with ``early_stopping=True`` (stratified
        by class for the classifier); ignored otherwise.
    n_iter_no_change : int, default=5
        Epochs without an improvement larger than ``tol`` after which
        training stops: a quarter of the default ``max_epochs`` (10 gave the
        same results on the pixel tasks).
    tol : float, default=1e-4
        Smallest improvement of the training loss (or validation score) that
        counts.
    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights, the Fourier features, the shuffling and the
        validation split. An int gives identical predictions on the CPU.
    device : None, "auto", str or torch.device, default="auto"
        Where the network lives, by the package's device rule: ``None`` the
        CPU, ``"auto"`` CUDA when torch sees a GPU, else the CPU; ``"cpu"``,
        ``"cuda"``, ``"cuda:<index>"`` or a ``torch.device`` that device,
        which must exist (else a ValueError). ``set_params(device=...)`` on a
        fitted model moves the network and the optimizer state; a model saved
        with a GPU this machine lacks loads on the CPU with a
        :class:`~sklearn_hyperkernel._device.DeviceFallbackWarning`.
    n_jobs : int, default=None
        torch CPU threads used while the network fits and predicts on the CPU
        (``torch.set_num_threads`` for the duration of the call, restored
        after). None means 1, as in scikit-learn, unless in a
        :obj:`joblib.parallel_config` context; -1 means all cores. One thread
        by default because the default network's products are small: a second
        thread saved little on an idle 2-core machine, and when another job
        held a core torch's two threads made the default digits fit 12 times
        slower (58.5 s against 4.8 s) by waiting on each other.
    dtype : {"float64", "float32"}, default="float64"
        Floating-point type of the network. ``"float64"`` by default so that
        a row's prediction does not depend on the other rows of its batch
        (float32 matrix products differ in the last bits with the batch
        size); ``"float32"`` is about twice as fast on a GPU.
    verbose : int, default=0
        ``1`` prints one line per epoch with the loss; ``2`` also prints the
        running loss ten times per epoch.
    warm_start : bool, default=False
        Continue from the fitted weights in :meth:`fit`. The optimizer is
        built from the current parameters (``optimizer``, ``learning_rate``,
        ``momentum``, ``weight_decay``); its state (momentum, Adam's moments)
        is kept when the optimizer type is unchanged.
"""

_NORMALIZE_Y_DOC = """\
    normalize_y : bool, default=True
        Standardise each target column (subtract its mean, divide by its
        standard deviation; a constant column is only centred) in :meth:`fit`
        and undo it in :meth:`predict`, as
        :class:`~sklearn.gaussian_process.GaussianProcessRegressor`'s
        ``normalize_y``. On by default because the network's output has unit
        scale at initialisation: targets far from that scale otherwise train
        slowly or diverge. ``loss_curve_`` is then in normalised units.
"""


def _parameters_doc(regressor: bool) -> str:
    """The Parameters section of an estimator's docstring."""
    if not regressor:
        return _PARAMETERS_DOC
    head, tail = _PARAMETERS_DOC.split("    optimizer : ", 1)
    return head + _NORMALIZE_Y_DOC + "    optimizer : " + tail


class _BaseHypernetwork(BaseEstimator):
    """Shared parameters, training loop, persistence and kernel of the estimators."""

    _parameter_constraints: dict = {
        "z_dim": [Interval(Integral, 1, None, closed="left")],
        "f_depth": [Interval(Integral, 1, None, closed="left")],
        "f_width": [Interval(Integral, 1, None, closed="left")],
        "g_depth": [Interval(Integral, 1, None, closed="left")],
        "g_width": [Interval(Integral, 1, None, closed="left")],
        "z_encoding": [StrOptions({"linear", "fourier"})],
        "length_scale": [Interval(Real, 0, None, closed="neither"), "array-like"],
        "n_fourier_features": [Interval(Integral, 1, None, closed="left")],
        "parameterization": [StrOptions({"ntk", "standard"})],
        "activation": [StrOptions({"relu", "leaky_relu"})],
        "negative_slope": [Interval(Real, None, None, closed="neither")],
        "normalize_x": ["boolean"],
        "optimizer": [StrOptions({"sgd", "adam"})],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "momentum": [Interval(Real, 0, 1, closed="left")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "random_state": ["random_state"],
        "device": "no_validation",  # the package's device rule, checked in fit
        "dtype": [StrOptions({"float32", "float64"})],
        "verbose": ["verbose"],
        "n_jobs": [Integral, None],
        "warm_start": ["boolean"],
    }

    def __init__(
        self,
        *,
        z_dim: int = 2,
        f_depth: int = 3,
        f_width: int = 256,
        g_depth: int = 2,
        g_width: int = 32,
        z_encoding: str = "fourier",
        length_scale: float | np.ndarray = 0.5,
        n_fourier_features: int = 64,
        parameterization: str = "standard",
        activation: str = "relu",
        negative_slope: float = 0.01,
        normalize_x: bool = True,
        optimizer: str = "adam",
        learning_rate: float = 1e-3,
        batch_size: int = 100,
        max_epochs: int = 20,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 5,
        tol: float = 1e-4,
        random_state: int | np.random.RandomState | None = None,
        device: Any = "auto",
        n_jobs: int | None = None,
        dtype: str = "float64",
        verbose: int = 0,
        warm_start: bool = False,
    ) -> None:
        self.z_dim = z_dim
        self.f_depth = f_depth
        self.f_width = f_width
        self.g_depth = g_depth
        self.g_width = g_width
        self.z_encoding = z_encoding
        self.length_scale = length_scale
        self.n_fourier_features = n_fourier_features
        self.parameterization = parameterization
        self.activation = activation
        self.negative_slope = negative_slope
        self.normalize_x = normalize_x
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.warm_start = warm_start

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        tags.non_deterministic = False
        return tags

    # ---------------------------------------------------------- task hooks
    def _encode_targets(self, y: np.ndarray, first_call: bool, classes=None):
        """Return the target data (numpy) and the number of outputs of g."""
        raise NotImplementedError

    def _loss(self, output, target):
        raise NotImplementedError

    def _constant_loss(self, target: np.ndarray) -> float:
        """Training loss of the best constant prediction of the encoded targets."""
        raise NotImplementedError

    def _validation_score(self, X: np.ndarray, y: np.ndarray) -> float:
        raise NotImplementedError

    # ------------------------------------------------------------- helpers
    def _torch_dtype(self):
        """dtype of the network: the fitted module's, else the ``dtype`` parameter."""
        torch = _import_torch()
        module = getattr(self, "module_", None)
        if module is not None:
            return next(module.parameters()).dtype
        return torch.float64 if self.dtype == "float64" else torch.float32

    def _check_columns(self, n_features: int) -> None:
        if n_features < self.z_dim:
            raise ValueError(
                f"X has {n_features} feature(s), but z_dim={self.z_dim} needs at least "
                f"{self.z_dim}: the last z_dim columns of each row are z (the columns "
                "before them are x; with none, x is the constant 1)."
            )

    def _build_module(self, n_features: int, n_outputs: int, seed: int):
        torch = _import_torch()
        network = _network_module()
        generator = torch.Generator().manual_seed(int(seed))
        return network.Hypernetwork(
            # no x columns: f reads the constant x = (1,)
            x_dim=max(n_features - self.z_dim, 1),
            z_dim=self.z_dim,
            f_depth=self.f_depth,
            f_width=self.f_width,
            g_depth=self.g_depth,
            g_width=self.g_width,
            n_outputs=n_outputs,
            z_encoding=self.z_encoding,
            length_scale=np.asarray(self.length_scale, dtype=float).tolist(),
            n_fourier_features=self.n_fourier_features,
            parameterization=self.parameterization,
            activation=self.activation,
            negative_slope=self.negative_slope,
            generator=generator,
            dtype=torch.float64 if self.dtype == "float64" else torch.float32,
            device=self.device_,
        )

    def _make_optimizer(self):
        torch = _import_torch()
        parameters = list(self.module_.parameters())
        if self.optimizer == "sgd":
            return torch.optim.SGD(
                parameters,
                lr=self.learning_rate,
                momentum=self.momentum,
                weight_decay=self.weight_decay,
            )
        return torch.optim.Adam(parameters, lr=self.learning_rate, weight_decay=self.weight_decay)

    def _get_optimizer(self):
        """The optimizer for the current parameters, keeping what state it can.

        The live optimizer (or the state saved with a pickled model) is kept
        when its type is the ``optimizer`` parameter's, and its
        ``param_groups`` then take the current ``learning_rate``, ``momentum``
        and ``weight_decay``; an optimizer of another type starts afresh, as
        scikit-learn's MLPs do with ``warm_start``.
        """
        optimizer = getattr(self, "_optimizer", None)
        saved = getattr(self, "_optimizer_state", None)
        if optimizer is not None and _optimizer_kind(optimizer) != self.optimizer:
            optimizer = None
        if optimizer is None:
            optimizer = self._make_optimizer()
            if saved is not None and _optimizer_kind(saved) == self.optimizer:
                optimizer.load_state_dict(saved)
        self._optimizer_state = None
        for group in optimizer.param_groups:
            group["lr"] = float(self.learning_rate)
            group["weight_decay"] = float(self.weight_decay)
            if self.optimizer == "sgd":
                group["momentum"] = float(self.momentum)
        self._optimizer = optimizer
        return optimizer

    def _x_and_z(self, X: np.ndarray):
        """x and z tensors of (a block of) rows, on the fitted device and dtype.

        Applies the fitted ``normalize_x`` and the constant ``x = (1,)`` of
        rows without x columns. Only these rows are converted.
        """
        torch = _import_torch()
        if not X.flags.writeable:
            X = np.array(X)  # torch.as_tensor warns on read-only arrays
        U = torch.as_tensor(X, dtype=self._torch_dtype(), device=self.device_)
        n_x = U.shape[1] - self.z_dim
        z = U[:, n_x:]
        if n_x == 0:
            return torch.ones((U.shape[0], 1), dtype=U.dtype, device=U.device), z
        x = U[:, :n_x]
        if self._normalize_x_fitted:
            norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
            scale = torch.where(norm > 0, n_x**0.5 / norm, torch.zeros_like(norm))
            x = x * scale
        return x, z

    def _initialize(self, X: np.ndarray, y: np.ndarray, classes=None):
        """Set the fitted attributes of a fresh model (module at initialisation)."""
        self._check_columns(X.shape[1])
        self.device_ = _torch_device(self.device)
        self._rng = check_random_state(self.random_state)
        self._normalize_x_fitted = bool(self.normalize_x)
        self._fitted_architecture = self._architecture_params()
        target, n_outputs = self._encode_targets(y, first_call=True, classes=classes)
        seed = self._rng.randint(np.iinfo(np.int32).max)
        self.module_ = self._build_module(X.shape[1], n_outputs, seed)
        self._optimizer = None
        self._optimizer_state = None
        self.loss_curve_ = []
        self.n_iter_ = 0
        self.t_ = 0
        return target

    def _validate_training_data(self, X, y, reset: bool):
        """Validated float64 rows and targets."""
        raise NotImplementedError

    def _architecture_params(self) -> dict:
        return {
            name: np.asarray(getattr(self, name)).tolist()
            for name in _ARCHITECTURE_PARAMS
            if hasattr(self, name)
        }

    def _check_architecture_unchanged(self) -> None:
        """A warm start continues the fitted network: its shape cannot change."""
        fitted = getattr(self, "_fitted_architecture", None)
        if fitted is None:  # a model pickled before this check existed
            return
        changed = [name for name, value in self._architecture_params().items() if fitted.get(name) != value]
        if changed:
            raise ValueError(
                "warm_start / partial_fit continue the fitted network, but "
                + ", ".join(f"{name}={getattr(self, name)!r} (fitted with {fitted[name]!r})" for name in changed)
                + " would change its architecture or scaling. Fit a fresh model (warm_start=False) "
                "or set these parameters back."
            )

    # -------------------------------------------------------------- devices
    def set_params(self, **params):
        """Set the parameters of this estimator.

        On a fitted model, ``device`` is checked (a ValueError if it is not
        usable here) and the network and the optimizer state move there: where
        the network runs is not part of what was learned.

        Parameters
        ----------
        **params : dict
            Estimator parameters.

        Returns
        -------
        self : estimator instance
        """
        new_device = None
        if "device" in params and getattr(self, "module_", None) is not None:
            new_device = _torch_device(params["device"])
        super().set_params(**params)
        if new_device is not None:
            self._move_to(new_device)
        return self

    def _move_to(self, device) -> None:
        """Move ``module_`` and the optimizer state to ``device``; set ``device_``."""
        if device == self.device_ and all(
            t.device == device for t in self.module_.state_dict().values()
        ):
            return
        self.module_.to(device)
        optimizer = getattr(self, "_optimizer", None)
        if optimizer is not None:
            # the same Parameter objects now live on ``device``; reloading the
            # state casts it to them (torch keeps Adam's step counter on the CPU)
            optimizer.load_state_dict(optimizer.state_dict())
        self.device_ = device

    # ------------------------------------------------------------- training
    def _train_tensors(self, X: np.ndarray, target: np.ndarray):
        """Tensors of the training rows, and (x_unique, x_index) when x repeats enough."""
        torch = _import_torch()
        network = _network_module()
        x, z = self._x_and_z(X)
        target_dtype = torch.long if self._is_classifier else self._torch_dtype()
        target_tensor = torch.as_tensor(np.array(target), dtype=target_dtype, device=self.device_)
        x_unique, x_index = network.unique_rows(x)
        if x_unique.shape[0] > _DEDUPLICATE_BELOW * x.shape[0]:
            x_unique, x_index = None, None
        return x, z, target_tensor, x_unique, x_index

    def _run_epoch(self, tensors, optimizer) -> float:
        """One pass over the rows in shuffled mini-batches; returns the mean loss."""
        torch = _import_torch()
        x, z, target, x_unique, x_index = tensors
        n_rows = x.shape[0]
        order = torch.from_numpy(self._rng.permutation(n_rows)).to(self.device_)
        batch_size = min(self.batch_size, n_rows)
        module = self.module_
        running = torch.zeros((), dtype=self._torch_dtype(), device=self.device_)
        n_batches = (n_rows + batch_size - 1) // batch_size
        report_every = max(1, n_batches // 10) if self.verbose >= 2 else 0
        for batch_number, start in enumerate(range(0, n_rows, batch_size)):
            rows = order[start : start + batch_size]
            if x_index is None:
                output = module(x[rows], z[rows])
            else:
                distinct, inverse = torch.unique(x_index[rows], return_inverse=True)
                output = module(x_unique[distinct], z[rows], x_index=inverse)
            loss = self._loss(output, target[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.detach() * rows.shape[0]
            self.t_ += rows.shape[0]
            if report_every and (batch_number + 1) % report_every == 0:
                seen = min(start + batch_size, n_rows)
                print(
                    f"  batch {batch_number + 1}/{n_batches}, running loss "
                    f"{running.item() / seen:.6g}",
                    flush=True,
                )
        return running.item() / n_rows

    def _check_finite_loss(self, loss: float, reference: float) -> None:
        """Raise when the loss is not finite or grew 1e8-fold over ``reference``.

        In float64 a run that blows up can stay finite (and then die: every
        relu off, a constant output), so growth by eight orders of magnitude
        over the first epoch's loss counts as divergence too.
        """
        if not np.isfinite(loss) or loss > _DIVERGENCE_FACTOR * reference:
            raise ValueError(
                f"Training diverged: the loss became {loss:.4g} in epoch {self.n_iter_} "
                f"(it was {reference:.4g}). Lower learning_rate (currently "
                f"{self.learning_rate}) or scale the inputs and targets; the model is "
                "left in its diverged state."
            )

    @contextlib.contextmanager
    def _torch_threads(self):
        """Run the body with ``n_jobs`` torch CPU threads, then restore the old number."""
        torch = _import_torch()
        previous = torch.get_num_threads()
        wanted = max(1, int(effective_n_jobs(self.n_jobs)))
        if wanted != previous:
            torch.set_num_threads(wanted)
        try:
            yield
        finally:
            if wanted != previous:
                torch.set_num_threads(previous)

    def _fit(self, X, y, classes=None, epochs: int | None = None, incremental: bool = False):
        with self._torch_threads():
            return self._fit_threads(X, y, classes, epochs, incremental)

    def _fit_threads(self, X, y, classes=None, epochs: int | None = None, incremental: bool = False):
        first_call = not (hasattr(self, "module_") and (incremental or self.warm_start))
        X, y = self._validate_training_data(X, y, reset=first_call)
        if first_call:
            target = self._initialize(X, y, classes=classes)
        else:
            self._check_architecture_unchanged()
            target, n_outputs = self._encode_targets(y, first_call=False, classes=classes)
            if n_outputs != self.module_.n_outputs:
                raise ValueError(
                    f"y has {n_outputs} output(s) but the model was fitted with "
                    f"{self.module_.n_outputs}; fit a fresh model (warm_start=False)."
                )
            # continuing: the current device parameter decides where training runs
            self._move_to(_torch_device(self.device))
        early_stopping = self.early_stopping and not incremental
        if early_stopping:
            X, X_val, target, target_val = self._split_validation(X, target)
            self.validation_scores_ = [] if first_call else list(
                getattr(self, "validation_scores_", None) or []
            )
            self.best_validation_score_ = -np.inf
        elif not incremental:
            self.validation_scores_ = None
        optimizer = self._get_optimizer()
        tensors = self._train_tensors(X, target)
        epochs = self.max_epochs if epochs is None else epochs
        best_loss = np.inf
        best_state = None
        epochs_without_improvement = 0
        epochs_run = 0
        converged = False
        self.module_.train()
        for _ in range(epochs):
            started = time.perf_counter()
            loss = self._run_epoch(tensors, optimizer)
            self.n_iter_ += 1
            epochs_run += 1
            self.loss_curve_.append(loss)
            if epochs_run == 1:
                reference = max(loss, self._constant_loss(target))
            self._check_finite_loss(loss, reference)
            message = f"Epoch {self.n_iter_}: loss {loss:.6g}"
            if early_stopping:
                score = self._validation_score(X_val, target_val)
                self.validation_scores_.append(score)
                message += f", validation score {score:.6g}"
                if score > self.best_validation_score_:
                    best_state = copy.deepcopy(self.module_.state_dict())
                if score > self.best_validation_score_ + self.tol:
                    epochs_without_improvement = 0
                else:
                    epochs_without_improvement += 1
                self.best_validation_score_ = max(self.best_validation_score_, score)
            elif not incremental:
                if loss < best_loss - self.tol:
                    epochs_without_improvement = 0
                else:
                    epochs_without_improvement += 1
                best_loss = min(best_loss, loss)
            if self.verbose:
                print(f"{message} ({time.perf_counter() - started:.3f} s)", flush=True)
            if not incremental and epochs_without_improvement >= self.n_iter_no_change:
                converged = True
                if self.verbose:
                    print(
                        f"No improvement larger than tol={self.tol} for "
                        f"{self.n_iter_no_change} epochs; stopping.",
                        flush=True,
                    )
                break
        if early_stopping and best_state is not None:
            self.module_.load_state_dict(best_state)
        self.module_.eval()
        if not incremental:
            self._warn_if_not_learned(target, epochs_run, converged, early_stopping)
        return self

    def _warn_if_not_learned(
        self, target: np.ndarray, epochs_run: int, converged: bool, early_stopping: bool
    ) -> None:
        """ConvergenceWarning for a run that stopped without having learned (or too early).

        A run "did not learn" when its final training loss is no better than
        the best constant prediction's (the targets' variance for regression,
        the entropy of the class prior for classification), or when ``tol``
        stopped it as early as it can, ``n_iter_no_change + 1`` epochs in.
        Targets a constant fits exactly (one class, a constant column) never
        warn: there is nothing to learn.
        """
        constant_loss = self._constant_loss(target)
        something_to_learn = constant_loss > 1e-12
        final_loss = self.loss_curve_[-1]
        settings = (
            f"optimizer={self.optimizer!r}, learning_rate={self.learning_rate}, "
            f"parameterization={self.parameterization!r}"
        )
        reached = "" if converged else f", stopped by max_epochs={self.max_epochs}"
        if something_to_learn and final_loss >= constant_loss:
            warnings.warn(
                f"The network did not learn: its final training loss {final_loss:.4g} is "
                f"no better than the constant predictor's {constant_loss:.4g} after "
                f"{epochs_run} epoch(s){reached} ({settings}); {_remedy(self)}.",
                ConvergenceWarning,
                stacklevel=4,
            )
        elif something_to_learn and converged and epochs_run <= self.n_iter_no_change + 1:
            watched = "validation score" if early_stopping else "training loss"
            warnings.warn(
                f"Training stopped after {epochs_run} epochs: the {watched} did not "
                f"improve by tol={self.tol} after the first epoch, so the network has "
                f"hardly learned ({settings}); {_remedy(self)}, or a smaller tol.",
                ConvergenceWarning,
                stacklevel=4,
            )
        elif not converged:
            warnings.warn(
                f"Stopped after max_epochs={self.max_epochs} epochs before the "
                f"{'validation score' if early_stopping else 'training loss'} stopped "
                "improving; raise max_epochs to train further.",
                ConvergenceWarning,
                stacklevel=4,
            )

    def _split_validation(self, X: np.ndarray, target: np.ndarray):
        n_rows = X.shape[0]
        n_validation = int(np.ceil(self.validation_fraction * n_rows))
        if n_validation < 2 or n_rows - n_validation < 1:
            raise ValueError(
                f"early_stopping needs at least 2 validation rows and 1 training row; "
                f"validation_fraction={self.validation_fraction} of {n_rows} rows gives "
                f"{n_validation}. Use more rows or a larger validation_fraction."
            )
        stratify = target if self._is_classifier else None
        seed = self._rng.randint(np.iinfo(np.int32).max)
        try:
            return train_test_split(
                X, target, test_size=n_validation, random_state=seed, stratify=stratify
            )
        except ValueError:
            if stratify is None:
                raise
            return train_test_split(X, target, test_size=n_validation, random_state=seed)

    # ----------------------------------------------------------- inference
    def _forward_numpy(self, X: np.ndarray) -> np.ndarray:
        with self._torch_threads():
            return self._forward_blocks(X)

    def _forward_blocks(self, X: np.ndarray) -> np.ndarray:
        """Network outputs for validated rows, float64.

        Rows are converted to tensors and evaluated in blocks of at most
        ``PREDICT_BLOCK_ROWS`` rows whose generated weights of g take at most
        ``PREDICT_BLOCK_BYTES``, so memory does not grow with the number of
        rows.
        """
        torch = _import_torch()
        n_outputs = self.module_.n_outputs
        result = np.empty((X.shape[0], n_outputs), dtype=np.float64)
        row_bytes = self.module_.n_generated * torch.finfo(self._torch_dtype()).bits // 8
        block_rows = max(1, min(int(PREDICT_BLOCK_ROWS), PREDICT_BLOCK_BYTES // row_bytes))
        with torch.no_grad():
            for start in range(0, X.shape[0], block_rows):
                stop = min(start + block_rows, X.shape[0])
                x, z = self._x_and_z(X[start:stop])
                block = self.module_(x, z, deduplicate_x=True)
                result[start:stop] = block.to("cpu", torch.float64).numpy()
        if not np.all(np.isfinite(result)):
            raise ValueError("The network output is not finite; check the scale of X.")
        return result

    def _validated_rows(self, X) -> np.ndarray:
        """Validated rows; float32 input stays float32 (no copy of a large X)."""
        check_is_fitted(self)
        return validate_data(self, X, dtype=(np.float64, np.float32), reset=False)

    def empirical_ntk(self, U1, U2=None) -> np.ndarray:
        """Empirical hyperkernel ``J J^T`` of the current network.

        ``J`` is the Jacobian of the network output with respect to ``f``'s
        weights (the only trained weights). With ``parameterization="ntk"`` and
        large widths it approaches :class:`~sklearn_hyperkernel.HyperKernel`
        with the same depths, encoding, activation and ``normalize_x``. With
        several outputs (multi-output regression, classification) the
        per-output kernels are averaged. With ``normalize_y=True`` it is the
        kernel of the normalised output.

        Call it on a fitted model, or after :meth:`initialize` for the model at
        initialisation.

        Parameters
        ----------
        U1 : array-like of shape (n_rows_1, n_features)
            Rows ``[x | z]``.
        U2 : array-like of shape (n_rows_2, n_features), default=None
            Second set of rows; ``None`` means ``U1``.

        Returns
        -------
        K : ndarray of shape (n_rows_1, n_rows_2), float64
        """
        network = _network_module()
        x1, z1 = self._x_and_z(self._validated_rows(U1))
        x2 = z2 = None
        if U2 is not None:
            x2, z2 = self._x_and_z(self._validated_rows(U2))
        with self._torch_threads():
            kernel = network.empirical_ntk(self.module_, x1, z1, x2, z2, reduce="mean")
        return kernel.to("cpu").double().numpy()

    # ---------------------------------------------------------- persistence
    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        module = state.get("module_")
        if module is not None:
            on_cpu = all(t.device.type == "cpu" for t in module.state_dict().values())
            state["module_"] = module if on_cpu else copy.deepcopy(module).to("cpu")
        optimizer = state.pop("_optimizer", None)
        if optimizer is not None:
            state["_optimizer_state"] = _tensors_to_cpu(optimizer.state_dict())
        elif state.get("_optimizer_state") is not None:
            state["_optimizer_state"] = _tensors_to_cpu(state["_optimizer_state"])
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._optimizer = None
        device = getattr(self, "device_", None)
        if device is None or getattr(self, "module_", None) is None:
            return
        torch = _import_torch()
        # The pickled tensors are on the CPU. A device this machine lacks (no
        # CUDA, or fewer GPUs) falls back to the CPU with a DeviceFallbackWarning.
        kept = fallback_device(device, type(self).__name__)
        if kept is None:
            self.device_ = torch.device("cpu")
        elif torch.device(kept).type != "cpu":
            self.module_.to(device)


_SHARED_ATTRIBUTES_DOC = """\
    module_ : sklearn_hyperkernel._network.Hypernetwork
        The trained torch module.
    device_ : torch.device
        Where ``module_`` lives.
    validation_scores_ : list of float or None
        Score on the held-out rows after each epoch (``early_stopping=True``),
        else None.
    best_validation_score_ : float
        Best of ``validation_scores_`` (``early_stopping=True`` only).
    n_iter_ : int
        Epochs run so far.
    t_ : int
        Training rows processed so far.
    n_features_in_ : int
        Number of columns of ``X`` seen in :meth:`fit`.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Defined only when ``X`` has string feature names.
"""

_REGRESSOR_DOC = """Finite hypernetwork ``h(x, z) = g(z; f(x))`` trained on the squared loss.

    Each row ``u = [x | z]`` of ``X`` holds the input ``x`` of the hypernetwork
    ``f`` (all but the last ``z_dim`` columns) and the input ``z`` of the
    primary network ``g`` (the last ``z_dim`` columns). ``f`` maps ``x`` to the
    weights of ``g``; every row gets its own weights and ``g`` runs batched over
    the rows. Only ``f``'s weights are trained, by mini-batch Adam or SGD on
    the mean squared error.

    The defaults are chosen to learn out of the box (Adam, standard
    parameterisation, Fourier features of ``z``, normalised ``x`` and ``y``,
    float64). The paper's setting, whose wide limit trains like kernel
    regression with :class:`~sklearn_hyperkernel.HyperKernel`, is
    ``parameterization="ntk", optimizer="sgd"`` (with a larger
    ``learning_rate``).

    Parameters
    ----------
{parameters}
    Attributes
    ----------
    loss_curve_ : list of float
        Mean training loss (MSE, of the normalised targets with
        ``normalize_y=True``) of each epoch.
{attributes}
    See Also
    --------
    HypernetworkClassifier : The same network trained on the cross-entropy.
    sklearn_hyperkernel.HyperKernelRegressor : Its infinite-width limit.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_hyperkernel.datasets import pixel_regression
    >>> from sklearn_hyperkernel.hypernetwork import HypernetworkRegressor
    >>> U, y = pixel_regression(load_digits().images[:5])
    >>> model = HypernetworkRegressor(f_width=32, max_epochs=3, random_state=0,
    ...                               device="cpu").fit(U, y)
    >>> model.predict(U[:2]).shape
    (2,)
    """

_CLASSIFIER_DOC = """Finite hypernetwork ``h(x, z) = g(z; f(x))`` trained on the cross-entropy.

    Each row ``u = [x | z]`` of ``X`` holds the input ``x`` of the hypernetwork
    ``f`` (all but the last ``z_dim`` columns) and the input ``z`` of the
    primary network ``g`` (the last ``z_dim`` columns). ``g`` outputs one logit
    per class; only ``f``'s weights are trained, by mini-batch Adam or SGD on
    the cross-entropy. The paper's rotation-prediction experiment (its Fig. 2)
    is such a task: ``x`` a rotated image, ``z`` a further rotation of it, the
    class the angle between them.

    Fitted on a single class, it predicts that class with probability one.

    Parameters
    ----------
{parameters}
    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    loss_curve_ : list of float
        Mean training cross-entropy of each epoch.
{attributes}
    See Also
    --------
    HypernetworkRegressor : The same network trained on the squared loss.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_hyperkernel.datasets import pixel_regression
    >>> from sklearn_hyperkernel.hypernetwork import HypernetworkClassifier
    >>> U, y = pixel_regression(load_digits().images[:5])
    >>> model = HypernetworkClassifier(f_width=32, max_epochs=3, random_state=0,
    ...                                device="cpu").fit(U, y > 0.5)
    >>> model.predict_proba(U[:2]).shape
    (2, 2)
    """


class HypernetworkRegressor(MultiOutputMixin, RegressorMixin, _BaseHypernetwork):
    __doc__ = _REGRESSOR_DOC.format(
        parameters=_parameters_doc(regressor=True), attributes=_SHARED_ATTRIBUTES_DOC
    )

    _is_classifier = False
    _normalize_x_fitted = False  # models pickled before normalize_x existed
    _y_mean = None

    _parameter_constraints: dict = {
        **_BaseHypernetwork._parameter_constraints,
        "normalize_y": ["boolean"],
    }

    def __init__(
        self,
        *,
        z_dim: int = 2,
        f_depth: int = 3,
        f_width: int = 256,
        g_depth: int = 2,
        g_width: int = 32,
        z_encoding: str = "fourier",
        length_scale: float | np.ndarray = 0.5,
        n_fourier_features: int = 64,
        parameterization: str = "standard",
        activation: str = "relu",
        negative_slope: float = 0.01,
        normalize_x: bool = True,
        normalize_y: bool = True,
        optimizer: str = "adam",
        learning_rate: float = 1e-3,
        batch_size: int = 100,
        max_epochs: int = 20,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 5,
        tol: float = 1e-4,
        random_state: int | np.random.RandomState | None = None,
        device: Any = "auto",
        n_jobs: int | None = None,
        dtype: str = "float64",
        verbose: int = 0,
        warm_start: bool = False,
    ) -> None:
        super().__init__(
            z_dim=z_dim,
            f_depth=f_depth,
            f_width=f_width,
            g_depth=g_depth,
            g_width=g_width,
            z_encoding=z_encoding,
            length_scale=length_scale,
            n_fourier_features=n_fourier_features,
            parameterization=parameterization,
            activation=activation,
            negative_slope=negative_slope,
            normalize_x=normalize_x,
            optimizer=optimizer,
            learning_rate=learning_rate,
            batch_size=batch_size,
            max_epochs=max_epochs,
            momentum=momentum,
            weight_decay=weight_decay,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change,
            tol=tol,
            random_state=random_state,
            device=device,
            n_jobs=n_jobs,
            dtype=dtype,
            verbose=verbose,
            warm_start=warm_start,
        )
        self.normalize_y = normalize_y

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.single_output = True
        tags.target_tags.multi_output = True
        return tags

    def _validate_training_data(self, X, y, reset: bool):
        X, y = validate_data(
            self, X, y, reset=reset, dtype=np.float64, multi_output=True, y_numeric=True
        )
        return X, np.asarray(y, dtype=np.float64)

    def _encode_targets(self, y: np.ndarray, first_call: bool, classes=None):
        if first_call:
            self._y_one_dimensional = y.ndim == 1
        target = y.reshape(-1, 1) if y.ndim == 1 else y
        if first_call:
            # fixed at the first fit: warm starts and partial_fit keep the same units
            if self.normalize_y and target.shape[0] > 0:
                mean = target.mean(axis=0)
                scale = target.std(axis=0)
                scale[scale < 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1)] = 1.0
            else:
                mean = np.zeros(target.shape[1])
                scale = np.ones(target.shape[1])
            self._y_mean, self._y_scale = mean, scale
        if self._y_mean is not None and target.shape[1] == self._y_mean.shape[0]:
            target = (target - self._y_mean) / self._y_scale
        return target, target.shape[1]

    def _decode_outputs(self, output: np.ndarray) -> np.ndarray:
        if self._y_mean is None:
            return output
        return output * self._y_scale + self._y_mean

    def _loss(self, output, target):
        return ((output - target) ** 2).mean()

    def _constant_loss(self, target: np.ndarray) -> float:
        return float(np.mean(np.var(target, axis=0))) if target.size else 0.0

    def _validation_score(self, X: np.ndarray, target: np.ndarray) -> float:
        return float(r2_score(target, self._forward_numpy(X)))

    def initialize(self, X, y=None) -> HypernetworkRegressor:
        """Set up the network at initialisation without training it.

        Validates the parameters and rows, then draws the weights exactly as
        :meth:`fit` with the same ``random_state`` would before its first
        step (so :meth:`empirical_ntk` gives the kernel at initialisation).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows ``[x | z]``.
        y : array-like of shape (n_samples,) or (n_samples, n_targets), default=None
            Its number of targets (and, with ``normalize_y``, their mean and
            scale) are used; ``None`` means one target of zeros.

        Returns
        -------
        self : HypernetworkRegressor
        """
        self._validate_params()
        if y is None:
            X = validate_data(self, X, dtype=np.float64, reset=True)
            y = np.zeros(X.shape[0])
        else:
            X, y = self._validate_training_data(X, y, reset=True)
        self._initialize(X, y)
        self.module_.eval()
        return self

    def fit(self, X, y) -> HypernetworkRegressor:
        """Train the network on rows ``X`` and targets ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows ``[x | z]``.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Targets.

        Returns
        -------
        self : HypernetworkRegressor
            The fitted estimator.
        """
        self._validate_params()
        return self._fit(X, y)

    def partial_fit(self, X, y) -> HypernetworkRegressor:
        """Train for one epoch over ``X``, continuing from the current weights.

        The first call initialises the network (and, with ``normalize_y``,
        fixes the target mean and scale from its ``y``). Each call uses the
        current ``learning_rate``, ``momentum``, ``weight_decay`` and
        ``optimizer``. Early stopping does not apply.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows ``[x | z]``.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Targets.

        Returns
        -------
        self : HypernetworkRegressor
            The updated estimator.
        """
        if not hasattr(self, "module_"):
            self._validate_params()
        return self._fit(X, y, epochs=1, incremental=True)

    def predict(self, X) -> np.ndarray:
        """Network output for rows ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows ``[x | z]``.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_targets)
            Predictions, in the units of the training targets.
        """
        output = self._decode_outputs(self._forward_numpy(self._validated_rows(X)))
        return output[:, 0] if self._y_one_dimensional else output


class HypernetworkClassifier(ClassifierMixin, _BaseHypernetwork):
    __doc__ = _CLASSIFIER_DOC.format(
        parameters=_parameters_doc(regressor=False), attributes=_SHARED_ATTRIBUTES_DOC
    )

    _is_classifier = True
    _normalize_x_fitted = False  # models pickled before normalize_x existed

    def _validate_training_data(self, X, y, reset: bool):
        X, y = validate_data(self, X, y, reset=reset, dtype=np.float64, multi_output=False)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        return X, y

    def _encode_targets(self, y: np.ndarray, first_call: bool, classes=None):
        if first_call:
            self.classes_ = np.unique(y if classes is None else np.asarray(classes))
        unknown = np.setdiff1d(y, self.classes_)
        if unknown.size:
            raise ValueError(
                f"y holds labels {unknown.tolist()} that are not in classes_ "
                f"{self.classes_.tolist()}."
            )
        return np.searchsorted(self.classes_, y), len(self.classes_)

    def _loss(self, output, target):
        torch = _import_torch()
        return torch.nn.functional.cross_entropy(output, target)

    def _constant_loss(self, target: np.ndarray) -> float:
        if target.size == 0:
            return 0.0
        prior = np.bincount(target) / target.size
        prior = prior[prior > 0]
        return float(-np.sum(prior * np.log(prior)))

    def _validation_score(self, X: np.ndarray, target: np.ndarray) -> float:
        return float(accuracy_score(target, self._forward_numpy(X).argmax(axis=1)))

    def initialize(self, X, y) -> HypernetworkClassifier:
        """Set up the network at initialisation without training it.

        See :meth:`HypernetworkRegressor.initialize`; ``y`` gives the classes.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows ``[x | z]``.
        y : array-like of shape (n_samples,)
            Labels; only the set of classes is used.

        Returns
        -------
        self : HypernetworkClassifier
        """
        self._validate_params()
        X, y = self._validate_training_data(X, y, reset=True)
        self._initialize(X, y)
        self.module_.eval()
        return self

    def fit(self, X, y) -> HypernetworkClassifier:
        """Train the network on rows ``X`` and labels ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows ``[x | z]``.
        y : array-like of shape (n_samples,)
            Labels.

        Returns
        -------
        self : HypernetworkClassifier
            The fitted estimator.
        """
        self._validate_params()
        return self._fit(X, y)

    def partial_fit(self, X, y, classes=None) -> HypernetworkClassifier:
        """Train for one epoch over ``X``, continuing from the current weights.

        Each call uses the current ``learning_rate``, ``momentum``,
        ``weight_decay`` and ``optimizer``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows ``[x | z]``.
        y : array-like of shape (n_samples,)
            Labels.
        classes : array-like of shape (n_classes,), default=None
            All labels that can occur; required on the first call.

        Returns
        -------
        self : HypernetworkClassifier
            The updated estimator.
        """
        if not hasattr(self, "module_"):
            self._validate_params()
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(
                f"classes={classes!r} differs from classes_={self.classes_!r} of the first call."
            )
        return self._fit(X, y, classes=classes, epochs=1, incremental=True)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (softmax of the logits), columns ordered as ``classes_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows ``[x | z]``.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probabilities; a model fitted on one class gives a column of ones.
        """
        logits = self._forward_numpy(self._validated_rows(X))
        logits -= logits.max(axis=1, keepdims=True)
        proba = np.exp(logits)
        proba /= proba.sum(axis=1, keepdims=True)
        return proba

    def predict_log_proba(self, X) -> np.ndarray:
        """Logarithm of :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows ``[x | z]``.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            Log-probabilities, columns ordered as ``classes_``.
        """
        logits = self._forward_numpy(self._validated_rows(X))
        logits -= logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    def predict(self, X) -> np.ndarray:
        """Most probable class of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows ``[x | z]``.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Labels from ``classes_``.
        """
        logits = self._forward_numpy(self._validated_rows(X))
        return self.classes_[np.argmax(logits, axis=1)]
