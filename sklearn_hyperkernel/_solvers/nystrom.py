"""Nyström kernel ridge regression: the fit, streamed over blocks of training rows.

``HyperKernelRegressor(solver="nystrom")`` solves Falkon's problem (Rudi,
Carratino and Rosasco 2017) directly in the space of ``m`` components. With
``K_nm`` the kernel between the ``n`` training rows and the components, ``K_mm``
the components' Gram, ``W`` the sample weights and ``r`` the ridge, the
coefficients ``beta`` of ``f = sum_j beta_j k(., c_j)`` minimise
``sum_i w_i (y_i - f(u_i))^2 + r |f|^2`` over that span::

    (K_nm^T W K_nm + r K_mm) beta = K_nm^T W y

:func:`fit_nystrom` takes three steps:

* which rows are components (:mod:`._solvers.nystrom_components`);
* :func:`normal_equations`: ``K_nm^T W K_nm`` and ``K_nm^T W y`` accumulated
  block of rows by block of rows (``K_nm`` never exists whole), the blocks
  being parallel tasks (:func:`._utils.scheduling.run_tasks`: threads, or a Dask
  cluster inside ``joblib.parallel_config(backend="dask")``);
* the ``m x m`` solve after whitening by ``K_mm`` (:mod:`._solvers.nystrom_system`).

The prediction is :meth:`~._operator.GramOperator.cross_product` of the
components' operator. Every kernel evaluation goes through a
:class:`~._operator.GramOperator`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.linalg import blas

from .._operator.gram_operator import GramOperator, block_partition, check_finite_kernel, tiles
from .._utils.linalg import symmetrize
from .._utils.scheduling import run_tasks
from ..config import get_config
from ..progress import ProgressLog, format_log_line, log
from .nystrom_components import select_components
from .nystrom_system import Whitening, component_space_threads, solve_normal_equations

__all__ = ["NystromFit", "fit_nystrom", "kernel_scale", "normal_equations"]


@dataclass
class NystromFit:
    """Outcome of :func:`fit_nystrom`.

    Attributes
    ----------
    coef : ndarray of shape (m, n_targets)
        The coefficients ``beta`` of the components.
    component_index : ndarray of shape (m,)
        Indices of the components among the training rows.
    components : GramOperator
        The operator of the components (the rows a prediction needs).
    """

    coef: np.ndarray
    component_index: np.ndarray
    components: GramOperator


def fit_nystrom(
    operator: GramOperator,
    targets: np.ndarray,
    ridges: np.ndarray,
    sample_weight: np.ndarray | None,
    *,
    component_selection: Any,
    n_components: int | None,
    random_state: Any,
    block_size: int | None,
    verbose: int = 0,
    source: str = "HyperKernelRegressor",
) -> NystromFit:
    """Coefficients of the components of Nyström kernel ridge regression.

    The weighted loss of the exact solvers, minimised over the span of the
    components, so that every row a component gives the exact solution.

    Parameters
    ----------
    operator : GramOperator
        The training rows' Gram.
    targets : ndarray of shape (n, n_targets)
    ridges : ndarray of shape (n_targets,)
    sample_weight : ndarray of shape (n,) or None
    component_selection, n_components, random_state
        See :func:`._solvers.nystrom_components.select_components`.
    block_size : int or None
        Rows per block of ``K_nm`` (see :func:`._operator.gram_operator.block_partition`).
    verbose : int, default=0
        A line per step, and the progress of ``K_nm``'s blocks with the time
        left (:class:`~sklearn_hyperkernel.progress.ProgressLog`: after a few
        seconds at ``verbose=1``, every block at ``verbose >= 2``).
    source : str, default="HyperKernelRegressor"
        Who speaks in the lines (:func:`sklearn_hyperkernel.progress.log`).

    Returns
    -------
    NystromFit

    Raises
    ------
    ValueError
        When the kernel or the solve gives non-finite values.
    """
    started = time.perf_counter()
    component_index = select_components(
        operator, sample_weight, component_selection, n_components, random_state
    )
    m = component_index.shape[0]
    components = operator.take(component_index)
    if verbose:
        rule = component_selection if isinstance(component_selection, str) else "given"
        log(source, f"{m} Nystroem centres ({rule}) chosen in {time.perf_counter() - started:.1f}s")
    component_gram = np.require(components.gram(), dtype=np.float64, requirements=["C", "W", "O"])
    symmetrize(component_gram, "lower")  # exactly symmetric, whatever the kernel
    np.fill_diagonal(component_gram, operator.diagonal[component_index])
    check_finite_kernel(component_gram)
    # the normal equations square the kernel: solve them for K / scale, ridge / scale
    # (beta is then scale times the coefficients), so that a kernel of 1e-180 or
    # 1e180 neither underflows nor overflows in K_nm^T W K_nm
    scale = kernel_scale(operator.diagonal)
    component_gram /= scale
    with component_space_threads(m):
        whitening = Whitening.of(component_gram)
    del component_gram
    gram, rhs = normal_equations(
        operator,
        components,
        targets,
        sample_weight,
        block_size=block_size,
        scale=scale,
        whitening=whitening if whitening.whiten_blocks else None,
        verbose=verbose,
        label=format_log_line(source, "Nystroem K_nm^T W K_nm"),
    )
    check_finite_kernel(gram)
    if verbose:
        log(source, f"K_nm^T W K_nm accumulated, {time.perf_counter() - started:.1f}s")
    with component_space_threads(m):
        coef = solve_normal_equations(
            whitening, gram, rhs, ridges / scale, whitened=whitening.whiten_blocks
        )
    coef /= scale
    if verbose:
        log(
            source,
            f"solved in the span of the centres ({whitening.kind} whitening, rank "
            f"{whitening.rank} of {m}, K_mm rcond {whitening.rcond:.1e}, blocks "
            f"{'whitened' if whitening.whiten_blocks else 'accumulated raw'}), "
            f"{time.perf_counter() - started:.1f}s",
        )
    if not np.all(np.isfinite(coef)):
        raise ValueError("The Nystroem solve produced non-finite coefficients. Increase alpha.")
    return NystromFit(coef, component_index, components)


def normal_equations(
    operator: GramOperator,
    components: GramOperator,
    targets: np.ndarray,
    weights: np.ndarray | None,
    *,
    block_size: int | None,
    scale: float = 1.0,
    whitening: Whitening | None = None,
    verbose: int = 0,
    label: str = "Nystroem K_nm^T W K_nm",
) -> tuple[np.ndarray, np.ndarray]:
    """``K_nm^T W K_nm`` and ``K_nm^T W y``, streamed over blocks of rows.

    With ``scale``, of ``K_nm / scale`` (each tile divided before it is used).

    Given ``whitening`` (``T``), ``T^-1 K_nm^T W K_nm T^-T`` and ``T^-1 K_nm^T W y``
    instead, each tile whitened before it is accumulated. The blocks of
    :func:`._operator.gram_operator.block_partition` (at least the configuration's
    ``nystrom_min_blocks``, in tiles of ``nystrom_tile_bytes``) are parallel
    tasks over the kernel's ``n_jobs`` workers; each evaluates
    ``K(tile, components)`` tile by tile with the operators' :meth:`sequential
    <._operator.GramOperator.sequential>` kernel.

    Parameters
    ----------
    operator, components : GramOperator
        The training rows and the components.
    targets : ndarray of shape (n, n_targets)
    weights : ndarray of shape (n,) or None
    block_size : int or None
    scale : float, default=1.0
        Positive divisor of the kernel (:func:`kernel_scale`).
    whitening : Whitening or None, default=None
    verbose : int, default=0
        Progress of the blocks (:class:`sklearn_hyperkernel.progress.ProgressLog`).
    label : str
        The progress lines' prefix.

    Returns
    -------
    gram : ndarray of shape (m, m), symmetric
        (``(k, k)`` when whitened by an ``eigh`` whitening of rank ``k``)
    rhs : ndarray of shape (m, n_targets)
    """
    blocks, tile_rows = block_partition(
        operator.n_rows,
        components.n_rows,
        block_size,
        min_blocks=get_config()["nystrom_min_blocks"],
        tile_bytes=get_config()["nystrom_tile_bytes"],
    )
    entries = operator.n_rows * components.n_rows  # of K_nm, which the tiles make up
    task_rows = operator.sequential(stream_entries=entries)
    task_components = components.sequential(stream_entries=entries)
    calls = [
        (task_rows, task_components, block, tile_rows, targets, weights, scale)
        + ((None, None) if whitening is None else (whitening.kind, whitening.matrix))
        for block in blocks
    ]
    total: dict[str, Any] = {"gram": None, "rhs": None}

    def consume(result: tuple[np.ndarray, np.ndarray]) -> None:
        gram, rhs = result
        if total["gram"] is None:
            total["gram"], total["rhs"] = gram, rhs
        else:
            total["gram"] += gram
            total["rhs"] += rhs

    # summed in the order of the blocks, whichever finishes first (locally):
    # the same coefficients, bit for bit, from run to run
    with ProgressLog(label, len(blocks), verbose) as progress:
        run_tasks(
            _normal_equations_task,
            calls,
            operator.n_jobs,
            consume,
            progress=progress if verbose else None,
            sequential_locally=operator.uses_torch,
            ordered=True,
        )
    # dsyrk filled the upper triangle of the Fortran-ordered sum, which is the
    # lower triangle of its C-ordered transpose: mirror it there, in place
    gram = total["gram"].T
    symmetrize(gram, "lower")
    return gram, total["rhs"]


def _normal_equations_task(
    operator: GramOperator,
    components: GramOperator,
    block: slice,
    tile_rows: int,
    targets: np.ndarray,
    weights: np.ndarray | None,
    scale: float,
    whitening_kind: str | None,
    whitening_matrix: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """``A W A^T`` (upper triangle, Fortran order) and ``A W y`` over the rows ``block``,
    with ``A = K_b^T`` or, given a whitening ``T``, ``T^-1 K_b^T``, tile by tile."""
    whitening = None
    if whitening_kind is not None:
        whitening = Whitening(whitening_kind, whitening_matrix, 0, 0.0, True)
    gram = None
    rhs = None
    for tile in tiles(block, tile_rows):
        K = np.ascontiguousarray(components.cross(operator.take(tile)), dtype=np.float64)
        K /= scale
        y = targets[tile]
        if weights is not None:
            root = np.sqrt(weights[tile])
            K *= root[:, None]
            y = y * root[:, None]
        gram, rhs = _accumulate(gram, rhs, K, y, whitening)
    return gram, rhs


def kernel_scale(diagonal: np.ndarray) -> float:
    """The mean of the positive finite entries of a Gram's diagonal, else 1."""
    kept = diagonal[np.isfinite(diagonal) & (diagonal > 0)]
    return float(np.mean(kept)) if kept.size else 1.0


def _accumulate(
    gram: np.ndarray | None,
    rhs: np.ndarray | None,
    K: np.ndarray,
    y: np.ndarray,
    whitening: Whitening | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Add ``A A^T`` and ``A y`` to ``gram`` and ``rhs``, with ``A = K^T`` or ``T^-1 K^T``."""
    A = K.T if whitening is None else np.asfortranarray(whitening.project(K.T))
    if gram is None:
        gram = np.zeros((A.shape[0], A.shape[0]), order="F")
        rhs = np.zeros((A.shape[0], y.shape[1]))
    # A is Fortran-ordered: dsyrk reads it without a copy and adds A A^T into
    # the upper triangle of ``gram`` in place
    gram = blas.dsyrk(1.0, A, beta=1.0, c=gram, trans=0, lower=0, overwrite_c=1)
    rhs += A @ y
    return gram, rhs
