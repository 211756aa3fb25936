"""Suite-wide set-up: offline hub, markers by folder, and the CI rule that nothing skips.

The CI rule (``CI`` set): a test that skips fails, unless it is marked ``gpu`` (hardware CI
machines never have), and a module that skips while it is collected (a module-level
``pytest.importorskip`` or ``pytest.skip(allow_module_level=True)``) fails too, whatever its
marks: its marks are unknown when its import stops, so skip GPU tests with a ``skipif`` mark.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_FOLDER_MARKERS = {"unit": pytest.mark.unit, "integration": pytest.mark.integration, "e2e": pytest.mark.e2e}
# Skips allowed in CI: optional hardware that CI machines never have.
_CI_ALLOWED_SKIP_MARKERS = {"gpu"}

pytest_plugins = ["pytester"]  # tests of this file's CI rule run inner pytest sessions


@pytest.fixture(scope="session")
def lora_adapters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """LoRA adapters of the demo model (see ``tests/lora_adapters.py``), made once a session:
    ``shop`` and ``kids`` on the language model's attention, ``vision`` on the vision tower too."""
    from lora_adapters import WITH_VISION_TOWER, make_adapter

    root = tmp_path_factory.mktemp("lora")
    return {"shop": make_adapter(root / "shop", seed=1), "kids": make_adapter(root / "kids", seed=2),
            "vision": make_adapter(root / "vision", seed=3, target_modules=WITH_VISION_TOWER)}


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        folder = Path(item.fspath).relative_to(root).parts[0]
        if folder in _FOLDER_MARKERS:
            item.add_marker(_FOLDER_MARKERS[folder])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """In CI a skipped test is a failure, unless it needs hardware CI does not have."""
    outcome = yield
    report = outcome.get_result()
    allowed = any(item.get_closest_marker(name) for name in _CI_ALLOWED_SKIP_MARKERS)
    if _in_ci() and report.skipped and not allowed and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must run every test: {report.longrepr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):  # type: ignore[no-untyped-def]
    """In CI a module (or any collector) that skips while being collected is a collection error."""
    outcome = yield
    report = outcome.get_result()
    if _in_ci() and report.skipped:
        report.outcome = "failed"
        report.longrepr = (f"{collector.nodeid or collector.path} skipped while being collected, in CI, which "
                           f"must run every test: {report.longrepr}")
