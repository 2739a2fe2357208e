"""Benchmark: the conv f (issue 19) against neural-tangents, the dense f, no factorisation.

Run from the repository root (after ``make demo`` or ``make test`` made .venv)::

    .venv/bin/python benchmarks/bench_conv.py --nt-python ../nt-venv/bin/python
    .venv/bin/python benchmarks/bench_conv.py --quick          # 100 images, about a minute

neural-tangents is never a dependency of the package: it runs in a scratch
environment beside the repository (``python3 -m venv ../nt-venv &&
../nt-venv/bin/pip install "neural-tangents==0.6.5" "jax[cpu]==0.4.30"``), whose interpreter
``--nt-python`` names; its part runs there in a subprocess (:data:`NT_PROGRAM`)
and is skipped, with a line saying so, without ``--nt-python``.

Every part is measured side by side in one run, on MNIST (the package's
offline loader, ``datasets.load_mnist``, ``--images`` images, 28 x 28):

(a) **The conv f's kernel against neural-tangents.** f alone, f_depth 3,
    filter 3, no biases, raw pixels: the package's ``HyperNNGP`` and
    ``HyperKernel`` with ``g_depth=1, z_encoding="linear", z_dim=1``,
    ``g_bias_variance=0`` on rows ``[image | 1]``: with one linear layer in g
    and z = 1 the hyper-NNGP is f's NNGP ``S_f`` and the hyperkernel f's NTK
    ``Theta^f`` (docs/math.md), which neural-tangents' ``kernel_fn(x, None,
    ("nngp", "ntk"))`` gives for ``stax.serial(Conv(C, (3, 3),
    padding="SAME", W_std=1, parameterization="ntk"), ABRelu(0, sqrt(2)),
    Conv(...), ABRelu(0, sqrt(2)), Flatten(), Dense(1, W_std=1,
    parameterization="ntk"))`` (float64, its ``kernel_fn`` jitted and, with
    ``--nt-batch-size``, through ``nt.batch``: 8.4 GB resident without it on
    500 images here). The package's two calls (NNGP, then NTK) are timed
    against neural-tangents' one call that returns both, and so is the NTK
    call alone (it runs the whole NNGP recursion too: ``Theta^f`` needs
    ``S_f``'s maps at every layer): the first calls (neural-tangents
    compiling) and the best of ``--repeats`` later ones, in wall seconds and
    in CPU seconds of the process (all threads). The two libraries' values are compared
    entry by entry (the largest relative differences are printed). That
    these settings give ``S_f`` and ``Theta^f`` was checked once against
    neural-tangents on tiny images (6 images of 5 x 4 x 2 and of 7 x 5 x 2:
    generic, zero, sparse, repeated, scaled; f_depth 1-3, filter 3 and 5,
    ``f_bias_variance`` 0 and 0.5 with ``b_std = sqrt(bf)``): NNGP within
    1e-15 and NTK within 3.4e-15 (relative) between distinct images; at
    equal or parallel images the NTK within 5.9e-9, neural-tangents' own
    rounding there (a plain numpy recursion differs from it as much).
(b) **Conv f against dense f in the Gram engine.** The Gram of the paper's
    pixel-regression rows (``datasets.pixel_regression``, ``--pixels`` pixels
    per image: 500 x 20 = 10,000 rows), ``HyperKernel(f_architecture="conv",
    image_shape=(28, 28))`` against ``HyperKernel()``, the defaults otherwise
    (f_depth 3, g_depth 2, Fourier z, biases); best of ``--repeats``, the two
    interleaved, in wall seconds and CPU seconds (all threads) of that call.
(c) **The x-only factorisation (the authors' reply, lines 24-27).** The Gram
    evaluates f once per pair of distinct images and g per pair of rows.
    Without that, f would be evaluated per pair of rows. This is timed on
    ``--subset`` rows of (b) and on half as many, whose images were made
    distinct: each row's image gets about +1e-9 on one pixel of its own,
    which moves the kernel by about 1e-9 but leaves no two rows with equal x
    (checked with the public ``factorize_rows``). Every entry then costs one
    f pair, so the time is ``fixed + per_pair * rows^2``; the two sizes give
    the two constants, and the time of all N rows is extrapolated as
    ``fixed + per_pair * N^2`` (the plain scaling ``t(subset) * (N /
    subset)^2``, which also multiplies the fixed cost, is printed beside it).
    The same subset's factorised Gram is measured directly as well.
(d) **Peak memory** of (b)'s conv Gram (and of the dense one), each in a
    fresh interpreter: the peak resident size over the call (``VmHWM`` of
    ``/proc/self/status``, reset before the call through
    ``/proc/self/clear_refs``; not ``ru_maxrss``, which on Linux starts a
    child at its parent's peak), less the resident size (``VmRSS``) just
    before it (after a small warm-up call that loads the compiled code), as
    a multiple of the
    N x N float64 output (1.00 = the output alone). This counts everything
    the process touched (numpy, numba's buffers); tracemalloc's peak over the
    same call (numpy's allocations only: numba's buffers are not reported to
    it) is printed beside it.

``--json PATH`` writes every figure to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

from sklearn_hyperkernel import HyperKernel, HyperNNGP
from sklearn_hyperkernel.datasets import load_mnist, pixel_regression

IMAGE_SHAPE = (28, 28)
#: the conv f of every part: 2 conv layers of 3 x 3 filters and the dense readout
CONV = {"f_architecture": "conv", "image_shape": IMAGE_SHAPE, "filter_size": 3}
F_DEPTH = 3
#: (a): f alone (g one linear layer of z = 1), no biases, raw pixels
F_ONLY = {
    "f_depth": F_DEPTH,
    "g_depth": 1,
    "z_encoding": "linear",
    "z_dim": 1,
    "f_bias_variance": 0.0,
    "g_bias_variance": 0.0,
    "normalize_x": False,
}

# neural-tangents' side of (a), run by --nt-python: argv = images.npy out.npz f_depth
# filter_size batch_size repeats; prints, as JSON, the seconds of its first call and the best
# of the `repeats` calls after it (with that call's CPU seconds)
NT_PROGRAM = """
import json, sys, time
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import neural_tangents as nt
from neural_tangents import stax

x = np.load(sys.argv[1])
f_depth, k, batch_size = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
layers = []
for _ in range(f_depth - 1):
    layers += [
        stax.Conv(1, (k, k), padding="SAME", W_std=1.0, parameterization="ntk"),
        stax.ABRelu(0.0, 2**0.5),
    ]
layers += [stax.Flatten(), stax.Dense(1, W_std=1.0, parameterization="ntk")]
kernel_fn = jax.jit(stax.serial(*layers)[2], static_argnames="get")
if 0 < batch_size < len(x):
    kernel_fn = nt.batch(kernel_fn, batch_size=batch_size)
seconds, cpu = [], []
for _ in range(1 + int(sys.argv[6])):
    start, start_cpu = time.perf_counter(), time.process_time()
    kernels = kernel_fn(x, None, ("nngp", "ntk"))
    nngp, ntk = np.asarray(kernels.nngp), np.asarray(kernels.ntk)
    seconds.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
np.savez(sys.argv[2], nngp=nngp, ntk=ntk)
best = 1 + int(np.argmin(seconds[1:]))
print(json.dumps({"first_s": seconds[0], "second_s": seconds[best], "second_cpu_s": cpu[best],
                  "versions": f"neural-tangents {nt.__version__}, jax {jax.__version__}",
                  "dtype": str(nngp.dtype)}))
"""

# (d): one Gram in a fresh interpreter; argv = rows.npy, then the kernel's parameters as JSON.
# VmHWM, not ru_maxrss: Linux carries the parent's high-water mark into a child's ru_maxrss
# (fork copies it, exec records the copied memory map's), VmHWM belongs to this memory map
MEMORY_PROGRAM = """
import json, sys, tracemalloc
import numpy as np
from sklearn_hyperkernel import HyperKernel

def status(field):
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(field + ":"))

U = np.load(sys.argv[1])
params = json.loads(sys.argv[2])
kernel = HyperKernel(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})
kernel(U[:50])  # loads the compiled code
try:  # reset VmHWM to the current resident size (Linux >= 4.0)
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
except OSError:
    pass
rss_before = status("VmRSS")
tracemalloc.start()
K = kernel(U)
traced_peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({"rss_before_bytes": rss_before, "peak_bytes": status("VmHWM"),
                  "traced_peak_bytes": traced_peak}))
"""


def timed(func) -> tuple[float, float, object]:
    """Wall seconds, CPU seconds of this process (all its threads) and result of ``func()``."""
    start, start_cpu = time.perf_counter(), time.process_time()
    result = func()
    return time.perf_counter() - start, time.process_time() - start_cpu, result


def best_times(funcs: dict, repeats: int, cpu: dict | None = None) -> dict:
    """Best wall time of each function, the functions interleaved round by round.

    ``cpu``, if given, receives the CPU seconds of each function's best call.
    """
    best = dict.fromkeys(funcs, np.inf)
    for _ in range(repeats):
        for name, func in funcs.items():
            wall, cpu_s, _ = timed(func)
            if wall < best[name]:
                best[name] = wall
                if cpu is not None:
                    cpu[name] = cpu_s
    return best


def relative_difference(ours: np.ndarray, theirs: np.ndarray) -> dict:
    """Largest difference relative to the largest entry, and entrywise off the diagonal."""
    off = ~np.eye(len(theirs), dtype=bool)
    entrywise = np.abs(ours - theirs)[off] / np.abs(theirs)[off]
    return {
        "max_over_largest": float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs))),
        "max_entrywise_off_diagonal": float(np.max(entrywise[np.isfinite(entrywise)])),
    }


def run_nt(nt_python: str, images: np.ndarray, batch_size: int, repeats: int, workdir: str) -> dict:
    """neural-tangents' kernel_fn on ``images`` (NHWC) in its own interpreter."""
    path_in = os.path.join(workdir, "images.npy")
    path_out = os.path.join(workdir, "nt.npz")
    np.save(path_in, images)
    command = [nt_python, "-c", NT_PROGRAM, path_in, path_out, str(F_DEPTH), "3"]
    command += [str(batch_size), str(repeats)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"neural-tangents' run failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    with np.load(path_out) as kernels:
        result["nngp"], result["ntk"] = kernels["nngp"], kernels["ntk"]
    return result


def part_a(images: np.ndarray, args, workdir: str, report: dict) -> None:
    n = images.shape[0]
    rows = np.hstack([images.reshape(n, -1), np.ones((n, 1))])
    kernels = {
        "nngp": HyperNNGP(**F_ONLY, **CONV),
        "ntk": HyperKernel(**F_ONLY, **CONV),
    }
    first = {name: timed(lambda k=kernel: k(rows)) for name, kernel in kernels.items()}
    second = {}  # the best of --repeats calls after the first, with that call's CPU seconds
    for _ in range(args.repeats):
        for name, kernel in kernels.items():
            t = timed(lambda k=kernel: k(rows))
            if name not in second or t[0] < second[name][0]:
                second[name] = t
    ours = {
        "first_s": sum(t[0] for t in first.values()),
        "second_s": sum(t[0] for t in second.values()),
        "second_cpu_s": sum(t[1] for t in second.values()),
        **{f"{name}_second_s": t[0] for name, t in second.items()},
        **{f"{name}_second_cpu_s": t[1] for name, t in second.items()},
    }
    report["a"] = {"images": n, "package": ours}
    print(f"## (a) f's kernel alone on {n} MNIST images, f_depth {F_DEPTH}, filter 3, no biases")
    print()
    if args.nt_python is None:
        print("neural-tangents: skipped (no --nt-python given)")
        print(
            f"package: NNGP + NTK {ours['second_s']:.3f} s (NNGP {ours['nngp_second_s']:.3f} s, "
            f"NTK {ours['ntk_second_s']:.3f} s; first calls {ours['first_s']:.3f} s)"
        )
        print()
        return
    nt = run_nt(args.nt_python, images[..., None], args.nt_batch_size, args.repeats, workdir)
    agreement = {name: relative_difference(first[name][2], nt[name]) for name in kernels}
    report["a"]["neural_tangents"] = {
        "first_s": nt["first_s"],
        "second_s": nt["second_s"],
        "second_cpu_s": nt["second_cpu_s"],
        "batch_size": args.nt_batch_size,
        "versions": nt["versions"],
    }
    report["a"]["max_relative_difference"] = agreement
    print(f"neural-tangents: {nt['versions']}, {nt['dtype']}, batch_size {args.nt_batch_size}")
    print()
    print(
        f"| NNGP + NTK | first call s | best of {args.repeats} later calls s | that call's CPU s |"
    )
    print("|---|---|---|---|")
    ntk_only = {
        "first_s": first["ntk"][0],
        "second_s": ours["ntk_second_s"],
        "second_cpu_s": ours["ntk_second_cpu_s"],
    }
    rows_out = (
        ("package, NNGP call + NTK call", ours),
        ("package, NTK call alone", ntk_only),
        ("neural-tangents, one call", nt),
    )
    keys = ("first_s", "second_s", "second_cpu_s")
    for name, t in rows_out:
        print(f"| {name} | " + " | ".join(f"{t[key]:.3f}" for key in keys) + " |")
    for name, t in rows_out[:2]:
        ratios = " | ".join(f"{t[key] / nt[key]:.3f}" for key in keys)
        print(f"| {name.replace('package, ', 'package (')}) / neural-tangents | {ratios} |")
    print()
    print("(the NTK call's first call comes after the NNGP's, which loaded the compiled code)")
    report["a"]["ratios"] = {
        "both_calls": {key: ours[key] / nt[key] for key in keys},
        "ntk_call": {key: ntk_only[key] / nt[key] for key in keys},
    }
    print()
    print(
        "package vs neural-tangents, largest difference relative to the largest entry: "
        f"NNGP {agreement['nngp']['max_over_largest']:.1e}, "
        f"NTK {agreement['ntk']['max_over_largest']:.1e}; entrywise relative off the diagonal "
        f"(distinct images): NNGP {agreement['nngp']['max_entrywise_off_diagonal']:.1e}, "
        f"NTK {agreement['ntk']['max_entrywise_off_diagonal']:.1e} (neural-tangents' own NTK "
        "is good to about 1e-9 on the diagonal: docs/math.md, 'A convolutional f')"
    )
    print()


def distinct_images(U: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``U`` with every row's x moved by 1e-9 on one pixel of its own (no two x equal)."""
    U = U.copy()
    n_x = U.shape[1] - 2
    pixels = rng.choice(n_x, size=U.shape[0], replace=U.shape[0] > n_x)
    U[np.arange(U.shape[0]), pixels] += 1e-9 * (1.0 + np.arange(U.shape[0]) / U.shape[0])
    return U


def part_b_c(U: np.ndarray, args, report: dict) -> None:
    n = U.shape[0]
    conv, dense = HyperKernel(**CONV), HyperKernel()
    cpu = {}
    t = best_times({"conv": lambda: conv(U), "dense": lambda: dense(U)}, args.repeats, cpu)
    n_images = conv.factorize_rows(U).x_distinct.shape[0]
    report["b"] = {
        "rows": n,
        "images": n_images,
        "conv_s": t["conv"],
        "dense_s": t["dense"],
        "conv_cpu_s": cpu["conv"],
        "dense_cpu_s": cpu["dense"],
    }
    print(f"## (b) the Gram of {n} pixel rows of {n_images} images, HyperKernel defaults")
    print()
    print("| | conv f | dense f | conv / dense |")
    print("|---|---|---|---|")
    print(f"| wall s | {t['conv']:.2f} | {t['dense']:.2f} | {t['conv'] / t['dense']:.2f} |")
    print(
        f"| CPU s (all threads) | {cpu['conv']:.2f} | {cpu['dense']:.2f} "
        f"| {cpu['conv'] / cpu['dense']:.2f} |"
    )
    print()

    m = args.subset
    rng = np.random.default_rng(1)
    subsets = {"half": distinct_images(U[: m // 2], rng), "full": distinct_images(U[:m], rng)}
    for rows in subsets.values():
        if not conv.factorize_rows(rows).all_distinct:
            raise AssertionError("the perturbed rows still share images")
    t_sub = best_times(
        {
            "half": lambda: conv(subsets["half"]),
            "full": lambda: conv(subsets["full"]),
            "factorised": lambda: conv(U[:m]),
        },
        args.repeats,
    )
    half = m // 2
    exponent = np.log(t_sub["full"] / t_sub["half"]) / np.log(m / half)
    # t = fixed + per_pair * rows^2 through the two sizes, then at n rows
    per_pair = (t_sub["full"] - t_sub["half"]) / (m**2 - half**2)
    fixed = t_sub["full"] - per_pair * m**2
    scaled = t_sub["full"] * (n / m) ** 2
    resolved = per_pair > 0 and fixed >= 0  # else timing noise: fall back on the plain scaling
    extrapolated = fixed + per_pair * n**2 if resolved else scaled
    sub_images = conv.factorize_rows(U[:m]).x_distinct.shape[0]
    report["c"] = {
        "subset": m,
        "subset_images": sub_images,
        "unfactorised_half_s": t_sub["half"],
        "unfactorised_subset_s": t_sub["full"],
        "factorised_subset_s": t_sub["factorised"],
        "exponent": exponent,
        "unfactorised_seconds_per_row_pair": per_pair,
        "unfactorised_fixed_s": fixed,
        "unfactorised_extrapolated_s": extrapolated,
        "unfactorised_scaled_s": scaled,
        "two_point_fit_used": bool(resolved),
        "factorised_s": t["conv"],
    }
    print("## (c) the same conv Gram without the x-only factorisation (f per pair of rows)")
    print()
    print(
        f"{m} rows of (b) ({sub_images} images) with every row's image made distinct "
        f"(+1e-9 on one pixel each): {t_sub['full']:.3f} s; {m // 2} such rows: "
        f"{t_sub['half']:.3f} s (time ~ rows^{exponent:.2f}). The same {m} rows factorised: "
        f"{t_sub['factorised']:.3f} s ({t_sub['full'] / t_sub['factorised']:.1f}x faster)."
    )
    if resolved:  # the times fit fixed + per_pair * rows^2
        print(
            f"Extrapolated to {n} rows: the two sizes give {per_pair * 1e6:.2f} us per row "
            f"pair and {fixed:.3f} s fixed, so {fixed:.3f} + {per_pair * 1e6:.2f}e-6 x {n}^2 = "
            f"{extrapolated:.0f} s without the factorisation, against {t['conv']:.2f} s with "
            f"it (b): {extrapolated / t['conv']:.0f}x. (Scaling the {m} rows' time by "
            f"({n} / {m})^2 instead: {scaled:.0f} s, {scaled / t['conv']:.0f}x.)"
        )
    else:
        why = (
            "the time has no measurable fixed part (it grows as rows^2 or faster)"
            if per_pair > 0
            else "the two sizes do not resolve a per-pair cost (timing noise)"
        )
        print(
            f"Extrapolated to {n} rows: {why}, so the {m} rows' time is scaled by the number "
            f"of row pairs, {t_sub['full']:.3f} s x ({n} / {m})^2 = {scaled:.0f} s without "
            f"the factorisation, against {t['conv']:.2f} s with it (b): "
            f"{scaled / t['conv']:.0f}x."
        )
    print()


def peak_memory(U: np.ndarray, params: dict, workdir: str) -> dict:
    path = os.path.join(workdir, "rows.npy")
    np.save(path, U)
    command = [sys.executable, "-c", MEMORY_PROGRAM, path, json.dumps(params)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def part_d(U: np.ndarray, workdir: str, report: dict) -> None:
    output = U.shape[0] ** 2 * 8
    rss, traced = {}, {}
    for name, params in (("conv", CONV), ("dense", {})):
        memory = peak_memory(U, params, workdir)
        rss[name] = (memory["peak_bytes"] - memory["rss_before_bytes"]) / output
        traced[name] = memory["traced_peak_bytes"] / output
    report["d"] = {"output_bytes": output, "rss_over_output": rss, "traced_over_output": traced}
    print(f"## (d) peak memory of (b)'s Gram in a fresh interpreter, / the output's {output:,} B")
    print()
    print("| | conv f | dense f |")
    print("|---|---|---|")
    print(f"| peak resident (VmHWM) - VmRSS before | {rss['conv']:.2f} | {rss['dense']:.2f} |")
    print(
        f"| tracemalloc peak (numpy's allocations) | {traced['conv']:.2f} | {traced['dense']:.2f} |"
    )
    print()
    print("1.00 = the output alone.")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500, help="MNIST images")
    parser.add_argument("--pixels", type=int, default=20, help="pixel rows per image in (b)")
    parser.add_argument("--subset", type=int, default=400, help="rows timed unfactorised in (c)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--nt-python", default=None, help="interpreter with neural-tangents")
    parser.add_argument(
        "--nt-batch-size", type=int, default=100, help="nt.batch's batch_size (0: no batching)"
    )
    parser.add_argument("--quick", action="store_true", help="100 images, subset 200, 1 repeat")
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = parser.parse_args()
    if args.quick:
        args.images, args.subset, args.repeats = 100, 200, 1
    images, _ = load_mnist(n_samples=args.images, random_state=0)
    U, _ = pixel_regression(images, pixels_per_image=args.pixels, random_state=0)
    machine = platform.processor() or platform.machine()
    print(
        f"# conv f benchmark: {args.images} MNIST images, {U.shape[0]} pixel rows; {machine}, "
        f"{os.cpu_count()} cores, numpy {np.__version__}, best of {args.repeats}"
    )
    print()
    report = {"machine": machine, "cores": os.cpu_count(), "args": vars(args)}
    with tempfile.TemporaryDirectory() as workdir:
        part_a(images, args, workdir, report)
        part_b_c(U, args, report)
        part_d(U, workdir, report)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(report, file, indent=2)


if __name__ == "__main__":
    main()
