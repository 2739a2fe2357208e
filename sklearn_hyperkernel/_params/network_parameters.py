"""The parameters of the finite hypernetwork and its estimators, declared once.

The architecture parameters that the kernels share (depths, encoding,
activation...) are declared in :mod:`sklearn_hyperkernel._params.architecture`. This
module adds what only the finite network has (its widths, number of Fourier
features, parameterisation) and what only its estimators have (the training
settings): their scikit-learn constraints, the parameters a warm start must
not change, and the numpydoc text of every parameter of
:class:`~sklearn_hyperkernel.HypernetworkRegressor` and
:class:`~sklearn_hyperkernel.HypernetworkClassifier`. It does not import torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral, Real
from typing import Any

from sklearn.utils._param_validation import (
    Interval,
    StrOptions,
    validate_parameter_constraints,
)

from .architecture import CONSTRAINTS as ARCHITECTURE_CONSTRAINTS
from .architecture import parameters_doc, validate_architecture

__all__ = [
    "ESTIMATOR_CONSTRAINTS",
    "NETWORK_CONSTRAINTS",
    "WARM_START_FIXED",
    "estimator_parameters_doc",
    "validate_network",
]

_POSITIVE_INT = [Interval(Integral, 1, None, closed="left")]

#: constraints of the finite network's own architecture parameters
NETWORK_CONSTRAINTS: dict[str, list] = {
    "f_width": _POSITIVE_INT,
    "g_width": _POSITIVE_INT,
    "n_fourier_features": _POSITIVE_INT,
    "parameterization": [StrOptions({"ntk", "standard"})],
}

#: the torch module's input and output sizes (the estimators take them from the data)
_MODULE_CONSTRAINTS: dict[str, list] = {"x_dim": _POSITIVE_INT, "n_outputs": _POSITIVE_INT}

#: scikit-learn constraints of every parameter of the estimators but ``normalize_y``
ESTIMATOR_CONSTRAINTS: dict[str, Any] = {
    **ARCHITECTURE_CONSTRAINTS,
    **NETWORK_CONSTRAINTS,
    "optimizer": [StrOptions({"sgd", "adam"})],
    "learning_rate": [Interval(Real, 0, None, closed="neither")],
    "batch_size": _POSITIVE_INT,
    "max_epochs": _POSITIVE_INT,
    "momentum": [Interval(Real, 0, 1, closed="left")],
    "weight_decay": [Interval(Real, 0, None, closed="left")],
    "early_stopping": ["boolean"],
    "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
    "n_iter_no_change": _POSITIVE_INT,
    "tol": [Interval(Real, 0, None, closed="left")],
    "random_state": ["random_state"],
    "device": "no_validation",  # the package's device rule, checked in fit
    "dtype": [StrOptions({"float32", "float64"})],
    "verbose": ["verbose"],
    "n_jobs": [Integral, None],
    "warm_start": ["boolean"],
}

#: every parameter of the estimators, in the order of their docstrings
_ORDER = (
    "z_dim",
    "f_depth",
    "f_width",
    "g_depth",
    "g_width",
    "z_encoding",
    "length_scale",
    "n_fourier_features",
    "parameterization",
    "activation",
    "negative_slope",
    "f_bias_variance",
    "g_bias_variance",
    "f_architecture",
    "image_shape",
    "filter_size",
    "normalize_x",
    "normalize_y",
    "optimizer",
    "learning_rate",
    "batch_size",
    "max_epochs",
    "momentum",
    "weight_decay",
    "early_stopping",
    "validation_fraction",
    "n_iter_no_change",
    "tol",
    "random_state",
    "device",
    "n_jobs",
    "dtype",
    "verbose",
    "warm_start",
)

#: parameters that fix the network's architecture (the kernels' architecture
#: parameters and the network's own) or the scaling of its inputs and targets
#: and its floating-point type: a warm start (or partial_fit) cannot change them
WARM_START_FIXED = tuple(
    name
    for name in _ORDER
    if name in ARCHITECTURE_CONSTRAINTS
    or name in NETWORK_CONSTRAINTS
    or name in ("normalize_y", "dtype")
)


def validate_network(params: Mapping[str, Any], caller_name: str) -> None:
    """Check the architecture parameters of a finite network among ``params``.

    The shared ones by :func:`~sklearn_hyperkernel._params.architecture.validate_architecture`,
    the network's own (widths, ``n_fourier_features``, ``parameterization``,
    ``x_dim``, ``n_outputs``) by :data:`NETWORK_CONSTRAINTS`.

    Raises
    ------
    ValueError
        (scikit-learn's ``InvalidParameterError``) naming the parameter.
    """
    validate_architecture(params, caller_name)
    own = {**NETWORK_CONSTRAINTS, **_MODULE_CONSTRAINTS}
    constraints = {name: own[name] for name in params if name in own}
    validate_parameter_constraints(constraints, dict(params), caller_name=caller_name)


# The estimators' own entries, or those whose text differs from the kernels'.
_OWN_DOCS = {
    "f_width": """\
    f_width : int, default=256
        Hidden width of ``f`` (for ``f_architecture="conv"``: the number of
        channels of each convolutional layer). Wider ``f`` is closer to the
        kernel limit and slower; 256 trains a few thousand rows in seconds on
        a CPU (the dense ``f``).""",
    "g_width": """\
    g_width : int, default=32
        Hidden width of ``g``. ``f`` outputs all of ``g``'s weights
        (``n_fourier_features * g_width + g_width * n_outputs`` for
        ``g_depth=2``), so the cost grows with it.""",
    "n_fourier_features": """\
    n_fourier_features : int, default=64
        Number of random Fourier features of ``z`` (the finite version of the
        kernels' Gaussian encoding); ignored for ``"linear"``. ``f``
        generates ``n_fourier_features * g_width`` weights of ``g``'s first
        layer per row, so this sets most of the cost; 64 trains four times
        faster than 256 for the same test error on the pixel tasks.""",
    "parameterization": """\
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
        1.0).""",
    "f_bias_variance": """\
    f_bias_variance : float >= 0, default=0.0
        Variance ``bf`` of the biases of ``f``'s layers, its output layer
        included, trained with its weights. Under ``parameterization="ntk"``
        ``y^l = W^l q^{l-1} / sqrt(n_{l-1}) + sqrt(bf) beta^l`` with
        ``beta^l ~ N(0, 1)`` (the kernels' model, docs/math.md "Biases");
        under ``"standard"`` the bias is drawn from ``N(0, bf)`` and added as
        it is (the same function at initialisation). 0: no biases (the
        paper's ``f``, whose output is zero at ``x = 0``).""",
    "g_bias_variance": """\
    g_bias_variance : float >= 0, default=0.0
        Variance factor ``bg`` of the biases of ``g``'s layers, which ``f``
        generates like ``g``'s weights: ``g^l = V^l a^{l-1} / sqrt(m_{l-1})
        + sqrt(bg) c^l`` with ``c^l`` (``m_l`` numbers per layer and row)
        further outputs of ``f``. 0: ``g`` is bias-free (the paper's).""",
    "normalize_x": """\
    normalize_x : bool, default=True
        Scale each ``x`` row to ``|x|^2 / n0 = 1`` (``n0`` its number of
        columns; zero rows stay zero) before ``f``, in :meth:`fit` and at
        prediction, as the kernels' ``normalize_x`` does, so the wide network
        still tends to the kernel with the same option. On by default because
        ``f``'s output scales with ``|x|``: images with values in ``[0, 1]``
        or smaller would otherwise give an almost constant network at
        initialisation that trains slowly.""",
    "normalize_y": """\
    normalize_y : bool, default=True
        Standardise each target column (subtract its mean, divide by its
        standard deviation; a constant column is only centred) in :meth:`fit`
        and undo it in :meth:`predict`, as
        :class:`~sklearn.gaussian_process.GaussianProcessRegressor`'s
        ``normalize_y``. On by default because the network's output has unit
        scale at initialisation: targets far from that scale otherwise train
        slowly or diverge. ``loss_curve_`` is then in normalised units.""",
    "optimizer": """\
    optimizer : {"sgd", "adam"}, default="adam"
        Adam adapts its step to the gradients' scale, so one learning rate
        works across widths, depths and parameterisations; ``"sgd"`` (with
        ``momentum``) is the paper's.""",
    "learning_rate": """\
    learning_rate : float, default=1e-3
        Step size of the optimizer; ``1e-3`` is Adam's usual default (3e-3
        and 3e-4 gave higher test errors on the pixel tasks). SGD in the
        ``"ntk"`` parameterisation needs a rate of order 1.""",
    "batch_size": """\
    batch_size : int, default=100
        Rows per mini-batch (capped at the number of rows). Rows of one batch
        that share an ``x`` run ``f`` once, so pixel tasks (many ``z`` per
        image) cost less per row than distinct rows.""",
    "max_epochs": """\
    max_epochs : int, default=200
        Most passes over the training rows in :meth:`fit`, a cap: the fit
        normally ends earlier, by its stopping rule (``tol``,
        ``n_iter_no_change``), as ``MLPRegressor``'s ``max_iter=200`` caps
        its own. Measured with the defaults (seeds 0 and 1, two shared
        cores): the README's data (200 rows) stopped after 36 and 39 epochs
        (1-4 s), digits pixels (1,200 rows) after 50 and 43 (6-8 s), a 3-D
        shape task (2,400 rows, ``z_dim=3``) after 34 and 31 (10-11 s). The
        former default, 20, stopped every one of them while the loss still
        fell, with a warning, at the same test error. Reaching the cap warns;
        raise it (or call :meth:`partial_fit` / ``warm_start``) to train
        further.""",
    "momentum": """\
    momentum : float, default=0.9
        Momentum of ``"sgd"`` (the usual value); ignored by ``"adam"``.""",
    "weight_decay": """\
    weight_decay : float, default=0.0
        L2 penalty of the optimizer on ``f``'s weights (and biases); none by
        default, as in the paper.""",
    "early_stopping": """\
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows, stop when their score
        (R^2, or accuracy for the classifier) has not improved by ``tol`` for
        ``n_iter_no_change`` epochs, and keep the weights of the best epoch.
        Otherwise training stops when the training loss has not improved by
        ``tol`` for ``n_iter_no_change`` epochs.""",
    "validation_fraction": """\
    validation_fraction : float, default=0.1
        Fraction of the rows held out with ``early_stopping=True`` (stratified
        by class for the classifier); ignored otherwise.""",
    "n_iter_no_change": """\
    n_iter_no_change : int, default=5
        Epochs without an improvement larger than ``tol`` after which
        training stops (10 gave the same test errors on the pixel tasks, and
        stopped the digits fit after 78 epochs instead of 50).""",
    "tol": """\
    tol : float, default=1e-4
        Smallest improvement of the training loss (or validation score) that
        counts.""",
    "random_state": """\
    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights, the Fourier features, the shuffling and the
        validation split. An int gives identical predictions on the CPU.""",
    "device": """\
    device : None, "auto", str or torch.device, default="auto"
        Where the network lives, by the package's device rule: ``None`` the
        CPU, ``"auto"`` CUDA when torch sees a GPU, else the CPU; ``"cpu"``,
        ``"cuda"``, ``"cuda:<index>"`` or a ``torch.device`` that device,
        which must exist (else a ValueError). ``set_params(device=...)`` on a
        fitted model moves the network and the optimizer state; a model saved
        with a GPU this machine lacks loads on the CPU with a
        :class:`~sklearn_hyperkernel.DeviceFallbackWarning`.""",
    "n_jobs": """\
    n_jobs : int, default=None
        torch CPU threads used while the network fits and predicts on the CPU
        (``torch.set_num_threads`` for the duration of the call, restored
        after). None means 1, as in scikit-learn, unless in a
        :obj:`joblib.parallel_config` context; -1 means all cores. One thread
        by default because the default network's products are small: a second
        thread saved little on an idle 2-core machine, and when another job
        held a core torch's two threads made the default digits fit 12 times
        slower (58.5 s against 4.8 s) by waiting on each other.""",
    "dtype": """\
    dtype : {"float64", "float32"}, default="float64"
        Floating-point type of the network. ``"float64"`` by default so that
        a row's prediction does not depend on the other rows of its batch
        (float32 matrix products differ in the last bits with the batch
        size); ``"float32"`` is about twice as fast on a GPU.""",
    "verbose": """\
    verbose : int, default=0
        ``1`` shows the training: a progress bar over the epochs on a
        terminal, else one line per epoch with the loss (and the validation
        score); ``2`` also shows the running loss ten times per epoch.""",
    "warm_start": """\
    warm_start : bool, default=False
        Continue from the fitted weights in :meth:`fit`. The optimizer is
        built from the current parameters (``optimizer``, ``learning_rate``,
        ``momentum``, ``weight_decay``); its state (momentum, Adam's moments)
        is kept when the optimizer type is unchanged.""",
}


def estimator_parameters_doc(normalize_y: bool) -> str:
    """The numpydoc Parameters entries of an estimator (with ``normalize_y`` or not)."""
    names = [name for name in _ORDER if normalize_y or name != "normalize_y"]
    return parameters_doc(*names, extra=_OWN_DOCS)
