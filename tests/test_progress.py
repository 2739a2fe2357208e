"""Progress reporting of long computations (``verbose``): lines off a terminal, tqdm bars on one."""

from __future__ import annotations

import re
import sys
import types

import numpy as np
import pytest

from sklearn_hyperkernel import HyperKernel, HyperNNGP
from sklearn_hyperkernel import progress as progress_module


def shared_image_rows(seed: int = 0) -> np.ndarray:
    """23 rows ``[x | z]`` (8 x columns, 2 z columns), each of 5 images repeated for 5 pixels."""
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(5, 8))
    images[2] = 0.0
    x = np.repeat(images, 5, axis=0)
    z = rng.uniform(-1.0, 1.0, size=(25, 2))
    z[3] = 0.0
    rows = np.hstack([x, z])[:23]
    return rows[rng.permutation(23)]


def distinct_rows(n_rows: int = 19, seed: int = 1) -> np.ndarray:
    """Rows ``[x | z]`` whose x rows all differ."""
    return np.random.default_rng(seed).normal(size=(n_rows, 10))


_LINE = re.compile(
    r"^\[(HyperKernel|HyperNNGP)\] (Gram|K @ V) (\d+) x (\d+): "
    r"(\d+)/(\d+) blocks \((\d+)%\), "
    r"(\d+\.\d) s(, about \d+ s left)?$"
)


def _parse(output: str) -> list[tuple]:
    lines = output.strip().splitlines()
    parsed = []
    for line in lines:
        match = _LINE.match(line)
        assert match, f"unexpected progress line {line!r}"
        name, what, n_a, n_b, done, total, percent, seconds, left = match.groups()
        counts = (int(n_a), int(n_b), int(done), int(total), int(percent))
        parsed.append((name, what, *counts, float(seconds), left))
    return parsed


def _check_counts(lines, total):
    """Counts grow to ``total``; the percentages and the "left" estimate follow them."""
    done = [line[4] for line in lines]
    assert done == sorted(set(done)) and done[-1] == total
    for _name, _what, _n_a, _n_b, count, line_total, percent, _seconds, left in lines:
        assert line_total == total
        assert percent == round(100 * count / total)
        assert (left is None) == (count == total)
    assert lines[-1][6] == 100
    assert [line[7] for line in lines] == sorted(line[7] for line in lines)  # elapsed time grows


@pytest.mark.parametrize("n_jobs", [None, 2])
def test_verbose_2_prints_progress_lines_up_to_100_percent(capsys, n_jobs):
    X, Y = shared_image_rows(), distinct_rows()
    HyperKernel(verbose=2, block_size=5, n_jobs=n_jobs)(X)
    lines = _parse(capsys.readouterr().out)
    assert {line[:4] for line in lines} == {("HyperKernel", "Gram", 23, 23)}
    _check_counts(lines, 5)  # ceil(23 / 5) blocks
    if n_jobs is None:
        assert [line[4] for line in lines] == [1, 2, 3, 4, 5]  # one line per block

    HyperNNGP(verbose=2, block_size=7, n_jobs=n_jobs)(X, Y)
    lines = _parse(capsys.readouterr().out)
    assert {line[:4] for line in lines} == {("HyperNNGP", "Gram", 23, 19)}
    _check_counts(lines, 4)
    if n_jobs is None:
        assert [line[4] for line in lines] == [1, 2, 3, 4]

    kernel = HyperKernel(verbose=2, block_size=10, n_jobs=n_jobs)
    kernel.gram_matvec(kernel.factorize_rows(X), np.ones(23))
    lines = _parse(capsys.readouterr().out)
    assert {line[:4] for line in lines} == {("HyperKernel", "K @ V", 23, 23)}
    _check_counts(lines, 3)
    if n_jobs is None:
        assert [line[4] for line in lines] == [1, 2, 3]


def test_verbose_0_and_short_verbose_1_print_nothing(capsys):
    X = shared_image_rows()
    for verbose in (0, 1):
        kernel = HyperKernel(verbose=verbose, block_size=2)
        kernel(X)
        kernel(X, X[:5])
        kernel(X, eval_gradient=True)
        kernel.gram_matvec(kernel.factorize_rows(X), np.ones(23))
        assert capsys.readouterr().out == ""


def test_verbose_1_prints_at_most_every_two_seconds(capsys, monkeypatch):
    # a clock that advances 0.9 s at each reading: at verbose=1 a line every
    # third block or so (>= 2 s apart), and the last one
    clock = iter(np.arange(0.0, 1000.0, 0.9))
    fake_time = types.SimpleNamespace(perf_counter=lambda: float(next(clock)))
    monkeypatch.setattr(progress_module, "time", fake_time)  # this module's clock only
    HyperKernel(verbose=1, block_size=1)(shared_image_rows())
    lines = _parse(capsys.readouterr().out)
    done = [line[4] for line in lines]
    assert 3 <= len(lines) < 23 // 2
    assert done[-1] == 23 and lines[-1][6] == 100
    assert done == sorted(done)
    # lines at least 2 s apart, but for the last one, which is always printed
    assert np.all(np.diff([line[7] for line in lines])[:-1] >= 2.0 - 1e-9)


# ------------------------------------------------- the mechanism itself: bar or lines
def _fake_clock(monkeypatch, step: float = 0.5):
    clock = iter(np.arange(0.0, 1000.0, step))
    fake_time = types.SimpleNamespace(perf_counter=lambda: float(next(clock)))
    monkeypatch.setattr(progress_module, "time", fake_time)


def test_off_a_terminal_progress_prints_the_greppable_lines(capsys, monkeypatch):
    _fake_clock(monkeypatch)
    progress = progress_module.ProgressLog("[Source] Gram 4 x 4", 4, verbose=2, unit="blocks")
    assert not progress.shows_bar  # pytest's captured stdout is no terminal
    for _ in range(4):
        progress.step()
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "[Source] Gram 4 x 4: 1/4 blocks (25%), 0.5 s, about 2 s left",
        "[Source] Gram 4 x 4: 2/4 blocks (50%), 1.0 s, about 1 s left",
        "[Source] Gram 4 x 4: 3/4 blocks (75%), 1.5 s, about 0 s left",
        "[Source] Gram 4 x 4: 4/4 blocks (100%), 2.0 s",
    ]
    # a caller's own lines (one per epoch) instead of the count lines; status is for the bar
    epochs = progress_module.ProgressLog("[Net]", 2, verbose=1, unit="epochs", count_lines=False)
    epochs.step(status="loss 1", line="[Net] Epoch 1: loss 1")
    epochs.step(0, status="running loss 0.5")
    epochs.step(status="loss 0.2", line="[Net] Epoch 2: loss 0.2")
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["[Net] Epoch 1: loss 1", "[Net] Epoch 2: loss 0.2"]


def test_log_prints_one_line_naming_its_source(capsys):
    progress_module.log("HyperKernelRegressor", "CG converged in 12 iterations")
    assert capsys.readouterr().out == "[HyperKernelRegressor] CG converged in 12 iterations\n"
    assert progress_module.format_log_line("fig1", "done") == "[fig1] done"


def test_on_a_terminal_progress_is_a_tqdm_bar(capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert progress_module.on_terminal()
    bars = []

    class RecordingTqdm(progress_module.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(progress_module, "tqdm", RecordingTqdm)
    HyperKernel(verbose=2, block_size=5)(shared_image_rows())
    assert len(bars) == 1 and bars[0].n == bars[0].total == 5 and bars[0].disable  # closed
    output = capsys.readouterr().out
    assert "[HyperKernel] Gram 23 x 23" in output and "5/5" in output and "100%|" in output
    assert _LINE.search(output) is None  # no log lines besides the bar
    # a bar with a status; log() writes above it and stays one line
    progress = progress_module.ProgressLog("[Net]", 3, verbose=2, unit="epochs", count_lines=False)
    assert progress.shows_bar
    progress.step(status="loss 0.25", line="[Net] Epoch 1: loss 0.25")
    progress_module.log("Net", "a message")
    progress.step(2)
    assert not progress.shows_bar  # closed at the last step
    output = capsys.readouterr().out
    assert "loss 0.25" in output and "3/3" in output and "[Net] a message\n" in output
    assert "Epoch 1" not in output  # lines are for logs, the bar replaces them
    # at verbose=1 the bar waits min_interval seconds: a short computation shows nothing
    HyperKernel(verbose=1, block_size=5)(shared_image_rows())
    assert capsys.readouterr().out == ""


def test_verbose_0_shows_no_bar_and_no_line(capsys, monkeypatch):
    for terminal in (False, True):
        monkeypatch.setattr(sys.stdout, "isatty", lambda terminal=terminal: terminal)
        progress = progress_module.ProgressLog("[Source] Gram 4 x 4", 4, verbose=0)
        assert not progress.shows_bar
        for _ in range(4):
            progress.step(status="s", line="l")
        assert progress.done == 4
    assert capsys.readouterr().out == ""


# ------------------------------------------------------------ interrupted computations


def _blas_and_torch_threads() -> tuple:
    """BLAS's thread counts (threadpoolctl), torch's and numba's where they are loaded."""
    from threadpoolctl import threadpool_info

    counts = [tuple(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")]
    for name in ("torch", "numba"):
        module = sys.modules.get(name)
        if module is not None:
            counts.append(module.get_num_threads())
    return tuple(counts)


def _interrupted(kind: str):
    """The call of ``kind`` on small rows (every step of it shows a bar at ``verbose=2``)."""
    from sklearn_hyperkernel import HyperKernelRegressor

    X = distinct_rows(n_rows=40)
    y = np.sin(X[:, 0])
    kernel = HyperKernel(verbose=2, block_size=5, n_jobs=2)
    if kind == "gram":
        return lambda: kernel(X)
    if kind == "gram_matvec":
        rows = kernel.factorize_rows(X)
        return lambda: kernel.gram_matvec(rows, np.ones(40))
    if kind == "network":
        pytest.importorskip("torch")
        from sklearn_hyperkernel import HypernetworkRegressor

        net = HypernetworkRegressor(max_epochs=5, verbose=2, random_state=0, f_width=8, g_width=8)
        return lambda: net.fit(X, y)
    if kind == "predict":
        model = HyperKernelRegressor(block_size=5, n_jobs=2, verbose=2).fit(X, y)
        return lambda: model.predict(X)
    if kind == "cholesky":  # a Gram of several blocks
        model = HyperKernelRegressor(kernel=kernel)
        return lambda: model.fit(X, y)
    options = {"n_components": 10} if kind == "nystrom" else {}
    model = HyperKernelRegressor(solver=kind, block_size=5, n_jobs=2, verbose=2, **options)
    return lambda: model.fit(X, y)


@pytest.mark.parametrize(
    "kind", ["gram", "gram_matvec", "cholesky", "cg", "nystrom", "predict", "network"]
)
def test_an_interrupted_computation_closes_its_bar_and_restores_thread_limits(
    capsys, monkeypatch, kind
):
    """Ctrl-C (a KeyboardInterrupt from inside the loop) while the traceback is kept, as a
    REPL or IPython keeps it: no tqdm bar is left open, the next one starts at position 0,
    and BLAS's, torch's and numba's thread counts are those from before (tqdm #1345, #1025)."""
    call = _interrupted(kind)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    before = _blas_and_torch_threads()
    original = progress_module.ProgressLog.step
    steps = []

    def interrupting_step(self, *args, **kwargs):
        original(self, *args, **kwargs)
        steps.append(self)
        if self.shows_bar:  # Ctrl-C while a bar is open
            raise KeyboardInterrupt

    monkeypatch.setattr(progress_module.ProgressLog, "step", interrupting_step)
    with pytest.raises(KeyboardInterrupt) as kept:  # the traceback stays referenced
        call()
    assert steps and kept.traceback
    assert len(progress_module.tqdm._instances) == 0, "a bar was left open"
    assert _blas_and_torch_threads() == before
    with progress_module.tqdm(total=1, file=sys.stdout) as bar:
        assert bar.pos == 0
    capsys.readouterr()


def test_nystrom_at_verbose_1_shows_its_blocks_with_the_time_left(capsys, monkeypatch):
    """The long step of a Nystroem fit, K_nm's blocks, reports at verbose=1 (a line every
    two seconds with the time left), not only at verbose=2."""
    from sklearn_hyperkernel import HyperKernelRegressor

    X = distinct_rows(n_rows=80)
    _fake_clock(monkeypatch, step=0.9)
    model = HyperKernelRegressor(solver="nystrom", n_components=20, block_size=4, verbose=1)
    model.fit(X, np.sin(X[:, 0]))
    lines = [
        line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("[HyperKernelRegressor] Nystroem K_nm^T W K_nm: ")
    ]
    assert 2 <= len(lines) < 20  # 20 blocks, at most a line per 2 s of the fake clock
    assert "20/20 blocks (100%)" in lines[-1]
    assert all("s left" in line for line in lines[:-1])


def test_a_gaussian_process_fit_shows_progress_through_its_kernels_verbose(capsys):
    """GaussianProcessRegressor has no verbose: the kernel's own reports each Gram (with its
    gradient) that the optimiser asks for, as the user guide says."""
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, WhiteKernel

    X = distinct_rows(n_rows=30)
    kernel = ConstantKernel() * HyperNNGP(normalize_x=True, verbose=2, block_size=10)
    noise = WhiteKernel(noise_level_bounds=(1e-10, 1.0))
    gp = GaussianProcessRegressor(kernel + noise, normalize_y=True, random_state=0)
    gp.fit(X, np.sin(X[:, 0]))
    finished = [
        line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("[HyperNNGP] Gram 30 x 30: 3/3 blocks (100%)")
    ]
    # one Gram with its gradient per evaluation of the marginal likelihood, and the last
    assert len(finished) >= 3
