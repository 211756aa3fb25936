"""LoRA adapters on a running ``seesay serve``, through the official ``openai`` SDK and plain HTTP.

The server starts with one adapter given the vLLM way (``--lora-modules shop=PATH``), loads and
unloads another at run time (``/v1/load_lora_adapter``, ``/v1/unload_lora_adapter``), and the SDK
sees each adapter as a model of its own.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from server_process import ServerProcess, running_server

from seesay.demo.catalogue import draw_samples, png_bytes

QUESTION = "What colour is this item?"
PICTURE = "data:image/png;base64," + base64.b64encode(png_bytes(draw_samples(1, seed=7)[0].image)).decode()


@pytest.fixture(scope="module")
def server(model_path: Path, lora_adapters: dict[str, Path],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("server") / "serve.log"
    args = ["--lora-modules", f"shop={lora_adapters['shop']}", "--max-loras", "2"]
    with running_server(model_path, log, args, max_wait_ms=5, safety_image_detector="off",
                        allow_runtime_lora_updating="true") as process:
        yield process


@pytest.fixture
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused")


def ask(client: openai.OpenAI, model: str) -> tuple[str, str, str]:
    """The answer, the model the response names, and where the answer came from."""
    raw = client.chat.completions.with_raw_response.create(
        model=model, temperature=0, max_tokens=12,
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": PICTURE}},
                                               {"type": "text", "text": QUESTION}]}])
    completion = raw.parse()
    return str(completion.choices[0].message.content), completion.model, raw.headers["x-seesay-cache"]


def test_the_sdk_lists_adapters_and_answers_with_the_one_it_names(client: openai.OpenAI,
                                                                  server: ServerProcess) -> None:
    assert [model.id for model in client.models.list()] == [server.model_name, "shop"]
    assert client.models.retrieve("shop").to_dict()["parent"] == server.model_name
    base, base_model, _ = ask(client, server.model_name)
    shop, shop_model, cache = ask(client, "shop")
    assert shop != base and (base_model, shop_model, cache) == (server.model_name, "shop", "miss")
    assert ask(client, "shop") == (shop, "shop", "hit-memory")
    assert ask(client, server.model_name)[0::2] == (base, "hit-memory")  # the cache tells them apart


def test_adapters_load_and_unload_at_run_time(client: openai.OpenAI, server: ServerProcess,
                                              lora_adapters: dict[str, Path]) -> None:
    body = {"lora_name": "kids", "lora_path": str(lora_adapters["kids"])}
    loaded = httpx.post(f"{server.base_url}/v1/load_lora_adapter", json=body, timeout=60)
    assert (loaded.status_code, loaded.text) == (200, "Success: LoRA adapter 'kids' added successfully.")
    assert "kids" in [model.id for model in client.models.list()]
    kids, model, _ = ask(client, "kids")
    assert model == "kids" and kids != ask(client, "shop")[0]
    again = httpx.post(f"{server.base_url}/v1/load_lora_adapter", json=body, timeout=60)
    assert again.status_code == 400 and again.json()["error"]["code"] == "invalid_adapter"
    unloaded = httpx.post(f"{server.base_url}/v1/unload_lora_adapter", json={"lora_name": "kids"}, timeout=60)
    assert unloaded.status_code == 200
    assert "kids" not in [model.id for model in client.models.list()]
    with pytest.raises(openai.NotFoundError) as error:
        ask(client, "kids")
    assert error.value.code == "model_not_found"


def test_an_unknown_adapter_is_a_404_in_openai_error_shape(client: openai.OpenAI, server: ServerProcess) -> None:
    with pytest.raises(openai.NotFoundError) as error:
        ask(client, "no-such-adapter")
    assert error.value.code == "model_not_found" and error.value.type == "invalid_request_error"
    assert f"this server serves: {server.model_name}, shop" in error.value.message
    gone = httpx.post(f"{server.base_url}/v1/unload_lora_adapter", json={"lora_name": "no-such-adapter"})
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"
