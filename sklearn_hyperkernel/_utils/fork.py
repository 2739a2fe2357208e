"""Whether numba's thread pool may run a parallel loop in this process.

numba starts its thread pool once per process, at the first parallel call
(:func:`numba.get_num_threads` included), whoever makes it: this package's
fused pass, the user's own ``numba.njit(parallel=True)`` code, or numba
itself. A process forked after that inherits a pool it cannot use when the
pool is GNU OpenMP's (numba's "omp" threading layer, its default on Linux
without TBB): numba kills such a child at its first parallel loop
("Terminating: fork() called from a process already using GNU OpenMP, this
is unsafe", numba issues #7872 and #5983). TBB and numba's own "workqueue"
layer are fork-safe. A threading layer that cannot be loaded (for example
``NUMBA_THREADING_LAYER=tbb`` without TBB) raises at that first call.

:func:`pool_usable` says whether a parallel loop is safe here; where it is
not, the compiled passes (:mod:`._gram.fused`, :mod:`._f.conv_compiled`, through
:func:`._utils.compiled.threads_are_safe`) compute on the calling thread, which
gives the same values. To know which process started the pool, this module
records it: the first process to launch the pool through :func:`pool_usable`,
or, when someone else launched it, the process that forks afterwards (a hook
run by :func:`os.register_at_fork` in the parent before each fork). A pool
already running when this module was imported has an unknown owner (it may
have been inherited from a parent): under OpenMP it is then not used, so
import the package before running parallel numba code of your own to keep
the compiled passes on all threads.
"""

from __future__ import annotations

import os
import sys
import warnings

__all__ = ["pool_usable"]

_UNKNOWN = -1  # a pool that was running before this module was imported
# The process that started numba's pool: None while no pool was seen running
# (then one started later is this process's own, until a fork records it).
_pool_owner: int | None = None
# The process in which the configured threading layer failed to load.
_failed_in: int | None = None


def _layer() -> str | None:
    """numba's threading layer once its pool started, else None (numba not imported: None)."""
    numba = sys.modules.get("numba")
    if numba is None:
        return None
    try:
        return numba.threading_layer()
    except ValueError:  # "Threading layer is not initialized."
        return None


def _record_owner() -> None:
    """Before a fork: a pool running without a recorded owner is this process's."""
    global _pool_owner
    if _pool_owner is None and _layer() is not None:
        _pool_owner = os.getpid()


def pool_usable() -> bool:
    """Whether numba's thread pool may run a parallel loop in this process.

    Starts the pool (numba's configured threading layer) when none runs yet.
    False in a process forked after an OpenMP pool started (or where an OpenMP
    pool of unknown owner runs), and where the configured layer cannot be
    loaded (with a warning, once per process).

    Returns
    -------
    usable : bool
    """
    global _pool_owner, _failed_in
    import numba

    layer = _layer()
    if layer is not None:
        if _pool_owner is None:  # started in this process: a fork would have recorded it
            _pool_owner = os.getpid()
        return _pool_owner == os.getpid() or layer != "omp"
    if _failed_in == os.getpid():
        return False
    try:
        numba.get_num_threads()  # launches the pool
    except ValueError as error:  # numba's "No threading layer could be loaded"
        _failed_in = os.getpid()
        message = str(error).splitlines()[0]
        warnings.warn(
            f"numba's threading layer {numba.config.THREADING_LAYER!r} could not be loaded "
            f"({message}); the fused Gram pass runs on one thread.",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    _pool_owner = os.getpid()
    return True


if _layer() is not None:  # running before this import: perhaps inherited through a fork
    _pool_owner = _UNKNOWN
if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(before=_record_owner)
