"""LoRA adapters through the HTTP API, with a FakeEngine: model ids, load/unload, max_loras, the cache.

The fake engine answers an adapter's requests with the adapter's name first
(``"shop: 0 image(s): ..."``) and loads adapters from folders holding the two files of a PEFT
adapter (:func:`fakes.fake_adapter_folder`), so these tests check what the API and the service
do with adapters; loading real weights is tested with the demo model in
``tests/integration/test_engine_adapters.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes import FakeEngine, app_client, fake_adapter_folder, fake_settings, png_bytes, wait_until
from seesay.api.app import build_app

CACHE = "x-seesay-cache"


def chat(model: str, text: str = "what is this?") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], "temperature": 0}


async def answer(client: httpx.AsyncClient, model: str, text: str = "what is this?") -> httpx.Response:
    response = await client.post("/v1/chat/completions", json=chat(model, text))
    assert response.status_code == 200, response.text
    return response


def text_of(response: httpx.Response) -> str:
    return str(response.json()["choices"][0]["message"]["content"])


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    return {name: fake_adapter_folder(tmp_path / name, weights=name.encode()) for name in ("shop", "kids", "gift")}


@pytest.fixture
async def served(engine: FakeEngine, folders: dict[str, Path]) -> AsyncIterator[httpx.AsyncClient]:
    """A server that starts with the adapter ``shop`` and may hold two."""
    settings = fake_settings(lora_modules=[f"shop={folders['shop']}"], max_loras=2, allow_runtime_lora_updating=True)
    async with app_client(build_app(settings, engine)) as client:
        yield client


async def load(client: httpx.AsyncClient, name: str, path: Path | str) -> httpx.Response:
    return await client.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)})


async def unload(client: httpx.AsyncClient, name: str) -> httpx.Response:
    return await client.post("/v1/unload_lora_adapter", json={"lora_name": name})


async def listed(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    return list((await client.get("/v1/models")).json()["data"])


# --- model ids ---------------------------------------------------------------------------------


async def test_a_start_up_adapter_is_a_model_whose_parent_is_the_served_model(
        served: httpx.AsyncClient, folders: dict[str, Path]) -> None:
    cards = await listed(served)
    assert [(c["id"], c["parent"]) for c in cards] == [("fake-vl", None), ("shop", "fake-vl")]
    assert cards[1]["root"] == str(folders["shop"])
    one = await served.get("/v1/models/shop")
    assert one.status_code == 200 and one.json()["parent"] == "fake-vl"


async def test_a_request_names_an_adapter_as_its_model_on_both_answer_routes(served: httpx.AsyncClient) -> None:
    shop = await answer(served, "shop")
    assert (text_of(shop), shop.json()["model"]) == ("shop: 0 image(s): what is this?", "shop")
    assert text_of(await answer(served, "fake-vl")) == "0 image(s): what is this?"
    form = await served.post("/v1/vqa", files={"image": ("a.png", png_bytes(), "image/png")},
                             data={"question": "colour?", "model": "shop", "temperature": "0"})
    assert form.status_code == 200, form.text
    assert form.json()["answer"] == "shop: 1 image(s): colour?"
    assert form.json()["model"] == "shop"


async def test_an_unknown_model_is_a_404_in_openai_error_shape(served: httpx.AsyncClient) -> None:
    for response in (await served.post("/v1/chat/completions", json=chat("nope")), await served.get("/v1/models/nope")):
        assert response.status_code == 404
        error = response.json()["error"]
        assert (error["code"], error["type"]) == ("model_not_found", "invalid_request_error")
        assert "fake-vl, shop" in error["message"]


# --- loading and unloading ---------------------------------------------------------------------


async def test_load_and_unload_answer_as_vllm_does(served: httpx.AsyncClient, folders: dict[str, Path]) -> None:
    loaded = await load(served, "kids", folders["kids"])
    assert (loaded.status_code, loaded.text) == (200, "Success: LoRA adapter 'kids' added successfully.")
    assert loaded.headers["content-type"].startswith("text/plain")
    assert text_of(await answer(served, "kids")) == "kids: 0 image(s): what is this?"
    again = await load(served, "kids", folders["kids"])
    assert again.status_code == 400 and "already been loaded" in again.json()["error"]["message"]
    removed = await unload(served, "kids")
    assert (removed.status_code, removed.text) == (200, "Success: LoRA adapter 'kids' removed successfully.")
    assert [c["id"] for c in await listed(served)] == ["fake-vl", "shop"]
    assert (await served.post("/v1/chat/completions", json=chat("kids"))).status_code == 404
    gone = await unload(served, "kids")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"


async def test_a_folder_that_is_not_an_adapter_is_a_400_that_names_it(served: httpx.AsyncClient,
                                                                      tmp_path: Path) -> None:
    missing = await load(served, "x", tmp_path / "nowhere")
    assert missing.status_code == 400
    assert str(tmp_path / "nowhere") in missing.json()["error"]["message"]
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "adapter_config.json").write_text("{}")
    half = await load(served, "x", tmp_path / "half")
    assert half.status_code == 400 and half.json()["error"]["code"] == "invalid_adapter"
    assert "adapter_model.safetensors missing" in half.json()["error"]["message"]
    assert (await load(served, "fake-vl", tmp_path / "half")).status_code == 400  # the base model's name


async def test_at_max_loras_the_least_recently_used_adapter_makes_room(served: httpx.AsyncClient, engine: FakeEngine,
                                                                       folders: dict[str, Path]) -> None:
    assert (await load(served, "kids", folders["kids"])).status_code == 200  # now shop, kids: full
    await answer(served, "shop")  # kids is now the least recently used
    assert (await load(served, "gift", folders["gift"])).status_code == 200
    assert [c["id"] for c in await listed(served)] == ["fake-vl", "shop", "gift"]  # listed in load order
    assert set(engine.adapters) == {"shop", "gift"}


async def test_adapters_in_use_are_never_unloaded(engine: FakeEngine, folders: dict[str, Path]) -> None:
    settings = fake_settings(lora_modules=[f"shop={folders['shop']}"], max_loras=1, allow_runtime_lora_updating=True)
    async with app_client(build_app(settings, engine)) as client:
        engine.gate.clear()  # hold the engine: the request for shop stays in flight
        busy = asyncio.create_task(client.post("/v1/chat/completions", json=chat("shop")))
        await wait_until(lambda: bool(engine.batches))
        refused = await load(client, "kids", folders["kids"])
        assert refused.status_code == 503 and "max_loras" in refused.json()["error"]["message"]
        assert (await unload(client, "shop")).status_code == 503
        engine.gate.set()
        assert text_of(await busy) == "shop: 0 image(s): what is this?"
        assert (await load(client, "kids", folders["kids"])).status_code == 200  # shop is idle now
        assert set(engine.adapters) == {"kids"}


async def test_the_document_lists_adapters_loaded_at_run_time(served: httpx.AsyncClient,
                                                              folders: dict[str, Path]) -> None:
    def models(document: dict[str, Any]) -> list[str]:
        return list(document["components"]["schemas"]["ChatCompletionRequest"]["properties"]["model"]["enum"])

    assert models((await served.get("/openapi.json")).json()) == ["fake-vl", "shop"]
    await load(served, "kids", folders["kids"])
    assert models((await served.get("/openapi.json")).json()) == ["fake-vl", "shop", "kids"]


async def test_loading_needs_an_api_key_when_the_server_has_keys(engine: FakeEngine,
                                                                 folders: dict[str, Path]) -> None:
    settings = fake_settings(api_keys=("sk-1",), allow_runtime_lora_updating=True)
    async with app_client(build_app(settings, engine)) as client:
        assert (await load(client, "kids", folders["kids"])).status_code == 401
        body = {"lora_name": "kids", "lora_path": str(folders["kids"])}
        keyed = await client.post("/v1/load_lora_adapter", json=body, headers={"Authorization": "Bearer sk-1"})
        assert keyed.status_code == 200


# --- the cache ---------------------------------------------------------------------------------


async def test_the_cache_tells_adapters_and_their_weights_apart(served: httpx.AsyncClient, engine: FakeEngine,
                                                                folders: dict[str, Path]) -> None:
    first = await answer(served, "shop")
    assert [(await answer(served, m)).headers[CACHE] for m in ("shop", "fake-vl", "fake-vl")] == [
        "hit-memory", "miss", "hit-memory"]
    # Retrained: new weights under the same name never replay the old answers.
    await unload(served, "shop")
    fake_adapter_folder(folders["shop"], weights=b"retrained")
    await load(served, "shop", folders["shop"])
    again = await answer(served, "shop")
    assert (first.headers[CACHE], again.headers[CACHE]) == ("miss", "miss")
    assert len(engine.batches) == 3


async def test_a_load_that_fails_at_max_loras_leaves_the_least_recently_used_adapter_served(
        served: httpx.AsyncClient, engine: FakeEngine, folders: dict[str, Path], tmp_path: Path) -> None:
    assert (await load(served, "kids", folders["kids"])).status_code == 200  # full: shop, kids
    assert (await load(served, "gift", tmp_path / "nowhere")).status_code == 400
    assert [c["id"] for c in await listed(served)] == ["fake-vl", "shop", "kids"]
    assert set(engine.adapters) == {"shop", "kids"}
    assert (await load(served, "gift", folders["gift"])).status_code == 200  # shop is still the least recent
    assert [c["id"] for c in await listed(served)] == ["fake-vl", "kids", "gift"]


async def test_runtime_adapter_loading_is_off_unless_allowed(engine: FakeEngine, folders: dict[str, Path]) -> None:
    """As in vLLM: the routes that make the server read a caller's path exist only when allowed."""
    app = build_app(fake_settings(), engine)
    assert not {"/v1/load_lora_adapter", "/v1/unload_lora_adapter"} & set(app.openapi()["paths"])
    async with app_client(app) as client:
        refused = await client.post("/v1/load_lora_adapter", json={"lora_name": "kids",
                                                                   "lora_path": str(folders["shop"])})
        assert refused.status_code == 404
        models = await client.get("/v1/models")
    assert [card["id"] for card in models.json()["data"]] == [engine.info().model]
