"""Fixtures for tests that run the real demo model (Qwen3VLForConditionalGeneration on CPU)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from seesay.engine.config import TransformersEngineConfig
from seesay.engine.transformers import TransformersEngine


@pytest.fixture(scope="session")
def engine() -> TransformersEngine:
    """The built-in demo model, loaded once for the whole session."""
    return TransformersEngine(TransformersEngineConfig(device="cpu"))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
