"""Who runs the independent tasks of a blocked computation: the package's one scheduler.

A Gram, a product ``K @ V`` and the Nyström normal equations are each a list
of independent tasks (a block of rows each). :func:`run_tasks` runs them with
joblib and hands every result to a ``consume`` callback:

* sequentially, in order, when there is one task or one worker, or when the
  caller asks for it on local backends (``sequential_locally``: a torch task
  parallelises inside itself, and a GPU runs one task at a time);
* on local threads (joblib's default backend), with BLAS limited to one
  thread per task (threadpoolctl; otherwise every thread's BLAS starts its own
  threads on the same cores), at most ``2 * n_jobs`` tasks dispatched ahead;
  ``n_jobs=None`` there means as many threads as BLAS uses
  (:func:`default_workers`), not 1: the cores a single task would have kept
  busy with BLAS's and numba's threads, without their contention (1 inside
  a joblib worker; a ``parallel_config(n_jobs=...)`` context's count wins);
* on any other joblib backend the caller activates -- Dask's, inside
  ``joblib.parallel_config(backend="dask")`` -- with every task submitted
  at once: its large array arguments are scattered to the cluster once, and
  each task returns its result instead of writing to shared memory, so
  nothing assumes one machine.

Every task runs with the package configuration (:mod:`sklearn_hyperkernel.config`)
of the thread that called :func:`run_tasks`, on any backend, as scikit-learn's
``delayed`` carries its configuration into joblib's workers.

Interruption: an exception in ``consume`` or in ``progress.step`` (such as a
``KeyboardInterrupt``) closes joblib's result generator, which cancels the
tasks that have not started; the tasks already running finish and are
dropped.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from joblib import Parallel, cpu_count, delayed, effective_n_jobs
from joblib import parallel as joblib_parallel
from joblib._parallel_backends import SequentialBackend, ThreadingBackend
from joblib.parallel import get_active_backend
from threadpoolctl import ThreadpoolController, threadpool_limits

from ..config import config_context, get_config
from ..progress import ProgressLog

__all__ = ["default_workers", "run_tasks", "runs_locally"]

# joblib's warning when a result generator is closed before its end
_UNUSED_RESULTS = r".*(executed +but not used|still being processed by the workers)"


def runs_locally() -> bool:
    """Whether tasks run in this process (joblib's threads or sequentially).

    Then a task may write its result into an array of the caller's; on any
    other backend (Dask's) it must return it.
    """
    backend, _ = get_active_backend(prefer="threads")
    return isinstance(backend, (ThreadingBackend, SequentialBackend))


def default_workers() -> int:
    """The workers of ``n_jobs=None`` on a local backend: the threads BLAS uses.

    That is every core unless something limits BLAS (``OMP_NUM_THREADS``,
    ``OPENBLAS_NUM_THREADS``, a ``threadpoolctl`` context, a joblib worker's
    inner-thread limit), so the tasks use the cores the computation inside
    one task would have used, one BLAS thread each instead of one task with
    every BLAS and numba thread (which here contend: numba's threads wait
    while BLAS's spin after each product). While tasks of another call hold
    BLAS at one thread (:func:`_one_blas_thread`), the count from before that
    limit. ``joblib.cpu_count()`` when no BLAS is found.
    """
    with _LIMIT_LOCK:
        return _LIMIT["workers"] if _LIMIT["depth"] else _blas_threads_now()


_BLAS: Any = None  # threadpoolctl's view of the BLAS libraries, found once
_LIMIT_LOCK = threading.Lock()
# the one BLAS limit of the calls whose tasks run on threads now: how many
# such calls, threadpoolctl's context, and default_workers() from before it
_LIMIT: dict[str, Any] = {"depth": 0, "context": None, "workers": 1}


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """BLAS on one thread while tasks run on this process's threads.

    BLAS's thread count is global to the process, so concurrent calls (from
    threads of the user's) share one limit: the first sets it, the last lifts
    it. Nested ``threadpool_limits`` contexts left in another order than they
    were entered would leave BLAS at one thread for good.
    """
    with _LIMIT_LOCK:
        if _LIMIT["depth"] == 0:
            _LIMIT["workers"] = _blas_threads_now()
            _LIMIT["context"] = threadpool_limits(limits=1, user_api="blas")
        _LIMIT["depth"] += 1
    try:
        yield
    finally:
        with _LIMIT_LOCK:
            _LIMIT["depth"] -= 1
            if _LIMIT["depth"] == 0:
                _LIMIT["context"].restore_original_limits()
                _LIMIT["context"] = None


def _blas_threads_now() -> int:
    """:func:`default_workers` without the shared limit (called under its lock)."""
    global _BLAS
    if _BLAS is None:
        _BLAS = ThreadpoolController().select(user_api="blas")
    counts = [library.num_threads for library in _BLAS.lib_controllers]
    return max(1, min(counts)) if counts else max(1, cpu_count())


def _local_n_jobs() -> int:
    """``n_jobs=None`` on a local backend.

    The ``n_jobs`` of an enclosing ``joblib.parallel_config`` context (1
    included); 1 inside a joblib worker (nested parallelism: the outer level
    has the cores); else :func:`default_workers`.
    """
    backend, _ = get_active_backend(prefer="threads")
    if getattr(backend, "nesting_level", 0):
        return 1
    config = getattr(joblib_parallel._backend, "config", None) or {}
    configured = config.get("n_jobs")  # joblib's "unset" is a sentinel, not an int
    if isinstance(configured, int):
        return configured
    configured = effective_n_jobs(None)  # should joblib keep its config elsewhere
    return configured if configured != 1 else default_workers()


def run_tasks(
    task: Callable[..., Any],
    calls: Sequence[tuple],
    n_jobs: int | None,
    consume: Callable[[Any], None],
    *,
    progress: ProgressLog | None = None,
    sequential_locally: bool = False,
    consume_in_workers: bool = False,
    ordered: bool = False,
) -> None:
    """Run ``task(*call)`` for every call and hand each result to ``consume``.

    Parameters
    ----------
    task : callable
        A module-level function (joblib sends it to threads, processes or
        Dask workers alike). Pass large arrays as separate arguments of the
        calls, not inside a container: joblib's Dask backend scatters each
        large array argument to the cluster once and reuses it for every task,
        whereas a container would be serialised into every task.
    calls : sequence of tuple
        The arguments of each task.
    n_jobs : int or None
        joblib's, except for None on local threads (:func:`_local_n_jobs`):
        the ``n_jobs`` of a ``joblib.parallel_config`` context, 1 inside a
        joblib worker, else :func:`default_workers` (the threads BLAS uses)
        instead of joblib's 1; -1 every core (every worker on Dask).
    consume : callable
        Called with each result. Sequentially the results come in the order
        of ``calls``; in parallel as the tasks finish, unless ``ordered``.
    progress : ProgressLog, optional
        Stepped once per finished task.
    sequential_locally : bool, default=False
        Run one task at a time unless a non-local backend (Dask) is active.
    consume_in_workers : bool, default=False
        On local threads, each worker calls ``consume`` with its own result,
        so that a finished result is dropped at once instead of waiting for
        the caller's thread. ``consume`` must then be safe to call
        concurrently (disjoint writes into a shared array, or a lock of the
        caller's). Elsewhere ``consume`` runs in the caller's thread.
    ordered : bool, default=False
        On local threads, consume the results in the order of ``calls``
        (sums over them are then the same from run to run, bit for bit), at
        the cost of holding a finished result until those before it are in.
        Results from a non-local backend always come as they finish.
    """
    local = runs_locally()
    if local and n_jobs is None:
        n_jobs = _local_n_jobs()
    if len(calls) <= 1 or effective_n_jobs(n_jobs) == 1 or (local and sequential_locally):
        for call in calls:
            consume(task(*call))
            _step(progress)
        return
    if not local:
        _consume_all(
            Parallel(n_jobs=n_jobs, return_as="generator_unordered", batch_size=1),
            task,
            calls,
            consume,
            progress,
        )
        return
    in_workers = consume_in_workers
    parallel = Parallel(
        n_jobs=n_jobs,
        prefer="threads",
        return_as="generator" if ordered and not in_workers else "generator_unordered",
        pre_dispatch="2*n_jobs",
        batch_size=1,
    )
    with _one_blas_thread():
        if in_workers:
            _consume_all(
                parallel,
                _consume_in_worker,
                [(task, consume, call) for call in calls],
                None,
                progress,
            )
        else:
            _consume_all(parallel, task, calls, consume, progress)


def _consume_all(
    parallel: Parallel,
    task: Callable[..., Any],
    calls: Sequence[tuple],
    consume: Callable[[Any], None] | None,
    progress: ProgressLog | None,
) -> None:
    configured = _Configured(task, get_config())  # the caller's, for every worker
    outputs = parallel(delayed(configured)(*call) for call in calls)
    try:
        for output in outputs:
            if consume is not None:
                consume(output)
            _step(progress)
    finally:
        # after an early exit: cancels the tasks not yet started, without
        # joblib's warning that their results go unused (that is the point)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_UNUSED_RESULTS, category=UserWarning)
            outputs.close()


class _Configured:
    """``task`` called with the package configuration ``config``, in any thread or process.

    Named as the task (joblib and Dask name a task after its function).
    """

    def __init__(self, task: Callable[..., Any], config: dict[str, Any]) -> None:
        self.task, self.config = task, config
        self.__name__ = getattr(task, "__name__", type(task).__name__)

    def __call__(self, *call: Any) -> Any:
        with config_context(**self.config):
            return self.task(*call)


def _consume_in_worker(
    task: Callable[..., Any], consume: Callable[[Any], None], call: tuple
) -> None:
    consume(task(*call))


def _step(progress: ProgressLog | None) -> None:
    if progress is not None:
        progress.step()
