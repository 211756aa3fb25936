"""Module boundaries, checked on the source: who may import the web framework, the scheduler, torch.

Every import is counted, at module level or inside a function, so a boundary cannot be crossed
quietly by a late import.
"""

from __future__ import annotations

import ast
import subprocess
import sys
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
def test_only_the_engine_and_the_trainers_import_the_model_libraries(library: str) -> None:
    # The HF detector loads a classifier on demand; the fine-tuning commands import theirs when run.
    allowed = ("engine/", "demo/", "training/", "finetune/", "safety/hf_detector.py")
    others = {name: imports for name, imports in modules().items() if not name.startswith(allowed)}
    assert importing((library,), others) == []


def test_the_command_line_and_fine_tuning_datasets_load_without_the_model_libraries() -> None:
    """``seesay --help`` and dataset checks stay fast: torch, transformers and peft load when a command runs."""
    code = ("import sys, seesay.cli, seesay.finetune.datasets, seesay.finetune.scoring; seesay.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
