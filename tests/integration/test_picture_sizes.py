"""Every picture intake accepts is answered, over HTTP with the real demo model, under every budget.

Intake fits each picture to the request's pixel budget (:meth:`seesay.images.PixelBudget.target_size`)
and the engine refuses any picture that breaks it, so a sizing bug shows up here as a 400 for
a perfectly ordinary picture. Sizes run from 1x1 to 400x400 and aspect ratios up to 200:1.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from fakes import app_client, data_url, png_bytes
from seesay.api.app import build_app
from seesay.config import Settings
from seesay.engine.transformers import TransformersEngine
from seesay.images import PixelBudget

SIZES = [(1, 1), (1, 200), (200, 1), (2, 400), (400, 2), (3, 400), (80, 40), (40, 80), (31, 33), (33, 31),
         (17, 16), (48, 32), (100, 70), (250, 60), (7, 300), (128, 128), (399, 400), (400, 400)]
DEMO = 128 * 128

# (server budget; None keeps the demo model's, min = max = 16,384 px) and the request's own
# "seesay" pixel budget (None: the server's).
BUDGETS = {
    "demo-min-equals-max": (None, None),
    "wide-server": (PixelBudget(min_pixels=4096, max_pixels=65536), None),
    "narrow-server": (PixelBudget(min_pixels=1024, max_pixels=2048), None),
    "one-tile-server": (PixelBudget(min_pixels=1024, max_pixels=1024), None),
    "request-below-demo": (None, {"max_pixels": 4096, "min_pixels": 2048}),
    "request-max-below-server-min": (PixelBudget(min_pixels=4096, max_pixels=65536), {"max_pixels": 3000}),
}
QUESTION = "What colour is this item?"


@pytest.fixture
def app(
    engine: TransformersEngine, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FastAPI]:
    """The app in front of the session's demo engine, its server budget set for this test."""
    server, _ = BUDGETS[request.param]
    if server is not None:
        monkeypatch.setattr(engine, "pixel_budget", server)
    settings = Settings(safety=False, cache_policy="off", max_wait_ms=0)  # type: ignore[arg-type]
    yield build_app(settings, engine)


def chat(content: list[dict[str, Any]], options: dict[str, int] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "seesay-demo", "messages": [{"role": "user", "content": content}],
                            "max_tokens": 1, "temperature": 0}
    if options is not None:
        body["seesay"] = options
    return body


def request_budget(server: PixelBudget, options: dict[str, int] | None) -> PixelBudget:
    """The budget intake applies: the request's, with the server's filling what it leaves out."""
    if options is None:
        return server
    most = options.get("max_pixels", server.max_pixels)
    return PixelBudget(options.get("min_pixels", min(server.min_pixels, most)), most, server.factor)


@pytest.mark.parametrize("app", list(BUDGETS), indirect=True)
async def test_every_accepted_picture_is_answered_and_its_tokens_counted(
    app: FastAPI, engine: TransformersEngine, request: pytest.FixtureRequest
) -> None:
    server, options = BUDGETS[request.node.callspec.params["app"]]
    budget = request_budget(server or PixelBudget(DEMO, DEMO, 32), options)
    async with app_client(app) as client:
        text_only = await client.post("/v1/chat/completions", json=chat([{"type": "text", "text": QUESTION}], options))
        assert text_only.status_code == 200, text_only.text
        # <|vision_start|> and <|vision_end|> around the image's own tokens.
        text_tokens = text_only.json()["usage"]["prompt_tokens"] + 2
        for width, height in SIZES:
            picture = {"type": "image_url", "image_url": {"url": data_url(png_bytes(size=(width, height)))}}
            response = await client.post("/v1/chat/completions",
                                         json=chat([picture, {"type": "text", "text": QUESTION}], options))
            assert response.status_code == 200, f"{width}x{height} under {budget}: {response.text}"
            assert response.json()["usage"]["prompt_tokens"] == text_tokens + budget.image_tokens(width, height), (
                f"{width}x{height} under {budget}")
