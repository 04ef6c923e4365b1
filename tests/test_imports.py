"""The layering promise: the pure math never loads a framework, and importing the package stays cheap."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FRAMEWORKS = ("lightning", "pytorch_lightning", "mlflow", "matplotlib")
PURE_MODULES = (
    "rmt_callbacks.spectral",
    "rmt_callbacks.laws",
    "rmt_callbacks.fits",
    "rmt_callbacks.dynamics",
    "rmt_callbacks.analysis",
    "rmt_callbacks.scaling",
)


def _loaded_after(statement: str, names: tuple[str, ...]) -> list[str]:
    code = f"import sys\n{statement}\nprint(','.join(m for m in {names!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_layer_imports_no_framework(module: str) -> None:
    assert _loaded_after(f"import {module}", FRAMEWORKS) == []


def test_package_import_loads_neither_mlflow_nor_matplotlib() -> None:
    assert _loaded_after("import rmt_callbacks", (*FRAMEWORKS, "scipy")) == []


def test_unknown_attribute_is_an_attribute_error() -> None:
    import rmt_callbacks

    with pytest.raises(AttributeError, match="no_such_thing"):
        _ = rmt_callbacks.no_such_thing


def _imported(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it (a lazy import is still an import), relative ones resolved."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]  # a module's package; an __init__'s own
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_only_the_figures_package_imports_matplotlib() -> None:
    """One plotting home: matplotlib is imported in ``rmt_callbacks/figures`` and nowhere else (the examples may
    use its object API, never pyplot), and the figures import the pure layers, never the monitors, sinks or
    reproduction that use them."""
    figures = ROOT / "rmt_callbacks" / "figures"
    code = [p for d in ("rmt_callbacks", "reference_models", "benchmarks", "docs") for p in (ROOT / d).rglob("*.py")]
    outside = sorted(
        str(p.relative_to(ROOT))
        for p in code
        if figures not in p.parents and any(m.split(".")[0] == "matplotlib" for m in _imported(p))
    )
    assert outside == []
    pyplot = [p.name for p in (ROOT / "examples").rglob("*.py") if any("pyplot" in m for m in _imported(p))]
    assert pyplot == []
    upward = ("rmt_callbacks.monitors", "rmt_callbacks.sinks", "rmt_callbacks.reproduce", "rmt_callbacks.cli")
    reached = {p.name: sorted(m for m in _imported(p) if m.startswith(upward)) for p in figures.glob("*.py")}
    assert {name: found for name, found in reached.items() if found} == {}
    assert any(m.startswith("matplotlib") for p in figures.glob("*.py") for m in _imported(p))  # the check sees them
