"""Fixtures for API unit tests: the real app, in process, in front of a FakeEngine."""

from __future__ import annotations

from typing import Any

import pytest

from fakes import FakeEngine, app_client, fake_settings
from seesay.api.app import build_app


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
async def client(engine: FakeEngine) -> Any:
    """An HTTP client for an app with the default test settings, its lifespan running."""
    async with app_client(build_app(fake_settings(), engine)) as client:
        yield client
