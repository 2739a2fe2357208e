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
    cells = [float(v) for v in re.findall(rf"\| ({NUMBER}) ± {NUMBER}", table)]
    assert cells and all(0.0 <= v < 1.0 for v in cells)
    assert "hyper-nngp 0.051/0.045/0.037/0.026" in table
    assert _png_ok(tmp_path / "table1_reconstructions.png")
    errors = json.loads((tmp_path / "table1.json").read_text())["errors"]
    for task in ("representation", "inpainting"):
        for n in (10, 20):
            baseline = np.mean(errors[f"{task}|mean-predictor|-|{n}"])
            for model in ("hyperkernel", "hyper-nngp"):
                assert np.mean(errors[f"{task}|{model}|fourier|{n}"]) < baseline
                assert np.mean(errors[f"{task}|{model}|selected|{n}"]) < baseline
            assert f"{task}|hypernetwork|fourier|{n}" in errors


def test_fig1_quick_variances_and_closed_form(tmp_path):
    assert fig1.main(["--quick", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "fig1.json").read_text())
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
        assert len(curve) == 2 and all(0.0 <= a <= 1.0 for a in curve)
    text = (tmp_path / "fig2.md").read_text()
    assert "Reduced to fit a CPU" in text
    assert _png_ok(tmp_path / "fig2_accuracy.png")


def test_dispatcher_usage_and_unknown_name(capsys):
    assert dispatcher.main(["--help"]) == 0
    assert dispatcher.main(["nope"]) == 2
    assert "table1" in capsys.readouterr().out
