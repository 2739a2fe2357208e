"""Kernel ridge regression with the hyperkernel of an infinitely wide hypernetwork.

:class:`HyperKernelRegressor` is the paper's predictor (its Eq. 18) ``y(u) = K(u, U)
(K(U, U) + eps I)^-1 Y`` as a scikit-learn estimator, like
:class:`sklearn.kernel_ridge.KernelRidge` with ``alpha`` as ``eps``. It chooses a
solver, builds the training rows' Gram operator (:mod:`._operator.gram_operator`) and solves:
densely (:mod:`._solvers.dense`), by conjugate gradients (:mod:`._solvers.cg`) or by
Nyström's approximation (:mod:`._solvers.nystrom`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from functools import partial
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin, clone
from sklearn.gaussian_process.kernels import Kernel
from sklearn.utils._param_validation import Hidden, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._operator.gram_operator import gram_operator
from ._params.architecture import (
    CONSTRAINTS,
    check_f_input,
    check_z_dim,
    parameters_doc,
    x_width,
)
from ._solvers.cg import fit_cg
from ._solvers.dense import solve_dense, training_gram
from ._solvers.nystrom import fit_nystrom
from ._solvers.nystrom_components import NYSTROM_DEFAULT_COMPONENTS, RPCHOLESKY_POOL_FACTOR
from ._utils.arrays import scale_safe_root
from ._utils.targets import alpha_per_target, check_sample_weight, target_scaling
from ._utils.versioning import REGRESSOR_HISTORY, upgrade_state, versioned_state
from .config import get_config
from .progress import log

__all__ = [
    "LENGTH_SCALE_PER_Z_SPREAD",
    "NYSTROM_DEFAULT_COMPONENTS",
    "RPCHOLESKY_POOL_FACTOR",
    "HyperKernelRegressor",
]


_INTRODUCTION = """Kernel ridge regression with the hyperkernel (the paper's Eq. 18).

    Each row ``u = [x | z]`` of ``X`` holds the hypernetwork's input ``x`` and
    the primary network's input ``z`` (the last ``z_dim`` columns). With ``K``
    the kernel, ``m`` the targets' mean and ``r = alpha * mean(diag K)``
    (``alpha_scale="relative"``), the model is::

        dual_coef_ = (K(X_fit_, X_fit_) + r * I)^-1 (y - m)
        predict(X) = K(X, X_fit_) @ dual_coef_ + m

    the mean prediction of an infinitely wide hypernetwork trained by gradient
    descent on the squared loss (``kernel="ntk"``), or the posterior mean of its
    Gaussian-process limit (``kernel="nngp"``, the default). The defaults
    (the hyper-NNGP, Fourier encoding of z with a length scale fitted to z's
    spread, biases, ``normalize_x``, ``normalize_y``, relative ridge) suit
    the package's pixel tasks, shape codes and plain tabular data (user
    guide, "Why the defaults are what they are"); the paper's exact kernel
    regression is ``HyperKernelRegressor("ntk", alpha=1e-9, z_encoding=...,
    length_scale=..., f_bias_variance=0, g_bias_variance=0,
    normalize_x=False, normalize_y=False)``.

    Parameters
    ----------
    kernel : {"ntk", "nngp"} or Kernel, default="nngp"
        :class:`~sklearn_hyperkernel.HyperKernel` (the hyperkernel
        ``Theta^h``) or :class:`~sklearn_hyperkernel.HyperNNGP` (the
        hyper-NNGP ``Lambda^H``) of the architecture parameters below; or any
        :class:`~sklearn.gaussian_process.kernels.Kernel`, cloned and used as
        it is (its hyperparameters searchable as ``kernel__<name>``; the
        architecture parameters, ``n_jobs``, ``device`` and ``dtype`` then
        ignored, as ``KernelRidge`` ignores ``gamma`` for a callable kernel).
        ``"nngp"`` is the default since 0.2.0: with the defaults below it was
        within 1.4x of a tuned RBF ``KernelRidge`` on shape codes, where the
        NTK was 3-4x, at a cost on MNIST pixels (0.60 of the mean predictor's
        error against the NTK's 0.55; user guide, "Why the defaults are what
        they are").
    alpha : float or array-like of shape (n_targets,), default=1e-3
        Positive ridge (``eps`` of Eq. 18), one per target for an array;
        relative to the mean of the training Gram's diagonal by default. 1e-3
        of the kernel's scale interpolates the paper's noise-free pixel tasks
        almost exactly and keeps the solve well conditioned; raise it for
        noisy targets (a ``GridSearchCV`` away). The paper uses 1e-9.
    alpha_scale : {"relative", "absolute"}, default="relative"
        ``"relative"``: the ridge is ``alpha`` times the mean diagonal of the
        training Gram, weighted by ``sample_weight`` (neural-tangents'
        ``diag_reg_absolute_scale=False``):
        the hypernetwork kernels scale as ``(|x|^2 / n0)^g_depth`` (a diagonal
        of ``1e-5`` on unit-norm MNIST rows, ``~6`` on standard-normal rows),
        so no absolute ridge serves both. ``"absolute"``: ``alpha`` as it is,
        as in ``KernelRidge``. The ridge used is ``ridge_``.
"""

_BIAS_DOCS = {
    "f_bias_variance": """\
    f_bias_variance : float >= 0, default=1.0
        Variance ``bf`` of the biases of f's layers, its output layer
        included (NTK parameterisation, as neural-tangents'
        ``Dense(b_std=sqrt(bf))``; docs/math.md, "Biases"). With it the
        kernels see the norm of x (a shape code's size) and x = 0 is an
        ordinary input. 1.0 was measured on pixel, tabular and shape-code
        tasks (user guide, "Why the defaults are what they are"); 0 is the
        paper's bias-free f.""",
    "g_bias_variance": """\
    g_bias_variance : float >= 0, default=0.1
        Variance ``bg`` of the biases of g's layers, which f generates like
        g's weights (docs/math.md, "Biases"); 0.1 measured as
        ``f_bias_variance``; 0 is the paper's bias-free g.""",
}

_LENGTH_SCALE_DOC = """\
    length_scale : "scale", float or array-like of shape (z_dim,), \
            default="scale"
        Length scale of the Fourier encoding; unused with ``"linear"``. A
        number (one per z column: anisotropic) is in the units of z, as the
        kernels' ``length_scale``. ``"scale"``: fitted in :meth:`fit` as
        ``LENGTH_SCALE_PER_Z_SPREAD`` (0.45) times z's spread ``sqrt(mean_i
        |z_i - mean(z)|^2)`` over the training rows (both means weighted by
        ``sample_weight``; a spread of 0 counts as 1), as ``SVC``'s
        ``gamma="scale"`` follows X's variance: so that z's units do not
        matter, and 3-D points get a longer scale than 2-D pixel coordinates
        of the same range (0.67 on points in ``[-1.5, 1.5]^3``, 0.38 on MNIST
        coordinates in ``[-1, 1]^2``). The value used is ``length_scale_``.
        Measured in the user guide, "Why the defaults are what they are".
"""

_OWN_PARAMETERS = """\
    normalize_x : {"scale"} or bool, default="scale"
        How x is put to the kernel's scale before the kernel sees it.
        ``"scale"``: every x is divided by one number fitted on the training
        rows, ``x_scale_ = sqrt(mean_i |x_i|^2 / n0)`` (weighted by
        ``sample_weight``), so that the training
        rows' mean ``|x|^2 / n0`` is 1 (the scale the bias variances are
        measured against) while the norms keep their ratios: a shape code's
        size still reaches the model. On rows of one norm (the unit-norm
        images of :func:`~sklearn_hyperkernel.datasets.pixel_regression`) it
        is the same as ``True``. ``True``: each ``x`` rescaled to ``|x|^2 / n0
        = 1`` (zero rows stay zero), as the authors' code puts images on the
        unit sphere: the kernel sees x's direction only, so a held-out row of
        much larger norm than the training rows (after a ``StandardScaler``
        on pixel columns, say) cannot inflate its prediction. ``False``: the
        paper's kernel of the raw rows.
    normalize_y : bool, default=True
        Standardise each target column (mean and deviation weighted by
        ``sample_weight``) before the solve and undo it in :meth:`predict`, as
        ``GaussianProcessRegressor``'s ``normalize_y``: the expansion, which
        has no intercept, then models the deviation from the mean, not from 0.
    block_size : int, default=None
        Rows per block, the work of one task, so that memory does not grow
        with the rows: test rows of :meth:`predict`; training rows of each CG
        product and of Nyström's ``K(X, components)``. ``None``: blocks of whole
        tiles of at most 16 MiB (64 MiB for Nyström's sums), at least 8 blocks
        of 256 rows or more with Nyström; in CG the hypernetwork kernels' own
        blocks (about 2^22 entries), tiles of at most 64 MiB for other kernels.
    solver : {"auto", "cholesky", "cg", "nystrom"}, default="auto"
        ``"cholesky"`` forms and factorises the ``n x n`` Gram: ``8 n^2``
        bytes, ``n^3 / 3`` flops. ``"cg"``: preconditioned conjugate gradients
        on products ``K @ V`` streamed over the Gram, never holding it: memory
        ``O(n (block rows + cg_rank))``, half the kernel matrix per iteration.
        ``"nystrom"``: the model restricted to the span of ``m =
        n_components`` components, an approximation whose error falls as ``m``
        grows (exact at ``m = n``): ``n m`` kernel entries, ``n m^2 + m^3``
        flops, memory ``O(m^2 + block)``, ``m`` kernel entries per predicted
        row. The NTK's spectrum is flat at the default ridge: on MNIST
        pixels at ``n = 20,000`` the test MSE was 29 % above the exact solve's
        at ``m = 2000`` (fit in 1/20 of the time), 21 % at 4000 (1/5), 12 % at
        8000 (0.9 of it); it is the solver beyond the other two (a million rows
        in minutes), not below. ``"auto"``: ``"cholesky"`` while the Gram
        takes at most the configuration's ``auto_cholesky_max_gram_bytes``
        (4 GiB, ``n <= 23170``; :func:`~sklearn_hyperkernel.set_config`), else
        ``"nystrom"`` (as ``PCA``'s turns randomized on large data; CG, exact
        but slow on this kernel, only when asked).
        The choice is ``solver_``; ``verbose >= 1`` prints it with its reason,
        e.g. ``[HyperKernelRegressor] solver='auto' chose 'nystrom' for 30000
        rows, an approximation on n_components=2000 centres: ...``.
    tol : float, default=1e-6
        CG stops when ``|y_j - (K + r_j I) c_j| <= tol * |y_j|`` for every
        target ``j`` (of the weighted system with ``sample_weight``); the
        error of the fitted values ``K c`` is at most the residual.
    max_iter : int, default=1000
        Most CG iterations; stopping there short of ``tol`` warns.
    cg_rank : int, default=300
        Rank of CG's preconditioner ``(L L^T + r I)^-1``, ``L`` a partial
        pivoted Cholesky factor of ``K`` (greedy on the diagonal, one kernel
        row per rank); 0 runs plain CG. ``cg_rank`` kernel rows and
        ``O(n cg_rank^2)`` flops once, ``8 n cg_rank`` bytes (twice while built).
    n_components : int, default=None
        Number of Nyström components ``m`` (``Nystroem``'s name). ``None``:
        ``min(n_samples, NYSTROM_DEFAULT_COMPONENTS)`` (2000: minutes for a
        million rows on two cores; raise it as time allows). A value above
        ``n_samples`` is reduced to it with a warning, as ``Nystroem`` does.
    component_selection : {"uniform", "rpcholesky"} or array-like of int, \
            default="uniform"
        How ``solver="nystrom"`` chooses its components (named ``center_selection``,
        Falkon's name, before 0.2.0).
        ``"uniform"``: the first ``n_components`` of
        ``random_state.permutation(n_samples)``, ``Nystroem``'s draw.
        ``"rpcholesky"``: randomly pivoted Cholesky (Chen, Epperly, Tropp and
        Webber, 2022; blocked, with rejection sampling, Epperly, Tropp and
        Webber, 2024) on the weighted kernel of ``min(n_samples,
        RPCHOLESKY_POOL_FACTOR * n_components)`` uniform rows (10 ``m``), each
        component drawn in proportion to the diagonal the earlier ones leave
        unexplained (no near-duplicates); about ``10 m^2`` more kernel entries
        and ``10 m^3`` flops. It approximates ``K`` better (a smaller trace of
        ``K - K_nm K_mm^-1 K_mn``), yet uniform components predicted better in 10
        of 11 MNIST comparisons (``n`` 5,000 and 20,000, ``m`` 250 to 4,000;
        rpcholesky 0.6 % better in one) at a third to a half of the fit time.
        An array of row indices uses those rows.
    random_state : int, RandomState instance or None, default=None
        Draws the components of ``solver="nystrom"``.
    verbose : int, default=0
        1: the solver ``solver="auto"`` chose and why (``solver_``); progress
        with the time left while the Cholesky Gram is computed, then a line
        when it is factorised; with CG a line when the preconditioner is
        built and every 10 iterations; with Nyström a line per step and the
        progress of ``K_nm``'s blocks with the time left. Progress is a bar
        on a terminal, else a line every few seconds. 2: also every CG
        iteration, each block, and the progress of each ``K @ V``.
    n_jobs : int, default=None
        Workers (joblib) of the constructed kernel (Gram blocks, CG products)
        and of the blocks of Nyström and :meth:`predict`: ``None`` is as many
        threads as BLAS uses (every core unless ``OMP_NUM_THREADS`` or a
        ``threadpoolctl`` limit says fewer), or the ``n_jobs`` of a
        :obj:`joblib.parallel_config` context; 1 runs the blocks one after
        the other (BLAS and numba still thread inside them); with
        ``parallel_config(backend="dask")`` the blocks run on a Dask cluster.
    device : str, default=None
        Device of the constructed kernel: None computes with numpy; ``"cpu"``,
        ``"cuda"``, ``"cuda:<index>"`` with torch there; ``"auto"`` on CUDA
        when available. The solves run in float64 numpy.
    dtype : {"float64", "float32"}, default="float64"
        Precision of the constructed kernel; the solve is float64 either way.
    center_selection : {"uniform", "rpcholesky"} or array-like of int, \
            default="deprecated"
        Deprecated since 0.2.0, to be removed in 0.4.0: the former name of
        ``component_selection`` (one word, components, for Nyström, as
        scikit-learn's ``n_components`` / ``components_``). A value given here
        is used in its place, with a ``FutureWarning`` at ``fit``.

    Attributes
    ----------
    solver_ : {"cholesky", "cg", "nystrom"}
        The solver used (what ``"auto"`` chose).
    n_iter_ : int
        CG iterations; 1 with Cholesky and Nyström (one direct solve).
    n_components_ : int or None
        Number of Nyström components (``None`` with the other solvers, as the
        next two).
    components_ : ndarray of shape (`n_components_`, n_features) or None
        The Nyström components, as ``Nystroem``'s ``components_``.
    component_indices_ : ndarray of shape (`n_components_`,) or None
        Their indices in the training set.
    cg_residual_ : float or None
        Largest relative residual over the targets when CG stopped.
    cg_rank_ : int or None
        Rank of CG's preconditioner (below ``cg_rank`` when ``K`` is captured).
    dual_coef_ : ndarray of shape (n_samples,) or (n_samples, n_targets)
        Weights of the rows of ``X_fit_`` in ``predict(X) = K(X, X_fit_) @
        dual_coef_ + intercept_`` (in the unweighted problem's units; ``K``
        of the rows with x divided by ``x_scale_``).
    length_scale_ : float, ndarray of shape (z_dim,) or None
        The Fourier length scale the kernel uses, in z's units: ``length_scale``
        itself, or the value fitted for ``length_scale="scale"``; ``None`` for
        a given ``Kernel`` object.
    x_scale_ : float
        The number every x is divided by before the kernel sees it:
        ``sqrt(mean |x|^2 / n0)`` of the training rows (the mean weighted by
        ``sample_weight``) with ``normalize_x="scale"``, else 1.0.
    intercept_ : float or ndarray of shape (n_targets,)
        The targets' (weighted) mean with ``normalize_y=True``, else 0.
    ridge_ : ndarray of shape (n_targets,)
        The ridge added to the diagonal per target, in the kernel's units.
    X_fit_ : ndarray of shape (n_samples, n_features)
        The rows a prediction needs: the training rows (Nyström: the components).
    kernel_ : Kernel
        The kernel used.
    n_features_in_ : int
        Number of features seen during :meth:`fit`.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during :meth:`fit`, when all are strings.

    See Also
    --------
    sklearn.kernel_ridge.KernelRidge : Kernel ridge regression with
        scikit-learn's pairwise kernels.
    sklearn.gaussian_process.GaussianProcessRegressor : Fits the kernel's
        hyperparameters (the Fourier ``length_scale``) by likelihood.

    Notes
    -----
    Cholesky: if ``K + r I`` is not numerically positive definite (the
    factorisation fails, or its reciprocal condition number is below ``n``
    machine epsilons), a jitter growing from ``1e-10`` to ``1e-4`` times the
    mean diagonal is added, with a ``ConvergenceWarning`` that states it;
    past that, a symmetric eigen-solve drops the non-positive eigenvalues,
    also with a warning. Non-finite values raise ``ValueError``.

    CG computes ``K @ V`` for all targets at once: each block ``K[i:j, i:]``
    of the upper block triangle serves its rows and, transposed, the rows
    below; the diagonal is the kernel's closed form. As GPyTorch's BBMM and
    Falkon: ``O(n^2)`` kernel evaluations per iteration, not ``O(n^3)`` flops.

    Nyström solves Falkon's problem ``(K_nm^T W K_nm + r K_mm) beta = K_nm^T
    W y`` (``W`` the sample weights) in the space of the components: ``K_nm``
    streamed block by block, only ``K_nm^T W K_nm`` and ``K_nm^T W y`` kept,
    the ``m x m`` system whitened by a Cholesky factor of ``K_mm``.

    With ``sample_weight`` the loss is ``sum_i w_i (y_i - f(u_i))^2 + r
    |f|^2``: an integer weight is the same as repeating the row. The
    hypernetwork kernels factorise the training rows once in :meth:`fit`
    (each distinct ``x`` found and its quantities computed once); every block
    of the fit and of each prediction reuses that.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hyperkernel.kernel_ridge import HyperKernelRegressor
    >>> rng = np.random.default_rng(0)
    >>> images = rng.random((4, 16))
    >>> coords = rng.uniform(-1, 1, size=(30, 2))
    >>> X = np.hstack([np.repeat(images, 30, axis=0), np.tile(coords, (4, 1))])
    >>> y = np.sin(3 * X[:, -1]) * X[:, :16].mean(axis=1)
    >>> model = HyperKernelRegressor().fit(X, y)
    >>> model.predict(X[:3]).shape
    (3,)
    """

#: the architecture parameters, passed on to the constructed kernel (all the kernels'
#: but ``normalize_x``, which the regressor extends with ``"scale"``)
_ARCHITECTURE = tuple(name for name in CONSTRAINTS if name != "normalize_x")


class HyperKernelRegressor(MultiOutputMixin, RegressorMixin, BaseEstimator):
    __doc__ = (
        _INTRODUCTION
        + parameters_doc(*_ARCHITECTURE, extra={**_BIAS_DOCS, "length_scale": _LENGTH_SCALE_DOC})
        + _OWN_PARAMETERS
    )

    _parameter_constraints: dict = {
        **CONSTRAINTS,
        "kernel": [StrOptions({"ntk", "nngp"}), Kernel],
        "length_scale": [*CONSTRAINTS["length_scale"], StrOptions({"scale"})],
        "alpha": [Interval(Real, 0, None, closed="neither"), "array-like"],
        "alpha_scale": [StrOptions({"relative", "absolute"})],
        "normalize_x": ["boolean", StrOptions({"scale"})],
        "normalize_y": ["boolean"],
        "block_size": [Interval(Integral, 1, None, closed="left"), None],
        "solver": [StrOptions({"auto", "cholesky", "cg", "nystrom"})],
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "component_selection": [StrOptions({"uniform", "rpcholesky"}), "array-like"],
        "center_selection": [
            StrOptions({"uniform", "rpcholesky"}),
            "array-like",
            Hidden(StrOptions({"deprecated"})),
        ],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "cg_rank": [Interval(Integral, 0, None, closed="left")],
        "verbose": ["verbose"],
        "n_jobs": [Integral, None],
        "device": [str, None],
        "dtype": [StrOptions({"float64", "float32"})],
    }

    def __init__(
        self,
        kernel: str | Kernel = "nngp",
        *,
        alpha: float | np.ndarray = 1e-3,
        alpha_scale: str = "relative",
        z_dim: int = 2,
        f_depth: int = 3,
        g_depth: int = 2,
        z_encoding: str = "fourier",
        length_scale: float | np.ndarray | str = "scale",
        activation: str = "relu",
        negative_slope: float = 0.01,
        f_bias_variance: float = 1.0,
        g_bias_variance: float = 0.1,
        f_architecture: str = "dense",
        image_shape: tuple[int, ...] | None = None,
        filter_size: int = 3,
        normalize_x: bool | str = "scale",
        normalize_y: bool = True,
        block_size: int | None = None,
        solver: str = "auto",
        tol: float = 1e-6,
        max_iter: int = 1000,
        cg_rank: int = 300,
        n_components: int | None = None,
        component_selection: str | np.ndarray = "uniform",
        random_state: int | np.random.RandomState | None = None,
        verbose: int = 0,
        n_jobs: int | None = None,
        device: str | None = None,
        dtype: str = "float64",
        center_selection: str | np.ndarray = "deprecated",
    ) -> None:
        self.kernel = kernel
        self.alpha = alpha
        self.alpha_scale = alpha_scale
        self.z_dim = z_dim
        self.f_depth = f_depth
        self.g_depth = g_depth
        self.z_encoding = z_encoding
        self.length_scale = length_scale
        self.activation = activation
        self.negative_slope = negative_slope
        self.f_bias_variance = f_bias_variance
        self.g_bias_variance = g_bias_variance
        self.f_architecture = f_architecture
        self.image_shape = image_shape
        self.filter_size = filter_size
        self.normalize_x = normalize_x
        self.normalize_y = normalize_y
        self.block_size = block_size
        self.solver = solver
        self.tol = tol
        self.max_iter = max_iter
        self.cg_rank = cg_rank
        self.n_components = n_components
        self.component_selection = component_selection
        self.center_selection = center_selection
        self.random_state = random_state
        self.verbose = verbose
        self.n_jobs = n_jobs
        self.device = device
        self.dtype = dtype

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        tags.target_tags.single_output = True
        tags.target_tags.multi_output = True
        return tags

    def set_params(self, **params) -> HyperKernelRegressor:
        """Set the parameters; on a fitted model ``device`` also moves its kernel.

        Where the kernel computes is not part of what was learned, so a model
        fitted (or saved) on a GPU predicts on the CPU after
        ``set_params(device=None)`` and vice versa, as skorch's nets do. The
        device is checked where it is used (:meth:`predict`, :meth:`fit`).
        """
        super().set_params(**params)
        if "device" in params and hasattr(self, "kernel_") and not isinstance(self.kernel, Kernel):
            self.kernel_.set_params(device=self.device)
        return self

    def __getstate__(self) -> dict:
        # the version that pickles it, checked by __setstate__
        return versioned_state(super().__getstate__())

    def __setstate__(self, state: dict) -> None:
        # an older pickle gains the parameters added since, at their old values,
        # or is refused naming both versions (InconsistentVersionWarning either way)
        upgraded = upgrade_state(type(self), state, REGRESSOR_HISTORY)
        if "component_selection" not in state and "center_selection" in state:
            # before 0.2.0 the rule was center_selection: it moves to its new name
            upgraded["component_selection"] = upgraded["center_selection"]
            upgraded["center_selection"] = "deprecated"
        super().__setstate__(upgraded)

    def _component_selection(self, warn: bool = False):
        """``component_selection``, or the deprecated ``center_selection`` where one was given."""
        legacy = self.center_selection
        if isinstance(legacy, str) and legacy == "deprecated":
            return self.component_selection
        if warn:
            warnings.warn(
                "center_selection was renamed component_selection in 0.2.0 and will be "
                "removed in 0.4.0; its value is used for now: pass "
                "component_selection instead.",
                FutureWarning,
                stacklevel=3,
            )
        return legacy

    # --------------------------------------------------------------- fitting
    def fit(self, X, y, sample_weight=None) -> HyperKernelRegressor:
        """Fit the kernel ridge regression: choose the solver, build the Gram operator, solve.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training rows ``[x | z]``.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Target values.
        sample_weight : float or array-like of shape (n_samples,), default=None
            Non-negative weight of each row in the squared loss (``None``: 1).

        Returns
        -------
        self : HyperKernelRegressor
            The fitted estimator.
        """
        self._validate_params()
        self._component_selection(warn=True)
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True)
        y = np.asarray(y, dtype=np.float64)
        targets = y.reshape(-1, 1) if y.ndim == 1 else y
        alphas = alpha_per_target(self.alpha, targets.shape[1])
        weights = check_sample_weight(sample_weight, X.shape[0])
        if not isinstance(self.kernel, Kernel):
            check_z_dim(self.z_dim, X.shape[1])
            n_x = x_width(X.shape[1], int(self.z_dim))
            check_f_input(self.f_architecture, self.image_shape, self.filter_size, n_x)
        mean, scale = target_scaling(targets, weights, normalize=bool(self.normalize_y))
        targets = (targets - mean) / scale
        self.solver_ = self._choose_solver(X.shape[0])
        self.length_scale_ = self._fit_length_scale(X, weights)
        self.kernel_ = self._build_kernel()
        self.x_scale_ = self._fit_x_scale(X, weights)
        # the largest |x| / sqrt(n0) of the training rows, in the kernel's units: what a
        # prediction is checked against (extrapolation in |x| is not bounded with biases)
        self._largest_x = _largest_rms(X[:, : X.shape[1] - int(self.z_dim)]) / self.x_scale_
        divide = self._x_divider()
        X_kernel = X if divide is None else divide(X)  # the rows the kernel sees
        operator = gram_operator(self.kernel_, X_kernel, block_size=self.block_size)
        self.n_iter_, self.cg_residual_, self.cg_rank_ = 1, None, None
        self.n_components_ = self.components_ = self.component_indices_ = None
        if self.solver_ == "cholesky":
            dual_coef = self._fit_cholesky(operator, X, targets, alphas, weights)
        elif self.solver_ == "cg":
            dual_coef = self._fit_cg(operator, X, targets, alphas, weights)
        else:
            dual_coef = self._fit_nystrom(operator, X, targets, alphas, weights)
        dual_coef = dual_coef * scale
        self.dual_coef_ = dual_coef.ravel() if y.ndim == 1 else dual_coef
        self.intercept_ = mean[0] if y.ndim == 1 else mean
        return self

    def _choose_solver(self, n_samples: int) -> str:
        """Resolve ``solver="auto"`` from the memory the Gram would take; logged at verbose >= 1."""
        if self.solver != "auto":
            return self.solver
        gib = 8 * n_samples**2 / 2**30
        limit = get_config()["auto_cholesky_max_gram_bytes"] / 2**30
        if cholesky_fits(n_samples):
            chosen, why = "cholesky", f"the exact solve: its Gram takes {gib:.3g} GiB <= {limit:g}"
        else:
            chosen = "nystrom"
            m = min(n_samples, self.n_components or NYSTROM_DEFAULT_COMPONENTS)
            why = (
                f"an approximation on n_components={m} centres: the exact Gram would take "
                f"{gib:.3g} GiB > {limit:g} (solver='cholesky' or 'cg' to solve exactly)"
            )
        if self.verbose:
            log(type(self).__name__, f"solver='auto' chose {chosen!r} for {n_samples} rows, {why}")
        return chosen

    def _build_kernel(self) -> Kernel:
        """A fresh kernel: a clone of ``kernel``, or one built from the parameters.

        For CG the built kernel streams ``K @ V`` in blocks of ``block_size``
        rows and reports each product only at ``verbose >= 2`` (CG reports
        its iterations).
        """
        if isinstance(self.kernel, Kernel):
            return clone(self.kernel)
        from .kernels import HyperKernel, HyperNNGP  # kernels.py does not import this module

        cg = self.solver_ == "cg"
        architecture = {name: getattr(self, name) for name in _ARCHITECTURE}
        architecture["length_scale"] = self.length_scale_
        return (HyperKernel if self.kernel == "ntk" else HyperNNGP)(
            **architecture,
            normalize_x=self.normalize_x is True,
            block_size=self.block_size if cg else None,
            n_jobs=self.n_jobs,
            device=self.device,
            dtype=self.dtype,
            verbose=max(int(self.verbose) - 1, 0) if cg else int(self.verbose),
        )

    def _fit_x_scale(self, X: np.ndarray, weights: np.ndarray | None) -> float:
        """``x_scale_``: ``sqrt(mean_i |x_i|^2 / n0)`` over the training rows for ``"scale"``.

        The mean is weighted by ``sample_weight``, so that an integer weight is
        the same as repeating the row and a weight of 0 as dropping it. It is
        computed on ``x / max |x|`` (the largest over the rows of positive
        weight), so that neither ``|x|^2`` of a tiny x underflows nor that of a
        huge x overflows. 1.0 (nothing done) for the other ``normalize_x``,
        for a given ``Kernel`` object, for rows without x columns and for an
        all-zero x.
        """
        if self.normalize_x != "scale" or isinstance(self.kernel, Kernel):
            return 1.0
        x = X[:, : X.shape[1] - int(self.z_dim)]
        if weights is not None:
            x, weights = x[weights > 0], weights[weights > 0]
        scale = scale_safe_root(
            x, lambda scaled: np.average(np.mean(scaled**2, axis=1), weights=weights)
        )
        return scale if scale > 0 else 1.0

    def _fit_length_scale(
        self, X: np.ndarray, weights: np.ndarray | None
    ) -> float | np.ndarray | None:
        """``length_scale_``: the Fourier length scale in z's units.

        A number (or array) is used as it is. ``"scale"`` is
        :data:`LENGTH_SCALE_PER_Z_SPREAD` times z's spread
        ``sqrt(mean_i |z_i - mean(z)|^2)`` over the training rows, both means
        weighted by ``sample_weight`` (an integer weight is a repeated row, a
        weight of 0 a dropped one), computed on ``z / max |z|`` so that it
        neither under- nor overflows; a spread of 0 (one z, or none of
        positive weight) counts as 1. ``None`` for a given ``Kernel`` object.
        """
        if isinstance(self.kernel, Kernel):
            return None
        if not (isinstance(self.length_scale, str) and self.length_scale == "scale"):
            return self.length_scale
        z = X[:, X.shape[1] - int(self.z_dim) :]
        if weights is not None:
            z, weights = z[weights > 0], weights[weights > 0]

        def mean_squared_distance(scaled: np.ndarray) -> float:
            centred = scaled - np.average(scaled, axis=0, weights=weights)
            return np.average(np.einsum("ij,ij->i", centred, centred), weights=weights)

        spread = scale_safe_root(z, mean_squared_distance)
        return LENGTH_SCALE_PER_Z_SPREAD * (spread if spread > 0 else 1.0)

    def _x_divider(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """The division of rows' x columns by ``x_scale_`` (``None`` when it is 1)."""
        x_scale = getattr(self, "x_scale_", 1.0)  # models saved before it existed
        if x_scale == 1.0:
            return None
        return partial(_divide_x, n_x=self.n_features_in_ - int(self.z_dim), x_scale=x_scale)

    def _ridge(
        self, alphas: np.ndarray, diagonal: np.ndarray, weights: np.ndarray | None
    ) -> np.ndarray:
        """The ridge per target in the kernel's units (``ridge_``).

        ``alpha_scale="relative"`` multiplies ``alpha`` by the mean of the
        training Gram's diagonal (neural-tangents' ``diag_reg`` with
        ``diag_reg_absolute_scale=False``), so the same ``alpha`` smooths the
        same whatever the kernel's scale; a diagonal of zeros keeps ``alpha``.
        The mean is weighted by ``sample_weight``, so that an integer weight
        is the same as repeating the row (and a weight of 0 as dropping it).
        """
        if self.alpha_scale == "absolute":
            return alphas
        scale = float(np.average(diagonal, weights=weights)) if diagonal.size else 0.0
        if not (math.isfinite(scale) and scale > 0):
            return alphas
        return alphas * scale

    # each solver: set ridge_ and the fitted attributes, return the dual coefficients
    def _fit_cholesky(self, operator, X, targets, alphas, weights) -> np.ndarray:
        K = training_gram(operator)
        self.ridge_ = self._ridge(alphas, np.diagonal(K), weights)
        self.X_fit_, self._operator = X, operator
        started = time.perf_counter()
        dual_coef = solve_dense(K, targets, self.ridge_, weights)
        if self.verbose:
            seconds = time.perf_counter() - started
            log(type(self).__name__, f"Gram {K.shape[0]} x {K.shape[0]} solved in {seconds:.1f} s")
        return dual_coef

    def _fit_cg(self, operator, X, targets, alphas, weights) -> np.ndarray:
        self.ridge_ = self._ridge(alphas, operator.diagonal, weights)
        self.X_fit_, self._operator = X, operator
        result = fit_cg(
            operator,
            targets,
            self.ridge_,
            weights,
            tol=float(self.tol),
            max_iter=int(self.max_iter),
            rank=int(self.cg_rank),
            verbose=int(self.verbose),
            source=type(self).__name__,
        )
        self.n_iter_, self.cg_residual_, self.cg_rank_ = result.n_iter, result.residual, result.rank
        return result.dual_coef

    def _fit_nystrom(self, operator, X, targets, alphas, weights) -> np.ndarray:
        self.ridge_ = self._ridge(alphas, operator.diagonal, weights)
        result = fit_nystrom(
            operator,
            targets,
            self.ridge_,
            weights,
            component_selection=self._component_selection(),
            n_components=self.n_components,
            random_state=self.random_state,
            block_size=self.block_size,
            verbose=int(self.verbose),
            source=type(self).__name__,
        )
        self.n_components_ = result.component_index.shape[0]
        self.component_indices_ = result.component_index
        self.components_ = self.X_fit_ = X[result.component_index]
        self._operator = result.components
        return result.coef

    # ------------------------------------------------------------ predicting
    def predict(self, X) -> np.ndarray:
        """Predict with the fitted kernel expansion, one block of rows at a time.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows ``[x | z]`` to predict.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_targets)
            Predicted values.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        self._warn_if_x_is_far_outside_the_training_rows(X)
        dual_coef = self.dual_coef_
        coef = dual_coef.reshape(-1, 1) if dual_coef.ndim == 1 else dual_coef
        # Nyström's blocks are cheap (m columns): at least nystrom_min_blocks of them
        min_blocks = get_config()["nystrom_min_blocks"] if self.solver_ == "nystrom" else 1
        y_pred = self._operator.cross_product(
            X, coef, block_size=self.block_size, min_blocks=min_blocks, prepare=self._x_divider()
        )
        y_pred += self.intercept_
        if not np.all(np.isfinite(y_pred)):
            raise ValueError(
                "The prediction is not finite: the kernel returned non-finite "
                "values on X; check the scale of X."
            )
        return y_pred.ravel() if dual_coef.ndim == 1 else y_pred

    def _warn_if_x_is_far_outside_the_training_rows(self, X: np.ndarray) -> None:
        """Warn when rows to predict have x far larger than every training row's.

        With ``normalize_x="scale"`` or ``False`` the kernel sees the norm of x,
        and with biases it is not homogeneous in it: a row whose ``|x|`` is many
        times the largest training row's is an extrapolation whose prediction
        can be far off (a ``StandardScaler`` in front makes rare pixels of new
        images huge). Not for ``normalize_x=True`` (every x on the sphere) nor a
        given ``Kernel`` object.
        """
        largest = getattr(self, "_largest_x", None)  # models saved before it existed
        if largest is None or self.normalize_x is True or isinstance(self.kernel, Kernel):
            return
        if not largest > 0:
            return
        ratio = _largest_rms(X[:, : X.shape[1] - int(self.z_dim)]) / self.x_scale_ / largest
        if ratio > X_EXTRAPOLATION_WARNING:
            warnings.warn(
                f"{type(self).__name__}: rows to predict have x up to {ratio:.3g} times the "
                f"largest x of the training rows (normalize_x={self.normalize_x!r}): the "
                "kernel extrapolates in |x| and these predictions may be far off. If the norm "
                "of x carries no meaning (image pixels, standardised columns), use "
                "normalize_x=True (every x on the sphere).",
                UserWarning,
                stacklevel=3,
            )


#: ``length_scale="scale"``: the Fourier length scale is this many times z's spread
#: (the root of the mean squared distance of the training z's from their mean).
#: Measured (docs/performance.md, "Defaults"): 0.45 gives 0.38 on MNIST pixel
#: coordinates in [-1, 1]^2 (spread 0.84) and 0.67 on 3-D points in
#: [-1.5, 1.5]^3 (spread 1.49).
LENGTH_SCALE_PER_Z_SPREAD = 0.45

#: How many times the largest training row's |x| a row to predict may have before
#: predict warns (see ``_warn_if_x_is_far_outside_the_training_rows``).
X_EXTRAPOLATION_WARNING = 10.0


def cholesky_fits(n_samples: int) -> bool:
    """Whether ``solver="auto"`` solves ``n_samples`` rows exactly (Cholesky): their float64
    Gram, ``8 n_samples^2`` bytes, within the configuration's
    ``auto_cholesky_max_gram_bytes``; beyond it ``"auto"`` chooses Nystrom."""
    return 8 * n_samples**2 <= get_config()["auto_cholesky_max_gram_bytes"]


def _largest_rms(x: np.ndarray) -> float:
    """``max_i |x_i| / sqrt(n0)`` without under- or overflow (0 for no x or all-zero x)."""
    return scale_safe_root(
        x, lambda scaled: np.max(np.einsum("ij,ij->i", scaled, scaled)) / x.shape[1], chunked=True
    )


def _divide_x(X: np.ndarray, n_x: int, x_scale: float) -> np.ndarray:
    """A copy of ``X`` with its first ``n_x`` (x) columns divided by ``x_scale``."""
    divided = X.copy()
    divided[:, :n_x] /= x_scale
    return divided
