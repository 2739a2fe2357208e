"""Fixtures shared by the test modules."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    """A freshly seeded numpy generator, so every test draws the same numbers."""
    return np.random.default_rng(0)


@pytest.fixture(scope="session", autouse=True)
def torch_on_one_thread():
    """torch on one intra-op thread for the whole suite, restored at the end.

    The problems here are small and the machine has two cores: with another job on them,
    torch's OpenMP threads spin against each other and made single modules 3.5 to 10 times
    slower (test_hypernetwork.py: 135 s against 38 s). No value depends on the thread count.
    """
    try:
        import torch
    except ImportError:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dask_client():
    """A local Dask cluster of two single-threaded worker processes on loopback, per module."""
    import warnings

    distributed = pytest.importorskip("distributed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. a dashboard port already in use
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
        )
        client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
