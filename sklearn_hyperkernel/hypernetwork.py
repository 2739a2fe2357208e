"""Finite hypernetworks trained with torch, as scikit-learn estimators.

:class:`HypernetworkRegressor` (squared loss) and
:class:`HypernetworkClassifier` (cross-entropy) train the finite
hypernetwork ``h(u) = g(z; f(x))`` of :mod:`sklearn_hyperkernel._network` on
rows ``u = [x | z]`` (the last ``z_dim`` columns are ``z``). The model is the
one whose infinite-width limits are :class:`~sklearn_hyperkernel.HyperKernel`
and :class:`~sklearn_hyperkernel.HyperNNGP`; :meth:`empirical_ntk` gives its
finite-width hyperkernel.

torch is an optional dependency of the package: this module imports it only
when an estimator is fitted or used, so ``import sklearn_hyperkernel`` works
without it.
"""

from __future__ import annotations

import copy
import sys
import time
import warnings
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, MultiOutputMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

__all__ = ["HypernetworkClassifier", "HypernetworkRegressor"]

#: Rows evaluated at once by ``predict`` and friends.
PREDICT_BLOCK_ROWS = 8192
#: Training batches reuse f's output per distinct x when the training set has at
#: most this fraction of distinct x rows (e.g. one image, many pixel coordinates).
_DEDUPLICATE_BELOW = 0.5
_INSTALL_HINT = "pip install sklearn-hyperkernel[torch]"


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


def _resolve_device(device: Any):
    """Turn the ``device`` parameter into a ``torch.device``, checking it is usable."""
    torch = _import_torch()
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise InvalidParameterError(
            "The 'device' parameter of the estimator must be 'auto', a device string such "
            f"as 'cpu' or 'cuda:0', or a torch.device; got {device!r} instead."
        )
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError) as error:
        raise InvalidParameterError(
            f"The 'device' parameter of the estimator is not a valid torch device: {device!r}."
        ) from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was requested but CUDA is not available on this "
                "machine (torch.cuda.is_available() is False); use device='cpu' or "
                "device='auto'."
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} was requested but only {torch.cuda.device_count()} "
                "CUDA device(s) are available."
            )
    return resolved


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
        "device": "no_validation",  # checked in fit: a string or a torch.device
        "dtype": [StrOptions({"float32", "float64"})],
        "verbose": ["verbose"],
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
        z_encoding: str = "linear",
        length_scale: float | np.ndarray = 1.0,
        n_fourier_features: int = 256,
        parameterization: str = "ntk",
        activation: str = "relu",
        negative_slope: float = 0.01,
        optimizer: str = "sgd",
        learning_rate: float = 0.01,
        batch_size: int = 100,
        max_epochs: int = 100,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        tol: float = 1e-4,
        random_state: int | np.random.RandomState | None = None,
        device: Any = "auto",
        dtype: str = "float32",
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
        """Return the target tensor data (numpy) and the number of outputs of g."""
        raise NotImplementedError

    def _loss(self, output, target):
        raise NotImplementedError

    def _validation_score(self, X: np.ndarray, y: np.ndarray) -> float:
        raise NotImplementedError

    # ------------------------------------------------------------- helpers
    def _torch_dtype(self):
        torch = _import_torch()
        return torch.float64 if self.dtype == "float64" else torch.float32

    def _check_columns(self, n_features: int) -> None:
        if n_features <= self.z_dim:
            raise ValueError(
                f"X has {n_features} feature(s), but z_dim={self.z_dim} needs at least "
                f"{self.z_dim + 1}: the last z_dim columns of each row are z and the "
                "hypernetwork f needs at least one x column before them."
            )

    def _build_module(self, n_features: int, n_outputs: int, seed: int):
        torch = _import_torch()
        network = _network_module()
        generator = torch.Generator().manual_seed(int(seed))
        return network.Hypernetwork(
            x_dim=n_features - self.z_dim,
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
            dtype=self._torch_dtype(),
            device=self.device_,
        )

    def _make_optimizer(self):
        torch = _import_torch()
        parameters = list(self.module_.parameters())
        if self.optimizer == "sgd":
            optimizer = torch.optim.SGD(
                parameters,
                lr=self.learning_rate,
                momentum=self.momentum,
                weight_decay=self.weight_decay,
            )
        else:
            optimizer = torch.optim.Adam(
                parameters, lr=self.learning_rate, weight_decay=self.weight_decay
            )
        return optimizer

    def _get_optimizer(self):
        """The live optimizer; rebuilt (with its saved state) after unpickling."""
        optimizer = getattr(self, "_optimizer", None)
        if optimizer is None:
            optimizer = self._make_optimizer()
            saved = getattr(self, "_optimizer_state", None)
            if saved is not None:
                optimizer.load_state_dict(saved)
                self._optimizer_state = None
            self._optimizer = optimizer
        return optimizer

    def _as_tensors(self, X: np.ndarray):
        """x and z tensors of the rows, on the fitted device and dtype."""
        torch = _import_torch()
        if not X.flags.writeable:
            X = np.array(X)  # torch.as_tensor warns on read-only arrays
        U = torch.as_tensor(X, dtype=self._torch_dtype(), device=self.device_)
        return U[:, : -self.z_dim], U[:, -self.z_dim :]

    def _initialize(self, X: np.ndarray, y: np.ndarray, classes=None):
        """Set the fitted attributes of a fresh model (module at initialisation)."""
        self._check_columns(X.shape[1])
        self.device_ = _resolve_device(self.device)
        self._rng = check_random_state(self.random_state)
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

    # ------------------------------------------------------------- training
    def _train_tensors(self, X: np.ndarray, target: np.ndarray):
        """Tensors of the training rows, and (x_unique, x_index) when x repeats enough."""
        torch = _import_torch()
        network = _network_module()
        x, z = self._as_tensors(X)
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

    def _check_finite_loss(self, loss: float) -> None:
        if not np.isfinite(loss):
            raise ValueError(
                f"Training diverged: the loss became {loss} in epoch {self.n_iter_}. "
                f"Lower learning_rate (currently {self.learning_rate}) or scale the "
                "inputs and targets; the model is left in its diverged state."
            )

    def _fit(self, X, y, classes=None, epochs: int | None = None, incremental: bool = False):
        first_call = not (hasattr(self, "module_") and (incremental or self.warm_start))
        X, y = self._validate_training_data(X, y, reset=first_call)
        if first_call:
            target = self._initialize(X, y, classes=classes)
        else:
            target, n_outputs = self._encode_targets(y, first_call=False, classes=classes)
            if n_outputs != self.module_.n_outputs:
                raise ValueError(
                    f"y has {n_outputs} output(s) but the model was fitted with "
                    f"{self.module_.n_outputs}; fit a fresh model (warm_start=False)."
                )
        early_stopping = self.early_stopping and not incremental
        if early_stopping:
            X, X_val, target, target_val = self._split_validation(X, target)
            self.validation_scores_ = [] if first_call else list(
                getattr(self, "validation_scores_", [])
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
        converged = False
        self.module_.train()
        for _ in range(epochs):
            started = time.perf_counter()
            loss = self._run_epoch(tensors, optimizer)
            self.n_iter_ += 1
            self.loss_curve_.append(loss)
            self._check_finite_loss(loss)
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
        if not incremental and not converged:
            warnings.warn(
                f"Stopped after max_epochs={self.max_epochs} epochs before the "
                f"{'validation score' if early_stopping else 'training loss'} stopped "
                "improving; raise max_epochs to train further.",
                ConvergenceWarning,
            )
        return self

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
    def _forward_numpy(self, X) -> np.ndarray:
        """Network outputs for validated rows, float64, block by block."""
        torch = _import_torch()
        x, z = self._as_tensors(X)
        outputs = []
        with torch.no_grad():
            for start in range(0, x.shape[0], PREDICT_BLOCK_ROWS):
                stop = start + PREDICT_BLOCK_ROWS
                block = self.module_(x[start:stop], z[start:stop], deduplicate_x=True)
                outputs.append(block.to("cpu", torch.float64).numpy())
        if not outputs:
            return np.empty((0, self.module_.n_outputs))
        result = np.concatenate(outputs)
        if not np.all(np.isfinite(result)):
            raise ValueError("The network output is not finite; check the scale of X.")
        return result

    def _validated_rows(self, X) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, dtype=np.float64, reset=False)

    def empirical_ntk(self, U1, U2=None) -> np.ndarray:
        """Empirical hyperkernel ``J J^T`` of the current network.

        ``J`` is the Jacobian of the network output with respect to ``f``'s
        weights (the only trained weights). With ``parameterization="ntk"`` and
        large widths it approaches :class:`~sklearn_hyperkernel.HyperKernel`
        with the same depths, encoding and activation. With several outputs
        (multi-output regression, classification) the per-output kernels are
        averaged.

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
        U1 = self._validated_rows(U1)
        x1, z1 = self._as_tensors(U1)
        x2 = z2 = None
        if U2 is not None:
            x2, z2 = self._as_tensors(self._validated_rows(U2))
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
        if device.type == "cuda" and torch.cuda.is_available():
            self.module_.to(device)
        else:
            # Saved on a device this machine lacks (e.g. CUDA): stay on the CPU.
            self.device_ = torch.device("cpu")


class HypernetworkRegressor(MultiOutputMixin, RegressorMixin, _BaseHypernetwork):
    """Finite hypernetwork ``h(x, z) = g(z; f(x))`` trained on the squared loss.

    Each row ``u = [x | z]`` of ``X`` holds the input ``x`` of the hypernetwork
    ``f`` (all but the last ``z_dim`` columns) and the input ``z`` of the
    primary network ``g`` (the last ``z_dim`` columns). ``f`` maps ``x`` to the
    weights of ``g``; every row gets its own weights and ``g`` runs batched over
    the rows. Only ``f``'s weights are trained, by mini-batch SGD or Adam on
    the mean squared error. With ``parameterization="ntk"`` the network at
    initialisation is the one whose infinite-width hyperkernel is
    :class:`~sklearn_hyperkernel.HyperKernel`.

    Parameters
    ----------
    z_dim : int, default=2
        Number of trailing columns of ``X`` that form ``z``.
    f_depth : int, default=3
        Number of weight matrices of ``f`` (``L``).
    f_width : int, default=256
        Hidden width of ``f``.
    g_depth : int, default=2
        Number of weight matrices of ``g`` (``H``).
    g_width : int, default=32
        Hidden width of ``g``.
    z_encoding : {"linear", "fourier"}, default="linear"
        ``"linear"`` feeds ``z`` to ``g``; ``"fourier"`` feeds
        ``n_fourier_features`` fixed random Fourier features of ``z / length_scale``
        (the finite version of the kernels' Gaussian encoding). Note that with the
        linear encoding and relu, ``g`` is positively homogeneous in ``z``.
    length_scale : float or array-like of shape (z_dim,), default=1.0
        Length scale of the Fourier encoding; ignored for ``"linear"``.
    n_fourier_features : int, default=256
        Number of random Fourier features of ``z``; ignored for ``"linear"``.
    parameterization : {"ntk", "standard"}, default="ntk"
        ``"ntk"``: weights ``N(0, 1)``, each layer of ``f`` multiplies by
        ``1/sqrt(fan_in)`` (the paper's; matches the kernels at initialisation).
        ``"standard"``: weights ``N(0, 1/fan_in)``, no multiplier (He
        initialisation). Same function at initialisation, different gradients.
    activation : {"relu", "leaky_relu"}, default="relu"
        Activation of ``f`` and ``g``, normalised to keep the variance.
    negative_slope : float, default=0.01
        Slope of ``"leaky_relu"`` for negative inputs.
    optimizer : {"sgd", "adam"}, default="sgd"
    learning_rate : float, default=0.01
    batch_size : int, default=100
        Rows per mini-batch (capped at the number of rows).
    max_epochs : int, default=100
        Passes over the training rows in :meth:`fit`.
    momentum : float, default=0.9
        Momentum of ``"sgd"``; ignored by ``"adam"``.
    weight_decay : float, default=0.0
        L2 penalty of the optimizer.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows, stop when their R^2 has
        not improved by ``tol`` for ``n_iter_no_change`` epochs, and keep the
        weights of the best epoch. Otherwise training stops when the training
        loss has not improved by ``tol`` for ``n_iter_no_change`` epochs.
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=10
    tol : float, default=1e-4
    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights, the Fourier features, the shuffling and the
        validation split. An int gives identical predictions on the CPU.
    device : "auto", str or torch.device, default="auto"
        ``"auto"`` uses CUDA when available, else the CPU.
    dtype : {"float32", "float64"}, default="float32"
        Floating-point type of the network.
    verbose : int, default=0
        ``1`` prints one line per epoch with the loss; ``2`` also prints the
        running loss ten times per epoch.
    warm_start : bool, default=False
        Continue from the fitted weights (and optimizer state) in :meth:`fit`.

    Attributes
    ----------
    module_ : sklearn_hyperkernel._network.Hypernetwork
        The trained torch module.
    device_ : torch.device
        Where ``module_`` lives.
    loss_curve_ : list of float
        Mean training loss (MSE) of each epoch.
    validation_scores_ : list of float or None
        R^2 on the held-out rows after each epoch (``early_stopping=True``),
        else None.
    best_validation_score_ : float
        Best of ``validation_scores_`` (``early_stopping=True`` only).
    n_iter_ : int
        Epochs run so far.
    t_ : int
        Training rows processed so far.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Defined only when ``X`` has string feature names.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_hyperkernel.datasets import pixel_regression
    >>> from sklearn_hyperkernel.hypernetwork import HypernetworkRegressor
    >>> U, y = pixel_regression(load_digits().images[:5])
    >>> model = HypernetworkRegressor(f_width=32, max_epochs=3, z_encoding="fourier",
    ...                               random_state=0, device="cpu").fit(U, y)
    >>> model.predict(U[:2]).shape
    (2,)
    """

    _is_classifier = False
    _multi_output_targets = True

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
        return target, target.shape[1]

    def _loss(self, output, target):
        return ((output - target) ** 2).mean()

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
        y : array-like of shape (n_samples,) or (n_samples, n_targets), default=None
            Only its number of targets is used; ``None`` means one.

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

        Returns
        -------
        self : HypernetworkRegressor
        """
        self._validate_params()
        return self._fit(X, y)

    def partial_fit(self, X, y) -> HypernetworkRegressor:
        """Train for one epoch over ``X``, continuing from the current weights.

        The first call initialises the network. Early stopping does not apply.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_targets)

        Returns
        -------
        self : HypernetworkRegressor
        """
        if not hasattr(self, "module_"):
            self._validate_params()
        return self._fit(X, y, epochs=1, incremental=True)

    def predict(self, X) -> np.ndarray:
        """Network output for rows ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_targets)
        """
        output = self._forward_numpy(self._validated_rows(X))
        return output[:, 0] if self._y_one_dimensional else output


class HypernetworkClassifier(ClassifierMixin, _BaseHypernetwork):
    """Finite hypernetwork ``h(x, z) = g(z; f(x))`` trained on the cross-entropy.

    ``g`` outputs one logit per class. Everything else (rows ``[x | z]``,
    parameters, training, :meth:`empirical_ntk`) is as in
    :class:`HypernetworkRegressor`; with ``early_stopping=True`` the validation
    score is the accuracy. The paper's rotation-prediction experiment (its
    Fig. 2) is such a task: ``x`` a rotated image, ``z`` a further rotation of
    it, the class the angle between them.

    Parameters
    ----------
    See :class:`HypernetworkRegressor`.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    module_, device_, loss_curve_, validation_scores_, best_validation_score_, \
n_iter_, t_, n_features_in_, feature_names_in_
        As in :class:`HypernetworkRegressor` (``loss_curve_`` holds the mean
        cross-entropy, ``validation_scores_`` the accuracy).
    """

    _is_classifier = True
    _multi_output_targets = False

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

    def _validation_score(self, X: np.ndarray, target: np.ndarray) -> float:
        return float(accuracy_score(target, self._forward_numpy(X).argmax(axis=1)))

    def initialize(self, X, y) -> HypernetworkClassifier:
        """Set up the network at initialisation without training it.

        See :meth:`HypernetworkRegressor.initialize`; ``y`` gives the classes.

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

        Returns
        -------
        self : HypernetworkClassifier
        """
        self._validate_params()
        return self._fit(X, y)

    def partial_fit(self, X, y, classes=None) -> HypernetworkClassifier:
        """Train for one epoch over ``X``, continuing from the current weights.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        classes : array-like of shape (n_classes,), default=None
            All labels that can occur; required on the first call.

        Returns
        -------
        self : HypernetworkClassifier
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

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        logits = self._forward_numpy(self._validated_rows(X))
        logits -= logits.max(axis=1, keepdims=True)
        proba = np.exp(logits)
        proba /= proba.sum(axis=1, keepdims=True)
        return proba

    def predict_log_proba(self, X) -> np.ndarray:
        """Logarithm of :meth:`predict_proba`."""
        logits = self._forward_numpy(self._validated_rows(X))
        logits -= logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    def predict(self, X) -> np.ndarray:
        """Most probable class of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        logits = self._forward_numpy(self._validated_rows(X))
        return self.classes_[np.argmax(logits, axis=1)]
