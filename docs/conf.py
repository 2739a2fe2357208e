"""Sphinx configuration of the sklearn-hyperkernel documentation site.

Build with ``sphinx-build -W -b html docs docs/_build/html`` from the
repository root (``-W`` turns every warning into an error; the test suite
builds the site that way).
"""

from __future__ import annotations

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
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
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
html_title = f"sklearn-hyperkernel {release}"
html_static_path: list[str] = []
