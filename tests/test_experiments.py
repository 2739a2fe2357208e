"""The experiment commands in their --quick mode, and the data builders they use."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("torch")

from sklearn_hyperkernel.experiments import __main__ as dispatcher  # noqa: E402
from sklearn_hyperkernel.experiments import fig1, fig2, table1  # noqa: E402

NUMBER = r"\d+\.\d+"


def _png_ok(path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(8) == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000


def test_table1_quick_writes_table_and_kernels_beat_the_mean(tmp_path):
    assert table1.main(["--quick", "--out", str(tmp_path), "--seeds", "1"]) == 0
    table = (tmp_path / "table1.md").read_text()
    for task in ("representation", "inpainting"):
        assert f"### {task}" in table
    # one seed: plain values, no "± 0.0000" spread that was never measured
    assert "±" not in table and "one seed (no error bars)" in table
    cells = [float(v) for v in re.findall(rf"\| ({NUMBER}) \|", table)]
    assert cells and all(0.0 <= v < 1.0 for v in cells)
    assert "hyper-nngp 0.051/0.045/0.037/0.026" in table
    assert _png_ok(tmp_path / "table1_reconstructions.png")
    errors = json.loads((tmp_path / "table1.json").read_text())["errors"]
    for task in ("representation", "inpainting"):
        for n in (10, 20):
            baseline = np.mean(errors[f"{task}|mean-predictor|-|{n}"])
            for model in ("hyperkernel", "hyper-nngp"):
                assert np.mean(errors[f"{task}|{model}|fourier|{n}"]) < baseline
                assert np.mean(errors[f"{task}|{model}|selected-cv|{n}"]) < baseline
            assert np.mean(errors[f"{task}|hyper-nngp|selected-ml|{n}"]) < baseline
            assert f"{task}|hyperkernel|selected-ml|{n}" not in errors
            assert f"{task}|hypernetwork|fourier|{n}" in errors
    assert "| hyper-nngp | selected-ml |" in table


def test_table1_marginal_likelihood_matches_sklearn_gp():
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, WhiteKernel

    from sklearn_hyperkernel import HyperNNGP
    from sklearn_hyperkernel.datasets import load_images, pixel_regression

    images, _ = load_images("digits")
    U, y = pixel_regression(images[:12], pixels_per_image=10, random_state=0)
    kernel = HyperNNGP(z_dim=2, f_depth=2, g_depth=2, z_encoding="fourier", length_scale=0.7)
    gram = kernel(U)
    ridges = [1e-3, 1e-1]
    values = table1.log_marginal_likelihoods(gram, y, ridges)
    diagonal = np.mean(np.diag(gram))
    for ridge, value in zip(ridges, values, strict=True):
        solved = np.linalg.solve(gram + ridge * diagonal * np.eye(len(y)), y)
        scale = y @ solved / len(y)  # the profiled-out constant
        gp_kernel = ConstantKernel(scale, "fixed") * kernel + WhiteKernel(
            scale * ridge * diagonal, "fixed"
        )
        gp = GaussianProcessRegressor(gp_kernel, optimizer=None).fit(U, y)
        assert value == pytest.approx(gp.log_marginal_likelihood_value_, rel=1e-6)
    # the selection picks the grid point of highest likelihood, on training rows only
    args = table1._parser().parse_args(
        ["--source", "digits", "--select-f-depths", "1", "2", "--select-g-depths", "2"]
    )
    args.select_length_scales, args.select_ridges = [0.7], ridges
    chosen = table1._select(images[:12], "representation", "nngp", "fourier", "ml", args, 0)
    assert chosen["f_depth"] in (1, 2) and chosen["ridge"] in ridges
    assert chosen["n_images"] == 12 and np.isfinite(chosen["score"])


def test_fig1_quick_variances_and_closed_form(tmp_path, capsys):
    assert fig1.main(["--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "fig1.json").read_text())
    # even the quick run shows the paper's trend: the variance falls with f's width
    # (measured slope about -0.8), and says so
    assert fig1.width_trend(results["widths"], results["variance"]["f"]) < -0.5
    assert "as in the paper's Fig. 1" in printed
    fake = {"widths": [8, 32], "variance": {"f": [0.005, 0.08]}}
    assert "does NOT fall" in fig1.trend_sentence(fake, type("A", (), {"seeds": 5})())
    for which in ("f", "g"):
        variances = results["variance"][which]
        assert len(variances) == len(results["widths"]) and all(v > 0 for v in variances)
    closed_form = np.asarray(results["closed_form"])
    assert np.all(np.isfinite(closed_form)) and closed_form[0] > closed_form[-1]
    widest = results["curves"][str(max(int(k) for k in results["curves"]))]
    assert np.max(np.abs(np.asarray(widest["mean"]) - closed_form)) < 0.5 * closed_form[0]
    assert _png_ok(tmp_path / "fig1_variance.png") and _png_ok(tmp_path / "fig1_theta.png")


def test_fig2_quick_accuracy_curves(tmp_path):
    assert fig2.main(["--quick", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "fig2.json").read_text())
    assert set(results["accuracy"]) == {"3x10", "6x10"}
    for curve in results["accuracy"].values():
        assert len(curve) == 8 and all(0.0 <= a <= 1.0 for a in curve)
    # It learns: chance is 1/12 = 0.083 (+- 0.016 on 300 test rows); the shallow g
    # reaches ~0.34 after 8 epochs and beats the deeper one (as in the paper).
    shallow, deep = results["accuracy"]["3x10"], results["accuracy"]["6x10"]
    assert shallow[-1] > 0.2 and shallow[-1] > shallow[0] + 0.1
    assert shallow[-1] > deep[-1]
    assert results["args"]["parameterization"] == "standard"
    assert not results["args"]["fixed_rotations"]
    text = (tmp_path / "fig2.md").read_text()
    assert "Reduced to fit a CPU" in text and "fresh training rotations each epoch" in text
    assert _png_ok(tmp_path / "fig2_accuracy.png")


def test_fig2_options_reach_the_note():
    args = fig2._parser().parse_args(["--parameterization", "ntk", "--fixed-rotations"])
    note = fig2.reduction_note(args)
    assert "ntk parameterisation" in note and "fixed training rotations drawn once" in note
    defaults = fig2._parser().parse_args([])
    assert (defaults.parameterization, defaults.learning_rate, defaults.momentum) == (
        "standard",
        0.01,
        0.0,
    )


def test_dispatcher_usage_and_unknown_name(capsys):
    assert dispatcher.main(["--help"]) == 0
    assert dispatcher.main(["nope"]) == 2
    assert "table1" in capsys.readouterr().out
