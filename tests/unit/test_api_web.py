"""The web page's routes: ``/`` and ``/web/…``, and the setting that turns them off (the browser
test is tests/e2e/test_web_page.py)."""

from __future__ import annotations

import httpx

from fakes import FakeEngine, app_client, fake_settings
from seesay.api.app import build_app
from seesay.api.routes.web import CONTENT_SECURITY_POLICY
from seesay.demo.examples import EXAMPLES, example_path


async def test_the_page_and_its_files_are_served_from_this_origin_only(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in CONTENT_SECURITY_POLICY
    for name in ("app.js", "budget.js", "i18n.js", "style.css"):
        served = await client.get(f"/web/{name}")
        assert served.status_code == 200 and served.text
        assert "http://" not in served.text and "https://" not in served.text, name
    assert "这件外套适合什么场合穿？" in (await client.get("/web/i18n.js")).text


async def test_the_gallery_lists_the_bundled_pictures(client: httpx.AsyncClient) -> None:
    gallery = (await client.get("/web/examples.json")).json()
    assert [entry["name"] for entry in gallery] == list(EXAMPLES)
    picture = await client.get(gallery[0]["url"])
    assert picture.status_code == 200 and picture.content == example_path(gallery[0]["name"]).read_bytes()


async def test_the_page_is_not_in_the_openapi_document(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert "/v1/seesay/limits" in paths
    assert not [path for path in paths if path == "/" or path.startswith("/web")]


async def test_web_page_off_gives_404_at_the_root() -> None:
    async with app_client(build_app(fake_settings(web_page=False), FakeEngine())) as client:
        assert (await client.get("/")).status_code == 404
        assert (await client.get("/web/app.js")).status_code == 404
        assert (await client.get("/v1/seesay/limits")).status_code == 200


async def test_the_page_is_served_without_a_key_and_asks_for_one() -> None:
    async with app_client(build_app(fake_settings(api_keys="sk-test"), FakeEngine())) as client:
        assert (await client.get("/")).status_code == 200
        assert (await client.get("/web/app.js")).status_code == 200
        assert (await client.get("/v1/models")).status_code == 401  # the page then shows the key field
