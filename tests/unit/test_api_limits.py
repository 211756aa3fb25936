"""What a client can learn before it sends a picture (``GET /v1/seesay/limits``) and after
(the visual tokens in ``usage.prompt_tokens_details``)."""

from __future__ import annotations

import httpx

from fakes import FakeEngine, app_client, data_url, fake_settings, png_bytes
from seesay.api.app import build_app
from seesay.images import PixelBudget


async def test_limits_report_the_engines_pixel_budget_and_input_limits() -> None:
    budget = PixelBudget(min_pixels=2 * 32 * 32, max_pixels=100 * 32 * 32)
    settings = fake_settings(max_images_per_request=3)
    async with app_client(build_app(settings, FakeEngine(budget=budget))) as client:
        limits = (await client.get("/v1/seesay/limits")).json()
    assert limits == {"min_pixels": budget.min_pixels, "max_pixels": budget.max_pixels, "factor": 32,
                      "max_images_per_request": 3, "max_image_bytes": settings.max_image_bytes}


async def test_limits_are_behind_the_api_keys() -> None:
    async with app_client(build_app(fake_settings(api_keys="sk-test"), FakeEngine())) as client:
        assert (await client.get("/v1/seesay/limits")).status_code == 401
        ok = await client.get("/v1/seesay/limits", headers={"Authorization": "Bearer sk-test"})
        assert ok.status_code == 200


async def test_usage_reports_the_pictures_visual_tokens(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    image = {"type": "image_url", "image_url": {"url": data_url(png_bytes(size=(640, 480)))}}
    body = {"model": "fake-vl", "messages": [{"role": "user", "content": [image, {"type": "text", "text": "hi"}]}]}
    usage = (await client.post("/v1/chat/completions", json=body)).json()["usage"]
    assert usage["prompt_tokens_details"] == {"image_tokens": engine.results[-1].usage.image_tokens}
    assert 0 < usage["prompt_tokens_details"]["image_tokens"] <= usage["prompt_tokens"]
