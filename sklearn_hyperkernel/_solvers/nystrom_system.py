"""The ``m x m`` system of Nyström kernel ridge regression, solved in the span of the components.

With ``K_nm`` the kernel between the ``n`` training rows and the ``m``
components, ``K_mm`` the components' Gram, ``W`` the sample weights and ``r_j`` the
ridge of target ``j``, the coefficients of the components solve::

    (K_nm^T W K_nm + r_j K_mm) beta_j = K_nm^T W y_j

:class:`Whitening` factorises ``K_mm = T T^T`` (a Cholesky factor, or an
eigen-decomposition restricted to the numerical range of ``K_mm`` when that
fails), and :func:`solve_normal_equations` solves the whitened system
``(T^-1 K_nm^T W K_nm T^-T + r_j I) w_j = T^-1 K_nm^T W y_j``,
``beta_j = T^-T w_j``: the ridge regression on the features ``K_nm T^-T``
(scikit-learn's ``Nystroem`` features, up to an orthogonal rotation).
:func:`component_space_threads` sets the BLAS threads of these factorisations.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
from scipy import linalg
from scipy.linalg import lapack
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from .._utils.linalg import blas_threads, guarded_cholesky, symmetrize
from ..config import get_config

__all__ = [
    "WHITEN_BLOCKS_BELOW_RCOND",
    "Whitening",
    "component_space_threads",
    "solve_normal_equations",
]

#: Below this reciprocal condition number of ``K_mm``, the blocks of ``K_nm``
#: are whitened before they are accumulated (see :class:`Whitening`).
WHITEN_BLOCKS_BELOW_RCOND = 1e-6


def component_space_threads(m: int) -> threadpool_limits:
    """BLAS threads for the ``m x m`` factorisations: one up to
    ``nystrom_single_thread_solve_max`` components (:mod:`sklearn_hyperkernel.config`),
    the library's default beyond.

    On the two-core development machine OpenBLAS's threaded ``dpotrf`` and
    ``dsygst`` were 2.5 to 10 times *slower* than one thread at ``m`` = 1,000
    to 4,000 (idle machine, load average 0.8: ``dpotrf`` 0.38 s vs 0.16 s,
    ``dsygst`` 0.53 s vs 0.27 s at ``m = 2000``), and up to 10 times under
    load; one thread takes at most a few seconds there. Larger ``m`` on more
    cores gains from threads, except above
    ``one_blas_thread_above`` (a crash of the bundled OpenBLAS).
    """
    return blas_threads(m, one_thread_up_to=get_config()["nystrom_single_thread_solve_max"])


@dataclasses.dataclass
class Whitening:
    """A factor ``T`` with ``T T^T = K_mm`` on the numerical range of ``K_mm``.

    ``kind="cholesky"``: ``T`` is the lower Cholesky factor (``matrix``).
    ``kind="eigh"`` (``K_mm`` not numerically positive definite: duplicated or
    nearly duplicated components): ``T^-T`` is ``U_k S_k^-1/2`` (``matrix``), from
    the eigenvalues above ``m * eps * max``; the span loses only directions
    that no row of ``K_nm`` can see (a null vector of ``K_mm`` is one of
    ``K_nm`` too, for a PSD kernel).

    ``whiten_blocks``: whether each block of ``K_nm`` is whitened
    (``K_b T^-T``) before it is accumulated. Accumulating ``K_nm^T W K_nm``
    and whitening it afterwards is half the flops but squares the conditioning
    of ``K_mm`` into the rounding errors, which is harmless for the
    hypernetwork kernels at their defaults (``K_mm`` has a condition number of
    about 10^4) and not for smooth kernels such as an RBF (10^10 and more);
    blocks are whitened when the reciprocal condition number of ``K_mm`` is
    below ``WHITEN_BLOCKS_BELOW_RCOND`` and always with ``kind="eigh"``.
    """

    kind: str
    matrix: np.ndarray
    rank: int
    rcond: float
    whiten_blocks: bool

    @classmethod
    def of(cls, component_gram: np.ndarray) -> Whitening:
        """The whitening of a symmetric ``K_mm`` (not modified)."""
        m = component_gram.shape[0]
        factor, rcond = guarded_cholesky(component_gram)
        if factor is not None:
            return cls("cholesky", factor, m, rcond, rcond < WHITEN_BLOCKS_BELOW_RCOND)
        values, vectors = linalg.eigh(component_gram, check_finite=False)
        kept = values > m * np.finfo(float).eps * max(
            float(np.max(np.abs(values), initial=0.0)), 0.0
        )
        inverse_root = vectors[:, kept] / np.sqrt(values[kept])
        return cls(
            "eigh", np.ascontiguousarray(inverse_root), int(np.count_nonzero(kept)), rcond, True
        )

    def project(self, A: np.ndarray) -> np.ndarray:
        """``T^-1 A`` for ``A`` of shape (m, k)."""
        if self.kind == "cholesky":
            return linalg.solve_triangular(self.matrix, A, lower=True, check_finite=False)
        return self.matrix.T @ A

    def back(self, w: np.ndarray) -> np.ndarray:
        """``T^-T w``: coefficients of the components from whitened ones."""
        if self.kind == "cholesky":
            return linalg.solve_triangular(
                self.matrix, w, lower=True, trans="T", check_finite=False
            )
        return self.matrix @ w


def solve_normal_equations(
    whitening: Whitening, gram: np.ndarray, rhs: np.ndarray, ridges: np.ndarray, *, whitened: bool
) -> np.ndarray:
    """Solve ``(gram + r_j K_mm) beta_j = rhs_j`` for each target ``j``.

    With ``K_mm = T T^T`` (see :class:`Whitening`) the system becomes
    ``(H + r_j I) w_j = T^-1 rhs_j`` with ``H = T^-1 gram T^-T`` and ``beta_j
    = T^-T w_j``. ``H + r_j I`` has eigenvalues at least ``r_j``, so its
    Cholesky factorisation is stable; if rounding makes it indefinite all the
    same, an eigen-solve of ``H`` with its negative eigenvalues set to 0 is
    used, with a warning.

    Parameters
    ----------
    whitening : Whitening
    gram : ndarray of shape (m, m)
        ``K_nm^T W K_nm``, symmetric; or ``H`` itself when ``whitened``.
    rhs : ndarray of shape (m, n_targets)
        ``K_nm^T W y``; or ``T^-1 K_nm^T W y`` when ``whitened``.
    ridges : ndarray of shape (n_targets,)
    whitened : bool
        Whether the blocks were whitened before they were accumulated.

    Returns
    -------
    beta : ndarray of shape (m, n_targets)
    """
    gram = np.ascontiguousarray(gram)
    if whitened:
        H, projected_rhs = gram, rhs
    elif whitening.kind == "cholesky":
        # T^-1 gram T^-T in place by LAPACK's dsygst (the reduction of a
        # generalised symmetric eigenproblem): m^3 flops, half of two
        # triangular solves. ``gram.T`` is Fortran-ordered (and equal to
        # ``gram``); the result fills its lower triangle, the upper one of ``H``.
        reduced, info = lapack.dsygst(gram.T, whitening.matrix, itype=1, lower=1, overwrite_a=1)
        if info != 0:
            raise ValueError(f"dsygst failed with info={info}.")
        H = symmetrize(np.ascontiguousarray(reduced.T), "upper")
        projected_rhs = whitening.project(rhs)
    else:
        H = whitening.project(whitening.project(gram).T)
        projected_rhs = whitening.project(rhs)
    symmetrize(H, "lower")
    coef = np.empty((whitening.matrix.shape[0], rhs.shape[1]))
    eigen = None
    distinct_ridges = np.unique(ridges)
    diagonal = np.diagonal(H).copy()
    for ridge in distinct_ridges:
        columns = np.flatnonzero(ridges == ridge)
        # one ridge (the usual case): factorise H + r I in place, not a copy
        shifted = H if distinct_ridges.shape[0] == 1 else H.copy()
        shifted[np.diag_indices_from(shifted)] = diagonal + ridge
        # the factor is written into ``shifted`` (the lower triangle of its
        # Fortran-ordered view, the only one cho_solve reads)
        shifted_factor, _ = guarded_cholesky(shifted, overwrite=True)
        if shifted_factor is not None:
            w = linalg.cho_solve(
                (shifted_factor, True), projected_rhs[:, columns], check_finite=False
            )
        else:
            if eigen is None:
                if shifted is H:  # undo the attempt: H's lower triangle is intact
                    symmetrize(H, "lower")
                    np.fill_diagonal(H, diagonal)
                eigen = linalg.eigh(H, check_finite=False)
                warnings.warn(
                    "The Nystroem system K_nm^T W K_nm + ridge * K_mm is not numerically "
                    f"positive definite (ridge={ridge:g}); solved by an eigen-decomposition "
                    "with its negative eigenvalues set to 0. Increase alpha.",
                    ConvergenceWarning,
                    stacklevel=5,
                )
            values, vectors = eigen
            w = vectors @ (
                (vectors.T @ projected_rhs[:, columns]) / (np.maximum(values, 0.0) + ridge)[:, None]
            )
        coef[:, columns] = whitening.back(w)
    return coef
