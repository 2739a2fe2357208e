"""The shape of the code base (docs/architecture.md), checked on the source.

* no module imports another module's private (``_name``) names: what a module
  offers the others is its public names;
* the experiments, examples and benchmarks use only the public API: no
  ``sklearn_hyperkernel._private`` module and no private name;
* the layers point one way: ``recursions`` (pure array functions) imports
  nothing of scikit-learn, and nothing below the estimators imports them.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sklearn_hyperkernel"
MODULES = sorted(PACKAGE.rglob("*.py"))
ON_TOP = sorted(
    [*(ROOT / "examples").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]
    + sorted((PACKAGE / "experiments").glob("*.py"))
)


def _name(path: pathlib.Path) -> str:
    return str(path.relative_to(ROOT))


def _tree(path: pathlib.Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_the_checks_see_the_package():
    assert len(MODULES) > 20 and len(ON_TOP) > 10


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_modules_import_only_public_names_of_each_other(path):
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ImportFrom):
            private = [alias.name for alias in node.names if _is_private(alias.name)]
            # a private *module* of the package may be imported as a module
            # (``from . import _arrays``); a private name of a module may not
            if node.module is None:
                continue
            assert not private, f"{_name(path)}:{node.lineno} imports {private} from {node.module}"


@pytest.mark.parametrize("path", ON_TOP, ids=_name)
def test_experiments_examples_and_benchmarks_use_the_public_api(path):
    in_package = PACKAGE in path.parents
    for node in ast.walk(_tree(path)):
        modules: list[str] = []
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative import inside the experiments package
                module = (
                    "sklearn_hyperkernel." + ("experiments." if node.level == 1 else "") + module
                )
            modules = [module.rstrip(".")]
            if module.startswith("sklearn_hyperkernel"):
                private = [a.name for a in node.names if _is_private(a.name)]
                if in_package and node.level == 1:
                    private = []  # the experiments' own shared module (experiments/_common)
                assert not private, f"{_name(path)}:{node.lineno} imports private {private}"
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        for module in modules:
            if not module.startswith("sklearn_hyperkernel"):
                continue
            parts = module.split(".")[1:]
            if in_package and parts == ["experiments", "_common"]:
                parts = []  # the experiments' own shared module
            assert not any(_is_private(part) for part in parts), (
                f"{_name(path)}:{node.lineno} imports the private module {module}"
            )


def test_recursions_are_pure_array_functions():
    imported = set()
    for node in ast.walk(_tree(PACKAGE / "recursions.py")):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.add(node.module.split(".")[0])
    assert not imported & {"sklearn", "torch", "joblib", "scipy"}, imported


@pytest.mark.parametrize(
    "lower", ["recursions", "_rows", "_arrays", "_gram_tiles", "_gram_engine", "_operator"]
)
def test_lower_layers_do_not_import_the_estimators(lower):
    estimators = {"kernel_ridge", "hypernetwork", "_network_estimator", "_cg", "_nystrom"}
    for node in ast.walk(_tree(PACKAGE / f"{lower}.py")):
        if isinstance(node, ast.ImportFrom) and node.level:
            names = {node.module or ""} | {alias.name for alias in node.names}
            assert not names & estimators, f"{lower} imports {names & estimators}"
