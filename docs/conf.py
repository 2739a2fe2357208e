"""Sphinx configuration of the sklearn-hyperkernel documentation site.

Build with ``sphinx-build -W -b html docs docs/_build/html`` from the
repository root (``-W`` turns every warning into an error; the test suite
builds the site that way).

The example gallery (sphinx-gallery) runs every script of ``examples/`` during
the build, in its reduced mode (``SKHK_EXAMPLE_QUICK=1``, about a minute in
all); ``SKHK_EXAMPLE_QUICK=0 sphinx-build ...`` builds it at full size. The
generated pages, and the pictures the scripts save, go to
``docs/auto_examples/`` (ignored by git), never into ``examples/``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS_DIR = Path(__file__).resolve().parent
# the package is importable from the repository root even when not installed
sys.path.insert(0, str(DOCS_DIR.parent))

import sklearn_hyperkernel  # noqa: E402

project = "sklearn-hyperkernel"
author = "the sklearn-hyperkernel developers"
copyright = "2026, the sklearn-hyperkernel developers"  # noqa: A001
version = release = sklearn_hyperkernel.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# the pictures and tables the gallery's scripts write are outputs, not pages
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "auto_examples/_script_outputs"]
templates_path: list[str] = []

# API pages are written by hand in api.rst (autosummary tables + autodoc
# entries on the same page), so no stub files are generated into the source tree.
autosummary_generate = False
autodoc_typehints = "none"  # numpydoc shows the types from the docstrings
autodoc_member_order = "bysource"

numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# Markdown pages (math.md, performance.md, results.md): heading anchors so
# that links like ``math.md#dual-activations`` resolve.
myst_heading_anchors = 3
myst_enable_extensions = ["dollarmath"]

html_theme = "alabaster"
# wide enough for the examples' 100-character code lines without a scroll bar
html_theme_options = {"page_width": "1240px", "sidebar_width": "240px", "body_max_width": "none"}
html_title = f"sklearn-hyperkernel {release}"
html_static_path: list[str] = []


# ---------------------------------------------------------------- example gallery
# Every example runs in its reduced mode unless the caller chose otherwise.
os.environ.setdefault("SKHK_EXAMPLE_QUICK", "1")
# one BLAS / torch thread, as the test suite runs the examples
os.environ.setdefault("OMP_NUM_THREADS", "1")


class ExampleOutputArgv:
    """``sys.argv[1:]`` of each example the gallery runs: an output folder.

    The scripts write their PNG files to their first argument (default: the
    working directory, which the gallery sets to ``examples/``). The gallery
    shows the figures it captures, so the files go to ``_script_outputs``
    beside the generated pages (``docs/auto_examples/``, ignored by git).
    """

    def __repr__(self) -> str:  # a stable value for Sphinx's configuration cache
        return "ExampleOutputArgv"

    def __reduce__(self):
        # Sphinx pickles the configuration with the environment, and a class
        # defined in conf.py cannot be pickled by reference: store its name
        # (each build re-reads conf.py and uses the live object)
        return (str, (repr(self),))

    def __call__(self, gallery_conf, script_vars) -> list[str]:
        folder = Path(script_vars["target_file"]).parent / "_script_outputs"
        folder.mkdir(exist_ok=True)
        # relative to the example's folder (the working directory of its run),
        # so that the paths it prints name no folder of the building machine
        return [os.path.relpath(folder, Path(script_vars["src_file"]).parent)]


sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    # run every script (demo.py included: its reduced Table 1 takes seconds)
    "filename_pattern": r"\.py$",
    "within_subsection_order": "FileNameSortKey",
    "reset_argv": ExampleOutputArgv(),
    # an example that raises fails the build
    "abort_on_example_error": True,
    "download_all_examples": False,
    "remove_config_comments": True,
    "min_reported_time": 1,
    "show_signature": False,
}
