"""Kernel ridge regression with the hyperkernel of an infinitely wide hypernetwork.

The paper predicts with kernel regression (its Eq. 18)::

    y(u) = K(u, U) (K(U, U) + eps I)^-1 Y

:class:`HyperKernelRegressor` is that predictor as a scikit-learn estimator. It
behaves like :class:`sklearn.kernel_ridge.KernelRidge` with ``alpha`` playing the
role of ``eps``; the differences are the kernel (the hyperkernel ``Theta^h`` or
the hyper-NNGP ``Lambda^H`` by default), a guarded Cholesky solver or, for
training sets whose Gram matrix does not fit in memory, a matrix-free
preconditioned conjugate-gradient solver, or, for training sets too large for
either, Nyström kernel ridge regression on a subset of centres (Falkon's
problem, solved directly in the space of the centres; see
:mod:`sklearn_hyperkernel._nystrom`), and a prediction that works through the
test rows in blocks so that its memory does not grow with the number of test
rows.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from numbers import Integral, Real
from typing import Any

import numpy as np
from scipy import linalg
from scipy.linalg import lapack
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process.kernels import Kernel
from sklearn.utils import check_array, check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from sklearn_hyperkernel import _nystrom, _solvers
from sklearn_hyperkernel._solvers import (
    LowRankPreconditioner,
    conjugate_gradient,
    pivoted_cholesky,
)

__all__ = ["HyperKernelRegressor"]

#: Bytes that one block of the cross-kernel may take when ``block_size=None``.
DEFAULT_BLOCK_BYTES = 16 * 2**20

#: Bytes that one tile of the training Gram may take in a CG matvec when
#: ``block_size=None``.
CG_BLOCK_BYTES = 64 * 2**20

#: ``solver="auto"`` uses Cholesky while the n x n float64 training Gram takes
#: at most this many bytes (2 GiB: n <= 16,384), and CG beyond.
AUTO_CHOLESKY_MAX_GRAM_BYTES = 2 * 2**30

#: ``n_components=None`` with ``solver="nystrom"`` uses ``min(n_samples, this)``
#: centres (see the ``n_components`` parameter for the measurements).
NYSTROM_DEFAULT_COMPONENTS = 2000

#: ``center_selection="rpcholesky"`` runs randomly pivoted Cholesky on at most
#: this many times ``n_components`` training rows drawn uniformly (its factor
#: takes ``8 * pool * n_components`` bytes while the centres are chosen).
RPCHOLESKY_POOL_FACTOR = 10

#: The first diagonal jitter tried, relative to the mean of the diagonal.
_FIRST_RELATIVE_JITTER = 1e-10
#: The largest diagonal jitter tried before falling back to an eigen-solve.
_MAX_RELATIVE_JITTER = 1e-4
#: Factor by which the jitter grows between two Cholesky attempts.
_JITTER_GROWTH = 10.0
#: Fewest rows per block of the Nystroem solver when ``block_size=None``.
_MIN_NYSTROM_BLOCK_ROWS = 256
#: Rows per chunk when the solver sweeps the Gram matrix (norms, triangle copies).
_SWEEP_ROWS = 512
#: Above this many rows the dense solve runs LAPACK on one BLAS thread
#: (see :data:`sklearn_hyperkernel._solvers.ONE_BLAS_THREAD_ABOVE`).
ONE_BLAS_THREAD_ABOVE = _solvers.ONE_BLAS_THREAD_ABOVE


class HyperKernelRegressor(MultiOutputMixin, RegressorMixin, BaseEstimator):
    """Kernel ridge regression with the hyperkernel (the paper's Eq. 18).

    Each row ``u = [x | z]`` of ``X`` holds the hypernetwork's input ``x`` (all
    but the last ``z_dim`` columns) and the primary network's input ``z`` (the
    last ``z_dim`` columns). With ``K`` the kernel, ``m`` the targets' mean
    and ``r = alpha * mean(diag K)`` (``alpha_scale="relative"``), the model
    is::

        dual_coef_ = (K(X_fit_, X_fit_) + r * I)^-1 (y - m)
        predict(X) = K(X, X_fit_) @ dual_coef_ + m

    which is the mean prediction of an infinitely wide hypernetwork trained by
    gradient descent on the squared loss (``kernel="ntk"``) or the posterior
    mean of its Gaussian-process limit (``kernel="nngp"``).

    The defaults (Fourier encoding of z, ``normalize_x``, ``normalize_y``,
    relative ridge) are chosen for the tasks the package exists for and for
    plain tabular data (see the user guide, "Why the defaults are what they
    are"); the paper's exact kernel regression is
    ``HyperKernelRegressor(alpha=1e-9, z_encoding=..., length_scale=...,
    normalize_x=False, normalize_y=False)``.

    Parameters
    ----------
    kernel : {"ntk", "nngp"} or Kernel, default="ntk"
        ``"ntk"`` uses :class:`~sklearn_hyperkernel.HyperKernel` (the
        hyperkernel ``Theta^h``), ``"nngp"`` uses
        :class:`~sklearn_hyperkernel.HyperNNGP` (the hyper-NNGP ``Lambda^H``),
        both built from the architecture parameters below. Any other
        :class:`sklearn.gaussian_process.kernels.Kernel` instance is cloned and
        used as it is; the architecture parameters are then ignored (as
        :class:`~sklearn.kernel_ridge.KernelRidge` ignores ``gamma`` for a
        callable kernel). Its hyperparameters can be searched as
        ``kernel__<name>``.

    alpha : float or array-like of shape (n_targets,), default=1e-3
        Ridge (``eps`` of Eq. 18), relative to the mean of the training Gram's
        diagonal by default (see ``alpha_scale``). Must be positive. An array
        gives one value per target. The default, 1e-3 of the kernel's own
        scale, is a light ridge that interpolates the paper's noise-free pixel
        tasks almost exactly and keeps the solve well conditioned; raise it
        for noisy targets (its best value is a ``GridSearchCV`` away). The
        paper's setting is ``alpha=1e-9``.

    alpha_scale : {"relative", "absolute"}, default="relative"
        ``"relative"``: the ridge added to the diagonal is ``alpha`` times the
        mean diagonal of the training Gram (as neural-tangents'
        ``diag_reg_absolute_scale=False``). The hypernetwork kernels scale as
        ``(|x|^2 / n0)^g_depth``, so the diagonal is ``1e-5`` on unit-norm
        MNIST rows and ``~6`` on standard-normal rows: no absolute ridge
        serves both. ``"absolute"``: ``alpha`` is added as it is, as in
        :class:`~sklearn.kernel_ridge.KernelRidge`. The ridge used is
        ``ridge_``.

    z_dim : int, default=2
        Number of trailing columns of ``X`` that form ``z``.

    f_depth : int, default=3
        Number of weight matrices ``L`` of the hypernetwork ``f``.

    g_depth : int, default=2
        Number of weight matrices ``H`` of the primary network ``g``.

    z_encoding : {"fourier", "linear"}, default="fourier"
        Input kernel of ``z``: the Gaussian kernel of infinitely many random
        Fourier features (paper, Remarks 2-3), or ``z . z' / z_dim`` (the
        paper's bias-free primary network, positively homogeneous in ``z``: it
        cannot fit a general function of a coordinate, so it is not the
        default).

    length_scale : float or array-like of shape (z_dim,), default=0.5
        Length scale of the Fourier encoding of ``z``, in the units of ``z``;
        ignored for ``"linear"``. 0.5 suits coordinates scaled to ``[-1, 1]``
        (``pixel_regression``'s default: 0.5 is a quarter of the image, about
        7 pixels of MNIST) and standardised columns alike; the paper uses
        ``sqrt(2)`` pixels (``coordinates="pixel"``). Tune it with
        ``GridSearchCV``, or fit it by marginal likelihood with
        :class:`~sklearn.gaussian_process.GaussianProcessRegressor`.

    activation : {"relu", "leaky_relu"}, default="relu"
        Activation of both networks, normalised to keep the variance.

    negative_slope : float, default=0.01
        Slope of ``"leaky_relu"`` for negative inputs; ignored for ``"relu"``.

    normalize_x : bool, default=True
        Rescale each ``x`` to ``|x|^2 / n0 = 1`` (zero rows stay zero) before
        the kernel, as the authors' code puts images on the unit sphere. The
        kernels are positively homogeneous of degree ``g_depth`` in ``x``, so
        without it a held-out row of larger norm (for example after a
        :class:`~sklearn.preprocessing.StandardScaler`) gets a prediction
        scaled by ``(|x| / |x_train|)^g_depth``. ``False`` gives the paper's
        kernel of the raw rows. Ignored for a kernel instance.

    normalize_y : bool, default=True
        Standardise each target column (weighted mean and standard deviation
        with ``sample_weight``) before the solve and undo it in
        :meth:`predict` (as :class:`~sklearn.gaussian_process.
        GaussianProcessRegressor`'s ``normalize_y``): the kernel expansion,
        which has no intercept, then models the deviation from the training
        mean rather than from 0. The prediction scales with ``y`` either way;
        only the centring changes it.

    block_size : int, default=None
        Number of test rows per block in :meth:`predict`: only one block of the
        cross-kernel ``K(X, X_fit_)`` (``block_size x n_samples_fit``) exists at
        a time. ``None`` chooses the largest block that takes at most
        ``DEFAULT_BLOCK_BYTES`` (16 MiB) of float64 values. With
        ``solver="cg"`` it is also the number of training rows per panel of
        the matrix-free products ``K @ v`` (``None``: the hypernetwork
        kernels' own panels of about 2^22 entries; tiles of at most
        ``CG_BLOCK_BYTES``, 64 MiB, for other kernels). With
        ``solver="nystrom"`` it is the number of rows per block of
        ``K(X, centres)``, in :meth:`fit` and :meth:`predict` (``None``: at
        most ``DEFAULT_BLOCK_BYTES`` per block, and at least 8 blocks of 256
        rows or more, so that small problems run in parallel too).

    solver : {"auto", "cholesky", "cg", "nystrom"}, default="auto"
        How ``(K + alpha I) c = y`` is solved (``"nystrom"``: approximated).

        - ``"cholesky"`` forms the ``n x n`` training Gram and factorises it:
          ``8 n^2`` bytes and ``n^3 / 3`` flops.
        - ``"cg"`` runs preconditioned conjugate gradients without ever holding
          ``K``: each iteration computes ``K @ v`` panel by panel from the
          kernel (:meth:`HyperKernel.gram_matvec`: the panels of one block
          triangle, each entry used for both symmetric halves, on ``n_jobs``
          workers or a Dask cluster), so memory is
          ``O(n * (panel rows + cg_rank))``. Each iteration costs one
          evaluation of half the kernel matrix.
        - ``"nystrom"`` restricts the model to the span of ``m =
          n_components`` centres chosen among the training rows (see
          ``center_selection``) and solves Falkon's problem
          ``(K_nm^T W K_nm + r K_mm) beta = K_nm^T W y`` (``W`` the sample
          weights, ``r`` the ridge ``ridge_``) directly in the space of the
          centres: ``K_nm`` is computed block of rows by block of rows (in
          parallel over ``n_jobs`` or on a Dask cluster, as the Gram), only
          ``K_nm^T W K_nm`` and ``K_nm^T W y`` are kept, and the ``m x m``
          system is solved after whitening by a Cholesky factor of ``K_mm``.
          Cost ``O(n m)`` kernel entries and ``O(n m^2 + m^3)`` flops, memory
          ``O(m^2 + block)`` (plus the rows), and a prediction costs ``m``
          kernel entries per row instead of ``n``. It is an approximation
          whose error falls as ``m`` grows, exact for ``m = n`` (every row a
          centre). How fast depends on the kernel's spectrum at the ridge:
          the hyperkernel's is flat at the default ``alpha`` (the smallest
          eigenvalue of ``K_mm`` stays a few per cent of its diagonal, far
          above the ridge), so on the MNIST pixel task at ``n = 20,000`` the
          test MSE was 29 % above the exact solve's with ``m = 2000`` (fit
          in 1/11 of the exact time), 21 % with ``m = 4000`` (1/4) and 12 %
          with ``m = 8000`` (as long as the exact fit). It is the solver for
          ``n`` beyond what ``"cholesky"`` and ``"cg"`` can do (a million
          rows in minutes); below that, prefer them. ``"auto"`` never
          chooses it.
        - ``"auto"`` uses ``"cholesky"`` while the Gram takes at most
          ``AUTO_CHOLESKY_MAX_GRAM_BYTES`` (2 GiB, i.e. ``n <= 16384``) and
          ``"cg"`` beyond.

    n_components : int, default=None
        Number of centres ``m`` of ``solver="nystrom"`` (the name of
        :class:`~sklearn.kernel_approximation.Nystroem`'s parameter); ``None``
        uses ``min(n_samples, NYSTROM_DEFAULT_COMPONENTS)`` (2000: a budget,
        about ``n * m`` kernel entries and ``n * m^2`` flops, some minutes
        for a million rows on two cores; raise it as far as time allows, the
        error falls with ``m``). A value above the number of training rows
        is reduced to it with a warning, as ``Nystroem`` does. Ignored by
        the other solvers.

    center_selection : {"uniform", "rpcholesky"} or array-like of int, \
            default="uniform"
        How ``solver="nystrom"`` chooses its centres (Falkon's parameter
        name). ``"uniform"``: ``n_components`` training rows drawn uniformly
        without replacement (the first ``n_components`` of
        ``random_state.permutation(n_samples)``, the same draw as
        :class:`~sklearn.kernel_approximation.Nystroem` with the same
        ``random_state``). ``"rpcholesky"``: randomly pivoted Cholesky (Chen,
        Epperly, Tropp and Webber, 2022; the accelerated, blocked form with
        rejection sampling of Epperly, Tropp and Webber, 2024) on the
        (weighted) kernel matrix of ``min(n_samples, RPCHOLESKY_POOL_FACTOR
        * n_components)`` rows drawn uniformly: each centre is drawn with
        probability proportional to what the centres chosen before leave
        unexplained of its kernel diagonal, so near-duplicates are avoided;
        it costs about ``10 m^2`` more kernel entries and ``10 m^3`` flops.
        ``"rpcholesky"`` approximates the kernel matrix better (a smaller
        trace of ``K - K_nm K_mm^-1 K_mn``), but on the MNIST pixel task
        uniform centres gave the lower test error in 10 of 11 comparisons
        (``n = 5,000``, ``m`` from 250 to 2,000, two seeds; ``n = 20,000``,
        ``m`` = 2,000 and 4,000; in the eleventh rpcholesky was 0.6 % better)
        at a third to a half of the fit time (3.6 s vs 9.9 s at ``n =
        20,000``, ``m = 2,000``), hence the default. An array of row indices uses those rows (``n_components``
        is then ignored). Ignored by the other solvers.

    random_state : int, RandomState instance or None, default=None
        Draws the centres of ``solver="nystrom"``. Ignored by the other
        solvers.

    tol : float, default=1e-6
        CG stops when ``|y_j - (K + alpha_j I) c_j| <= tol * |y_j|`` for every
        target ``j`` (with the weighted system when ``sample_weight`` is
        given). The error of the fitted values ``K c`` is at most the residual.
        Ignored by Cholesky.

    max_iter : int, default=1000
        Largest number of CG iterations; reaching it without meeting ``tol``
        raises a :class:`~sklearn.exceptions.ConvergenceWarning`. Ignored by
        Cholesky.

    cg_rank : int, default=300
        Rank of the CG preconditioner: a partial pivoted Cholesky factor
        ``L L^T ~ K`` (greedy on the diagonal, one kernel column per rank) used
        as ``(L L^T + alpha I)^-1``. ``0`` runs unpreconditioned CG. It costs
        ``cg_rank`` kernel columns and ``O(n * cg_rank^2)`` flops once, and
        ``8 n cg_rank`` bytes (twice, while it is built). Ignored by Cholesky.

    verbose : int, default=0
        ``verbose >= 1`` prints progress lines: every few seconds while the
        training Gram (Cholesky) is computed; with ``solver="cg"``, a line
        when the preconditioner is built and every 10 CG iterations.
        ``verbose >= 2`` prints every CG iteration and the progress of each
        product ``K @ v`` as well.

    n_jobs : int, default=None
        Passed to the constructed kernel (``"ntk"``/``"nngp"``), which
        computes its Gram blocks and the blocks of each CG product in
        parallel with joblib. Ignored for a kernel instance. ``None`` means 1
        unless in a :obj:`joblib.parallel_config` context; inside
        ``parallel_config(backend="dask")`` the blocks run on a Dask cluster.

    device : str, default=None
        Passed to the constructed kernel: None computes the kernel with
        numpy; ``"cpu"``, ``"cuda"``, ``"cuda:<index>"`` with torch on that
        device; ``"auto"`` on CUDA when available, else numpy. The solves
        themselves run in float64 numpy. Ignored for a kernel instance (set
        the kernel's own ``device``).

    dtype : {"float64", "float32"}, default="float64"
        Precision of the kernel computation (passed to the constructed
        kernel). The solve is float64 either way.

    Attributes
    ----------
    solver_ : {"cholesky", "cg", "nystrom"}
        The solver used (what ``solver="auto"`` chose).

    n_iter_ : int
        Number of CG iterations; 1 with Cholesky and Nyström (one direct
        solve, so that ``n_iter_ >= 1`` as scikit-learn expects of
        estimators with ``max_iter``).

    n_components_ : int or None
        Number of Nyström centres used; ``None`` with the other solvers.

    components_ : ndarray of shape (`n_components_`, n_features) or None
        The Nyström centres (rows of the training set), as
        :class:`~sklearn.kernel_approximation.Nystroem`'s ``components_``;
        ``None`` with the other solvers.

    component_indices_ : ndarray of shape (`n_components_`,) or None
        Indices of ``components_`` in the training set; ``None`` with the
        other solvers.

    cg_residual_ : float or None
        Largest relative residual ``|y_j - (K + alpha_j I) c_j| / |y_j|`` over
        the targets when CG stopped; ``None`` with Cholesky.

    cg_rank_ : int or None
        Rank of the preconditioner actually built (lower than ``cg_rank`` when
        the kernel is captured earlier); ``None`` with Cholesky.

    dual_coef_ : ndarray of shape (n_samples,) or (n_samples, n_targets)
        Weights of the training rows in the kernel expansion of the prediction
        (in the units of the original, unweighted problem):
        ``predict(X) = K(X, X_fit_) @ dual_coef_ + intercept_``. With
        ``solver="nystrom"``, the weights ``beta`` of the centres, of shape
        (`n_components_`,) or (`n_components_`, n_targets).

    intercept_ : float or ndarray of shape (n_targets,)
        The training targets' (weighted) mean with ``normalize_y=True``, else 0.

    ridge_ : ndarray of shape (n_targets,)
        The ridge added to the training Gram's diagonal for each target, in
        the kernel's units (``alpha`` times the mean diagonal with
        ``alpha_scale="relative"``).

    X_fit_ : ndarray of shape (n_samples, n_features)
        Training rows, needed for prediction; with ``solver="nystrom"`` only
        the centres (``components_``, the same array), which is all the
        prediction needs.

    kernel_ : Kernel
        The kernel used: a :class:`~sklearn_hyperkernel.HyperKernel` or
        :class:`~sklearn_hyperkernel.HyperNNGP` built from the parameters, or a
        clone of ``kernel``.

    n_features_in_ : int
        Number of features seen during :meth:`fit`.

    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during :meth:`fit`. Defined only when ``X`` has
        feature names that are all strings.

    See Also
    --------
    sklearn.kernel_ridge.KernelRidge : Kernel ridge regression with the
        pairwise kernels of scikit-learn.
    sklearn.gaussian_process.GaussianProcessRegressor : Can fit the kernel's
        hyperparameters (e.g. the Fourier ``length_scale``) by maximum
        likelihood.

    Notes
    -----
    With ``solver="cholesky"``, the system ``(K + alpha I) c = y`` is solved by
    a Cholesky factorisation.
    If ``K + alpha I`` is not numerically positive definite (the factorisation
    fails, or its reciprocal condition number is below ``n_samples`` times the
    machine epsilon), a jitter growing from ``1e-10`` to ``1e-4`` times the mean
    of the diagonal is added, with a :class:`~sklearn.exceptions.ConvergenceWarning`
    that states it; past that, a symmetric eigen-solve that drops the
    non-positive eigenvalues is used, also with a warning. A non-finite Gram
    matrix or solution raises a ``ValueError``.

    With ``solver="cg"`` the Gram matrix is never formed. Each iteration
    computes ``K @ V`` for the search directions of all targets at once, tile
    by tile: the tiles ``K[i:j, i:]`` of the upper block triangle are
    evaluated from the kernel (reusing the training rows' factorisation), used
    for their rows and, transposed, for the rows below, and dropped; the
    diagonal is read off in closed form as in the Gram of the Cholesky path.
    The preconditioner is ``(L L^T + alpha I)^-1`` with ``L`` a partial pivoted
    Cholesky factor of rank ``cg_rank`` (see :mod:`sklearn_hyperkernel._solvers`),
    applied through an orthonormal basis of ``L``. The approach is that of
    GPyTorch's BBMM and of Falkon: memory ``O(n)`` per tile row, time
    ``O(n^2)`` kernel evaluations per iteration instead of ``O(n^3)`` flops.

    With ``sample_weight`` the loss is ``sum_i w_i (y_i - f(u_i))^2 + alpha
    |f|^2``: an integer weight is the same as repeating the row.

    When the kernel offers ``factorize_rows`` and ``gram_factorized`` (the
    hyperkernels do), the training rows are factorised once in :meth:`fit`
    (the distinct hypernetwork inputs ``x`` found and their quantities
    computed once) and each prediction block reuses that factorisation.

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

    _parameter_constraints: dict = {
        "kernel": [StrOptions({"ntk", "nngp"}), Kernel],
        "alpha": [Interval(Real, 0, None, closed="neither"), "array-like"],
        "alpha_scale": [StrOptions({"relative", "absolute"})],
        "normalize_x": ["boolean"],
        "normalize_y": ["boolean"],
        "z_dim": [Interval(Integral, 1, None, closed="left")],
        "f_depth": [Interval(Integral, 1, None, closed="left")],
        "g_depth": [Interval(Integral, 1, None, closed="left")],
        "z_encoding": [StrOptions({"linear", "fourier"})],
        "length_scale": [Interval(Real, 0, None, closed="neither"), "array-like"],
        "activation": [StrOptions({"relu", "leaky_relu"})],
        "negative_slope": [Interval(Real, None, None, closed="neither")],
        "block_size": [Interval(Integral, 1, None, closed="left"), None],
        "solver": [StrOptions({"auto", "cholesky", "cg", "nystrom"})],
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "center_selection": [StrOptions({"uniform", "rpcholesky"}), "array-like"],
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
        kernel: str | Kernel = "ntk",
        *,
        alpha: float | np.ndarray = 1e-3,
        alpha_scale: str = "relative",
        z_dim: int = 2,
        f_depth: int = 3,
        g_depth: int = 2,
        z_encoding: str = "fourier",
        length_scale: float | np.ndarray = 0.5,
        activation: str = "relu",
        negative_slope: float = 0.01,
        normalize_x: bool = True,
        normalize_y: bool = True,
        block_size: int | None = None,
        solver: str = "auto",
        tol: float = 1e-6,
        max_iter: int = 1000,
        cg_rank: int = 300,
        n_components: int | None = None,
        center_selection: str | np.ndarray = "uniform",
        random_state: int | np.random.RandomState | None = None,
        verbose: int = 0,
        n_jobs: int | None = None,
        device: str | None = None,
        dtype: str = "float64",
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
        self.normalize_x = normalize_x
        self.normalize_y = normalize_y
        self.block_size = block_size
        self.solver = solver
        self.tol = tol
        self.max_iter = max_iter
        self.cg_rank = cg_rank
        self.n_components = n_components
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

        Where the kernel is computed is not part of what was learned, so a
        model fitted (or saved) on a GPU predicts on the CPU after
        ``set_params(device=None)`` (and vice versa), as skorch's nets do.
        As every parameter, the device is checked when it is used
        (:meth:`predict`, :meth:`fit`), not here.
        """
        super().set_params(**params)
        if "device" in params and hasattr(self, "kernel_") and not isinstance(self.kernel, Kernel):
            self.kernel_.set_params(device=self.device)
        return self

    # ------------------------------------------------------------------ kernel
    def _build_kernel(self) -> Kernel:
        """Return a fresh kernel instance from the parameters."""
        if isinstance(self.kernel, Kernel):
            return clone(self.kernel)
        # Imported here: kernels.py imports nothing from this module, but keeping
        # the import local lets this module load on its own.
        from sklearn_hyperkernel.kernels import HyperKernel, HyperNNGP

        kernel_class = HyperKernel if self.kernel == "ntk" else HyperNNGP
        return kernel_class(
            z_dim=self.z_dim,
            f_depth=self.f_depth,
            g_depth=self.g_depth,
            z_encoding=self.z_encoding,
            length_scale=self.length_scale,
            activation=self.activation,
            negative_slope=self.negative_slope,
            normalize_x=self.normalize_x,
            n_jobs=self.n_jobs,
            device=self.device,
            dtype=self.dtype,
            verbose=int(self.verbose),
        )

    def _uses_factorization(self) -> bool:
        return hasattr(self.kernel_, "gram_factorized") and hasattr(self.kernel_, "factorize_rows")

    def _cross_kernel(self, X_block: np.ndarray) -> np.ndarray:
        """Kernel between a block of rows and the training rows, float64."""
        if self._uses_factorization():
            block_rows = self.kernel_.factorize_rows(X_block)
            K = self.kernel_.gram_factorized(block_rows, self._fit_rows)
        else:
            K = self.kernel_(X_block, self.X_fit_)
        return np.asarray(K, dtype=np.float64)

    def _train_gram(self, X: np.ndarray) -> np.ndarray:
        """Training Gram matrix, float64, writeable and owned by the caller."""
        if self._uses_factorization():
            self._fit_rows = self.kernel_.factorize_rows(X)
            # rows_b=None: the symmetric Gram, filled from one triangle with the
            # diagonal read off in closed form.
            K = self.kernel_.gram_factorized(self._fit_rows)
        else:
            self._fit_rows = None
            K = self.kernel_(X)
        K = np.asarray(K, dtype=np.float64)
        if not K.flags.writeable or not (K.flags.c_contiguous or K.flags.f_contiguous):
            K = np.array(K, dtype=np.float64, order="C")
        return K

    # --------------------------------------------------------------- checking
    def _check_alpha(self, n_targets: int) -> np.ndarray:
        """Return one positive ridge per target."""
        alpha = np.asarray(self.alpha, dtype=np.float64)
        if alpha.ndim > 1:
            raise ValueError(
                f"alpha must be a float or a 1-d array-like, got an array of shape {alpha.shape}."
            )
        alpha = np.atleast_1d(alpha)
        if alpha.shape[0] not in (1, n_targets):
            raise ValueError(
                f"alpha has {alpha.shape[0]} values but y has {n_targets} "
                "target(s); give one value or one per target."
            )
        if not np.all(np.isfinite(alpha)) or np.any(alpha <= 0):
            raise ValueError(f"alpha must be positive and finite, got {self.alpha!r}.")
        return np.broadcast_to(alpha, (n_targets,)).copy()

    @staticmethod
    def _check_sample_weight(sample_weight: Any, n_samples: int) -> np.ndarray | None:
        """Return the weights as a float64 array of shape (n_samples,), or None."""
        if sample_weight is None:
            return None
        if isinstance(sample_weight, Real):
            weights = np.full(n_samples, float(sample_weight))
        else:
            weights = check_array(
                sample_weight,
                ensure_2d=False,
                dtype=np.float64,
                input_name="sample_weight",
                ensure_min_samples=0,
            )
            if weights.ndim != 1:
                raise ValueError(
                    "sample_weight must be 1D array or scalar, got an array of "
                    f"shape {weights.shape}."
                )
            if weights.shape[0] != n_samples:
                raise ValueError(
                    f"sample_weight.shape == {weights.shape}, expected ({n_samples},)!"
                )
        if not np.all(np.isfinite(weights)):
            raise ValueError("sample_weight must be finite.")
        if np.any(weights < 0):
            raise ValueError("sample_weight must be non-negative.")
        if n_samples > 0 and not np.any(weights > 0):
            raise ValueError(
                "Sample weights must contain at least one non-zero number; all weights are zero."
            )
        return weights

    # --------------------------------------------------------------- fitting
    def fit(self, X, y, sample_weight=None) -> HyperKernelRegressor:
        """Fit the kernel ridge regression.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training rows ``[x | z]``.

        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Target values.

        sample_weight : float or array-like of shape (n_samples,), default=None
            Non-negative weight of each row in the squared loss. ``None`` gives
            every row weight 1.

        Returns
        -------
        self : HyperKernelRegressor
            The fitted estimator.
        """
        self._validate_params()
        X, y = validate_data(
            self,
            X,
            y,
            dtype=np.float64,
            multi_output=True,
            y_numeric=True,
        )
        y = np.asarray(y, dtype=np.float64)
        one_dimensional = y.ndim == 1
        Y = y.reshape(-1, 1) if one_dimensional else y
        alphas = self._check_alpha(Y.shape[1])
        weights = self._check_sample_weight(sample_weight, X.shape[0])

        if not isinstance(self.kernel, Kernel) and X.shape[1] < self.z_dim:
            raise ValueError(
                f"X has {X.shape[1]} feature(s), but z_dim={self.z_dim}: the last z_dim "
                f"columns of each row are z, so X needs at least {self.z_dim} columns "
                "(exactly z_dim columns means no x: every row shares one constant x)."
            )
        Y, y_mean, y_std = _normalize_targets(Y, weights, bool(self.normalize_y))
        self.intercept_ = y_mean[0] if one_dimensional else y_mean
        self.kernel_ = self._build_kernel()
        self.solver_ = self._choose_solver(X.shape[0])
        self.n_components_ = self.components_ = self.component_indices_ = None
        if self.solver_ == "nystrom":
            self.n_iter_ = 1
            self.cg_residual_ = None
            self.cg_rank_ = None
            dual_coef = self._fit_nystrom(X, Y, alphas, weights) * y_std
            self.dual_coef_ = dual_coef.ravel() if one_dimensional else dual_coef
            return self
        if self.solver_ == "cg":
            if not isinstance(self.kernel, Kernel):
                # CG prints its own line per iteration; each product's
                # progress only at verbose >= 2
                self.kernel_.set_params(verbose=max(int(self.verbose) - 1, 0), block_size=self.block_size)
            self.X_fit_ = X
            dual_coef = self._fit_cg(X, Y, alphas, weights) * y_std
            self.dual_coef_ = dual_coef.ravel() if one_dimensional else dual_coef
            return self
        self.n_iter_ = 1
        self.cg_residual_ = None
        self.cg_rank_ = None
        K = self._train_gram(X)
        if K.shape != (X.shape[0], X.shape[0]):
            raise ValueError(
                f"The kernel returned a Gram matrix of shape {K.shape} for {X.shape[0]} rows."
            )
        # the sum is finite when every entry is (a cheap test without an n x n
        # boolean temporary); only an overflowing sum needs the full test
        with np.errstate(over="ignore", invalid="ignore"):
            total = np.sum(K)
        if not np.isfinite(total) and not np.all(np.isfinite(K)):
            raise ValueError(
                "The kernel returned non-finite values on the training data; check the scale of X."
            )
        self.ridge_ = self._ridge(alphas, np.diagonal(K))
        dual_coef = _solve_regularized_system(K, Y, self.ridge_, weights) * y_std
        del K
        self.dual_coef_ = dual_coef.ravel() if one_dimensional else dual_coef
        self.X_fit_ = X
        return self

    def _ridge(self, alphas: np.ndarray, diagonal: np.ndarray) -> np.ndarray:
        """The ridge added to the diagonal, per target, in the kernel's units.

        ``alpha_scale="relative"`` multiplies ``alpha`` by the mean of the
        training Gram's diagonal (neural-tangents' ``diag_reg`` with
        ``diag_reg_absolute_scale=False``), so the same ``alpha`` means the
        same amount of smoothing whatever the scale of the kernel; a kernel
        whose diagonal is zero everywhere keeps ``alpha`` as it is.
        """
        if self.alpha_scale == "absolute":
            return alphas
        scale = float(np.mean(diagonal)) if diagonal.size else 0.0
        if not (math.isfinite(scale) and scale > 0):
            return alphas
        return alphas * scale

    # ------------------------------------------------------- Nystroem solver
    def _task_kernel(self) -> Kernel:
        """The kernel evaluated inside the parallel tasks of the Nyström solver.

        The tasks are the parallelism, so a kernel with its own ``n_jobs``
        runs each task's block on one worker (and prints nothing).
        """
        params = self.kernel_.get_params(deep=False)
        changes = {name: value for name, value in (("n_jobs", 1), ("verbose", 0)) if name in params}
        return clone(self.kernel_).set_params(**changes) if changes else self.kernel_

    def _task_n_jobs(self) -> int | None:
        """Workers over the Nyström blocks: the kernel's own ``n_jobs``."""
        if not isinstance(self.kernel, Kernel):
            return self.n_jobs
        return self.kernel_.get_params(deep=False).get("n_jobs", None)

    def _nystrom_block_rows(self, n_components: int, n_rows: int) -> int:
        """Rows per block of ``K(rows, centres)``: ``block_size``, else at most
        ``DEFAULT_BLOCK_BYTES`` per block and at least 8 blocks (of 256 rows or
        more, for BLAS), so that small problems still run in parallel. It does
        not depend on ``n_jobs``: neither do the sums, nor the result."""
        if self.block_size is not None:
            return int(self.block_size)
        by_bytes = max(1, DEFAULT_BLOCK_BYTES // (8 * max(n_components, 1)))
        return min(by_bytes, max(_MIN_NYSTROM_BLOCK_ROWS, -(-n_rows // 8)))

    def _n_components(self, n_samples: int) -> int:
        if self.n_components is None:
            return min(n_samples, NYSTROM_DEFAULT_COMPONENTS)
        if self.n_components > n_samples:
            warnings.warn(
                f"n_components={self.n_components} > n_samples={n_samples}. This is not "
                "possible: n_components was set to n_samples (every training row a "
                "centre), which costs more than the exact solver.",
                UserWarning,
                stacklevel=4,
            )
            return n_samples
        return int(self.n_components)

    def _nystrom_centers(
        self,
        X: np.ndarray,
        rows: Any,
        diagonal: np.ndarray,
        sample_weight: np.ndarray | None,
    ) -> np.ndarray:
        """Indices of the training rows used as centres (``center_selection``)."""
        n_samples = X.shape[0]
        selection = self.center_selection
        if not isinstance(selection, str):
            index = check_array(
                selection, ensure_2d=False, dtype=None, input_name="center_selection"
            )
            if index.ndim != 1 or index.shape[0] == 0 or not np.issubdtype(index.dtype, np.integer):
                raise ValueError(
                    "center_selection must be 'uniform', 'rpcholesky' or a non-empty 1-d "
                    f"array of integer row indices; got an array of shape {index.shape} "
                    f"and dtype {index.dtype}."
                )
            if index.min() < -n_samples or index.max() >= n_samples:
                raise ValueError(
                    f"center_selection has row indices outside [0, {n_samples}) for "
                    f"{n_samples} training rows."
                )
            return np.asarray(index, dtype=np.intp) % n_samples
        n_components = self._n_components(n_samples)
        random_state = check_random_state(self.random_state)
        if selection == "uniform":
            return _nystrom.uniform_centers(n_samples, n_components, random_state)
        # randomly pivoted Cholesky on the weighted kernel of a uniform pool
        pool = _nystrom.uniform_centers(
            n_samples, min(n_samples, RPCHOLESKY_POOL_FACTOR * n_components), random_state
        )
        pool_weight = None if sample_weight is None else sample_weight[pool]
        pool_rows = _nystrom.subset_rows(rows, pool) if rows is not None else X[pool]
        pool_diagonal = diagonal[pool] if pool_weight is None else diagonal[pool] * pool_weight

        def columns(index: np.ndarray) -> np.ndarray:
            if rows is not None:
                K = self.kernel_.gram_factorized(pool_rows, _nystrom.subset_rows(pool_rows, index))
            else:
                K = self.kernel_(pool_rows, pool_rows[index])
            K = np.asarray(K, dtype=np.float64)
            # the exact diagonal, as in the training Gram
            K[index, np.arange(index.shape[0])] = diagonal[pool[index]]
            if pool_weight is not None:
                K *= np.sqrt(pool_weight)[:, None]
                K *= np.sqrt(pool_weight[index])[None, :]
            return K

        pivots = _nystrom.rpcholesky_centers(pool_diagonal, columns, n_components, random_state)
        if pivots.shape[0] < n_components:
            warnings.warn(
                f"center_selection='rpcholesky' found {pivots.shape[0]} centres instead of "
                f"n_components={n_components}: the kernel matrix of the candidate rows has "
                "that numerical rank.",
                UserWarning,
                stacklevel=4,
            )
        return pool[pivots]

    def _fit_nystrom(
        self,
        X: np.ndarray,
        targets: np.ndarray,
        alphas: np.ndarray,
        sample_weight: np.ndarray | None,
    ) -> np.ndarray:
        """Coefficients of the centres of Nyström kernel ridge regression.

        Solves ``(K_nm^T W K_nm + r K_mm) beta = K_nm^T W y`` (see
        :mod:`sklearn_hyperkernel._nystrom`): the weighted loss
        ``sum_i w_i (y_i - f(u_i))^2 + r |f|^2`` of the exact solvers,
        minimised over the span of the centres, so that ``m = n`` gives the
        exact solution.
        """
        verbose = int(self.verbose)
        started = time.perf_counter()
        factorized = self._uses_factorization()
        # the distinct x found once for all rows (hashed and verified block by
        # block: memory linear in the rows with small constants)
        rows = self.kernel_.factorize_rows(X) if factorized else None
        diagonal = np.asarray(self.kernel_.diag(X), dtype=np.float64)
        if not np.all(np.isfinite(diagonal)):
            raise ValueError(
                "The kernel returned non-finite values on the training data; check the scale of X."
            )
        self.ridge_ = self._ridge(alphas, diagonal)
        centre_index = self._nystrom_centers(X, rows, diagonal, sample_weight)
        n_components = centre_index.shape[0]
        centres = _nystrom.subset_rows(rows, centre_index) if factorized else X[centre_index]
        if verbose:
            rule = self.center_selection if isinstance(self.center_selection, str) else "given"
            self._log(
                f"{n_components} Nystroem centres ({rule}) chosen in "
                f"{time.perf_counter() - started:.1f}s"
            )
        if factorized:
            centre_gram = self.kernel_.gram_factorized(centres)
        else:
            centre_gram = self.kernel_(centres)
        centre_gram = np.require(centre_gram, dtype=np.float64, requirements=["C", "W", "O"])
        _nystrom.symmetrize(centre_gram, "lower")  # exactly symmetric, whatever the kernel
        np.fill_diagonal(centre_gram, diagonal[centre_index])
        if not np.all(np.isfinite(centre_gram)):
            raise ValueError(
                "The kernel returned non-finite values on the training data; check the scale of X."
            )
        with _nystrom.m_space_threads(n_components):
            whitening = _nystrom.Whitening.of(centre_gram)
        del centre_gram
        gram, rhs = _nystrom.normal_equations(
            self._task_kernel(),
            rows if factorized else X,
            centres,
            targets,
            sample_weight,
            factorized=factorized,
            block_rows=self._nystrom_block_rows(n_components, X.shape[0]),
            n_jobs=self._task_n_jobs(),
            whitening=whitening if whitening.whiten_blocks else None,
            log=self._log if verbose >= 2 else None,
        )
        if not np.all(np.isfinite(gram)):
            raise ValueError(
                "The kernel returned non-finite values on the training data; check the scale of X."
            )
        if verbose:
            self._log(f"K_nm^T W K_nm accumulated, {time.perf_counter() - started:.1f}s")
        with _nystrom.m_space_threads(n_components):
            coef = _nystrom.solve_normal_equations(
                whitening, gram, rhs, self.ridge_, whitened=whitening.whiten_blocks
            )
        if verbose:
            self._log(
                f"solved in the span of the centres ({whitening.kind} whitening, rank "
                f"{whitening.rank} of {n_components}, K_mm rcond {whitening.rcond:.1e}, blocks "
                f"{'whitened' if whitening.whiten_blocks else 'accumulated raw'}), "
                f"{time.perf_counter() - started:.1f}s"
            )
        if not np.all(np.isfinite(coef)):
            raise ValueError(
                "The Nystroem solve produced non-finite coefficients. Increase alpha."
            )
        self.n_components_ = n_components
        self.component_indices_ = centre_index
        self.components_ = X[centre_index]
        self.X_fit_ = self.components_
        self._fit_rows = centres if factorized else None
        return coef

    # ------------------------------------------------------------ CG solver
    def _choose_solver(self, n_samples: int) -> str:
        """Resolve ``solver="auto"`` from the memory the Gram would take."""
        if self.solver != "auto":
            return self.solver
        gram_bytes = 8 * n_samples * n_samples
        return "cholesky" if gram_bytes <= AUTO_CHOLESKY_MAX_GRAM_BYTES else "cg"

    def _log(self, message: str) -> None:
        print(f"[{type(self).__name__}] {message}", flush=True)

    def _cg_rows_per_tile(self, n_samples: int) -> int:
        if self.block_size is not None:
            return int(self.block_size)
        return max(1, CG_BLOCK_BYTES // (8 * max(n_samples, 1)))

    def _train_rows_kernel(self, start: int, stop: int, col_start: int) -> np.ndarray:
        """``K(X_fit_[start:stop], X_fit_[col_start:])`` without holding more."""
        if self._fit_rows is not None:
            rows = self._fit_rows
            block = dataclasses.replace(
                rows, x_index=rows.x_index[start:stop], z=rows.z[start:stop]
            )
            cols = dataclasses.replace(
                rows, x_index=rows.x_index[col_start:], z=rows.z[col_start:]
            )
            K = self.kernel_.gram_factorized(block, cols)
        else:
            K = self.kernel_(self.X_fit_[start:stop], self.X_fit_[col_start:])
        return np.asarray(K, dtype=np.float64)

    def _gram_matvec(self, vectors: np.ndarray, diagonal: np.ndarray) -> np.ndarray:
        """``K @ vectors`` for the training Gram, one tile of rows at a time.

        A hypernetwork kernel streams the product itself (``gram_matvec``:
        parallel, on its device, on Dask). For any other kernel only the tiles
        ``K[start:stop, start:]`` of the upper block triangle are computed;
        each serves its rows and, transposed, the rows below. The
        diagonal is taken from ``diagonal`` and each tile's leading square is
        made exactly symmetric, as in the Gram of the Cholesky path.
        """
        if self._fit_rows is not None and hasattr(self.kernel_, "gram_matvec"):
            return self.kernel_.gram_matvec(self._fit_rows, vectors)
        n = vectors.shape[0]
        product = np.zeros_like(vectors)
        rows_per_tile = self._cg_rows_per_tile(n)
        for start in range(0, n, rows_per_tile):
            stop = min(start + rows_per_tile, n)
            tile = self._train_rows_kernel(start, stop, start)
            square = tile[:, : stop - start]
            lower = np.tril_indices(stop - start, -1)
            square[lower] = square.T[lower]
            np.fill_diagonal(square, diagonal[start:stop])
            product[start:stop] += tile @ vectors[start:]
            product[stop:] += tile[:, stop - start :].T @ vectors[start:stop]
        return product

    def _train_column(self, index: int, diagonal: np.ndarray) -> np.ndarray:
        """Column ``K[:, index]`` of the training Gram (a symmetric matrix)."""
        column = self._train_rows_kernel(index, index + 1, 0).reshape(-1)
        column[index] = diagonal[index]
        return column

    def _fit_cg(
        self,
        X: np.ndarray,
        targets: np.ndarray,
        alphas: np.ndarray,
        sample_weight: np.ndarray | None,
    ) -> np.ndarray:
        """Dual coefficients by preconditioned CG, never holding the Gram.

        With ``s = sqrt(sample_weight)`` the system is ``(S K S + alpha I) c' =
        S y`` and ``c = S c'``, as in the Cholesky path.
        """
        verbose = int(self.verbose)
        self._fit_rows = self.kernel_.factorize_rows(X) if self._uses_factorization() else None
        diagonal = np.asarray(self.kernel_.diag(X), dtype=np.float64)
        if not np.all(np.isfinite(diagonal)):
            raise ValueError(
                "The kernel returned non-finite values on the training data; check the scale of X."
            )
        self.ridge_ = alphas = self._ridge(alphas, diagonal)
        root_weight = None if sample_weight is None else np.sqrt(sample_weight)
        weighted_diagonal = diagonal if root_weight is None else diagonal * sample_weight

        def weighted_column(index: int) -> np.ndarray:
            column = self._train_column(index, diagonal)
            if root_weight is not None:
                column *= root_weight * root_weight[index]
            return column

        def weighted_matvec(vectors: np.ndarray) -> np.ndarray:
            if root_weight is None:
                product = self._gram_matvec(vectors, diagonal)
            else:
                product = self._gram_matvec(vectors * root_weight[:, None], diagonal)
                product *= root_weight[:, None]
            if not np.all(np.isfinite(product)):
                raise ValueError(
                    "The kernel returned non-finite values on the training data; "
                    "check the scale of X."
                )
            return product

        started = time.perf_counter()
        factor = pivoted_cholesky(
            weighted_diagonal,
            weighted_column,
            self.cg_rank,
            # once the remainder is far below the ridge the preconditioner is
            # as good as exact
            stop_trace=1e-3 * float(np.min(alphas)),
        )
        preconditioner = LowRankPreconditioner(factor)
        del factor
        self.cg_rank_ = preconditioner.rank
        if verbose:
            self._log(
                f"pivoted Cholesky preconditioner of rank {preconditioner.rank} "
                f"built in {time.perf_counter() - started:.1f}s"
            )

        every = 1 if verbose >= 2 else 10

        def report(iteration: int, relative_residuals: np.ndarray) -> None:
            if verbose and (iteration % every == 0 or iteration == 1):
                self._log(
                    f"CG iteration {iteration}: relative residual "
                    f"{float(np.max(relative_residuals)):.3e} (tol {self.tol:g}), "
                    f"{time.perf_counter() - started:.1f}s"
                )

        rhs = targets if root_weight is None else targets * root_weight[:, None]
        result = conjugate_gradient(
            weighted_matvec,
            rhs,
            alphas,
            preconditioner=preconditioner,
            tol=float(self.tol),
            max_iter=int(self.max_iter),
            callback=report,
        )
        self.n_iter_ = result.n_iter
        self.cg_residual_ = float(np.max(result.relative_residuals, initial=0.0))
        if verbose:
            self._log(
                f"CG {'converged' if result.converged else 'stopped'} after "
                f"{result.n_iter} iteration(s), relative residual "
                f"{self.cg_residual_:.3e}, {time.perf_counter() - started:.1f}s"
            )
        if not result.converged and result.breakdown:
            warnings.warn(
                f"CG stopped after {result.n_iter} iteration(s) at a relative residual "
                f"of {self.cg_residual_:.3e} (tol={self.tol:g}): K + alpha*I is not "
                "positive definite at working precision (a non-positive or non-finite "
                "curvature). Increase alpha, rescale X, or use solver='cholesky', "
                "which falls back to a jitter or an eigen-solve.",
                ConvergenceWarning,
                stacklevel=3,
            )
        elif not result.converged:
            warnings.warn(
                f"CG did not reach tol={self.tol:g} in {result.n_iter} iteration(s) "
                f"(max_iter={self.max_iter}); relative residual {self.cg_residual_:.3e}. "
                "Increase max_iter or cg_rank, or increase alpha.",
                ConvergenceWarning,
                stacklevel=3,
            )
        dual_coef = result.solution
        if root_weight is not None:
            dual_coef *= root_weight[:, None]
        if not np.all(np.isfinite(dual_coef)):
            raise ValueError(
                "The CG solve produced non-finite coefficients; the kernel matrix "
                "may not be positive semi-definite. Increase alpha."
            )
        return dual_coef

    # ------------------------------------------------------------ predicting
    def _rows_per_block(self) -> int:
        if self.block_size is not None:
            return int(self.block_size)
        n_fit = max(self.X_fit_.shape[0], 1)
        return max(1, DEFAULT_BLOCK_BYTES // (8 * n_fit))

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
        dual_coef = self.dual_coef_
        coef_matrix = dual_coef.reshape(-1, 1) if dual_coef.ndim == 1 else dual_coef
        rows_per_block = self._rows_per_block()
        if getattr(self, "solver_", None) == "nystrom":
            # blocks of rows against the m centres, as parallel tasks (threads
            # or a Dask cluster), each block's distinct x computed once
            factorized = self._uses_factorization()
            y_pred = _nystrom.predict_blocks(
                self._task_kernel(),
                X,
                self._fit_rows if factorized else self.X_fit_,
                coef_matrix,
                factorized=factorized,
                block_rows=self._nystrom_block_rows(self.n_components_, X.shape[0]),
                n_jobs=self._task_n_jobs(),
            )
        else:
            y_pred = np.empty((X.shape[0], coef_matrix.shape[1]), dtype=np.float64)
            for start in range(0, X.shape[0], rows_per_block):
                stop = min(start + rows_per_block, X.shape[0])
                K_block = self._cross_kernel(X[start:stop])
                np.matmul(K_block, coef_matrix, out=y_pred[start:stop])
                del K_block
        y_pred += self.intercept_
        if not np.all(np.isfinite(y_pred)):
            raise ValueError(
                "The prediction is not finite: the kernel returned non-finite "
                "values on X; check the scale of X."
            )
        return y_pred.ravel() if dual_coef.ndim == 1 else y_pred


def _normalize_targets(
    targets: np.ndarray, sample_weight: np.ndarray | None, normalize: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardised targets and the (weighted) mean and standard deviation per column.

    Without ``normalize`` the mean is 0 and the deviation 1. A constant
    column keeps a deviation of 1. Weighted statistics make an integer weight
    the same as repeating the row.
    """
    n_targets = targets.shape[1]
    if not normalize or targets.shape[0] == 0:
        return targets, np.zeros(n_targets), np.ones(n_targets)
    mean = np.average(targets, axis=0, weights=sample_weight)
    std = np.sqrt(np.average((targets - mean) ** 2, axis=0, weights=sample_weight))
    std = np.where(std > 0, std, 1.0)
    return (targets - mean) / std, mean, std


# ---------------------------------------------------------------- the solver
def _symmetrize_from_lower(matrix: np.ndarray) -> None:
    """Copy the strictly lower triangle of a square C-ordered array onto the upper.

    Works in row chunks so that no temporary larger than a chunk is made.
    """
    n = matrix.shape[0]
    for start in range(0, n, _SWEEP_ROWS):
        stop = min(start + _SWEEP_ROWS, n)
        # Columns right of the chunk's diagonal block: upper[start:stop, stop:]
        # receives lower[stop:, start:stop].T.
        matrix[start:stop, stop:] = matrix[stop:, start:stop].T
        block = matrix[start:stop, start:stop]
        upper = np.triu_indices(stop - start, 1)
        block[upper] = block.T[upper]


def _max_abs_row_sum(matrix: np.ndarray) -> float:
    """Infinity norm (= 1-norm for a symmetric matrix), chunked."""
    n = matrix.shape[0]
    norm = 0.0
    for start in range(0, n, _SWEEP_ROWS):
        chunk = np.abs(matrix[start : start + _SWEEP_ROWS])
        norm = max(norm, float(chunk.sum(axis=1).max()))
    return norm


def _try_cholesky(gram_c: np.ndarray) -> np.ndarray | None:
    """Factorise a symmetric C-ordered matrix in place; keep its lower triangle.

    ``gram_c.T`` is Fortran-ordered and equal to ``gram_c``; LAPACK factorises it
    in place and writes the factor into its lower triangle, which is the upper
    triangle of ``gram_c``. The strictly lower triangle of ``gram_c`` (the
    original values) is left untouched, so a failed attempt can be undone.

    Returns the factor (a view of ``gram_c``, lower triangle in Fortran order)
    when the matrix is numerically positive definite, else None.
    """
    n = gram_c.shape[0]
    norm = _max_abs_row_sum(gram_c)
    fortran_view = gram_c.T
    try:
        factor, _ = linalg.cho_factor(
            fortran_view, lower=True, overwrite_a=True, check_finite=False
        )
    except linalg.LinAlgError:
        return None
    if not np.all(np.isfinite(np.diagonal(factor))):
        return None
    rcond, info = lapack.dpocon(factor, norm, uplo="L")
    if info != 0 or not math.isfinite(rcond) or rcond < max(n, 1) * np.finfo(float).eps:
        return None
    return factor


def _restore(gram_c: np.ndarray, diagonal: np.ndarray) -> None:
    """Undo a factorisation attempt: rebuild the upper triangle and the diagonal."""
    _symmetrize_from_lower(gram_c)
    np.fill_diagonal(gram_c, diagonal)


def _eigen_solve(gram_c: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, int]:
    """Least-squares solve on the positive eigen-space of a symmetric matrix."""
    eigenvalues, eigenvectors = linalg.eigh(
        gram_c, lower=True, overwrite_a=True, check_finite=False
    )
    tolerance = max(abs(eigenvalues[-1]), abs(eigenvalues[0])) * gram_c.shape[0]
    tolerance *= np.finfo(float).eps
    kept = eigenvalues > tolerance
    projected = eigenvectors[:, kept].T @ targets
    projected /= eigenvalues[kept][:, None]
    return eigenvectors[:, kept] @ projected, int(np.count_nonzero(~kept))


def _solve_one_ridge(
    gram_c: np.ndarray, diagonal: np.ndarray, targets: np.ndarray, ridge: float
) -> np.ndarray:
    """Solve ``(K + ridge I) c = targets``, guarding against non-PD matrices.

    ``gram_c`` holds ``K`` in its strictly lower triangle and ``diagonal`` its
    diagonal; it is overwritten (call :func:`_restore` to get ``K`` back).
    """
    np.fill_diagonal(gram_c, diagonal + ridge)
    factor = _try_cholesky(gram_c)
    if factor is not None:
        return linalg.cho_solve((factor, True), targets, check_finite=False)

    mean_diagonal = float(np.mean(np.abs(diagonal + ridge)))
    if not mean_diagonal > 0:
        mean_diagonal = 1.0
    relative_jitter = _FIRST_RELATIVE_JITTER
    while relative_jitter <= _MAX_RELATIVE_JITTER * (1 + 1e-12):
        jitter = relative_jitter * mean_diagonal
        _restore(gram_c, diagonal + ridge + jitter)
        factor = _try_cholesky(gram_c)
        if factor is not None:
            warnings.warn(
                "K + alpha*I is not numerically positive definite (alpha="
                f"{ridge:g}); added a jitter of {jitter:.3e} "
                f"({relative_jitter:.0e} x the mean diagonal {mean_diagonal:.3e}) "
                "to its diagonal. Consider a larger alpha or removing duplicated "
                "rows.",
                ConvergenceWarning,
                stacklevel=4,
            )
            return linalg.cho_solve((factor, True), targets, check_finite=False)
        relative_jitter *= _JITTER_GROWTH

    _restore(gram_c, diagonal + ridge)
    solution, n_dropped = _eigen_solve(gram_c, targets)
    warnings.warn(
        "K + alpha*I is not positive definite even with a jitter of "
        f"{_MAX_RELATIVE_JITTER:.0e} x its mean diagonal (alpha={ridge:g}); "
        "solved by a symmetric eigen-decomposition, dropping "
        f"{n_dropped} non-positive eigenvalue(s). Check that the kernel is "
        "positive semi-definite.",
        ConvergenceWarning,
        stacklevel=4,
    )
    return solution


def _solve_regularized_system(
    gram: np.ndarray,
    targets: np.ndarray,
    alphas: np.ndarray,
    sample_weight: np.ndarray | None,
) -> np.ndarray:
    """See :func:`_solve_regularized_system_threads`; on one BLAS thread for large systems."""
    if gram.shape[0] > ONE_BLAS_THREAD_ABOVE:
        with threadpool_limits(limits=1, user_api="blas"):
            return _solve_regularized_system_threads(gram, targets, alphas, sample_weight)
    return _solve_regularized_system_threads(gram, targets, alphas, sample_weight)


def _solve_regularized_system_threads(
    gram: np.ndarray,
    targets: np.ndarray,
    alphas: np.ndarray,
    sample_weight: np.ndarray | None,
) -> np.ndarray:
    """Dual coefficients ``c`` minimising the weighted kernel ridge loss.

    With ``s = sqrt(sample_weight)`` the weighted problem is the unweighted one
    on ``diag(s) K diag(s)`` and ``diag(s) y``, and ``c = diag(s) c_scaled``.

    Parameters
    ----------
    gram : ndarray of shape (n_samples, n_samples)
        Training Gram matrix; overwritten.
    targets : ndarray of shape (n_samples, n_targets)
        Targets.
    alphas : ndarray of shape (n_targets,)
        Positive ridge per target.
    sample_weight : ndarray of shape (n_samples,) or None
        Non-negative weights.

    Returns
    -------
    dual_coef : ndarray of shape (n_samples, n_targets)
    """
    # Work on a C-ordered matrix; for a symmetric F-ordered one the transpose is it.
    gram_c = gram if gram.flags.c_contiguous else gram.T
    if not gram_c.flags.c_contiguous:
        gram_c = np.ascontiguousarray(gram)
    if sample_weight is not None:
        root_weight = np.sqrt(sample_weight)
        gram_c *= root_weight[:, None]
        gram_c *= root_weight[None, :]
        targets = targets * root_weight[:, None]
    diagonal = np.diagonal(gram_c).copy()

    dual_coef = np.empty_like(targets, dtype=np.float64)
    distinct_alphas = np.unique(alphas)
    for index, ridge in enumerate(distinct_alphas):
        if index > 0:
            _restore(gram_c, diagonal)
        columns = np.flatnonzero(alphas == ridge)
        dual_coef[:, columns] = _solve_one_ridge(
            gram_c, diagonal, targets[:, columns], float(ridge)
        )
    if sample_weight is not None:
        dual_coef *= root_weight[:, None]
    if not np.all(np.isfinite(dual_coef)):
        raise ValueError(
            "The kernel ridge solve produced non-finite coefficients; the Gram "
            "matrix is too ill-conditioned for alpha. Increase alpha."
        )
    return dual_coef
