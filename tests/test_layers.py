"""The import direction of the layers, checked statically on every module of ``rmt_callbacks``.

Each package (or top-level module) of ``rmt_callbacks`` has a rank; a module may import from a lower rank, and
anything inside its own package. An import of a higher rank (upward) or of another package of the same rank
(sideways) fails, whether it sits at module level, inside a function or under ``TYPE_CHECKING``: a lazy import
is still a dependency. ``reference_models`` is a standalone sibling: it imports nothing from ``rmt_callbacks``,
and only ``reproduce`` and above may import it.

The run-time half of the promise (the pure layers load no framework) is ``tests/test_imports.py``; the static
check of framework imports at module level of the pure ranks, below, also covers modules no test imports.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "rmt_callbacks"
SIBLING = "reference_models"

# Higher may import lower; equal rank between different packages is sideways and forbidden.
LAYERS: dict[str, int] = {
    "_checks": 0,  # argument validators
    "_moved": 0,  # the error of a public name that moved
    "eigensolver": 1,  # the choice of eigensolver (validates its argument with _checks)
    "laws": 2,
    "spectral": 2,
    "fits": 3,
    "dynamics": 4,
    "analysis": 4,
    "scaling": 5,
    "figures": 6,
    "sinks": 6,
    "monitors": 7,
    "reproduce": 8,
    "integrations": 8,  # the monitors in plain loops and Hugging Face Trainer
    "comparison": 8,  # several MLflow runs side by side (rmt_callbacks.compare)
    "cli": 9,
}
FACADE = PACKAGE  # rmt_callbacks/__init__.py: the lazy facade, exempt
REFERENCE_MODELS_FROM = LAYERS["reproduce"]  # the lowest rank that may import reference_models
PURE_UP_TO = LAYERS["scaling"]  # ranks 0..PURE_UP_TO load no framework at module level
FRAMEWORKS = ("lightning", "pytorch_lightning", "lightning_fabric", "mlflow", "matplotlib")


def _facade_lazy() -> dict[str, str]:
    """The facade's ``_LAZY`` table: ``from rmt_callbacks import analyze`` is an import of its module."""
    tree = ast.parse((ROOT / PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets):
            value = ast.literal_eval(node.value)
            assert isinstance(value, dict)
            return {str(k): str(v) for k, v in value.items()}
    return {}


FACADE_LAZY = _facade_lazy()


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base.pop()
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(module: str, tree: ast.Module, is_package: bool = False) -> Iterator[tuple[int, str, str]]:
    """Every import in ``tree``, anywhere: (line, imported module, the statement as written).

    ``from pkg import name`` yields ``pkg.name`` (``name`` may be a submodule; for the rules a name of a
    module counts as its module). ``importlib.import_module("literal")`` counts too.
    """
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, f"import {alias.name}"
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node)
            written = f"from {'.' * node.level}{node.module or ''} import"
            for alias in node.names:
                yield node.lineno, f"{target}.{alias.name}", f"{written} {alias.name}"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and not node.args[0].value.startswith(".")
        ):
            yield node.lineno, node.args[0].value, f"import_module({node.args[0].value!r})"


def _top_level_imports(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """Imports executed when the module loads: not in a function, not under ``if TYPE_CHECKING``."""
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
        elif isinstance(node, ast.If):
            test = ast.unparse(node.test)
            if test not in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                stack.extend(node.body)
            stack.extend(node.orelse)
        elif isinstance(node, ast.Try | ast.With | ast.ClassDef):
            stack.extend(node.body)
            if isinstance(node, ast.Try):
                stack.extend([*node.orelse, *node.finalbody, *(s for h in node.handlers for s in h.body)])


def _component(module: str) -> str | None:
    """The package (or top-level module) of ``rmt_callbacks`` that ``module`` belongs to; None for the facade."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def violations(
    modules: Mapping[str, tuple[ast.Module, bool]],
    layers: Mapping[str, int] = LAYERS,
) -> list[str]:
    """Every broken rule in ``modules`` (name → (parsed source, is a package ``__init__``)), one line each."""
    found: list[str] = []
    for module, (tree, is_package) in sorted(modules.items()):
        root = module.split(".")[0]
        if root == SIBLING:
            for line, target, written in imports_of(module, tree, is_package):
                if target.split(".")[0] == PACKAGE:
                    found.append(
                        f"{module}:{line}: `{written}`: {SIBLING} is standalone, it imports nothing from {PACKAGE}"
                    )
            continue
        if module == FACADE:
            continue
        source = _component(module)
        if source not in layers:
            found.append(f"{module}: {PACKAGE}.{source} has no rank: add it to the layer table (LAYERS)")
            continue
        rank = layers[source]
        for line, target, written in imports_of(module, tree, is_package):
            parent, _, name = target.rpartition(".")
            if parent == PACKAGE and name not in layers:  # a name of the facade, not a package of it
                target = FACADE_LAZY.get(name, PACKAGE)
            head = target.split(".")[0]
            where = f"{module}:{line}: `{written}` ({target})"
            if head == SIBLING and rank < REFERENCE_MODELS_FROM:
                found.append(
                    f"{where}: only reproduce and above (rank >= {REFERENCE_MODELS_FROM}) may import {SIBLING}, "
                    f"{source} is rank {rank}"
                )
            if head != PACKAGE:
                continue
            dest = _component(target)
            if dest is None or dest == source:  # the facade itself (e.g. __version__), or inside one package
                continue
            if dest not in layers:
                found.append(f"{where}: {PACKAGE}.{dest} has no rank: add it to the layer table (LAYERS)")
            elif layers[dest] > rank:
                found.append(
                    f"{where}: upward import: {source} (rank {rank}) may not import {dest} (rank {layers[dest]})"
                )
            elif layers[dest] == rank:
                found.append(
                    f"{where}: sideways import: {source} and {dest} are both rank {rank}; move what they share down"
                )
        if rank <= PURE_UP_TO:
            for line, target in _top_level_imports(tree):
                if target.split(".")[0] in FRAMEWORKS:
                    found.append(
                        f"{module}:{line}: `{target}` at module level: {source} (rank {rank}) loads no framework, "
                        "import it where it is used"
                    )
    return found


def _parsed(package: str) -> dict[str, tuple[ast.Module, bool]]:
    return {
        module_name(path): (ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), path.name == "__init__.py")
        for path in sorted((ROOT / package).rglob("*.py"))
    }


@pytest.mark.parametrize("package", [PACKAGE, SIBLING])
def test_imports_follow_the_layers(package: str) -> None:
    modules = _parsed(package)
    assert len(modules) > 3, f"found only {sorted(modules)} under {ROOT / package}"
    found = violations(modules)
    assert not found, f"{len(found)} import(s) break the layering (see tests/test_layers.py):\n" + "\n".join(found)


def _one(module: str, source: str, is_package: bool = False) -> list[str]:
    return violations({module: (ast.parse(source), is_package)})


def test_the_checker_catches_upward_sideways_and_unknown_imports() -> None:
    [up] = _one("rmt_callbacks.laws.semicircle", "def f():\n    from ..monitors import dyson\n")
    assert "rmt_callbacks.laws.semicircle:2: `from ..monitors import dyson` (rmt_callbacks.monitors.dyson)" in up
    assert "laws (rank 2) may not import monitors (rank 7)" in up
    [side] = _one(
        "rmt_callbacks.sinks",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..figures import x\n",
        True,
    )
    assert "sideways" in side and "sinks and figures" in side
    [new] = _one("rmt_callbacks.newthing", "import os\n")
    assert "add it to the layer table" in new
    [facade] = _one("rmt_callbacks.spectral.x", "from rmt_callbacks import SpectrumMonitor\n")
    assert "(rmt_callbacks.monitors)" in facade and "upward" in facade
    [sibling] = _one("reference_models.data", "import rmt_callbacks.spectral\n")
    assert "standalone" in sibling
    [early] = _one("rmt_callbacks.fits.x", "def f():\n    import reference_models\n")
    assert "only reproduce and above" in early
    [framework] = _one(
        "rmt_callbacks.spectral.x", "try:\n    import matplotlib.pyplot as plt\nexcept ImportError:\n    pass\n"
    )
    assert "module level" in framework


def test_the_checker_allows_downward_internal_and_lazy_framework_imports() -> None:
    source = (
        "import lightning\nfrom .. import spectral\nfrom ..fits import power_law\nfrom . import _tails\n"
        "from rmt_callbacks import __version__\n"
    )
    assert _one("rmt_callbacks.monitors.dyson", source) == []
    assert _one("rmt_callbacks.analysis._engine", "from . import _tails\ndef f():\n    import mlflow\n") == []
    assert _one("rmt_callbacks.reproduce.rbm", "from reference_models import GaussianRBM\n") == []


def private_reaches(modules: Mapping[str, tuple[ast.Module, bool]]) -> list[str]:
    """Imports that reach into another package's private module or name (``analysis._result``,
    ``fits._result.MarchenkoPasturFit``, ``from ..figures import _canvas``): across packages only public names
    pass, so a package may reorganise its private modules without breaking another. The base module ``_checks``
    is the one private module every package may import."""
    found = []
    for module, (tree, is_package) in sorted(modules.items()):
        for line, target, written in imports_of(module, tree, is_package):
            parts = target.split(".")
            if parts[0] != PACKAGE or len(parts) < 3 or parts[1] == _component(module):
                continue
            private = [p for p in parts[2:] if p.startswith("_") and not p.startswith("__")]
            if private:
                found.append(f"{module}:{line}: `{written}` ({target}) reaches into {parts[1]}'s private {private[0]}")
    return found


def test_packages_import_each_other_by_public_names_only() -> None:
    found = private_reaches(_parsed(PACKAGE))
    assert not found, "export the name from the package (or make its module public):\n" + "\n".join(found)


def test_the_private_reach_checker_catches_and_allows() -> None:
    [reach] = private_reaches({"rmt_callbacks.monitors.x": (ast.parse("from ..analysis._result import f\n"), False)})
    assert "reaches into analysis's private _result" in reach
    [name] = private_reaches({"rmt_callbacks.monitors.x": (ast.parse("from ..fits import _helper\n"), False)})
    assert "private _helper" in name
    allowed = "from . import _gather\nfrom .._checks import positive\nfrom ..analysis import analyze\n"
    assert private_reaches({"rmt_callbacks.monitors.x": (ast.parse(allowed), False)}) == []


MAX_MODULE_LINES = 400


@pytest.mark.parametrize("package", [PACKAGE, SIBLING])
def test_every_module_fits_on_a_few_screens(package: str) -> None:
    """A module of more than :data:`MAX_MODULE_LINES` lines holds more than one concept: split it."""
    long = {
        str(path.relative_to(ROOT)): n
        for path in sorted((ROOT / package).rglob("*.py"))
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"
