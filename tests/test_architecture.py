"""The shape of the code base (docs/architecture.md), checked on the source.

* no module imports another module's private (``_name``) names: what a module
  offers the others is its public names;
* the experiments, examples and benchmarks use only the public API: no
  ``sklearn_hyperkernel._private`` module and no private name;
* the layers point one way (:data:`LAYERS`): every module belongs to a layer and
  imports only lower layers; ``recursions`` (pure array functions) imports
  nothing of scikit-learn;
* the names docs/architecture.md cites exist.
"""

from __future__ import annotations

import ast
import importlib
import pathlib
import re

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


# The layers, bottom to top (docs/architecture.md): a unit (a subpackage or a top-level
# module of the package) may import units of a lower rank, or itself, never one above it.
LAYERS = {
    # the foundations: what everything may read
    "_version": 0,
    "config": 0,
    "progress": 0,
    "datasets": 0,
    "_utils": 1,
    "_params": 1,
    # pure array recursions (no scikit-learn); the finite network's training loop
    "recursions": 2,
    "_training": 2,
    # f's kernel: one interface, a file per architecture (dense, conv)
    "_f": 3,
    # the Gram engine (distinct x, blocks, the fused pass); the torch network
    "_gram": 4,
    "network": 4,
    # the one Gram operator; the network estimators' shared base
    "_operator": 5,
    "_network_estimator": 5,
    # scikit-learn kernels; the network estimators
    "kernels": 6,
    "hypernetwork": 6,
    # solvers over the operator
    "_solvers": 7,
    # the kernel estimator
    "kernel_ridge": 8,
    # the public face and the experiments on top of it
    "__init__": 9,
    "experiments": 9,
}


def _unit(parts: tuple[str, ...]) -> str:
    return parts[0].removesuffix(".py") if parts else "__init__"


def _imported_units(path: pathlib.Path, source: str | None = None) -> list[tuple[int, str]]:
    """``(line, unit)`` of every import of the package's own modules in ``path`` (or in
    ``source`` read as if it were that module)."""
    here = path.relative_to(PACKAGE).parent.parts  # the package path of this module
    tree = _tree(path) if source is None else ast.parse(source)
    found = []
    for node in ast.walk(tree):
        targets: list[tuple[str, ...]] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                module = tuple((node.module or "").split(".")) if node.module else ()
                full = (*base, *module)
                # ``from . import x`` / ``from .. import x``: the names may be modules
                targets = [full] if full else [(alias.name,) for alias in node.names]
            elif node.module and node.module.split(".")[0] == "sklearn_hyperkernel":
                full = tuple(node.module.split(".")[1:])
                targets = [full] if full else [(alias.name,) for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "sklearn_hyperkernel" and len(parts) > 1:
                    targets.append(tuple(parts[1:]))
        found += [(node.lineno, _unit(target)) for target in targets]
    return found


def test_every_unit_of_the_package_has_a_layer():
    units = {_unit(path.relative_to(PACKAGE).parts) for path in MODULES}
    assert units <= set(LAYERS), f"units without a layer: {sorted(units - set(LAYERS))}"
    assert {"_utils", "_gram", "_operator", "_solvers", "_training"} <= units


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_imports_point_down_the_layers(path):
    unit = _unit(path.relative_to(PACKAGE).parts)
    for line, target in _imported_units(path):
        if target == unit or target not in LAYERS:
            continue
        assert LAYERS[target] < LAYERS[unit], (
            f"{_name(path)}:{line}: {unit} (layer {LAYERS[unit]}) imports {target} "
            f"(layer {LAYERS[target]})"
        )


def test_the_layer_check_sees_an_upward_import():
    # the check itself can fail: these imports in a module of _gram are read as such
    source = (
        "from ..kernels import HyperKernel\n"
        "from . import tiles\n"
        "import sklearn_hyperkernel._solvers.cg\n"
    )
    units = _imported_units(PACKAGE / "_gram" / "engine.py", source)
    assert units == [(1, "kernels"), (2, "_gram"), (3, "_solvers")]
    assert LAYERS["kernels"] > LAYERS["_gram"] and LAYERS["_solvers"] > LAYERS["_gram"]


def _resolve(dotted: str) -> bool:
    """Whether ``sklearn_hyperkernel.<dotted>`` names a module or an attribute of one."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module("sklearn_hyperkernel." + ".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


def test_the_architecture_page_cites_names_that_exist():
    """Every dotted name of the package that docs/architecture.md cites in backticks (the
    path of one call, where each concern lives) exists: a module, or an attribute of one."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    files = set(re.findall(r"`([\w/]+\.py)`", text))
    missing_files = sorted(
        name
        for name in files
        if not any((base / name).exists() for base in (PACKAGE, ROOT, ROOT / "tests"))
    )
    assert len(files) >= 10 and not missing_files, missing_files
    cited = set(re.findall(r"`([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)+)`", text)) - files
    units = set(LAYERS) - {"__init__"}
    ours = sorted(name for name in cited if name.split(".")[0] in units)
    assert len(ours) >= 20, ours  # the page does cite the code
    missing = [name for name in ours if not _resolve(name)]
    assert not missing, f"docs/architecture.md cites names that do not exist: {missing}"
    assert not _resolve("_gram.engine.no_such_function")
