"""Benchmark the training loop of HypernetworkRegressor.

Two measurements:

1. Epoch time of ``HypernetworkRegressor.fit`` against a minimal hand-written
   torch loop that trains the same :class:`~sklearn_hyperkernel.network.Hypernetwork`
   on the same data, batch size and optimizer (SGD with momentum). Runs are
   interleaved and the median epoch time of each side is compared (target:
   ratio <= 1.15). Two data sets: rows whose x are all distinct, and pixel rows
   (many z per x), where the estimator runs f once per distinct x of a batch
   and the hand-written loop does not.
2. Training throughput (rows per second) of the estimator for f_width in
   {200, 1000}, g_width in {10, 100}, g_depth in {3, 8}.

Run::

    python benchmarks/bench_training.py            # full sizes
    python benchmarks/bench_training.py --quick    # smaller, about a minute on 2 cores
    python benchmarks/bench_training.py --device cuda
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_digits

from sklearn_hyperkernel.datasets import pixel_regression
from sklearn_hyperkernel.hypernetwork import HypernetworkRegressor
from sklearn_hyperkernel.network import Hypernetwork

Z_DIM = 2
LEARNING_RATE = 1e-3
MOMENTUM = 0.9


def distinct_rows(n_rows: int, n_x: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    U = rng.standard_normal((n_rows, n_x + Z_DIM))
    return U, np.sin(U[:, 0]) * U[:, -1]


def pixel_rows(n_images: int) -> tuple[np.ndarray, np.ndarray]:
    return pixel_regression(load_digits().images[:n_images])


def estimator(
    architecture: dict, batch_size: int, epochs: int, device: str
) -> HypernetworkRegressor:
    # The same network and inputs as the hand-written loop: the paper's settings
    # (NTK parameterisation, linear z, inputs and targets as given), not the
    # estimator's defaults.
    return HypernetworkRegressor(
        **architecture,
        optimizer="sgd",
        learning_rate=LEARNING_RATE,
        momentum=MOMENTUM,
        batch_size=batch_size,
        max_epochs=epochs,
        tol=0.0,
        n_iter_no_change=10**9,
        parameterization="ntk",
        z_encoding="linear",
        normalize_x=False,
        normalize_y=False,
        random_state=0,
        device=device,
        dtype="float32",
    )


def estimator_epoch_seconds(U, y, architecture, batch_size, epochs, device) -> float:
    model = estimator(architecture, batch_size, epochs, device)
    start = time.perf_counter()
    model.fit(U, y)
    if device != "cpu":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / epochs


def hand_loop_epoch_seconds(U, y, architecture, batch_size, epochs, device) -> float:
    """The whole of a plain training loop, setup included, per epoch."""
    start = time.perf_counter()
    data = torch.as_tensor(U, dtype=torch.float32, device=device)
    x, z = data[:, :-Z_DIM], data[:, -Z_DIM:]
    target = torch.as_tensor(y, dtype=torch.float32, device=device).reshape(-1, 1)
    model = Hypernetwork(
        x.shape[1],
        Z_DIM,
        **architecture,
        dtype=torch.float32,
        generator=torch.Generator().manual_seed(0),
        device=device,
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], device=device)
        for first in range(0, x.shape[0], batch_size):
            rows = order[first : first + batch_size]
            loss = ((model(x[rows], z[rows]) - target[rows]) ** 2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        loss.item()  # the loop reads the loss once per epoch too
    if device != "cpu":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / epochs


def compare_with_hand_loop(name, U, y, architecture, batch_size, epochs, repeats, device):
    estimator_times, hand_times = [], []
    estimator_epoch_seconds(U, y, architecture, batch_size, 1, device)  # warm-up
    hand_loop_epoch_seconds(U, y, architecture, batch_size, 1, device)
    for _ in range(repeats):
        estimator_times.append(
            estimator_epoch_seconds(U, y, architecture, batch_size, epochs, device)
        )
        hand_times.append(hand_loop_epoch_seconds(U, y, architecture, batch_size, epochs, device))
    est, hand = statistics.median(estimator_times), statistics.median(hand_times)
    print(f"{name:<34} {U.shape[0]:>7} {est * 1e3:>12.1f} {hand * 1e3:>12.1f} {est / hand:>7.3f}")
    return est / hand


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller data, fewer repeats")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    quick = args.quick
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, device {args.device}"
    )

    print(
        "\n1. epoch time: HypernetworkRegressor.fit vs a hand-written torch loop "
        "(batch 100, SGD, float32)"
    )
    print(
        f"{'data / architecture':<34} {'rows':>7} {'fit ms/ep':>12} {'loop ms/ep':>12} {'ratio':>7}"
    )
    default = {"f_depth": 3, "f_width": 256, "g_depth": 2, "g_width": 32}
    repeats, epochs = (3, 3) if quick else (5, 5)
    n_rows = 2000 if quick else 10000
    U, y = distinct_rows(n_rows, 64)
    compare_with_hand_loop(
        "distinct x, default architecture", U, y, default, 100, epochs, repeats, args.device
    )
    wide = {"f_depth": 3, "f_width": 1000, "g_depth": 3, "g_width": 100}
    U, y = distinct_rows(n_rows // 4, 64)
    compare_with_hand_loop(
        "distinct x, f 1000 / g 100 x 3", U, y, wide, 100, max(1, epochs // 2), repeats, args.device
    )
    U, y = pixel_rows(20 if quick else 100)
    compare_with_hand_loop(
        "digit pixels (64 z per x), default", U, y, default, 100, epochs, repeats, args.device
    )

    print(
        "\n2. training throughput of HypernetworkRegressor.fit (rows/s, batch 100, "
        "SGD, float32, f_depth 3)"
    )
    print(f"{'f_width':>8} {'g_width':>8} {'g_depth':>8} {'rows/s':>12}")
    for f_width in (200, 1000):
        for g_width in (10, 100):
            for g_depth in (3, 8):
                architecture = {
                    "f_depth": 3,
                    "f_width": f_width,
                    "g_depth": g_depth,
                    "g_width": g_width,
                }
                big = f_width * g_width * g_width * g_depth > 2e7
                rows = (200 if big else 1000) if quick else (500 if big else 5000)
                U, y = distinct_rows(rows, 64)
                estimator_epoch_seconds(U[:100], y[:100], architecture, 100, 1, args.device)
                seconds = estimator_epoch_seconds(U, y, architecture, 100, 1, args.device)
                print(f"{f_width:>8} {g_width:>8} {g_depth:>8} {rows / seconds:>12.0f}")


if __name__ == "__main__":
    main()
