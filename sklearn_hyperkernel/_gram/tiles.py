"""One block of a hypernetwork Gram, evaluated tile by tile on its device.

The lower half of the Gram engine (:mod:`._gram.engine` drives it): given the
rows of a Gram placed on a device (:func:`place_rows`), :func:`block_tiles`
evaluates the consecutive output rows of one *block* against the columns it
needs, in *tiles* of rows, each one vectorised pass of the recursions
(:mod:`.recursions`) whose temporaries stay bounded:

* x's correlations are one matrix product per block, on the distinct x rows
  the block uses only (f's recursion then runs on those, and is gathered to
  rows tile by tile);
* rows with equal x, or equal z, get correlation exactly 1, from the ids of
  :func:`coincidence_ids` (binary search in their sorted
  order, :func:`._utils.rows.coincident_pairs`);
* :func:`block_and_tile_rows` chooses the sizes;
* where numba can be imported, a large Gram's blocks skip the tiles: each block's
  recursions run in one compiled pass (:func:`._gram.fused.hyper_block`) when
  :func:`fused_pass` says so (numpy arrays, no gradient).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from array_api_compat import array_namespace
from array_api_compat import device as array_device

from .._f import FKernel, FRows, f_kernel
from .._utils import fork as _fork  # noqa: F401 - registers its fork hook before any pool starts
from .._utils.arrays import squared_distances
from .._utils.device import Placement
from .._utils.rows import coincident_pairs, row_ids, sorted_ids
from ..config import fused_setting, get_config
from ..recursions import (
    Direction,
    MLPCorrelations,
    hyper_from_correlations,
    z_correlations,
    z_needs_coincidence,
)

_NUMPY = Placement()  # numpy, float64: the fused pass's placement

__all__ = [
    "Architecture",
    "GRADIENT_NAMES",
    "gradient_columns",
    "PlacedRows",
    "N_ROW_ARRAYS",
    "coincidence_ids",
    "place_rows",
    "block_tiles",
    "fused_block",
    "block_and_tile_rows",
    "fused_available",
    "fused_pass",
]


def fused_available() -> bool:
    """Whether the fused pass can run here (numba importable, its JIT not disabled)."""
    from . import fused as _fused

    return _fused.available()


def fused_pass(placement: Placement, need_gradient: bool, n_entries: int) -> bool:
    """Whether the blocks of a Gram of ``n_entries`` entries use the fused pass.

    Read at each call from the configuration (:mod:`sklearn_hyperkernel.config`):
    ``fused`` False never, True always, ``'auto'`` from ``fused_min_entries``
    entries on (``'env'``, the default: as ``SKLEARN_HYPERKERNEL_FUSED`` says).
    Only numpy placements without the gradient, and only with numba
    installed; the rest keeps the numpy path (:func:`block_tiles`' tiles).
    """
    setting = fused_setting()
    if setting is False or placement.uses_torch or need_gradient:
        return False
    if setting is not True and n_entries < get_config()["fused_min_entries"]:
        return False
    return fused_available()


def block_and_tile_rows(
    n_cols: int, block_size: int | None, placement: Placement, fused: bool = False
) -> tuple[int, int]:
    """Rows per block and per tile: ``block_size`` for both when given.

    The sizes are the configuration's (:mod:`sklearn_hyperkernel.config`):
    blocks of ``gram_block_elements`` entries (``gpu_block_elements`` on a
    GPU, one tile each) and at least ``gram_min_block_rows`` rows, tiles of
    ``gram_tile_elements``; a block of the fused pass is one tile, of
    ``fused_block_elements`` entries.
    """
    if block_size is not None:
        return max(1, int(block_size)), max(1, int(block_size))
    config = get_config()
    min_rows, n_cols = config["gram_min_block_rows"], max(n_cols, 1)
    if fused:
        block = max(min_rows, config["fused_block_elements"] // n_cols)
        return block, block
    if placement.on_gpu:
        block = max(min_rows, config["gpu_block_elements"] // n_cols)
        return block, block
    tile = max(1, config["gram_tile_elements"] // n_cols)
    block = max(min_rows, config["gram_block_elements"] // n_cols)
    return block, min(tile, block)


@dataclass(frozen=True)
class Architecture:
    """Everything the recursions need to know about the network."""

    f_depth: int
    g_depth: int
    z_encoding: str
    length_scale: np.ndarray
    negative_slope: float
    kind: str  # "ntk" or "nngp"
    f_bias_variance: float = 0.0  # variance of f's biases (docs/math.md, "Biases")
    g_bias_variance: float = 0.0  # variance of the biases f generates for g
    f_architecture: str = "dense"  # a key of _f.F_KERNELS
    image_shape: tuple[int, int, int] | None = None  # (H, W, C) of a conv f's images
    filter_size: int = 3  # a conv f's filters

    def f_kernel(self) -> FKernel:
        """f's kernel (:func:`._f.f_kernel`) of this architecture."""
        return f_kernel(
            self.f_architecture,
            self.f_depth,
            self.negative_slope,
            self.f_bias_variance,
            self.image_shape,
            self.filter_size,
        )


#: The hyperparameters a Gram can be differentiated by (in log space), in the
#: order of their gradient's columns: scikit-learn's order (by name).
GRADIENT_NAMES = ("f_bias_variance", "g_bias_variance", "length_scale")


def gradient_columns(arch: Architecture, names: tuple[str, ...]) -> int:
    """Columns of the gradient with respect to the log of ``names`` (of :data:`GRADIENT_NAMES`).

    One per bias variance, one per length scale.
    """
    return sum(arch.length_scale.shape[0] if name == "length_scale" else 1 for name in names)


def _directions(arch: Architecture, names: tuple[str, ...]) -> list[Direction]:
    """The forward-mode directions of ``d / d log(name)``, in the order of ``names``.

    ``d bf / d log bf = bf``; a length scale's direction is the unit tangent of
    ``rho_z`` (:func:`_tile` multiplies by ``d rho_z / d log ell``).
    """
    unknown = set(names) - set(GRADIENT_NAMES)
    if unknown:
        raise ValueError(f"no gradient with respect to {sorted(unknown)}")
    table = {
        "f_bias_variance": Direction(f_bias=float(arch.f_bias_variance)),
        "g_bias_variance": Direction(g_bias=float(arch.g_bias_variance)),
        "length_scale": Direction(z=True),
    }
    return [table[name] for name in names]


@dataclass(frozen=True)
class PlacedRows:
    """The arrays of a :class:`._gram.engine.FactorizedRows` the recursions read, placed.

    ``x_index`` and the ids of :func:`coincidence_ids` stay host arrays:
    which distinct rows a block needs, and which entries coincide, is
    bookkeeping done on the host. ``x_features`` to ``x_state`` are the
    fields of the rows' :class:`._f.base.FRows` (per distinct x).
    ``x_order``, ``x_sorted``, ``z_order`` and ``z_sorted`` sort the ids
    (:func:`._utils.rows.sorted_ids`), so that a block or a tile finds its
    equal rows by binary search instead of comparing every entry.
    """

    x_features: Any
    x_s: Any
    x_sigma: Any
    x_theta: Any
    x_d_sigma: Any
    x_d_theta: Any
    x_state: Any
    z: Any
    x_index: np.ndarray
    x_ids: np.ndarray
    x_order: np.ndarray
    x_sorted: np.ndarray
    z_ids: np.ndarray
    z_order: np.ndarray
    z_sorted: np.ndarray

    @property
    def x_search(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x_order, self.x_sorted

    @property
    def z_search(self) -> tuple[np.ndarray, np.ndarray]:
        return self.z_order, self.z_sorted

    @property
    def n_rows(self) -> int:
        return self.x_index.shape[0]

    def f_rows(self, used: Any) -> FRows:
        """f's :class:`._f.base.FRows` of the distinct x ``used`` (a slice or placed indices)."""
        fields_ = (self.x_features, self.x_s, self.x_sigma, self.x_theta)
        fields_ += (self.x_d_sigma, self.x_d_theta)
        taken = [_take(field, used, 0) for field in fields_]
        return FRows(*taken, state=_take(self.x_state, used, 0))


N_ROW_ARRAYS = len(fields(PlacedRows))  # arrays per set of rows in a task's arguments


def coincidence_ids(a: Any, b: Any = None) -> tuple[np.ndarray, ...]:
    """Ids of the distinct x rows and of the z rows: equal exactly for equal rows.

    Returns ``(x_ids_a, z_ids_a)`` for one set of rows, and
    ``(x_ids_a, z_ids_a, x_ids_b, z_ids_b)`` for two, with ids shared between
    the two sets: ``x_ids_a[i] == x_ids_b[j]`` exactly when distinct x ``i``
    of ``a`` equals distinct x ``j`` of ``b``; likewise for the z of each row.
    Entries of such pairs get correlation exactly 1 (see :mod:`.recursions`).
    """
    if b is None:
        (x_ids,) = row_ids(a.x_distinct, keys=[a.x_key])
        (z_ids,) = row_ids(a.z)
        return x_ids, z_ids
    if b.x_distinct is a.x_distinct:  # rows taken from one factorisation
        (x_ids_a,) = row_ids(a.x_distinct, keys=[a.x_key])
        x_ids_b = x_ids_a
    else:
        x_ids_a, x_ids_b = row_ids(a.x_distinct, b.x_distinct, keys=[a.x_key, b.x_key])
    z_ids_a, z_ids_b = row_ids(a.z, b.z)
    return x_ids_a, z_ids_a, x_ids_b, z_ids_b


def place_rows(placement: Placement, a: Any, b: Any = None) -> tuple:
    """The task arguments of the rows ``a`` (and the columns ``b``) of a Gram.

    The arrays of a :class:`PlacedRows` per set of rows (``a``'s, then
    ``b``'s unless None), as separate arguments: joblib's Dask backend
    scatters large array arguments to the cluster once and reuses them for
    every block (a container of arrays would be serialised into every task).
    """
    ids = coincidence_ids(a, b)
    placed = ()
    for rows, x_ids, z_ids in zip((a, b), ids[0::2], ids[1::2], strict=False):
        f = rows.f
        placed += (placement.put(f.features), placement.put(f.s), placement.put(f.sigma))
        placed += (placement.put(f.theta), placement.put(f.d_sigma), placement.put(f.d_theta))
        placed += (None if f.state is None else placement.put(f.state),)
        placed += (placement.put(rows.z), rows.x_index, x_ids, *sorted_ids(x_ids))
        placed += (z_ids, *sorted_ids(z_ids))
    return placed


def _put_coincidence(coincidence: Any, placement: Placement) -> Any:
    """A :func:`._utils.rows.coincident_pairs` result as arrays of the placement."""
    if isinstance(coincidence, tuple):
        return tuple(placement.put_index(index) for index in coincidence)
    return placement.put_index(coincidence)


def _local_distinct(index: np.ndarray) -> tuple[np.ndarray | slice, np.ndarray | None]:
    """Distinct x indices used by a block, and the block's index into them.

    When the block's rows are consecutive distinct rows (every x differs), the
    first value is a slice (no copy of x) and the second None (no gather).
    """
    if (
        index.shape[0]
        and index[-1] - index[0] == index.shape[0] - 1
        and np.all(np.diff(index) == 1)
    ):
        return slice(int(index[0]), int(index[-1]) + 1), None
    used, local = np.unique(index, return_inverse=True)
    return used, local.reshape(-1)


def _take(table: Any, index: Any, axis: int) -> Any:
    if index is None or table is None:
        return table
    if isinstance(index, slice):
        return table[index] if axis == 0 else table[:, index]
    return array_namespace(table).take(table, index, axis=axis)


def _block_f(
    arch: Architecture,
    placement: Placement,
    a: PlacedRows,
    rows: slice,
    b: PlacedRows,
    cols: slice,
    *,
    tabled: bool = False,
    need_ntk: bool = True,
    directions: tuple = (),
    destination: np.ndarray | None = None,
) -> tuple[FKernel, Any, tuple, tuple]:
    """f's part of a block on the distinct x rows it uses, equal x exactly 1.

    Returns ``(f, pairs, (used_a, used_b), (local_a, local_b))`` as
    :func:`_local_distinct` gives them, ``f`` the architecture's
    :class:`._f.base.FKernel`. ``pairs``: an elementwise f's input
    correlation (one matrix product for the whole block; computed into
    ``destination`` when given and every x of the block is distinct); else f's
    correlations on the block's distinct pairs: ``tabled`` (numpy rows, no
    tangents) ``(rho, ntk)`` of :meth:`._f.base.FKernel.table`, otherwise the
    :class:`.recursions.MLPCorrelations` of :meth:`._f.base.FKernel.correlations`
    (with the tangents of ``directions``).
    """
    f = arch.f_kernel()
    used_a, local_a = _local_distinct(a.x_index[rows])
    used_b, local_b = _local_distinct(b.x_index[cols])
    # equal x: correlation exactly 1 (for the dense f: a unit row times itself
    # is 1 only up to rounding, and kappa0 moves by ~sqrt(ulp) there)
    if isinstance(used_b, slice):
        same_x = coincident_pairs(a.x_ids[used_a], b.x_ids, b.x_search, used_b)
    else:
        same_x = coincident_pairs(a.x_ids[used_a], b.x_ids[used_b])
    if tabled and not f.elementwise:
        f_a, f_b = _host_f_rows(a, used_a), _host_f_rows(b, used_b)
        pairs = f.table(f_a, f_b, same_x, need_ntk=need_ntk)
        return f, pairs, (used_a, used_b), (local_a, local_b)
    same_x = _put_coincidence(same_x, placement)
    f_a = a.f_rows(placement.put_index(used_a))
    f_b = b.f_rows(placement.put_index(used_b))
    if f.elementwise:
        into = destination if local_a is None and local_b is None else None
        pairs = f.input_correlations(f_a.features, f_b.features, same_x, out=into)
    else:
        pairs = f.correlations(f_a, f_b, same_x, need_ntk=need_ntk, directions=directions)
    return f, pairs, (used_a, used_b), (local_a, local_b)


def _host_f_rows(rows: PlacedRows, used: Any) -> FRows:
    """:meth:`PlacedRows.f_rows` of numpy rows (host indices)."""
    return rows.f_rows(used if isinstance(used, slice) else np.asarray(used))


def fused_block(
    arch: Architecture,
    a: PlacedRows,
    rows: slice,
    b: PlacedRows,
    cols: slice,
    *,
    symmetric: bool,
    destination: np.ndarray | None = None,
) -> np.ndarray:
    """The block ``[rows, cols]`` in one compiled pass (:func:`._gram.fused.hyper_block`).

    Numpy rows only, values only (no gradient). In a symmetric Gram the
    block's leading square comes mirrored. Given ``destination`` (a host view
    of the output's block ``[rows, cols]``, rows of unit stride), the pass
    writes there and returns it: with the dense f and every x distinct, x's
    product is computed into it and becomes the kernel where it lies, so the
    block needs no memory of its own. Another f's correlations come as a table
    on the block's distinct pairs (:meth:`._f.base.FKernel.table`), which the
    pass reads with f's output variances ``sigma``.
    """
    elementwise = arch.f_kernel().elementwise
    _, pairs, _, local = _block_f(
        arch,
        _NUMPY,
        a,
        rows,
        b,
        cols,
        tabled=not elementwise,
        need_ntk=arch.kind == "ntk",
        destination=destination,
    )
    from .fused import hyper_block

    if elementwise:
        rho, f_ntk = pairs, None
        in_place = local[0] is None and local[1] is None
        s_a, s_b = a.x_s[a.x_index[rows]], b.x_s[b.x_index[cols]]
    else:
        (rho, f_ntk), in_place = pairs, False
        s_a, s_b = a.x_sigma[a.x_index[rows]], b.x_sigma[b.x_index[cols]]
    if destination is not None:
        out = destination
    else:
        out = rho if in_place else None
    return hyper_block(
        rho,
        a.z[rows],
        b.z[cols],
        s_a,
        s_b,
        f_depth=arch.f_depth,
        g_depth=arch.g_depth,
        z_encoding=arch.z_encoding,
        length_scale=arch.length_scale,
        negative_slope=arch.negative_slope,
        kind=arch.kind,
        x_index_a=local[0],
        x_index_b=local[1],
        symmetric=symmetric,
        out=out,
        f_bias_variance=arch.f_bias_variance,
        g_bias_variance=arch.g_bias_variance,
        f_tabled=not elementwise,
        f_ntk=f_ntk,
    )


def block_tiles(
    arch: Architecture,
    placement: Placement,
    a: PlacedRows,
    rows: slice,
    b: PlacedRows,
    cols: slice,
    *,
    gradient_names: tuple[str, ...] = (),
    tile_rows: int,
    symmetric: bool,
    fused: bool = False,
) -> Iterable[tuple[slice, slice, Any, Any]]:
    """Kernel (and its gradient) on a block of rows, tile by tile.

    ``gradient_names``: the hyperparameters of :data:`GRADIENT_NAMES` whose
    log the gradient's columns differentiate by, in that order (empty: none).

    f's part comes once per block, on the block's distinct x
    (:func:`_block_f`): for the dense f, x's correlations in one matrix
    product, f's recursion then running tile by tile; for another f, its
    correlations on the block's distinct pairs (compiled, its
    :meth:`._f.base.FKernel.table`, on numpy without a gradient where numba
    is installed). The elementwise recursions
    of g then run on tiles of ``tile_rows`` rows so their temporaries stay
    small. Yields ``(tile_rows, tile_cols, value, gradient)`` with arrays of
    the placement. In a symmetric Gram each tile starts at its own diagonal,
    so every entry is computed once.

    ``fused`` (from :func:`fused_pass`; ignored where numba is missing): the
    whole block is one tile of :func:`fused_block`, its leading square
    already mirrored when ``symmetric``, and no gradient.
    """
    if fused and fused_available():
        yield rows, cols, fused_block(arch, a, rows, b, cols, symmetric=symmetric), None
        return
    need_ntk = arch.kind == "ntk"
    directions = _directions(arch, gradient_names)
    # a tabled f on numpy without tangents: its compiled table (where numba is)
    compiled = not (directions or placement.uses_torch) and fused_available()
    f, pairs, (used_a, used_b), (local_a, local_b) = _block_f(
        arch, placement, a, rows, b, cols, tabled=compiled, need_ntk=need_ntk, directions=directions
    )
    if compiled and not f.elementwise:  # the table: no tangents
        pairs = MLPCorrelations(pairs[0], pairs[1], [], [])
    xp = array_namespace(pairs.rho if isinstance(pairs, MLPCorrelations) else pairs)
    # the dense f's input variances |x|^2 / n0 of the block's distinct x rows and columns
    s_block_a = _take(a.x_s, placement.put_index(used_a), 0)
    s_block_b = _take(b.x_s, placement.put_index(used_b), 0)
    for start in range(rows.start, rows.stop, tile_rows):
        tile = slice(start, min(start + tile_rows, rows.stop))
        within = slice(tile.start - rows.start, tile.stop - rows.start)
        skip = within.start if symmetric else 0
        tile_cols = slice(cols.start + skip, cols.stop)
        if local_a is None:
            # distinct rows: this tile owns its rows of the block
            tile_rows_f, local_tile, s_a = within, None, s_block_a[within]
        else:
            used_tile, local_tile = _local_distinct(local_a[within])
            tile_rows_f = placement.put_index(used_tile)
            s_a = _take(s_block_a, tile_rows_f, 0)
        if local_b is None:
            tile_cols_f, local_tile_b, s_b = slice(skip, None), None, s_block_b[skip:]
        else:
            tile_cols_f, local_tile_b, s_b = None, local_b[skip:], s_block_b

        def part(table: Any, index: tuple = (tile_rows_f, tile_cols_f)) -> Any:
            return None if table is None else _take(_take(table, index[0], 0), index[1], 1)

        if f.elementwise:
            rho_x = xp.asarray(part(pairs), copy=True)  # the recursion works in place
            f_tile = f.from_input(rho_x, (s_a, s_b), need_ntk=need_ntk, directions=directions)
        else:
            f_tile = MLPCorrelations(
                part(pairs.rho),
                part(pairs.ntk),
                [part(t) for t in pairs.rho_tangents],
                [part(t) for t in pairs.ntk_tangents],
            )
        local = (placement.put_index(local_tile), placement.put_index(local_tile_b))
        value, gradient = _tile(
            arch, placement, a, tile, b, tile_cols, f_tile, local, gradient_names, directions
        )
        yield tile, tile_cols, value, gradient


def _tile(
    arch: Architecture,
    placement: Placement,
    a: PlacedRows,
    rows: slice,
    b: PlacedRows,
    cols: slice,
    f: MLPCorrelations,
    local: tuple[Any, Any],
    need_gradient: tuple[str, ...],
    directions: list[Direction],
) -> tuple[Any, Any]:
    """g's recursions on one tile, from f's correlations on its distinct rows.

    ``f``: f's output correlation and NTK (and their tangents along
    ``directions``, those of ``need_gradient``) on the distinct x of the
    tile's rows and columns; ``local`` maps the tile's rows and columns to
    them (None: one to one). Returns the kernel and, for ``need_gradient``
    (names of :data:`GRADIENT_NAMES`), its gradient with respect to their
    logs, of shape (rows, cols, :func:`gradient_columns`).
    """
    need_ntk = arch.kind == "ntk"
    bg = float(arch.g_bias_variance)

    def gather(array: Any) -> Any:
        return None if array is None else _take(_take(array, local[0], 0), local[1], 1)

    f = MLPCorrelations(
        gather(f.rho),
        gather(f.ntk),
        [gather(t) for t in f.rho_tangents],
        [gather(t) for t in f.ntk_tangents],
    )
    xp = array_namespace(f.rho)
    z_a, z_b = a.z[rows], b.z[cols]
    same_z = None
    if z_needs_coincidence(arch.z_encoding, z_a.shape[1]):
        same_z = _put_coincidence(
            coincident_pairs(a.z_ids[rows], b.z_ids, b.z_search, cols), placement
        )
    rho_z, e_a, e_b = z_correlations(z_a, z_b, arch.z_encoding, arch.length_scale, same_z)
    index_a = placement.put_index(a.x_index[rows])
    index_b = placement.put_index(b.x_index[cols])
    sigma_a, sigma_b = _take(a.x_sigma, index_a, 0), _take(b.x_sigma, index_b, 0)
    # f's output variance moves with f's bias variance: d sigma = (d sigma / d bf) dbf
    d_sigma_a, d_sigma_b = _take(a.x_d_sigma, index_a, 0), _take(b.x_d_sigma, index_b, 0)
    sigma_tangents = [
        None if d.f_bias == 0.0 else (d_sigma_a * d.f_bias, d_sigma_b * d.f_bias)
        for d in directions
    ]
    kernels = hyper_from_correlations(
        f,
        rho_z,
        (sigma_a, sigma_b, e_a, e_b),
        arch.g_depth,
        arch.negative_slope,
        g_bias_variance=bg,
        need_nngp=not need_ntk,
        need_ntk=need_ntk,
        directions=directions,
        sigma_tangents=sigma_tangents,
    )
    if need_ntk:
        value, tangents = kernels.ntk, kernels.ntk_tangents
    else:
        value, tangents = kernels.nngp, kernels.nngp_tangents
    if not need_gradient:
        return value, None
    gradient = xp.zeros(
        tuple(value.shape) + (gradient_columns(arch, need_gradient),),
        dtype=value.dtype,
        device=array_device(value),
    )
    column = 0
    for direction, tangent in zip(directions, tangents, strict=True):
        if not direction.z:
            if tangent is not None:
                gradient[..., column] = tangent
            column += 1
            continue
        # d Sigma^0 / d log ell_d = Sigma^0 * (z_d - z'_d)^2 / ell_d^2
        tangent *= rho_z
        ell = arch.length_scale
        n_theta = ell.shape[0]
        for d in range(n_theta):
            # one length scale: all columns at once; one per column: column d
            columns = slice(None) if n_theta == 1 else slice(d, d + 1)
            scale = float(ell[d])
            distance = squared_distances(z_a[:, columns] / scale, z_b[:, columns] / scale, same_z)
            distance *= tangent
            gradient[..., column] = distance
            column += 1
    return value, gradient
