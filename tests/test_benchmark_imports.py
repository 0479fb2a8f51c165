"""Every circuitdiff name a benchmark or helper script imports exists (they import lazily, inside functions).

Benchmarks are scripts, never timed tests, so nothing else runs them; a module moved by a
refactor once left ``benchmarks/gpu_llama8b.py`` importing ``circuitdiff.sweep.resources``,
which would have failed on the GPU it waits for.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = sorted([*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "scripts").glob("*.py")])


def circuitdiff_imports(path: Path) -> list[tuple[str, list[str]]]:
    imports = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "circuitdiff":
            imports.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            imports += [(alias.name, []) for alias in node.names if alias.name.split(".")[0] == "circuitdiff"]
    return imports


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_benchmark_imports_resolve(path: Path) -> None:
    for module_name, names in circuitdiff_imports(path):
        module = importlib.import_module(module_name)
        for name in names:
            assert hasattr(module, name) or importlib.util.find_spec(f"{module_name}.{name}") is not None, \
                f"{path.name}: from {module_name} import {name}"


def test_the_check_sees_lazy_imports() -> None:
    """The GPU script's imports sit inside functions: the walk must find them (else this test proves nothing)."""
    found = dict(circuitdiff_imports(next(p for p in BENCHMARKS if p.name == "gpu_llama8b.py")))
    assert "circuitdiff.resources" in found and "circuitdiff.interventions.exact" in found
