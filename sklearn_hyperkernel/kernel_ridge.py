"""Kernel ridge regression with the hyperkernel of an infinitely wide hypernetwork.

The paper predicts with kernel regression (its Eq. 18)::

    y(u) = K(u, U) (K(U, U) + eps I)^-1 Y

:class:`HyperKernelRegressor` is that predictor as a scikit-learn estimator. It
behaves like :class:`sklearn.kernel_ridge.KernelRidge` with ``alpha`` playing the
role of ``eps``; the differences are the kernel (the hyperkernel ``Theta^h`` or
the hyper-NNGP ``Lambda^H`` by default), a guarded Cholesky solver, and a
prediction that works through the test rows in blocks so that its memory does
not grow with the number of test rows.
"""

from __future__ import annotations

import math
import warnings
from numbers import Integral, Real
from typing import Any

import numpy as np
from scipy import linalg
from scipy.linalg import lapack
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process.kernels import Kernel
from sklearn.utils import check_array
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["HyperKernelRegressor"]

#: Bytes that one block of the cross-kernel may take when ``block_size=None``.
DEFAULT_BLOCK_BYTES = 16 * 2**20

#: The first diagonal jitter tried, relative to the mean of the diagonal.
_FIRST_RELATIVE_JITTER = 1e-10
#: The largest diagonal jitter tried before falling back to an eigen-solve.
_MAX_RELATIVE_JITTER = 1e-4
#: Factor by which the jitter grows between two Cholesky attempts.
_JITTER_GROWTH = 10.0
#: Rows per chunk when the solver sweeps the Gram matrix (norms, triangle copies).
_SWEEP_ROWS = 512


class HyperKernelRegressor(MultiOutputMixin, RegressorMixin, BaseEstimator):
    """Kernel ridge regression with the hyperkernel (the paper's Eq. 18).

    Each row ``u = [x | z]`` of ``X`` holds the hypernetwork's input ``x`` (all
    but the last ``z_dim`` columns) and the primary network's input ``z`` (the
    last ``z_dim`` columns). With ``K`` the kernel, the model is::

        dual_coef_ = (K(X_fit_, X_fit_) + alpha * I)^-1 y
        predict(X) = K(X, X_fit_) @ dual_coef_

    which is the mean prediction of an infinitely wide hypernetwork trained by
    gradient descent on the squared loss (``kernel="ntk"``) or the posterior
    mean of its Gaussian-process limit (``kernel="nngp"``).

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
        Ridge added to the diagonal of the training Gram matrix (``eps`` of
        Eq. 18). Must be positive. An array gives one value per target.

    z_dim : int, default=2
        Number of trailing columns of ``X`` that form ``z``.

    f_depth : int, default=3
        Number of weight matrices ``L`` of the hypernetwork ``f``.

    g_depth : int, default=2
        Number of weight matrices ``H`` of the primary network ``g``.

    z_encoding : {"linear", "fourier"}, default="linear"
        Input kernel of ``z``: ``z . z' / z_dim`` or the Gaussian kernel of
        infinitely many random Fourier features.

    length_scale : float or array-like of shape (z_dim,), default=1.0
        Length scale of the Fourier encoding of ``z``; ignored for ``"linear"``.

    activation : {"relu", "leaky_relu"}, default="relu"
        Activation of both networks, normalised to keep the variance.

    negative_slope : float, default=0.01
        Slope of ``"leaky_relu"`` for negative inputs; ignored for ``"relu"``.

    block_size : int, default=None
        Number of test rows per block in :meth:`predict`: only one block of the
        cross-kernel ``K(X, X_fit_)`` (``block_size x n_samples_fit``) exists at
        a time. ``None`` chooses the largest block that takes at most
        ``DEFAULT_BLOCK_BYTES`` (16 MiB) of float64 values.

    n_jobs : int, default=None
        Passed to the constructed kernel (``"ntk"``/``"nngp"``), which may use
        it to compute its Gram blocks in parallel. Ignored for a kernel
        instance. ``None`` means 1 unless in a :obj:`joblib.parallel_backend`
        context.

    Attributes
    ----------
    dual_coef_ : ndarray of shape (n_samples,) or (n_samples, n_targets)
        Weights of the training rows in the kernel expansion of the prediction
        (in the units of the original, unweighted problem).

    X_fit_ : ndarray of shape (n_samples, n_features)
        Training rows, needed for prediction.

    kernel_ : Kernel
        The kernel used: a :class:`~sklearn_hyperkernel.HyperKernel` or
        :class:`~sklearn_hyperkernel.HyperNNGP` built from the parameters, or a
        clone of ``kernel``.

    n_features_in_ : int
        Number of features seen during :meth:`fit`.

    feature_names_in_ : ndarray of shape (n_features_in_,)
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
    The system ``(K + alpha I) c = y`` is solved by a Cholesky factorisation.
    If ``K + alpha I`` is not numerically positive definite (the factorisation
    fails, or its reciprocal condition number is below ``n_samples`` times the
    machine epsilon), a jitter growing from ``1e-10`` to ``1e-4`` times the mean
    of the diagonal is added, with a :class:`~sklearn.exceptions.ConvergenceWarning`
    that states it; past that, a symmetric eigen-solve that drops the
    non-positive eigenvalues is used, also with a warning. A non-finite Gram
    matrix or solution raises a ``ValueError``.

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
        "z_dim": [Interval(Integral, 1, None, closed="left")],
        "f_depth": [Interval(Integral, 1, None, closed="left")],
        "g_depth": [Interval(Integral, 1, None, closed="left")],
        "z_encoding": [StrOptions({"linear", "fourier"})],
        "length_scale": [Interval(Real, 0, None, closed="neither"), "array-like"],
        "activation": [StrOptions({"relu", "leaky_relu"})],
        "negative_slope": [Interval(Real, None, None, closed="neither")],
        "block_size": [Interval(Integral, 1, None, closed="left"), None],
        "n_jobs": [Integral, None],
    }

    def __init__(
        self,
        kernel: str | Kernel = "ntk",
        *,
        alpha: float | np.ndarray = 1e-3,
        z_dim: int = 2,
        f_depth: int = 3,
        g_depth: int = 2,
        z_encoding: str = "linear",
        length_scale: float | np.ndarray = 1.0,
        activation: str = "relu",
        negative_slope: float = 0.01,
        block_size: int | None = None,
        n_jobs: int | None = None,
    ) -> None:
        self.kernel = kernel
        self.alpha = alpha
        self.z_dim = z_dim
        self.f_depth = f_depth
        self.g_depth = g_depth
        self.z_encoding = z_encoding
        self.length_scale = length_scale
        self.activation = activation
        self.negative_slope = negative_slope
        self.block_size = block_size
        self.n_jobs = n_jobs

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        tags.target_tags.single_output = True
        tags.target_tags.multi_output = True
        return tags

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
            n_jobs=self.n_jobs,
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

        if not isinstance(self.kernel, Kernel) and X.shape[1] <= self.z_dim:
            raise ValueError(
                f"X has {X.shape[1]} feature(s), but z_dim={self.z_dim} needs at "
                f"least {self.z_dim + 1}: the last z_dim columns of each row are z "
                "and the hypernetwork needs at least one x column before them."
            )
        self.kernel_ = self._build_kernel()
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
        dual_coef = _solve_regularized_system(K, Y, alphas, weights)
        del K
        self.dual_coef_ = dual_coef.ravel() if one_dimensional else dual_coef
        self.X_fit_ = X
        return self

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
        y_pred = np.empty((X.shape[0], coef_matrix.shape[1]), dtype=np.float64)
        rows_per_block = self._rows_per_block()
        for start in range(0, X.shape[0], rows_per_block):
            stop = min(start + rows_per_block, X.shape[0])
            K_block = self._cross_kernel(X[start:stop])
            np.matmul(K_block, coef_matrix, out=y_pred[start:stop])
            del K_block
        if not np.all(np.isfinite(y_pred)):
            raise ValueError(
                "The prediction is not finite: the kernel returned non-finite "
                "values on X; check the scale of X."
            )
        return y_pred.ravel() if dual_coef.ndim == 1 else y_pred


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
