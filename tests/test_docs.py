"""The documentation site builds without a single warning and documents the API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sklearn_hyperkernel

DOCS_DIR = Path(__file__).resolve().parents[1] / "docs"
PUBLIC_CLASSES = [name for name in sklearn_hyperkernel.__all__ if not name.startswith("_")]


def test_docs_build_without_warnings_and_document_the_api(tmp_path: Path) -> None:
    html_dir = tmp_path / "html"
    # -W: any warning fails the build; -E: no cached environment; doctrees
    # go to tmp_path too, so the build writes nothing into the source tree
    command = [
        sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q",
        "-b", "html", "-d", str(tmp_path / "doctrees"), str(DOCS_DIR), str(html_dir),
    ]
    build = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, f"sphinx-build failed:\n{build.stdout}\n{build.stderr}"

    api_page = (html_dir / "api.html").read_text(encoding="utf-8")
    for name in PUBLIC_CLASSES:
        assert f'id="sklearn_hyperkernel.{name}"' in api_page, f"{name} missing from the API page"
    for function in ("relu_duals", "mlp_kernels", "z_input_kernel", "hyper_kernels"):
        assert f'id="sklearn_hyperkernel.recursions.{function}"' in api_page

    for page in ("index", "user_guide", "math", "performance"):
        assert (html_dir / f"{page}.html").is_file(), f"{page}.html was not built"
    assert (html_dir / "results.html").is_file()
    assert 'href="results.html"' in (html_dir / "index.html").read_text(encoding="utf-8")


def test_readme_quick_start_prints_what_it_says(capsys) -> None:
    """The README's quick start runs and prints the scores written under it: the default
    hyperkernel and the GP beat the mean predictor on held-out rows."""
    import contextlib
    import io
    import re
    import warnings

    readme = (DOCS_DIR.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Quick start") :]
    code = section[section.index("```python") + len("```python") : section.index("```\n", section.index("```python") + 9)]
    claimed = re.search(r"^# (test MSE: .*)$", code, flags=re.MULTILINE).group(1)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(code, "README.md", "exec"), {})
    assert printed.getvalue().strip() == claimed
    scores = [float(v) for v in re.findall(r"\d+\.\d+", claimed)]
    assert scores[0] < 0.6 * scores[2] and scores[1] < 0.6 * scores[2]
