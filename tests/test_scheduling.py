"""Who runs the blocks: :func:`._scheduling.run_tasks`, alone and under the Gram engine.

* every task runs once and every result reaches ``consume``: sequentially in order, on
  threads in order when asked (``ordered``), in workers (``consume_in_workers``);
* an interrupted computation (a ``KeyboardInterrupt`` from a progress step) stops soon,
  leaves no thread or task running, and the next computation is right (threads and Dask);
* inside ``joblib.parallel_config(backend="dask")`` the blocks of a Gram and of a product
  ``K @ V`` run on the workers of a local two-process cluster, one task per block, and give
  the local values.
"""

from __future__ import annotations

import threading
import time

import joblib
import numpy as np
import pytest
from conftest import (
    assert_close,
    dask_task_stream,
    distinct_rows,
    finished_tasks,
    shared_image_rows,
)
from joblib import parallel_config
from threadpoolctl import threadpool_limits

from sklearn_hyperkernel import HyperKernel, HyperNNGP, progress
from sklearn_hyperkernel._gram import engine as _gram_engine
from sklearn_hyperkernel._utils.scheduling import default_workers, run_tasks


def _square_after(delay: float, value: int) -> tuple[int, int]:
    time.sleep(delay)
    return value, value * value


@pytest.mark.parametrize("n_jobs", [None, 1, 2])
@pytest.mark.parametrize("ordered", [False, True])
def test_every_task_runs_once_and_results_come_in_order_when_asked(n_jobs, ordered):
    # later tasks finish first: unordered results would come back shuffled
    calls = [(0.002 * (8 - value), value) for value in range(8)]
    results, steps = [], []

    class Steps:
        def step(self, count=1):
            steps.append(count)

    run_tasks(_square_after, calls, n_jobs, results.append, progress=Steps(), ordered=ordered)
    assert sorted(results) == [(value, value * value) for value in range(8)]
    assert steps == [1] * 8
    if ordered or n_jobs == 1 or (n_jobs is None and default_workers() == 1):
        assert results == [(value, value * value) for value in range(8)]


@pytest.mark.parametrize("blas_threads", [1, 2])
def test_n_jobs_none_runs_on_as_many_threads_as_blas_uses(blas_threads):
    """None: the tasks on the threads BLAS would use (one worker: in order, on this thread);
    an explicit count or a ``parallel_config(n_jobs=...)`` context is obeyed as given."""
    calls = [(0.01, value) for value in range(6)]
    threads = []

    def consume(result):
        threads.append(threading.get_ident())

    with threadpool_limits(limits=blas_threads, user_api="blas"):
        assert default_workers() == blas_threads
        run_tasks(_square_after, calls, None, consume, consume_in_workers=True)
        workers = set(threads)
        threads.clear()
        run_tasks(_square_after, calls, 1, consume, consume_in_workers=True)
        assert threads == [threading.get_ident()] * 6
        threads.clear()
        with parallel_config(n_jobs=2):
            run_tasks(_square_after, calls, None, consume, consume_in_workers=True)
        assert len(set(threads)) == 2 and threading.get_ident() not in threads
        threads.clear()
        with parallel_config(n_jobs=1):  # a context's 1 is obeyed too
            run_tasks(_square_after, calls, None, consume, consume_in_workers=True)
        assert threads == [threading.get_ident()] * 6
    if blas_threads == 1:
        assert workers == {threading.get_ident()}
    else:  # six tasks of 10 ms: both workers take some
        assert len(workers) == 2 and threading.get_ident() not in workers


def test_n_jobs_none_inside_a_joblib_worker_runs_there():
    """Nested parallelism: inside an outer joblib worker thread, None is one worker (that
    thread), not every core again."""

    def inner(_):
        threads = []
        calls = [(0.005, value) for value in range(4)]
        run_tasks(_square_after, calls, None, lambda result: threads.append(threading.get_ident()))
        return threading.get_ident(), threads

    with threadpool_limits(limits=2, user_api="blas"):
        outer = joblib.Parallel(n_jobs=2, prefer="threads")(
            joblib.delayed(inner)(k) for k in range(2)
        )
    for worker, threads in outer:
        assert threads == [worker] * 4


def test_concurrent_calls_share_one_blas_limit_and_restore_it():
    """Calls from several user threads at once: BLAS is at one thread while any of their tasks
    run, back to its setting after the last (limits lifted in another order than they were set
    used to leave it at one), and ``default_workers`` meanwhile reports the setting from before
    the limit."""
    before = default_workers()
    if before < 2:
        pytest.skip("BLAS runs one thread in this process (OMP_NUM_THREADS=1?)")
    seen = []

    def call(delay):
        time.sleep(delay)
        calls = [(0.02, value) for value in range(4)]
        run_tasks(_square_after, calls, 2, lambda result: seen.append(default_workers()))

    users = [threading.Thread(target=call, args=(0.01 * k,)) for k in range(4)]
    for user in users:
        user.start()
    for user in users:
        user.join()
    assert default_workers() == before
    assert seen == [before] * 16


def test_workers_consume_their_own_results_and_sequential_locally_stays_in_this_thread():
    calls = [(0.0, value) for value in range(6)]
    threads = []

    def consume(result):
        threads.append(threading.get_ident())

    run_tasks(_square_after, calls, 2, consume, consume_in_workers=True)
    assert len(threads) == 6 and threading.get_ident() not in threads
    threads.clear()
    run_tasks(_square_after, calls, 2, consume, sequential_locally=True)
    assert threads == [threading.get_ident()] * 6


# ------------------------------------------------------------ interruption


def _wait_for(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _interrupt_after_first_step(monkeypatch) -> list:
    steps = []

    def step(self, count=1):
        steps.append(count)
        raise KeyboardInterrupt

    monkeypatch.setattr(progress.ProgressLog, "step", step)
    return steps


@pytest.mark.parametrize("what", ["gram", "gram_matvec"])
def test_interrupted_threaded_computation_stops_and_leaves_no_threads(monkeypatch, what):
    X = distinct_rows(n_rows=120)
    kernel = HyperKernel(block_size=4, n_jobs=2, verbose=1)
    rows = kernel.factorize_rows(X)
    total = 30
    task_name = "_gram_block" if what == "gram" else "_matvec_block"
    original = getattr(_gram_engine, task_name)
    calls = []

    def slow_block(*args):
        calls.append(threading.get_ident())
        time.sleep(0.05)  # long enough that the interruption comes while most blocks wait
        return original(*args)

    monkeypatch.setattr(_gram_engine, task_name, slow_block)
    steps = _interrupt_after_first_step(monkeypatch)
    threads_before = threading.active_count()
    with pytest.raises(KeyboardInterrupt):
        if what == "gram":
            kernel(X)
        else:
            kernel.gram_matvec(rows, np.ones(120))
    assert len(steps) == 1  # the first progress step raised
    assert threading.get_ident() not in calls  # the blocks ran on worker threads
    computed = len(calls)
    print(f"{computed} of {total} blocks computed before the interruption")
    assert 1 <= computed <= 10 < total, computed
    time.sleep(0.3)
    assert len(calls) == computed  # nothing goes on running after the interruption
    assert _wait_for(lambda: threading.active_count() <= threads_before), threading.enumerate()

    monkeypatch.undo()
    expected = HyperKernel()(X)
    if what == "gram":
        assert_close(kernel.set_params(verbose=0)(X), expected, 1e-12)
    else:
        product = kernel.set_params(verbose=0).gram_matvec(rows, np.ones(120))
        assert_close(product, expected.sum(axis=1), 1e-12)


# ------------------------------------------------------------ Dask


def _cluster_is_idle(client) -> bool:
    if any(client.processing().values()):
        return False
    states = client.run_on_scheduler(
        lambda dask_scheduler: [task.state for task in dask_scheduler.tasks.values()]
    )
    return not {"processing", "waiting", "queued", "no-worker"} & set(states)


@pytest.mark.dask
def test_dask_gram_runs_on_the_workers_and_equals_local(dask_client):
    X, Y = shared_image_rows(n_images=10, pixels=6, n_rows=59), distinct_rows(n_rows=31, seed=4)
    kernel = HyperKernel(z_encoding="fourier", length_scale=[0.6, 1.7], block_size=7, n_jobs=2)
    local = kernel(X), kernel(X, Y), kernel(X, eval_gradient=True)
    workers = set(dask_client.scheduler_info()["workers"])
    with dask_task_stream(dask_client) as stream, joblib.parallel_config(backend="dask"):
        on_dask = kernel(X), kernel(X, Y), kernel(X, eval_gradient=True)
    assert_close(on_dask[0], local[0], 1e-12)
    assert_close(on_dask[1], local[1], 1e-12)
    assert_close(on_dask[2][0], local[2][0], 1e-12)
    assert_close(on_dask[2][1], local[2][1], 1e-12)
    tasks = finished_tasks(stream)
    assert len(tasks) == 3 * 9  # ceil(59 / 7) blocks per Gram, one task each
    assert {task["worker"] for task in tasks} <= workers


@pytest.mark.dask
def test_dask_gram_matvec_and_nngp_equal_local(dask_client):
    X = distinct_rows(n_rows=53)
    kernel = HyperNNGP(activation="leaky_relu", block_size=6)
    rows = kernel.factorize_rows(X)
    V = np.random.default_rng(2).normal(size=(53, 2))
    local_product, local_gram = kernel.gram_matvec(rows, V), kernel(X)
    # n_jobs from the context this time
    with dask_task_stream(dask_client) as stream, joblib.parallel_config(backend="dask", n_jobs=2):
        product, gram = kernel.gram_matvec(rows, V), kernel(X)
    assert_close(product, local_product, 1e-12)
    assert_close(product, local_gram @ V, 1e-12)
    assert_close(gram, local_gram, 1e-12)
    assert len(finished_tasks(stream, "_matvec_block")) == 9
    assert len(finished_tasks(stream, "_gram_block")) == 9


@pytest.mark.dask
def test_dask_runs_torch_blocks_on_the_workers(dask_client, torch_module):
    # the torch tensors of the rows travel to the worker processes, which compute with torch
    X = shared_image_rows(n_images=6, pixels=5, n_rows=29)
    kernel = HyperKernel(z_encoding="fourier", block_size=7, n_jobs=2, device="cpu")
    expected, expected_gradient = HyperKernel(z_encoding="fourier")(X, eval_gradient=True)
    with dask_task_stream(dask_client) as stream, joblib.parallel_config(backend="dask"):
        K, gradient = kernel(X, eval_gradient=True)
    assert_close(K, expected, 1e-10)
    assert_close(gradient, expected_gradient, 1e-10)
    assert len(finished_tasks(stream)) == 5


@pytest.mark.dask
def test_dask_backend_with_default_n_jobs_uses_the_cluster(dask_client):
    # as joblib's Parallel(n_jobs=None): the Dask backend's default is every worker
    X = distinct_rows(n_rows=30)
    with dask_task_stream(dask_client) as stream, joblib.parallel_config(backend="dask"):
        HyperKernel(block_size=7)(X)
    assert len(finished_tasks(stream)) == 5


@pytest.mark.filterwarnings("ignore:.*tasks which were still being processed:UserWarning")
@pytest.mark.dask
def test_interrupted_dask_gram_cancels_its_tasks(dask_client, monkeypatch):
    # 100 blocks of 2 x 10000 entries (a few ms each)
    X, Y = distinct_rows(n_rows=200), distinct_rows(n_rows=10000, seed=8)
    kernel = HyperKernel(block_size=2, n_jobs=2, verbose=1)
    total = 100
    steps = _interrupt_after_first_step(monkeypatch)
    with dask_task_stream(dask_client) as stream:
        with pytest.raises(KeyboardInterrupt), joblib.parallel_config(backend="dask"):
            kernel(X, Y)
        assert _wait_for(lambda: _cluster_is_idle(dask_client)), dask_client.processing()
    assert len(steps) == 1
    computed = len(finished_tasks(stream))
    print(f"{computed} of {total} blocks computed before the interruption")
    assert 1 <= computed < total // 2, computed

    monkeypatch.undo()
    with joblib.parallel_config(backend="dask"):
        K = kernel.set_params(verbose=0, block_size=50)(X, Y[:500])
    assert_close(K, HyperKernel()(X, Y[:500]), 1e-12)
    assert _cluster_is_idle(dask_client)
