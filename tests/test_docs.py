"""The documentation site builds without a single warning and documents the API.

The build runs the example gallery (sphinx-gallery executes every script of
``examples/`` in its reduced mode, ``SKHK_EXAMPLE_QUICK=1``): about a minute.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import sklearn_hyperkernel

DOCS_DIR = Path(__file__).resolve().parents[1] / "docs"
PUBLIC_CLASSES = [name for name in sklearn_hyperkernel.__all__ if not name.startswith("_")]


def test_docs_build_without_warnings_and_document_the_api(tmp_path: Path) -> None:
    html_dir = tmp_path / "html"
    # -W: any warning fails the build; -E: no cached environment; doctrees go
    # to tmp_path too: the build writes into the source tree only the gallery's
    # generated pages (docs/auto_examples/, ignored by git);
    # run_stale_examples: run every example even when an earlier build cached it
    command = [
        sys.executable,
        "-m",
        "sphinx",
        "-W",
        "--keep-going",
        "-E",
        "-q",
        "-D",
        "sphinx_gallery_conf.run_stale_examples=1",
        "-b",
        "html",
        "-d",
        str(tmp_path / "doctrees"),
        str(DOCS_DIR),
        str(html_dir),
    ]
    env = dict(os.environ, SKHK_EXAMPLE_QUICK="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    build = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
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

    # the gallery: a page per script with its printed output and its figure
    gallery = html_dir / "auto_examples"
    index = (gallery / "index.html").read_text(encoding="utf-8")
    assert "SKHK_EXAMPLE_QUICK=1" in index  # says the pages come from reduced runs
    for script in sorted((DOCS_DIR.parent / "examples").glob("*.py")):
        page = (gallery / f"{script.stem}.html").read_text(encoding="utf-8")
        assert f"sphx_glr_{script.stem}_001.png" in page, f"{script.name}: no figure"
        assert "sphx-glr-script-out" in page, f"{script.name}: no printed output"
        assert f"sphx_glr_{script.stem}_thumb.png" in index
    user_guide = (html_dir / "user_guide.html").read_text(encoding="utf-8")
    assert 'href="auto_examples/plot_inpainting.html' in user_guide

    # every picture a page shows was copied into the site (the user guide's
    # figures, the results page's MyST ![caption](figures/name.png), the gallery's)
    shown = 0
    for page in html_dir.rglob("*.html"):
        for source in re.findall(r'<img[^>]*?src="([^"]+)"', page.read_text(encoding="utf-8")):
            if source.startswith(("http:", "https:", "data:")):
                continue
            assert (page.parent / source).is_file(), f"{page.name} shows a missing {source}"
            shown += 1
    assert shown >= 2 * len(list((DOCS_DIR.parent / "examples").glob("*.py")))
    results_md = (DOCS_DIR / "results.md").read_text(encoding="utf-8")
    for figure in re.findall(r"!\[[^\]]*\]\((figures/[^)\s]+)\)", results_md):
        assert (html_dir / "_images" / Path(figure).name).is_file(), f"{figure} not in the site"


def test_readme_quick_start_prints_what_it_says(capsys) -> None:
    """The README's quick start runs and prints the scores written under it: the default
    hyperkernel and the GP beat the mean predictor on held-out rows."""
    import contextlib
    import io
    import re
    import warnings

    readme = (DOCS_DIR.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Quick start") :]
    start = section.index("```python") + len("```python")
    code = section[start : section.index("```\n", start)]
    claimed = re.search(r"^# (test MSE: .*)$", code, flags=re.MULTILINE).group(1)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(code, "README.md", "exec"), {})
    assert printed.getvalue().strip() == claimed
    scores = [float(v) for v in re.findall(r"\d+\.\d+", claimed)]
    assert scores[0] < 0.6 * scores[2] and scores[1] < 0.6 * scores[2]
