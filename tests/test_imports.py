"""The layering promise: the pure math never loads a framework, and importing the package stays cheap."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
