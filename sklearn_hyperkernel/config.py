"""The library's tuning constants in one place: get, set, or set within a context.

Every entry trades time against memory (tile and block sizes, chunk sizes),
picks between two equal computations (the fused pass or the numpy path, one
BLAS thread or many) or chooses when a rule switches. None of them changes a
result beyond rounding (CG's preconditioner: within CG's ``tol``), except
``auto_cholesky_max_gram_bytes``, which moves the point where
``solver="auto"`` switches from the exact solve to Nystroem (the fitted
``solver_`` records which ran). The defaults are the values that
were measured (the measurements are in each entry's text below and in
docs/performance.md).

The configuration works as scikit-learn's (:func:`sklearn.get_config`): it is
local to each thread, a new thread starts from the defaults, and
:func:`set_config` and :func:`config_context` change the calling thread's
configuration only. The package's own parallel tasks (the blocks of a Gram,
of ``K @ V``, of Nystroem's sums, on joblib's threads or on Dask workers) run
with the configuration of the thread that started them. The modules read it
at each call, never at import.

Constants that define what a model is (the Nystroem centres' defaults, the
Cholesky jitter ladder, the divergence rule of training) stay with the code
they define; so do the compiled loop sizes of the fused pass (``_TILE`` and
``_ROW_GROUP`` in ``_gram/fused.py``, constants of the machine code numba caches).

Examples
--------
>>> from sklearn_hyperkernel import config_context, get_config
>>> get_config()["fused_min_entries"] == 2**24
True
>>> with config_context(fused_min_entries=0):
...     get_config()["fused_min_entries"]
0
"""

from __future__ import annotations

import inspect
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

__all__ = ["FUSED_ENV", "config_context", "fused_setting", "get_config", "set_config"]

#: The environment variable that is the default of the ``fused`` entry (read at
#: each call while ``fused="env"``): "0" off, "1" on for every Gram, anything
#: else (or unset) on from ``fused_min_entries`` entries.
FUSED_ENV = "SKLEARN_HYPERKERNEL_FUSED"


@dataclass(frozen=True)
class _Entry:
    default: Any
    kind: str  # "int" (>= minimum), "fraction" (0 <= v <= 1), "positive" (> 0) or "fused"
    doc: str
    minimum: int = 1


_ENTRIES: dict[str, _Entry] = {
    # the Gram engine of the hypernetwork kernels (_gram/tiles.py, _gram/engine.py)
    "gram_tile_elements": _Entry(
        2**17,
        "int",
        "Entries of one tile of the elementwise recursions on the CPU (numpy path): about "
        "1 MB of float64 per temporary, so the dozen temporaries of a tile stay near the "
        "CPU caches and are reused by the allocator instead of being page-faulted in afresh. "
        "Larger tiles take more memory per thread and leave the caches.",
    ),
    "gram_block_elements": _Entry(
        2**22,
        "int",
        "Entries of one block (one task) of a Gram on the CPU: one matrix product of x "
        "correlations per block, and BLAS needs a few hundred rows per product to reach "
        "full speed. Larger blocks hold more memory per task and give fewer tasks to share "
        "among threads.",
    ),
    "gram_min_block_rows": _Entry(
        256,
        "int",
        "Fewest rows of a block (numpy, GPU and fused alike), so that x's product of a "
        "block stays a BLAS-sized product when the Gram has very many columns.",
    ),
    "gpu_block_elements": _Entry(
        2**25,
        "int",
        "Entries of one block on a torch device, computed as one tile: a GPU wants few, "
        "large kernels (256 MiB of float64 per temporary, far from an H100's memory but "
        "long enough that launch latency does not count). Lower it for a small GPU.",
    ),
    "fused": _Entry(
        "env",
        "fused",
        "The fused one-pass Gram (numba): ``'auto'`` from ``fused_min_entries`` entries "
        "on, ``True`` for every Gram, ``False`` never (the numpy path), ``'env'`` (the "
        "default) as the environment variable ``SKLEARN_HYPERKERNEL_FUSED`` says, read at "
        "each call: ``0`` never, ``1`` always, unset or anything else ``'auto'``. Only "
        "numpy Grams without the gradient and where numba can be imported take it; the "
        "two paths agree to 1e-12.",
    ),
    "fused_min_entries": _Entry(
        2**24,
        "int",
        "Entries of a Gram (``n_a * n_b``) from which ``fused='auto'`` takes the fused "
        "pass: the first fused call of a machine compiles numba's code (9.4 s of CPU time; "
        "13.7-15.9 s wall on the shared 2-core development machine at load 2-4) and later "
        "processes load it from numba's disk cache (0.2-0.6 s); below 2^24 entries a Gram "
        "takes well under a second on the numpy path, so small calls never pay that.",
        minimum=0,
    ),
    "fused_block_elements": _Entry(
        2**20,
        "int",
        "Entries of one block of the fused pass (one tile): its x product, overwritten "
        "by its values (8 MiB): one BLAS product of 256 rows or more, and little memory "
        "beside the Gram.",
    ),
    "fused_table_fraction": _Entry(
        0.125,
        "fraction",
        "The fused pass runs f through a table of the distinct x pairs when that table "
        "has at most this fraction of the block's entries (filled on one thread; each "
        "entry then gathers two values instead of evaluating all but one of f's duals).",
    ),
    # the Gram operator of the solvers (_operator)
    "matvec_block_bytes": _Entry(
        64 * 2**20,
        "int",
        "Bytes that one block ``K[i:j, i:]`` of a product ``K @ V`` (CG) may take for "
        "kernels other than the hypernetwork kernels (those choose their own blocks).",
    ),
    "operator_tile_bytes": _Entry(
        16 * 2**20,
        "int",
        "Bytes of float64 that one tile of a cross-kernel ``K(rows, training rows)`` may "
        "take (prediction's tiles and the default of the operator's cross products).",
    ),
    "operator_min_tile_rows": _Entry(
        256,
        "int",
        "Fewest rows of a cross-kernel tile when the tiles are split to give every block "
        "work (BLAS wants a few hundred rows).",
    ),
    "operator_max_tiles_per_block": _Entry(
        16,
        "int",
        "Most tiles per block (one task) of a cross-kernel product: more tiles per task "
        "mean fewer tasks, fewer tiles a finer share among threads.",
    ),
    # the solvers of HyperKernelRegressor
    "auto_cholesky_max_gram_bytes": _Entry(
        4 * 2**30,
        "int",
        "``solver='auto'`` uses Cholesky while the n x n float64 training Gram takes at "
        "most this many bytes (4 GiB: n <= 23,170), Nystroem beyond. The one entry that "
        "changes results: which solver ``'auto'`` picks (recorded in ``solver_``).",
    ),
    "one_blas_thread_above": _Entry(
        12_000,
        "int",
        "Dense factorisations (the exact solve, Nystroem's m x m systems) of more rows "
        "run LAPACK on one BLAS thread: a crash guard. The bundled OpenBLAS segfaulted in "
        "threaded ``dpotrf`` from 16,000 rows up on the 2-core development machine "
        "(15,000 passed; one thread passed at 20,000 in 53 s), and in a threaded "
        "``a @ a.T`` of 20,000 x 200; one thread costs about 1.5x the factorisation time "
        "there. Raise it with a BLAS that does not crash.",
    ),
    "sweep_rows": _Entry(
        512,
        "int",
        "Rows per chunk when a square matrix is swept (norms, triangle copies): no "
        "temporary larger than a chunk is made.",
    ),
    "cg_preconditioner_trace_fraction": _Entry(
        1e-3,
        "positive",
        "CG's pivoted-Cholesky preconditioner stops growing once the trace of "
        "``K - L L^T`` is below this fraction of the smallest ridge: it is then as good as "
        "exact. Smaller builds a larger preconditioner for fewer iterations.",
    ),
    "nystrom_min_blocks": _Entry(
        8,
        "int",
        "Fewest blocks (tasks) of rows of Nystroem's ``K_nm`` sums and of a prediction's "
        "cross-kernel when ``block_size`` is None, so that small problems run in "
        "parallel too.",
    ),
    "nystrom_tile_bytes": _Entry(
        64 * 2**20,
        "int",
        "Bytes of a tile of Nystroem's ``K_nm`` when ``block_size`` is None: each tile's "
        "``dsyrk`` reads and writes the whole m x m sum, so fewer, taller tiles save "
        "passes over it (N = 20,000, m = 2,000: 1.12 s of dsyrk in tiles of 4,192 rows "
        "against 1.35 s in tiles of 1,048, one thread).",
    ),
    "nystrom_single_thread_solve_max": _Entry(
        4096,
        "int",
        "Up to this many centres, Nystroem's m x m factorisations run on one BLAS thread: "
        "on the 2-core development machine OpenBLAS's threaded ``dpotrf`` and ``dsygst`` "
        "were 2.5 to 10 times slower than one thread at m = 1,000 to 4,000 (idle, "
        "m = 2000: ``dpotrf`` 0.38 s vs 0.16 s, ``dsygst`` 0.53 s vs 0.27 s). Lower it "
        "on a machine with many cores.",
        minimum=0,
    ),
    # exact row identity (_rows)
    "rows_hash_block_words": _Entry(
        2**16,
        "int",
        "64-bit words of rows hashed at once by the exact row identity (one temporary of "
        "this size).",
    ),
    "rows_verify_bytes": _Entry(
        16 * 2**20,
        "int",
        "Bytes of rows compared at once when the row identity verifies its hash: the check "
        "holds two slices, not two copies of every shared row (factorize_rows of 100,000 "
        "pixel rows: peak 1,276 -> 39 MiB, 2.56 -> 0.63 s).",
    ),
    "coincidence_dense_fraction": _Entry(
        1 / 16,
        "fraction",
        "Coincident pairs of rows are kept as index arrays while they are at most this "
        "fraction of all pairs, as a boolean matrix beyond (a scatter per entry then costs "
        "more than comparing all of them).",
    ),
    # the finite hypernetwork (network, _network_estimator, _training)
    "predict_block_rows": _Entry(
        8192,
        "int",
        "Most rows converted to tensors and evaluated at once by the hypernetwork "
        "estimators' ``predict`` and friends.",
    ),
    "predict_block_bytes": _Entry(
        32 * 2**20,
        "int",
        "Bytes that one prediction block's per-row generated weights of g may take (each "
        "row carries its own copy of g's weights: 2,080 values with the defaults).",
    ),
    "ntk_chunk_elements": _Entry(
        2**24,
        "int",
        "Elements of the backpropagated vectors that ``empirical_ntk`` holds at once.",
    ),
    "deduplicate_below": _Entry(
        0.5,
        "fraction",
        "Training runs f once per distinct x when the training set has at most this "
        "fraction of distinct x rows (e.g. one image, many pixel coordinates).",
    ),
    "running_loss_reports": _Entry(
        10,
        "int",
        "Lines (or bar updates) of the running loss per epoch at ``verbose >= 2``.",
    ),
}

_DEFAULTS = {name: entry.default for name, entry in _ENTRIES.items()}
_threadlocal = threading.local()


def _thread_config() -> dict[str, Any]:
    """The calling thread's configuration, the defaults in a new thread."""
    if not hasattr(_threadlocal, "config"):
        _threadlocal.config = dict(_DEFAULTS)
    return _threadlocal.config


def _checked(name: str, value: Any) -> Any:
    entry = _ENTRIES[name]
    if entry.kind == "fused":
        if isinstance(value, bool) or (isinstance(value, str) and value in ("env", "auto")):
            return value
        raise ValueError(f"fused must be 'env', 'auto', True or False; got {value!r}.")
    if entry.kind == "int":
        if isinstance(value, bool) or not isinstance(value, Integral) or value < entry.minimum:
            raise ValueError(f"{name} must be an int >= {entry.minimum}; got {value!r}.")
        return int(value)
    ok = isinstance(value, Real) and not isinstance(value, bool) and value == value
    if entry.kind == "fraction" and not (ok and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a number in [0, 1]; got {value!r}.")
    if entry.kind == "positive" and not (ok and 0.0 < value < float("inf")):
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}.")
    return float(value)


def get_config() -> dict[str, Any]:
    """The calling thread's configuration: a new dict of every entry.

    Returns
    -------
    config : dict
        Entry name to value; the entries are those of :func:`set_config`.
        Changing the dict changes nothing (use :func:`set_config`).
    """
    return dict(_thread_config())


def set_config(**options: Any) -> None:
    _set(options)


def _set(options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(_ENTRIES))
    if unknown:
        raise TypeError(
            f"unknown configuration entries {unknown}; the entries are {sorted(_ENTRIES)}."
        )
    config = _thread_config()
    # a value equal to the current one (same type) is valid already: the package's tasks
    # set every entry at each task, most of them unchanged
    checked = {
        name: _checked(name, value)
        for name, value in options.items()
        if value is not None and not (type(value) is type(config[name]) and value == config[name])
    }
    config.update(checked)  # all checked first: a bad value changes nothing


@contextmanager
def config_context(**options: Any) -> Iterator[None]:
    old = get_config()
    _set(options)
    try:
        yield
    finally:
        _thread_config().clear()
        _thread_config().update(old)


def fused_setting() -> str | bool:
    """The fused-pass switch now: ``'auto'``, True or False.

    The ``fused`` entry, where ``'env'`` reads :data:`FUSED_ENV` at this call.
    """
    setting = _thread_config()["fused"]
    if setting != "env":
        return setting
    return {"0": False, "1": True}.get(os.environ.get(FUSED_ENV, "").strip(), "auto")


def _shown(name: str, default: Any) -> str:
    """A default as the docs write it: 16 MiB, 2^17, 12,000, 0.125, 'env'."""
    if isinstance(default, str):
        return f"'{default}'"
    if name.endswith("_bytes"):
        return f"{default // 2**30} GiB" if default % 2**30 == 0 else f"{default // 2**20} MiB"
    if isinstance(default, int) and default >= 2**16 and default & (default - 1) == 0:
        return f"2^{default.bit_length() - 1}"
    return f"{default:,}" if isinstance(default, int) else f"{default:g}"


def _entries_doc() -> str:
    """The numpydoc parameter list of every entry (for set_config and config_context)."""
    lines = []
    for name, entry in _ENTRIES.items():
        if entry.kind == "fused":
            kind = "{'env', 'auto'} or bool"
        elif entry.kind == "int":
            kind = "int"
        else:
            kind = "float"
        lines.append(f"{name} : {kind}, default={_shown(name, entry.default)}")
        text = inspect.cleandoc(entry.doc)
        words, line = text.split(), "   "
        for word in words:
            if len(line) + len(word) + 1 > 76:
                lines.append(line)
                line = "   "
            line += " " + word
        lines.append(line)
    return "\n".join(lines)


_PARAMETERS_DOC = _entries_doc()
_SIGNATURE = inspect.Signature(
    [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None) for name in _ENTRIES]
)

set_config.__signature__ = _SIGNATURE  # type: ignore[attr-defined]
config_context.__signature__ = _SIGNATURE  # type: ignore[attr-defined]
set_config.__doc__ = f"""Set entries of the calling thread's configuration.

Entries left None keep their value. Other threads keep theirs; the package's
parallel tasks run with the configuration of the thread that starts them.
All values are checked before any is set.

Parameters
----------
{_PARAMETERS_DOC}

Raises
------
ValueError
    A value of the wrong type or range (the message names the entry).
TypeError
    An entry name that does not exist.

See Also
--------
config_context : the same, restored on exit.
get_config : the current values.
"""
config_context.__doc__ = f"""Context manager: entries of the configuration set within it.

The calling thread's configuration is set as by :func:`set_config` on entry,
and restored to what it was on exit, also when the block raises. Entries
left None keep their value.

Parameters
----------
{_PARAMETERS_DOC}

Raises
------
ValueError, TypeError
    As :func:`set_config`, on entry (nothing is changed then).

Examples
--------
>>> import numpy as np
>>> from sklearn_hyperkernel import HyperKernel, config_context
>>> U = np.random.default_rng(0).random((50, 4))
>>> with config_context(fused=False, gram_block_elements=2**12):
...     K = HyperKernel()(U)
>>> K.shape
(50, 50)
"""
