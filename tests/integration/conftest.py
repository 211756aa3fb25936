"""Fixtures for tests that run the real demo model (Qwen3VLForConditionalGeneration on CPU)."""

from __future__ import annotations

import pytest

from seesay.engine.config import TransformersEngineConfig
from seesay.engine.transformers import TransformersEngine


@pytest.fixture(scope="session")
def engine() -> TransformersEngine:
    """The built-in demo model, loaded once for the whole session."""
    return TransformersEngine(TransformersEngineConfig(device="cpu"))
