"""Finite hypernetworks trained with torch, as scikit-learn estimators.

:class:`HypernetworkRegressor` (squared loss) and
:class:`HypernetworkClassifier` (cross-entropy) train the finite
hypernetwork ``h(u) = g(z; f(x))`` of :mod:`sklearn_hyperkernel.network` on
rows ``u = [x | z]`` (the last ``z_dim`` columns are ``z``). The model is the
one whose infinite-width limits are :class:`~sklearn_hyperkernel.HyperKernel`
and :class:`~sklearn_hyperkernel.HyperNNGP`; :meth:`empirical_ntk` gives its
finite-width hyperkernel.

Rows with exactly ``z_dim`` columns have no x: every row then shares the
constant ``x = (1,)`` (so ``|x|^2 / n0 = 1``) and ``h`` is an ordinary network
of ``z`` whose weights ``f`` generates from that constant, the same definition
the kernels use for ``n_x = 0``.

What the two share (training loop, prediction, devices, pickling) lives in
their private base class; each class here adds its targets, loss and
predictions. torch is an optional dependency of the
package: it is imported only when an estimator is fitted or used, so
``import sklearn_hyperkernel`` works without it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import log_softmax, softmax
from sklearn.base import ClassifierMixin, MultiOutputMixin, RegressorMixin
from sklearn.metrics import accuracy_score, r2_score
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d, validate_data

from ._network_estimator import BaseHypernetwork, store_parameters
from ._params.network_parameters import estimator_parameters_doc
from ._training.loop import import_torch
from ._utils.targets import target_scaling

__all__ = ["HypernetworkClassifier", "HypernetworkRegressor"]

_SHARED_ATTRIBUTES_DOC = """\
    module_ : sklearn_hyperkernel.network.Hypernetwork
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

_ROWS_DOC = """Each row ``u = [x | z]`` of ``X`` holds the input ``x`` of the hypernetwork
    ``f`` (all but the last ``z_dim`` columns) and the input ``z`` of the
    primary network ``g`` (the last ``z_dim`` columns). ``f`` maps ``x`` to the
    weights of ``g``; every row gets its own weights and ``g`` runs batched over
    the rows. With ``f_architecture="conv"`` ``x`` is an image of
    ``image_shape`` (flattened row-major, channels last) and ``f`` a
    convolutional network of ``f_width`` channels per layer with a dense
    readout."""


class HypernetworkRegressor(MultiOutputMixin, RegressorMixin, BaseHypernetwork):
    __doc__ = f"""Finite hypernetwork ``h(x, z) = g(z; f(x))`` trained on the squared loss.

    {_ROWS_DOC} Only ``f``'s weights (and biases, with
    ``f_bias_variance > 0``) are trained, by mini-batch Adam or SGD on the
    mean squared error.

    The defaults are chosen to learn out of the box (Adam, standard
    parameterisation, Fourier features of ``z``, normalised ``x`` and ``y``,
    float64). The paper's setting, whose wide limit trains like kernel
    regression with :class:`~sklearn_hyperkernel.HyperKernel`, is
    ``parameterization="ntk", optimizer="sgd"`` (with a larger
    ``learning_rate``).

    Parameters
    ----------
{estimator_parameters_doc(normalize_y=True)}
    Attributes
    ----------
    loss_curve_ : list of float
        Mean training loss (MSE, of the normalised targets with
        ``normalize_y=True``) of each epoch.
{_SHARED_ATTRIBUTES_DOC}
    See Also
    --------
    HypernetworkClassifier : The same network trained on the cross-entropy.
    sklearn_hyperkernel.HyperKernelRegressor : Its infinite-width limit.
    sklearn_hyperkernel.network.Hypernetwork : The torch module it trains.

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

    _y_mean = None

    _parameter_constraints: dict = {
        **BaseHypernetwork._parameter_constraints,
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
        f_bias_variance: float = 0.0,
        g_bias_variance: float = 0.0,
        f_architecture: str = "dense",
        image_shape: tuple[int, ...] | None = None,
        filter_size: int = 3,
        normalize_x: bool = True,
        normalize_y: bool = True,
        optimizer: str = "adam",
        learning_rate: float = 1e-3,
        batch_size: int = 100,
        max_epochs: int = 200,
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
        store_parameters(self, locals())

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
            self._y_mean, self._y_scale = target_scaling(target, normalize=bool(self.normalize_y))
        if self._y_mean is not None and target.shape[1] == self._y_mean.shape[0]:
            target = (target - self._y_mean) / self._y_scale
        return target, target.shape[1]

    def _loss(self, output, target):
        return ((output - target) ** 2).mean()

    def _constant_loss(self, target: np.ndarray) -> float:
        return float(np.mean(np.var(target, axis=0))) if target.size else 0.0

    def _validation_score(self, X: np.ndarray, target: np.ndarray) -> float:
        return float(r2_score(target, self._forward_numpy(X)))

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
        return self._fit(X, y, incremental=True)

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
        output = self._forward_numpy(self._validated_rows(X))
        if self._y_mean is not None:
            output = output * self._y_scale + self._y_mean
        return output[:, 0] if self._y_one_dimensional else output


class HypernetworkClassifier(ClassifierMixin, BaseHypernetwork):
    __doc__ = f"""Finite hypernetwork ``h(x, z) = g(z; f(x))`` trained on the cross-entropy.

    {_ROWS_DOC} ``g`` outputs one logit per class; only ``f``'s weights
    (and biases, with ``f_bias_variance > 0``) are trained, by mini-batch Adam
    or SGD on the cross-entropy. The paper's
    rotation-prediction experiment (its Fig. 2) is such a task: ``x`` a
    rotated image, ``z`` a further rotation of it, the class the angle
    between them.

    Fitted on a single class, it predicts that class with probability one.

    Parameters
    ----------
{estimator_parameters_doc(normalize_y=False)}
    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    loss_curve_ : list of float
        Mean training cross-entropy of each epoch.
{_SHARED_ATTRIBUTES_DOC}
    See Also
    --------
    HypernetworkRegressor : The same network trained on the squared loss.
    sklearn_hyperkernel.network.Hypernetwork : The torch module it trains.

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
        f_bias_variance: float = 0.0,
        g_bias_variance: float = 0.0,
        f_architecture: str = "dense",
        image_shape: tuple[int, ...] | None = None,
        filter_size: int = 3,
        normalize_x: bool = True,
        optimizer: str = "adam",
        learning_rate: float = 1e-3,
        batch_size: int = 100,
        max_epochs: int = 200,
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
        store_parameters(self, locals())

    def _validate_training_data(self, X, y, reset: bool):
        X, y = validate_data(self, X, y, reset=reset, dtype=np.float64, multi_output=False)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        return X, y

    def _default_targets(self, n_rows: int) -> np.ndarray:
        raise ValueError("HypernetworkClassifier.initialize needs y: its classes set the outputs.")

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
        return import_torch().nn.functional.cross_entropy(output, target)

    def _constant_loss(self, target: np.ndarray) -> float:
        if target.size == 0:
            return 0.0
        prior = np.bincount(target) / target.size
        prior = prior[prior > 0]
        return float(-np.sum(prior * np.log(prior)))

    def _validation_score(self, X: np.ndarray, target: np.ndarray) -> float:
        return float(accuracy_score(target, self._forward_numpy(X).argmax(axis=1)))

    def partial_fit(self, X, y, classes=None) -> HypernetworkClassifier:
        """Train for one epoch over ``X``, continuing from the current weights.

        Each call uses the current ``learning_rate``, ``momentum``,
        ``weight_decay`` and ``optimizer``. Early stopping does not apply.

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

        Raises
        ------
        ValueError
            If ``classes`` is missing on the first call or differs from
            ``classes_`` later, or ``y`` holds a label not in ``classes_``.
        """
        if not hasattr(self, "module_"):
            self._validate_params()
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(
                f"classes={classes!r} differs from classes_={self.classes_!r} of the first call."
            )
        return self._fit(X, y, classes=classes, incremental=True)

    def predict_log_proba(self, X) -> np.ndarray:
        """Logarithm of :meth:`predict_proba` (log-softmax of the logits).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows ``[x | z]``.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            Log-probabilities, columns ordered as ``classes_``.
        """
        return log_softmax(self._forward_numpy(self._validated_rows(X)), axis=1)

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
        return softmax(self._forward_numpy(self._validated_rows(X)), axis=1)

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
