"""Every script in examples/ runs to the end in its reduced mode.

Each script runs in a fresh interpreter with ``SKHK_EXAMPLE_QUICK=1`` and the
working directory a temporary folder, as a user would run it; it must exit
with status 0, print numbers, and write the pictures it draws (into the folder
given as its first argument: the docs' example gallery runs them that way).
Each has the header sphinx-gallery needs (docstring title underlined by ``=``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.py"))
NUMBER = re.compile(r"\d+\.\d+")


def _png_size(path: Path) -> int:
    """Size of a PNG file in bytes (0 when it is missing or not a PNG)."""
    if not path.is_file() or path.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
        return 0
    return path.stat().st_size


def test_examples_are_found() -> None:
    names = {path.name for path in EXAMPLES}
    expected = {
        "demo.py",
        "plot_gp_hyper_nngp.py",
        "plot_grid_search_depths.py",
        "plot_hypernetwork_training.py",
        "plot_inpainting.py",
        "plot_kernel_regression_pixels.py",
    }
    assert expected <= names
    header = (REPO_ROOT / "examples" / "GALLERY_HEADER.rst").read_text(encoding="utf-8")
    assert "SKHK_EXAMPLE_QUICK=1" in header


@pytest.mark.parametrize("script", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_has_a_gallery_header(script: Path) -> None:
    """sphinx-gallery takes the title from the docstring's first line, underlined by '='."""
    import ast

    docstring = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8")), clean=False)
    lines = docstring.strip("\n").splitlines()
    assert len(lines) > 3 and lines[0].strip(), f"{script.name}: no title line"
    underline = lines[1]
    assert set(underline) == {"="} and len(underline) >= len(lines[0]), (
        f"{script.name}: title not underlined by '='"
    )


@pytest.mark.parametrize("script", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_runs_in_reduced_mode(script: Path, tmp_path: Path) -> None:
    env = dict(os.environ)
    env["SKHK_EXAMPLE_QUICK"] = "1"
    env["MPLBACKEND"] = "Agg"
    # one BLAS / torch thread per script: the reduced runs are small, and with
    # other processes on the cores, torch's spinning worker threads made a
    # 14 s script take 60 s
    env["OMP_NUM_THREADS"] = "1"
    # the package is importable from the repository, installed or not
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    # the plot_ scripts write into the folder given as their first argument,
    # demo.py (make demo) into its default ./results
    out_dir = tmp_path / "pictures"
    arguments = [] if script.name == "demo.py" else [str(out_dir)]
    if arguments:
        out_dir.mkdir()
    run = subprocess.run(
        [sys.executable, str(script), *arguments],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, f"{script.name} failed:\n{run.stdout}\n{run.stderr}"
    assert NUMBER.search(run.stdout), f"{script.name} printed no numbers:\n{run.stdout}"
    if script.name == "demo.py":
        # the demo runs the Table 1 experiment: its table (with the paper's numbers
        # beside ours), its JSON and its reconstruction picture land in ./results
        assert "| paper: hyper-nngp |" in run.stdout
        assert _png_size(tmp_path / "results" / "table1_reconstructions.png") > 1000
        errors = json.loads((tmp_path / "results" / "table1.json").read_text())["errors"]
        for task in ("representation", "inpainting"):
            for n in (20, 50):
                baseline = errors[f"{task}|mean-predictor|-|{n}"][0]
                assert 0.0 < errors[f"{task}|hyper-nngp|selected-ml|{n}"][0] < baseline
                assert 0.0 < errors[f"{task}|hyperkernel|fourier|{n}"][0] < baseline
    if "savefig" in script.read_text(encoding="utf-8"):
        pictures = list(out_dir.glob("*.png"))
        assert pictures, f"{script.name} wrote no PNG into the folder given as its argument"
        assert all(_png_size(picture) > 1000 for picture in pictures)
        assert not list(tmp_path.glob("*.png")), "a picture went to the working directory"
