"""What the finite-network estimators share: fitting, prediction, devices, persistence.

:class:`BaseHypernetwork` is the base of
:class:`~sklearn_hyperkernel.HypernetworkRegressor` and
:class:`~sklearn_hyperkernel.HypernetworkClassifier`, which add only what
differs between them (targets, loss, score, prediction). Its :meth:`fit`
has skorch's shape: validate, initialise (or continue a warm start), then
:meth:`_fit_loop`, which runs epochs of small overridable steps
(:meth:`_run_epoch`, :meth:`_end_epoch`) built from the pieces of
:mod:`sklearn_hyperkernel._training.loop`. :class:`TorchStateMixin` moves the torch
state between devices and through pickling.

torch is imported only when an estimator is fitted or used.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, is_classifier
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from ._params.architecture import check_f_input, check_z_dim, x_width
from ._params.network_parameters import ESTIMATOR_CONSTRAINTS, WARM_START_FIXED
from ._training.loop import (
    Plateau,
    TrainingRows,
    batch_reporter,
    check_divergence,
    epoch_progress,
    import_torch,
    optimizer_for,
    run_epoch,
    split_validation,
    tensors_to_cpu,
    torch_threads,
    warn_if_not_learned,
)
from ._utils.device import fallback_device, resolve_device
from ._utils.rows import distinct_rows
from ._utils.versioning import NETWORK_ESTIMATOR_HISTORY, upgrade_state, versioned_state
from .config import get_config
from .progress import format_log_line, log

__all__ = ["BaseHypernetwork", "TorchStateMixin", "store_parameters", "torch_device"]


def store_parameters(estimator: BaseEstimator, values: dict) -> None:
    """Store an ``__init__``'s arguments (its ``locals()``) as attributes, nothing else."""
    for name, value in values.items():
        if name not in ("self", "__class__"):
            setattr(estimator, name, value)


#: Copies of the parameters that training holds: the parameters, their gradients and
#: the optimiser's state (Adam: two moments; SGD with momentum: one).
_TRAINING_COPIES = {"adam": 4, "sgd": 3}


def _physical_memory() -> int | None:
    """Bytes of this machine's memory, or None where the platform does not say."""
    import os

    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def check_training_memory(estimator: BaseEstimator, module: Any) -> None:
    """Raise before training a network whose parameters alone would fill the machine.

    Training keeps :data:`_TRAINING_COPIES` copies of every parameter; when they
    need more than half of the physical memory (where the platform reports
    it), the fit would be killed for memory instead of failing with a message.

    Raises
    ------
    ValueError
        Naming the number of parameters, the bytes training needs, the
        machine's memory and the parameters that set the size (``f_width``;
        for a conv f, its readout of ``H * W * f_width`` inputs).
    """
    memory = _physical_memory()
    if memory is None:
        return
    n_parameters = sum(int(p.numel()) for p in module.parameters())
    itemsize = next(iter(module.parameters())).element_size() if n_parameters else 8
    copies = _TRAINING_COPIES.get(getattr(estimator, "optimizer", "adam"), 4)
    needed = n_parameters * itemsize * copies
    if needed <= memory // 2:
        return
    readout = ""
    if getattr(module, "_image", None) is not None and module.f_depth > 1:
        height, width, _ = module._image
        readout = (
            f" A conv f's dense readout alone reads H * W * f_width = {height} * {width} * "
            f"{module.f_width} values and writes the {module.n_generated} weights of g."
        )
    raise ValueError(
        f"This network has {n_parameters:,} parameters: training it keeps {copies} copies "
        f"({needed / 2**30:.1f} GiB in {estimator.dtype}), more than half of this machine's "
        f"{memory / 2**30:.1f} GiB of memory.{readout} Reduce f_width={estimator.f_width} (or "
        f"g_width={estimator.g_width}, n_fourier_features), or use dtype='float32'."
    )


def torch_device(device: Any):
    """The ``torch.device`` the package's device rule gives ``device`` (None: the CPU).

    Raises
    ------
    ValueError
        Naming the ``device`` parameter when it is not usable here.
    """
    torch = import_torch()
    resolved = resolve_device(device, "device")
    return torch.device("cpu" if resolved is None else resolved)


class TorchStateMixin:
    """Moves a fitted estimator's ``module_`` and optimizer between devices and pickles."""

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
            new_device = torch_device(params["device"])
        super().set_params(**params)
        if new_device is not None:
            self._move_to(new_device)
        return self

    def _move_to(self, device) -> None:
        """Move ``module_`` and the optimizer state to ``device``; set ``device_``."""
        tensors = self.module_.state_dict().values()
        if device == self.device_ and all(t.device == device for t in tensors):
            return
        self.module_.to(device)
        optimizer = getattr(self, "_optimizer", None)
        if optimizer is not None:
            # the same Parameter objects now live on ``device``; reloading the
            # state casts it to them (torch keeps Adam's step counter on the CPU)
            optimizer.load_state_dict(optimizer.state_dict())
        self.device_ = device

    def __getstate__(self) -> dict:
        state = versioned_state(super().__getstate__())
        module = state.get("module_")
        if module is not None:
            on_cpu = all(t.device.type == "cpu" for t in module.state_dict().values())
            state["module_"] = module if on_cpu else copy.deepcopy(module).to("cpu")
        optimizer = state.pop("_optimizer", None)
        if optimizer is not None:
            state["_optimizer_state"] = tensors_to_cpu(optimizer.state_dict())
        elif state.get("_optimizer_state") is not None:
            state["_optimizer_state"] = tensors_to_cpu(state["_optimizer_state"])
        return state

    def __setstate__(self, state: dict) -> None:
        # an older pickle gains the parameters added since, at their old values,
        # or is refused naming both versions (InconsistentVersionWarning either way)
        super().__setstate__(upgrade_state(type(self), state, NETWORK_ESTIMATOR_HISTORY))
        self._optimizer = None
        device = getattr(self, "device_", None)
        if device is None or getattr(self, "module_", None) is None:
            return
        torch = import_torch()
        # The pickled tensors are on the CPU. A device this machine lacks (no
        # CUDA, or fewer GPUs) falls back to the CPU with a DeviceFallbackWarning.
        kept = fallback_device(device, type(self).__name__)
        if kept is None:
            self.device_ = torch.device("cpu")
        elif torch.device(kept).type != "cpu":
            self.module_.to(device)


class BaseHypernetwork(TorchStateMixin, BaseEstimator):
    """Parameters, training loop, prediction and kernel shared by the estimators.

    Subclasses declare ``__init__`` (the full signature scikit-learn needs)
    and the task: :meth:`_validate_training_data`, :meth:`_encode_targets`,
    :meth:`_loss`, :meth:`_constant_loss`, :meth:`_validation_score`.
    """

    _parameter_constraints: dict = dict(ESTIMATOR_CONSTRAINTS)
    _normalize_x_fitted = False  # models pickled before normalize_x existed
    _optimizer = _optimizer_state = None

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        tags.non_deterministic = False
        return tags

    # ---------------------------------------------------------- task hooks
    def _validate_training_data(self, X, y, reset: bool):
        """Validated float64 rows and targets."""
        raise NotImplementedError

    def _encode_targets(self, y: np.ndarray, first_call: bool, classes=None):
        """The target data (numpy) and the number of outputs of g."""
        raise NotImplementedError

    def _loss(self, output, target):
        """Mean loss of a batch (a torch scalar)."""
        raise NotImplementedError

    def _constant_loss(self, target: np.ndarray) -> float:
        """Training loss of the best constant prediction of the encoded targets."""
        raise NotImplementedError

    def _validation_score(self, X: np.ndarray, target: np.ndarray) -> float:
        """Score of the held-out rows (larger is better)."""
        raise NotImplementedError

    # ------------------------------------------------------------ fitting
    def initialize(self, X, y=None):
        """Set up the network at initialisation without training it.

        Validates the parameters and rows, then draws the weights exactly as
        :meth:`fit` with the same ``random_state`` would before its first
        step (so :meth:`empirical_ntk` gives the kernel at initialisation).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows ``[x | z]``.
        y : array-like of shape (n_samples,) or (n_samples, n_targets), default=None
            Targets of the regressor: their number (and, with ``normalize_y``,
            their mean and scale) are used, ``None`` meaning one target of
            zeros; labels of the classifier: their classes are used
            (required).

        Returns
        -------
        self : estimator instance
            The estimator, with ``module_`` at initialisation.
        """
        self._validate_params()
        if y is None:
            X = validate_data(self, X, dtype=np.float64, reset=True)
            y = self._default_targets(X.shape[0])
        else:
            X, y = self._validate_training_data(X, y, reset=True)
        self._initialize(X, y)
        self.module_.eval()
        return self

    def _default_targets(self, n_rows: int) -> np.ndarray:
        """Targets :meth:`initialize` uses when ``y`` is None."""
        return np.zeros(n_rows)

    def fit(self, X, y):
        """Train the network on rows ``X`` and targets (or labels) ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows ``[x | z]``.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Targets of the regressor, labels of the classifier.

        Returns
        -------
        self : estimator instance
            The fitted estimator.
        """
        self._validate_params()
        return self._fit(X, y)

    def _fit(self, X, y, classes=None, incremental: bool = False):
        fresh = not (hasattr(self, "module_") and (incremental or self.warm_start))
        with torch_threads(self.n_jobs):
            X, y = self._validate_training_data(X, y, reset=fresh)
            target = self._initialize(X, y, classes) if fresh else self._continue(y, classes)
            self._fit_loop(X, target, incremental, fresh)
        return self

    def _initialize(self, X: np.ndarray, y: np.ndarray, classes=None) -> np.ndarray:
        """Set the fitted attributes of a fresh model (module at initialisation)."""
        torch = import_torch()
        check_z_dim(self.z_dim, X.shape[1])
        check_f_input(
            self.f_architecture, self.image_shape, self.filter_size, x_width(X.shape[1], self.z_dim)
        )
        device = torch_device(self.device)
        self._rng = check_random_state(self.random_state)
        self._normalize_x_fitted = bool(self.normalize_x)
        self._fitted_architecture = self._architecture_params()
        target, n_outputs = self._encode_targets(y, first_call=True, classes=classes)
        seed = self._rng.randint(np.iinfo(np.int32).max)
        from .network import Hypernetwork

        module = Hypernetwork(
            x_dim=x_width(X.shape[1], self.z_dim),  # no x columns: f reads x = (1,)
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
            f_bias_variance=self.f_bias_variance,
            g_bias_variance=self.g_bias_variance,
            f_architecture=self.f_architecture,
            image_shape=self.image_shape,
            filter_size=self.filter_size,
            generator=torch.Generator().manual_seed(int(seed)),
            dtype=torch.float64 if self.dtype == "float64" else torch.float32,
            device=device,
        )
        check_training_memory(self, module)  # before any fitted attribute is set
        self.device_, self.module_ = device, module
        self._optimizer = self._optimizer_state = None
        self.loss_curve_ = []
        self.n_iter_ = self.t_ = 0
        return target

    def _architecture_params(self) -> dict:
        names = [name for name in WARM_START_FIXED if hasattr(self, name)]
        return {name: np.asarray(getattr(self, name)).tolist() for name in names}

    def _continue(self, y: np.ndarray, classes=None) -> np.ndarray:
        """Check that a warm start can continue the fitted network; its encoded targets."""
        fitted = getattr(self, "_fitted_architecture", None)  # None: pickled before the check
        current = self._architecture_params().items()
        changed = [
            f"{name}={getattr(self, name)!r} (fitted with {fitted.get(name)!r})"
            for name, value in current
            if fitted is not None and fitted.get(name) != value
        ]
        if changed:
            raise ValueError(
                f"warm_start / partial_fit continue the fitted network, but {', '.join(changed)} "
                "would change its architecture or scaling. Fit a fresh model (warm_start=False) "
                "or set these parameters back."
            )
        target, n_outputs = self._encode_targets(y, first_call=False, classes=classes)
        if n_outputs != self.module_.n_outputs:
            raise ValueError(
                f"y has {n_outputs} output(s) but the model was fitted with "
                f"{self.module_.n_outputs}; fit a fresh model (warm_start=False)."
            )
        self._move_to(torch_device(self.device))  # the current device decides where training runs
        return target

    def _fit_loop(self, X: np.ndarray, target: np.ndarray, incremental: bool, fresh: bool) -> None:
        """Epochs until a stopping rule or ``max_epochs`` (one epoch for ``partial_fit``)."""
        validation, stopping = None, None
        if self.early_stopping and not incremental:
            seed = self._rng.randint(np.iinfo(np.int32).max)
            X, X_val, target, target_val = split_validation(
                X, target, self.validation_fraction, seed, stratify=is_classifier(self)
            )
            validation = (X_val, target_val)
            scores = [] if fresh else getattr(self, "validation_scores_", None)
            self.validation_scores_ = list(scores or [])
            self.best_validation_score_ = -np.inf
            stopping = Plateau(self.tol, self.n_iter_no_change, maximize=True, keep_best=True)
        elif not incremental:
            self.validation_scores_ = None
            stopping = Plateau(self.tol, self.n_iter_no_change)
        self._optimizer = optimizer_for(
            self.module_, self.get_params(), self._optimizer, self._optimizer_state
        )
        self._optimizer_state = None
        rows = self._training_rows(X, target)
        constant_loss = self._constant_loss(target)
        epochs = 1 if incremental else self.max_epochs
        epochs_run, converged, reference = 0, False, None
        self.module_.train()
        name = type(self).__name__
        with epoch_progress(name, epochs, self.verbose) as progress:
            report = batch_reporter(progress, name, self.verbose)
            while epochs_run < epochs and not converged:
                started = time.perf_counter()
                loss = self._run_epoch(rows, self._optimizer, report)
                epochs_run += 1
                reference = max(loss, constant_loss) if reference is None else reference
                converged = self._end_epoch(
                    loss, reference, validation, stopping, progress, started
                )
        if converged and self.verbose:
            log(
                name,
                f"No improvement larger than tol={self.tol} for {self.n_iter_no_change} "
                "epochs; stopping.",
            )
        if validation is not None:
            stopping.restore_best(self.module_)
        self.module_.eval()
        if not incremental:
            warn_if_not_learned(self, constant_loss, epochs_run, converged, stopping.watched)

    def _training_rows(self, X: np.ndarray, target: np.ndarray) -> TrainingRows:
        torch = import_torch()
        x, z = self._x_and_z(X)
        target_dtype = torch.long if is_classifier(self) else self._torch_dtype()
        target = torch.as_tensor(np.array(target), dtype=target_dtype, device=self.device_)
        return TrainingRows.build(x, z, target)

    def _run_epoch(self, rows: TrainingRows, optimizer, report=None) -> float:
        """One shuffled pass over ``rows``; returns the mean loss."""
        torch = import_torch()
        order = torch.from_numpy(self._rng.permutation(rows.n_rows)).to(self.device_)
        loss = run_epoch(self.module_, rows, self._loss, optimizer, order, self.batch_size, report)
        self.t_ += rows.n_rows
        return loss

    def _end_epoch(self, loss, reference, validation, stopping, progress, started) -> bool:
        """Record an epoch, check divergence, report; True when a stopping rule says stop."""
        self.n_iter_ += 1
        self.loss_curve_.append(loss)
        check_divergence(loss, reference, self.n_iter_, self.learning_rate)
        summary, watched = f"loss {loss:.6g}", loss
        if validation is not None:
            watched = self._validation_score(*validation)
            self.validation_scores_.append(watched)
            summary += f", validation score {watched:.6g}"
        stop = stopping is not None and stopping.update(watched, self.module_)
        if validation is not None:
            self.best_validation_score_ = stopping.best
        seconds = time.perf_counter() - started
        message = f"Epoch {self.n_iter_}: {summary} ({seconds:.3f} s)"
        progress.step(status=summary, line=format_log_line(type(self).__name__, message))
        return stop

    # ------------------------------------------------------- rows as tensors
    def _torch_dtype(self):
        """dtype of the network: the fitted module's, else the ``dtype`` parameter."""
        torch = import_torch()
        module = getattr(self, "module_", None)
        if module is not None:
            return next(module.parameters()).dtype
        return torch.float64 if self.dtype == "float64" else torch.float32

    def _x_and_z(self, X: np.ndarray):
        """x and z tensors of (a block of) rows, on the fitted device and dtype.

        Applies the fitted ``normalize_x`` and the constant ``x = (1,)`` of
        rows without x columns. Only these rows are converted.
        """
        torch = import_torch()
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

    # ----------------------------------------------------------- inference
    def _validated_rows(self, X) -> np.ndarray:
        """Validated rows; float32 input stays float32 (no copy of a large X)."""
        check_is_fitted(self)
        return validate_data(self, X, dtype=(np.float64, np.float32), reset=False)

    def _forward_numpy(self, X: np.ndarray) -> np.ndarray:
        """Network outputs for validated rows, float64.

        Rows are converted to tensors and evaluated in blocks of at most
        ``predict_block_rows`` rows whose generated weights of g take at most
        ``predict_block_bytes`` (:mod:`sklearn_hyperkernel.config`); f runs once
        per distinct x of a block, on as many distinct x at a time as f's widest
        layer (a conv f's feature maps, ``H W f_width`` values per x) fits in
        ``predict_block_bytes``. So memory does not grow with the number of rows.
        """
        torch = import_torch()
        module = self.module_
        result = np.empty((X.shape[0], module.n_outputs), dtype=np.float64)
        item_bytes = torch.finfo(self._torch_dtype()).bits // 8
        config = get_config()
        block_rows = max(
            1,
            min(
                config["predict_block_rows"],
                config["predict_block_bytes"] // (module.n_generated * item_bytes),
            ),
        )
        f_rows = max(
            1, config["predict_block_bytes"] // (max(module.f_layer_sizes[1:]) * item_bytes)
        )
        with torch_threads(self.n_jobs), torch.no_grad():
            for start in range(0, X.shape[0], block_rows):
                stop = min(start + block_rows, X.shape[0])
                x, z = self._x_and_z(X[start:stop])
                x, x_index = distinct_rows(x)
                flat = torch.cat(
                    [module.f_forward(x[i : i + f_rows]) for i in range(0, x.shape[0], f_rows)]
                )
                block = module.g_forward(module.split_generated(flat[x_index]), z)
                result[start:stop] = block.to("cpu", torch.float64).numpy()
        if not np.all(np.isfinite(result)):
            raise ValueError("The network output is not finite; check the scale of X.")
        return result

    def empirical_ntk(self, U1, U2=None) -> np.ndarray:
        """Empirical hyperkernel ``J J^T`` of the current network.

        ``J`` is the Jacobian of the network output with respect to ``f``'s
        weights and biases (the only trained parameters). With
        ``parameterization="ntk"`` and large widths it approaches
        :class:`~sklearn_hyperkernel.HyperKernel` with the same depths,
        encoding, activation, bias variances and ``normalize_x``. With
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
            The kernel (:func:`sklearn_hyperkernel.network.empirical_ntk`).
        """
        from .network import empirical_ntk

        x1, z1 = self._x_and_z(self._validated_rows(U1))
        x2 = z2 = None
        if U2 is not None:
            x2, z2 = self._x_and_z(self._validated_rows(U2))
        with torch_threads(self.n_jobs):
            kernel = empirical_ntk(self.module_, x1, z1, x2, z2, reduce="mean")
        return kernel.to("cpu").double().numpy()
