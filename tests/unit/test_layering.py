"""Module boundaries, checked on the source: who may import the web framework, the scheduler, torch.

Every import is counted, at module level or inside a function, so a boundary cannot be crossed
quietly by a late import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "seesay"


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports (``from x import y`` counts as ``x``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            names.add(node.module)
    return names


def modules(under: str = "") -> dict[str, set[str]]:
    """Source file (relative to the package) → what it imports, for every file under ``under``."""
    return {str(path.relative_to(PACKAGE)): imported_modules(path) for path in sorted((PACKAGE / under).rglob("*.py"))}


def importing(prefixes: tuple[str, ...], files: dict[str, set[str]]) -> list[str]:
    return [name for name, imports in files.items()
            if any(module == prefix or module.startswith(prefix + ".") for module in imports for prefix in prefixes)]


def test_the_boundary_checker_sees_imports_at_any_depth(tmp_path: Path) -> None:
    source = tmp_path / "late.py"
    source.write_text("def f():\n    from fastapi import FastAPI\n    import torch.nn\n")
    assert imported_modules(source) == {"fastapi", "torch.nn"}


def test_only_the_api_package_imports_the_web_framework() -> None:
    outside = {name: imports for name, imports in modules().items() if not name.startswith("api/")}
    assert importing(("fastapi", "starlette"), outside) == []
    assert importing(("fastapi",), modules("api")), "the API package was not found"


def test_the_api_does_not_reach_the_scheduler() -> None:
    assert importing(("seesay.scheduler", "seesay.batching"), modules("api")) == []


@pytest.mark.parametrize("library", ["torch", "transformers"])
def test_only_the_engine_and_the_demo_trainer_import_the_model_libraries(library: str) -> None:
    allowed = ("engine/", "demo/", "safety/hf_detector.py")  # the HF detector loads a classifier on demand
    others = {name: imports for name, imports in modules().items() if not name.startswith(allowed)}
    assert importing((library,), others) == []
