"""The hyperkernel and the hyper-NNGP as scikit-learn Gaussian-process kernels."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
from sklearn.gaussian_process.kernels import Hyperparameter, Kernel
from sklearn.utils.validation import check_array

from ._gram.engine import (
    Architecture,
    FactorizedRows,
    diagonal,
    factorize,
    gram,
    gram_matvec,
    with_f,
)
from ._operator.gram_operator import FactorizingKernel
from ._params.architecture import (
    activation_slope,
    check_f_input,
    check_z_dim,
    validate_architecture,
    x_width,
)
from ._params.kernel_parameters import KERNEL_PARAMETERS_DOC
from ._utils.device import Placement, fallback_device, resolve_placement
from ._utils.versioning import KERNEL_HISTORY, upgrade_state, versioned_state
from .recursions import length_scale_array

__all__ = ["MAX_LOG10_DIAGONAL", "MIN_LOG10_DIAGONAL", "FactorizedRows", "HyperKernel", "HyperNNGP"]

#: The kernels refuse rows whose diagonal would be below 1e-300 or above 1e300 (float64
#: holds 2.2e-308 to 1.8e308; the margin keeps sums and products of entries finite).
MIN_LOG10_DIAGONAL = -300.0
MAX_LOG10_DIAGONAL = 300.0


class _HypernetworkKernel(FactorizingKernel, Kernel):
    """Shared machinery of :class:`HyperKernel` and :class:`HyperNNGP`."""

    _kind: str = ""

    def __init__(
        self,
        z_dim: int = 2,
        f_depth: int = 3,
        g_depth: int = 2,
        z_encoding: str = "fourier",
        length_scale: float | Sequence[float] = 0.5,
        length_scale_bounds: tuple[float, float] | str = (1e-5, 1e5),
        activation: str = "relu",
        negative_slope: float = 0.01,
        f_bias_variance: float = 1.0,
        g_bias_variance: float = 0.1,
        f_bias_variance_bounds: tuple[float, float] | str = (1e-5, 1e5),
        g_bias_variance_bounds: tuple[float, float] | str = (1e-5, 1e5),
        normalize_x: bool = True,
        f_architecture: str = "dense",
        image_shape: tuple[int, ...] | None = None,
        filter_size: int = 3,
        block_size: int | None = None,
        n_jobs: int | None = None,
        device: str | None = None,
        dtype: str = "float64",
        verbose: int = 0,
    ) -> None:
        self.z_dim = z_dim
        self.f_depth = f_depth
        self.g_depth = g_depth
        self.z_encoding = z_encoding
        self.length_scale = length_scale
        self.length_scale_bounds = length_scale_bounds
        self.activation = activation
        self.negative_slope = negative_slope
        self.f_bias_variance = f_bias_variance
        self.g_bias_variance = g_bias_variance
        self.f_bias_variance_bounds = f_bias_variance_bounds
        self.g_bias_variance_bounds = g_bias_variance_bounds
        self.normalize_x = normalize_x
        self.f_architecture = f_architecture
        self.image_shape = image_shape
        self.filter_size = filter_size
        self.block_size = block_size
        self.n_jobs = n_jobs
        self.device = device
        self.dtype = dtype
        self.verbose = verbose

    # -- hyperparameters ---------------------------------------------------
    @property
    def anisotropic(self) -> bool:
        """Whether there is one length scale per z column."""
        return np.iterable(self.length_scale) and len(self.length_scale) > 1

    @property
    def hyperparameter_length_scale(self) -> Hyperparameter:
        """``length_scale`` of the Fourier encoding of z; fixed for ``"linear"``."""
        n_elements = len(self.length_scale) if self.anisotropic else 1
        bounds = "fixed" if self.z_encoding == "linear" else self.length_scale_bounds
        return Hyperparameter("length_scale", "numeric", bounds, n_elements)

    @property
    def hyperparameter_f_bias_variance(self) -> Hyperparameter:
        """``f_bias_variance``, learned in log space; fixed at 0 (the bias-free f)."""
        return _variance_hyperparameter(
            "f_bias_variance", self.f_bias_variance, self.f_bias_variance_bounds
        )

    @property
    def hyperparameter_g_bias_variance(self) -> Hyperparameter:
        """``g_bias_variance``, learned in log space; fixed at 0 (the bias-free g)."""
        return _variance_hyperparameter(
            "g_bias_variance", self.g_bias_variance, self.g_bias_variance_bounds
        )

    def _gradient_names(self) -> tuple[str, ...]:
        """The non-fixed hyperparameters, in the order of ``theta`` and of the gradient."""
        return tuple(h.name for h in self.hyperparameters if not h.fixed)

    def is_stationary(self) -> bool:
        """False: the kernels depend on x through its norm and direction."""
        return False

    @property
    def requires_vector_input(self) -> bool:
        """True: rows are fixed-length vectors ``[x | z]``."""
        return True

    # -- validation --------------------------------------------------------
    def _architecture(self, n_features: int) -> Architecture:
        """Check the parameters (ValueError naming the bad one) and resolve the architecture."""
        validate_architecture(self.get_params(deep=False), caller_name=type(self).__name__)
        check_z_dim(self.z_dim, n_features)
        image = check_f_input(
            self.f_architecture,
            self.image_shape,
            self.filter_size,
            x_width(n_features, int(self.z_dim)),
        )
        if self.block_size is not None:
            _check_int(self.block_size, "block_size", 1)
        if not isinstance(self.verbose, (bool, np.bool_)):
            _check_int(self.verbose, "verbose", 0)
        resolve_placement(self.device, self.dtype)
        return Architecture(
            f_depth=int(self.f_depth),
            g_depth=int(self.g_depth),
            z_encoding=self.z_encoding,
            length_scale=length_scale_array(self.length_scale, int(self.z_dim)),
            negative_slope=activation_slope(self.activation, self.negative_slope),
            kind=self._kind,
            f_bias_variance=float(self.f_bias_variance),
            g_bias_variance=float(self.g_bias_variance),
            f_architecture=self.f_architecture,
            image_shape=image,
            filter_size=int(self.filter_size),
        )

    def _validate(self, X, name: str) -> np.ndarray:
        return check_array(
            X,
            dtype=np.float64,
            ensure_2d=True,
            ensure_all_finite=True,
            ensure_min_samples=0,
            input_name=name,
        )

    def _placement(self) -> Placement:
        return resolve_placement(self.device, self.dtype)

    def _gram(
        self,
        arch: Architecture,
        rows_a: FactorizedRows,
        rows_b: FactorizedRows | None,
        eval_gradient: tuple[str, ...] = (),
        stream_entries: int | None = None,
    ):
        return gram(
            arch,
            rows_a,
            rows_b,
            stream_entries=stream_entries,
            eval_gradient=eval_gradient,
            block_size=self.block_size,
            n_jobs=self.n_jobs,
            placement=self._placement(),
            verbose=self.verbose,
            label=f"[{type(self).__name__}] Gram",
        )

    # -- evaluation --------------------------------------------------------
    def factorize_rows(self, X) -> FactorizedRows:
        """Validate rows ``[x | z]`` and find their distinct x rows once.

        Estimators that evaluate many cross-Grams against the same rows (for
        example a regressor predicting block by block against its training
        rows) keep the result and pass it to :meth:`gram_factorized` or
        :meth:`gram_matvec`; :meth:`~sklearn_hyperkernel.kernels.FactorizedRows.take`
        subsets it.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        FactorizedRows
        """
        X = self._validate(X, "X")
        return self._factorize(X)

    def _as_factorized(self, rows) -> FactorizedRows:
        """``rows`` if already factorised, else :meth:`factorize_rows` of them."""
        return rows if isinstance(rows, FactorizedRows) else self.factorize_rows(rows)

    def _with_f(self, rows: FactorizedRows, arch: Architecture) -> FactorizedRows:
        """``rows`` with this kernel's f quantities (rows factorised by another kernel)."""
        return with_f(rows, arch.f_kernel(), normalize=bool(self.normalize_x))

    def _factorize(self, X: np.ndarray, distinct: bool = True) -> FactorizedRows:
        """Factorised rows of validated ``X`` (parameters checked), with the two x conventions.

        ``distinct=False`` skips finding the distinct x rows (enough for the
        diagonal).

        * No x columns (``X`` has exactly ``z_dim`` columns): every row shares
          the constant x = (1,), so f's output is the same for all rows and
          the kernel is that of the ordinary network g on z (docs/math.md).
        * ``normalize_x``: each non-zero x is rescaled to ``|x|^2 / n0 = 1``
          (by f's kernel: the dense f changes only the variance ``s``, as
          correlations do not depend on ``|x|``; the conv f rescales the image).
        """
        arch = self._architecture(X.shape[1])
        z_dim = int(self.z_dim)
        if X.shape[1] == z_dim:
            X = np.hstack([np.ones((X.shape[0], 1)), X])
        self._check_scale(X)
        normalize = bool(self.normalize_x)
        return factorize(X, z_dim, arch.f_kernel(), normalize=normalize, distinct=distinct)

    def _check_scale(self, X: np.ndarray) -> None:
        """Refuse rows whose kernel values float64 cannot hold (GPy #898, GPyTorch #623).

        The kernels are positively homogeneous: the diagonal is of order
        ``s^g_depth * e`` with ``s = |x|^2 / n0`` (1 with ``normalize_x``) and
        ``e = |z|^2 / d`` with the linear encoding (1 with Fourier). Its
        logarithm is computed here without forming it, from scale-safe norms;
        when it is outside ``[MIN_LOG10_DIAGONAL, MAX_LOG10_DIAGONAL]`` the
        kernel would underflow to 0 (and a regressor predict the training
        mean) or overflow to infinity. A non-zero x whose squared norm
        underflows is refused as well (it would be taken for x = 0).

        Raises
        ------
        ValueError
            Naming the columns, the order of magnitude reached and
            ``normalize_x``.
        """
        z_dim = int(self.z_dim)
        n_x = X.shape[1] - z_dim
        f_bias, g_bias = float(self.f_bias_variance), float(self.g_bias_variance)
        x_log_norm = _log10_row_norms(X[:, :n_x])
        # with biases (docs/math.md, "Biases") the diagonal is of order
        # sigma^H (e + bg) with sigma = s + L bf: a bias bounds it from below
        log_sigma = np.zeros(X.shape[0])
        if not self.normalize_x:
            log_sigma = 2 * x_log_norm - math.log10(n_x)
        if f_bias > 0:
            log_sigma = np.logaddexp(
                log_sigma * math.log(10), math.log(int(self.f_depth) * f_bias)
            ) / math.log(10)
        log_diagonal = int(self.g_depth) * log_sigma
        if self.z_encoding == "linear":
            log_e = 2 * _log10_row_norms(X[:, n_x:]) - math.log10(z_dim)
            if g_bias > 0:
                log_e = np.logaddexp(log_e * math.log(10), math.log(g_bias)) / math.log(10)
            log_diagonal += log_e
        finite = np.isfinite(log_diagonal)  # rows with x = 0 (or z = 0) are 0 exactly
        outside = finite & (
            (log_diagonal < MIN_LOG10_DIAGONAL) | (log_diagonal > MAX_LOG10_DIAGONAL)
        )
        if np.any(outside):
            row = int(np.flatnonzero(outside)[0])
            which = "underflow to 0" if log_diagonal[row] < 0 else "overflow to infinity"
            parts = f"x (columns 0 to {n_x - 1})" if not self.normalize_x else ""
            if self.z_encoding == "linear":
                parts += (" and " if parts else "") + f"z (columns {n_x} to {X.shape[1] - 1})"
            raise ValueError(
                f"{type(self).__name__}: the kernel's values would {which} in float64: row "
                f"{row} gives a diagonal of about 1e{log_diagonal[row]:.0f} from the scale of "
                f"{parts} (normalize_x={bool(self.normalize_x)}, z_encoding="
                f"{self.z_encoding!r}). Rescale these columns (for example with a "
                "StandardScaler) or set normalize_x=True."
            )
        squared = np.einsum("ij,ij->i", X[:, :n_x], X[:, :n_x])
        # an underflowing |x|^2 is harmless when a bias of f dominates it, unless x is
        # put on the sphere
        underflow_matters = bool(self.normalize_x) or f_bias == 0
        lost = np.isfinite(x_log_norm) & (
            ((squared == 0) & underflow_matters) | ~np.isfinite(squared)
        )
        if np.any(lost):
            row = int(np.flatnonzero(lost)[0])
            raise ValueError(
                f"{type(self).__name__}: the squared norm of x (columns 0 to {n_x - 1}) of row "
                f"{row}, about 1e{2 * x_log_norm[row]:.0f}, is outside float64's range, so x "
                "cannot be put on the sphere. Rescale these columns (for example with a "
                "StandardScaler)."
            )

    def gram_factorized(
        self,
        rows_a: FactorizedRows,
        rows_b: FactorizedRows | None = None,
        *,
        stream_entries: int | None = None,
    ) -> np.ndarray:
        """Kernel matrix between two sets of rows from :meth:`factorize_rows`.

        Parameters
        ----------
        rows_a, rows_b : FactorizedRows or array-like of shape (n, n_features)
            Rows factorised by :meth:`factorize_rows`, or the rows themselves
            (factorised here); ``rows_b=None`` gives the symmetric Gram of
            ``rows_a``.
        stream_entries : int or None, default=None
            Entries of the whole computation this Gram is one piece of (a tile
            of a Nystroem ``K_nm``, of a prediction): the compiled fused pass is
            chosen by that size instead of this Gram's own. None: this Gram's.

        Returns
        -------
        ndarray of shape (rows_a.n_rows, rows_b.n_rows)
        """
        rows_a = self._as_factorized(rows_a)
        rows_b = None if rows_b is None else self._as_factorized(rows_b)
        n_features = rows_a.x_distinct.shape[1] + rows_a.z.shape[1]
        arch = self._architecture(n_features)
        if rows_b is not None and rows_b.x_distinct.shape[1] + rows_b.z.shape[1] != n_features:
            raise ValueError("rows_a and rows_b have different numbers of columns.")
        rows_a = self._with_f(rows_a, arch)
        rows_b = None if rows_b is None else self._with_f(rows_b, arch)
        K, _ = self._gram(arch, rows_a, rows_b, stream_entries=stream_entries)
        if rows_b is None:
            np.fill_diagonal(K, diagonal(arch, rows_a))
        return K

    def gram_matvec(self, rows: FactorizedRows, vectors) -> np.ndarray:
        """``K @ vectors`` for the Gram ``K`` of ``rows``, without forming ``K``.

        The product streams over the upper triangle of ``K`` block by block
        (each entry computed once), with the same parallelism, device and
        progress lines as a Gram; memory stays a few blocks whatever the
        number of rows. Matrix-free solvers (``HyperKernelRegressor(solver=
        "cg")``) call it once per iteration.

        Parameters
        ----------
        rows : FactorizedRows or array-like of shape (n_rows, n_features)
            Rows factorised by :meth:`factorize_rows` (factorise once when
            many products use the same rows), or the rows themselves.
        vectors : array-like of shape (n_rows,) or (n_rows, n_vectors)

        Returns
        -------
        ndarray of the shape of ``vectors``
            Equal to ``self.gram_factorized(rows) @ vectors`` up to rounding.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn_hyperkernel import HyperKernel
        >>> U = np.random.default_rng(0).normal(size=(6, 5))
        >>> kernel = HyperKernel()
        >>> v = np.arange(6.0)
        >>> bool(np.allclose(kernel.gram_matvec(U, v), kernel(U) @ v))
        True
        """
        rows = self._as_factorized(rows)
        n_features = rows.x_distinct.shape[1] + rows.z.shape[1]
        arch = self._architecture(n_features)
        rows = self._with_f(rows, arch)
        vectors = np.asarray(vectors, dtype=np.float64)
        if vectors.shape[:1] != (rows.n_rows,) or vectors.ndim > 2:
            raise ValueError(
                f"vectors must have shape ({rows.n_rows},) or ({rows.n_rows}, n_vectors); "
                f"got {vectors.shape}."
            )
        if not np.all(np.isfinite(vectors)):
            raise ValueError("vectors contains NaN or infinity.")
        product = gram_matvec(
            arch,
            rows,
            vectors.reshape(rows.n_rows, -1),
            diagonal(arch, rows),
            block_size=self.block_size,
            n_jobs=self.n_jobs,
            placement=self._placement(),
            verbose=self.verbose,
            label=f"[{type(self).__name__}] K @ V",
        )
        return product.reshape(vectors.shape)

    def __call__(self, X, Y=None, eval_gradient: bool = False):
        """Return the kernel k(X, Y) and optionally its gradient.

        Parameters
        ----------
        X : array-like of shape (n_samples_X, n_features)
            Rows ``[x | z]``: the last ``z_dim`` columns are z.
        Y : array-like of shape (n_samples_Y, n_features), default=None
            None evaluates k(X, X), using its symmetry.
        eval_gradient : bool, default=False
            Whether to return the gradient with respect to the log of the
            non-fixed hyperparameters, in the order of
            ``self.hyperparameters`` and ``self.theta``: ``f_bias_variance``
            and ``g_bias_variance`` unless 0 (fixed), then ``length_scale``
            with the Fourier encoding (one column per length scale). Only
            when Y is None.

        Returns
        -------
        K : ndarray of shape (n_samples_X, n_samples_Y)
        K_gradient : ndarray of shape (n_samples_X, n_samples_X, n_dims)
            Only when ``eval_gradient`` is True; ``n_dims`` is 0 with the
            linear encoding and no biases.
        """
        X = self._validate(X, "X")
        arch = self._architecture(X.shape[1])
        rows_x = self._factorize(X)
        if Y is not None:
            if eval_gradient:
                raise ValueError("Gradient can only be evaluated when Y is None.")
            Y = self._validate(Y, "Y")
            if Y.shape[1] != X.shape[1]:
                raise ValueError(
                    f"X has {X.shape[1]} columns but Y has {Y.shape[1]}; both must be rows [x | z] "
                    "of the same width."
                )
            K, _ = self._gram(arch, rows_x, self._factorize(Y))
            return K
        names = self._gradient_names() if eval_gradient else ()
        K, K_gradient = self._gram(arch, rows_x, None, eval_gradient=names)
        # correlations of a row with itself are 1 in exact arithmetic: read the
        # diagonal off in closed form rather than from a rounded rho
        np.fill_diagonal(K, diagonal(arch, rows_x))
        if not eval_gradient:
            return K
        if K_gradient is None:
            K_gradient = np.empty((X.shape[0], X.shape[0], 0))
        return K, K_gradient

    def diag(self, X) -> np.ndarray:
        """Diagonal of k(X, X), in O(n_samples) without the Gram matrix.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        X = self._validate(X, "X")
        arch = self._architecture(X.shape[1])
        return diagonal(arch, self._factorize(X, distinct=False))

    def __getstate__(self) -> dict:
        # the version that pickles it, checked by __setstate__
        return versioned_state(self.__dict__)

    def __setstate__(self, state: dict) -> None:
        # an older pickle gains the parameters added since, at their old values,
        # or is refused naming both versions (InconsistentVersionWarning either way)
        self.__dict__.update(upgrade_state(type(self), state, KERNEL_HISTORY))
        # a kernel saved with a GPU this machine lacks computes on the CPU
        self.device = fallback_device(getattr(self, "device", None), type(self).__name__)

    def __eq__(self, other) -> bool:
        """Same class and equal parameters, arrays compared by shape and values.

        scikit-learn's ``Kernel.__eq__`` compares each parameter with ``!=``,
        which raises for array parameters of different lengths (``length_scale=
        [1, 2]`` against ``[1, 2, 3]``) or gives an ambiguous truth value,
        depending on the hash seed's order of the parameters (scikit-learn
        #31525). Here parameters of different shapes are simply different.
        """
        if type(self) is not type(other):
            return False
        mine, theirs = self.get_params(deep=False), other.get_params(deep=False)
        return mine.keys() == theirs.keys() and all(
            _same(mine[name], theirs[name]) for name in sorted(mine)
        )

    __hash__ = None  # as scikit-learn's kernels: mutable, so not hashable

    def __repr__(self) -> str:
        defaults = type(self)().get_params()
        shown = []
        for name, value in self.get_params().items():
            if name in ("z_dim", "f_depth", "g_depth", "z_encoding") or not _same(
                value, defaults[name]
            ):
                if name == "length_scale" and np.iterable(value):
                    value = "[" + ", ".join(f"{v:.3g}" for v in value) + "]"
                    shown.append(f"{name}={value}")
                elif name in ("length_scale", "f_bias_variance", "g_bias_variance"):
                    shown.append(f"{name}={float(value):.3g}")
                else:
                    shown.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"


def _variance_hyperparameter(name: str, value, bounds) -> Hyperparameter:
    """A bias variance as a hyperparameter: fixed at exactly 0 (log 0 does not exist)."""
    fixed = isinstance(value, numbers.Real) and float(value) == 0.0
    return Hyperparameter(name, "numeric", "fixed" if fixed else bounds)


def _log10_row_norms(A: np.ndarray, chunk_rows: int = 4096) -> np.ndarray:
    """``log10 |a|`` of each row, without under- or overflow (-inf for a zero row).

    Each row is divided by its largest entry first; chunks of ``chunk_rows``
    rows keep the temporaries small whatever the number of rows.
    """
    result = np.empty(A.shape[0])
    for start in range(0, A.shape[0], chunk_rows):
        block = A[start : start + chunk_rows]
        largest = np.max(np.abs(block), axis=1, initial=0.0)
        safe = np.where(largest > 0, largest, 1.0)
        scaled = block / safe[:, None]
        with np.errstate(divide="ignore"):
            result[start : start + chunk_rows] = np.where(
                largest > 0,
                np.log10(safe) + 0.5 * np.log10(np.einsum("ij,ij->i", scaled, scaled)),
                -np.inf,
            )
    return result


def _same(a, b) -> bool:
    """Whether two parameter values are equal: the same shape and equal entries."""
    try:
        return np.shape(a) == np.shape(b) and bool(np.all(np.asarray(a) == np.asarray(b)))
    except Exception:  # noqa: BLE001 - incomparable values are different
        return False


def _check_int(value, name: str, minimum: int) -> None:
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, numbers.Integral)
        or value < minimum
    ):
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")


class HyperKernel(_HypernetworkKernel):
    __doc__ = (
        """The hyperkernel: NTK of an infinitely wide hypernetwork.

    For rows ``u = [x | z]``, ``Theta^h(u, u') = Theta^f(x, x') * K^g(u, u')``:
    the NTK of the hypernetwork f (depth ``f_depth``) times the backward kernel
    of the primary network g (depth ``g_depth``) fed with f's outputs, whose
    covariance ``S_f(x, x')`` enters every layer of g (Littwin et al., 2020,
    Thm. 3). Gradient-descent training of a wide hypernetwork's f is kernel
    regression with this kernel. See the math page of the documentation for
    the exact recursions.
"""
        + KERNEL_PARAMETERS_DOC
        + """
    See Also
    --------
    HyperNNGP : the Gaussian-process kernel of the same architecture.

    Notes
    -----
    f's quantities depend on x alone and are computed once per distinct x of
    each block, so rows that share an image (many pixel coordinates per image)
    cost little more than the z part. Without biases ``HyperKernel(u, u) = L *
    H * s^H * e`` with ``s = |x|^2 / n0`` and ``e = Sigma^0(z, z)`` for the
    dense f (``H * Theta^f(x, x) * S_f(x, x)^(H-1) * e`` for any f; the conv
    f's ``S_f(x, x)`` comes from its recursion, not from ``|x|``), and rows
    with x = 0, or z = 0 under the linear encoding, have kernel 0 with every
    row; biases change both (docs/math.md, "Biases": x = 0 is an ordinary
    input when ``f_bias_variance > 0``, z = 0 when ``g_bias_variance > 0``).
    A bias variance of exactly 0 is a fixed hyperparameter, a positive one is
    learned in log space like ``length_scale``.
    The defaults (x on the sphere, ``f_bias_variance=1``,
    ``g_bias_variance=0.1``) make the kernel work as it is in any
    scikit-learn tool that takes a kernel (``SVC``, ``SVR``,
    ``GaussianProcessClassifier``, ``KernelPCA``, ``Nystroem``); the paper's
    closed form of the raw rows is ``HyperKernel(normalize_x=False,
    f_bias_variance=0, g_bias_variance=0)``.

    With numba (a core dependency; the numpy path where it cannot be
    imported), Grams of at least 2^24 entries on the CPU run all layers of f
    and g in one compiled pass per entry (the same values to 1e-12):
    ``sklearn_hyperkernel.set_config(fused=False)`` turns it off, ``True`` on
    for every size (the environment variable ``SKLEARN_HYPERKERNEL_FUSED=0``
    or ``1`` is the default). The first fused call of a machine compiles for
    10-15 s; later processes load the cached code in about 0.2-0.6 s.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hyperkernel import HyperKernel
    >>> rng = np.random.default_rng(0)
    >>> U = rng.normal(size=(5, 6))      # x: 4 columns, z: the last 2
    >>> K = HyperKernel(z_dim=2, f_depth=3, g_depth=2)(U)
    >>> K.shape
    (5, 5)
    >>> bool(np.allclose(np.diag(K), HyperKernel().diag(U)))
    True
    """
    )

    _kind = "ntk"


class HyperNNGP(_HypernetworkKernel):
    __doc__ = (
        """Hyper-NNGP: the Gaussian-process kernel of an infinitely wide hypernetwork.

    The output of a hypernetwork with f and g infinitely wide at
    initialisation is a Gaussian process with covariance ``Lambda^H(u, u')``
    (Littwin et al., 2020, Thm. 2): g's NNGP recursion in which every layer's
    covariance is multiplied by ``S_f(x, x')``, the NNGP of f.
"""
        + KERNEL_PARAMETERS_DOC
        + """
    See Also
    --------
    HyperKernel : the NTK (hyperkernel) of the same architecture.

    Notes
    -----
    Without biases ``HyperNNGP(u, u) = s^H * e`` with ``s = |x|^2 / n0`` and
    ``e = Sigma^0(z, z)`` for the dense f (``S_f(x, x)^H * e`` for any f; with
    biases, docs/math.md, "Biases"). A bias
    variance of exactly 0 is a fixed hyperparameter, a positive one is
    learned in log space like ``length_scale``. The paper's closed form of
    the raw rows is ``HyperNNGP(normalize_x=False, f_bias_variance=0,
    g_bias_variance=0)``; the defaults are :class:`HyperKernel`'s.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.gaussian_process import GaussianProcessRegressor
    >>> from sklearn.gaussian_process.kernels import WhiteKernel
    >>> from sklearn_hyperkernel import HyperNNGP
    >>> rng = np.random.default_rng(0)
    >>> U = rng.normal(size=(30, 5))
    >>> y = np.sin(3 * U[:, -1]) * U[:, 0]
    >>> kernel = HyperNNGP(z_dim=1, z_encoding="fourier") + WhiteKernel(1e-2)
    >>> gp = GaussianProcessRegressor(kernel=kernel, random_state=0).fit(U, y)
    >>> gp.predict(U[:2]).shape
    (2,)
    """
    )

    _kind = "nngp"
