"""LoRA adapters on the real demo model with real PEFT: loading, mixed batches, checks, max_loras, the cache.

The adapters (``lora_adapters`` in ``tests/conftest.py``) have seeded random ``lora_B``
weights, so each answers differently from the base model; what these tests check is that every
row of a batch gets exactly its own adapter's greedy answer, and that a load that should fail
fails with a message naming the folder and leaves the model as it was.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fakes import app_client, fake_settings
from lora_adapters import make_adapter, with_config, with_extra_tensor
from seesay.api.app import build_app
from seesay.demo.catalogue import COLOURS_BY_KEY, KINDS_BY_KEY, Item, draw_picture, png_bytes
from seesay.engine.adapters import AdapterSource
from seesay.engine.config import TransformersEngineConfig
from seesay.engine.transformers import TransformersEngine
from seesay.errors import AdapterLoadError, ModelNotFoundError
from seesay.images import NormalizedImage, load_image
from seesay.types import ChatMessage, GenerationRequest, SamplingParams

QUESTION = "What colour is this item?"
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=12)


@pytest.fixture(scope="module")
def engine() -> Iterator[TransformersEngine]:
    """A demo-model engine of this module's own, so adapters it loads stay here."""
    engine = TransformersEngine(TransformersEngineConfig(device="cpu"))
    yield engine
    engine.close()


@pytest.fixture
def loaded(engine: TransformersEngine, lora_adapters: dict[str, Path]) -> Iterator[TransformersEngine]:
    """The engine with ``shop`` and ``kids`` loaded; every adapter is unloaded afterwards."""
    for name in ("shop", "kids"):
        engine.load_adapter(AdapterSource(name, str(lora_adapters[name])))
    yield engine
    for name in [n for n in ("shop", "kids", "vision", "extra") if n in engine.adapters]:
        engine.unload_adapter(name)


def picture(engine: TransformersEngine, kind: str = "tshirt", colour: str = "red") -> NormalizedImage:
    image = draw_picture(Item(KINDS_BY_KEY[kind], COLOURS_BY_KEY[colour]), random.Random(0))
    return load_image(png_bytes(image), engine.pixel_budget)


def ask(image: NormalizedImage, adapter: str | None, question: str = QUESTION) -> GenerationRequest:
    return GenerationRequest((ChatMessage.user(image, question),), GREEDY, adapter=adapter)


def answers(engine: TransformersEngine, requests: list[GenerationRequest]) -> list[str]:
    return [result.text for result in engine.generate([engine.prepare(r) for r in requests])]


def test_an_adapter_changes_the_answer_and_unloading_the_last_unwraps_the_model(
        engine: TransformersEngine, lora_adapters: dict[str, Path]) -> None:
    image = picture(engine)
    base_model = engine.adapters.model
    before = answers(engine, [ask(image, None)])
    assert before == ["red"]
    loaded = engine.load_adapter(AdapterSource("shop", str(lora_adapters["shop"])))
    assert type(engine.adapters.model).__name__ == "PeftModel"
    assert len(loaded.fingerprint) == 64
    shop = answers(engine, [ask(image, "shop")])
    assert shop != before
    assert answers(engine, [ask(image, None)]) == before  # the base model, through the disabled adapter
    engine.unload_adapter("shop")
    assert engine.adapters.model is base_model  # plain again: base-only serving never runs through PEFT
    assert answers(engine, [ask(image, None)]) == before
    with pytest.raises(ModelNotFoundError, match="'shop' is not loaded"):
        engine.prepare(ask(image, "shop"))


def test_a_mixed_batch_answers_every_row_as_if_it_ran_alone(loaded: TransformersEngine) -> None:
    engine = loaded
    red, blue = picture(engine), picture(engine, "bag", "blue")
    requests = [ask(red, "shop"), ask(red, None), ask(blue, "kids"), ask(blue, "shop"), ask(blue, None),
                ask(red, "kids", "这是什么颜色？")]
    alone = [answers(engine, [request])[0] for request in requests]
    assert len({alone[0], alone[1], alone[2]}) == 3  # the adapters and the base model answer differently
    prepared = [engine.prepare(request) for request in requests]
    assert {p.batch_group for p in prepared} == {None}  # the scheduler may put them in one batch
    assert engine.adapters.row_groups([r.adapter for r in requests]) == [list(range(len(requests)))]
    assert [result.text for result in engine.generate(prepared)] == alone


def test_a_vision_tower_adapter_is_served_but_batched_on_its_own(loaded: TransformersEngine,
                                                                 lora_adapters: dict[str, Path]) -> None:
    engine = loaded
    engine.load_adapter(AdapterSource("vision", str(lora_adapters["vision"])))
    assert not engine.adapters.mixable  # PEFT splits layer inputs by row; the vision tower's are patches
    red = picture(engine)
    requests = [ask(red, "vision"), ask(red, "shop"), ask(red, None), ask(red, "vision")]
    assert [engine.prepare(r).batch_group for r in requests] == ["vision", "shop", None, "vision"]
    alone = [answers(engine, [request])[0] for request in requests]
    assert alone[0] not in (alone[1], alone[2])
    assert answers(engine, requests) == alone  # a batch that still mixes them runs per adapter


def test_tensors_that_match_no_layer_are_an_error_not_silently_dropped(
        loaded: TransformersEngine, lora_adapters: dict[str, Path], tmp_path: Path) -> None:
    engine = loaded
    red = picture(engine)
    before = answers(engine, [ask(red, "shop"), ask(red, None)])
    folder = with_extra_tensor(lora_adapters["shop"], tmp_path / "extra",
                               "base_model.model.model.visual.blocks.0.attn.qkv.lora_A.weight", (8, 64))
    with pytest.raises(AdapterLoadError, match="silently dropped") as error:
        engine.load_adapter(AdapterSource("extra", str(folder)))
    assert str(folder) in error.value.message and "visual.blocks.0.attn.qkv" in error.value.message
    assert "extra" not in engine.adapters
    assert answers(engine, [ask(red, "shop"), ask(red, None)]) == before  # the model is as it was


def test_an_adapter_of_other_shapes_is_an_error_naming_the_folder(loaded: TransformersEngine,
                                                                  lora_adapters: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    engine = loaded
    folder = with_config(lora_adapters["shop"], tmp_path / "rank4", r=4)  # weights of rank 8
    with pytest.raises(AdapterLoadError, match="does not fit the served model") as error:
        engine.load_adapter(AdapterSource("extra", str(folder)))
    assert str(folder) in error.value.message and "size mismatch" in error.value.message
    assert "extra" not in engine.adapters and "shop" in engine.adapters


def test_missing_files_and_other_bases_are_told_apart(engine: TransformersEngine, lora_adapters: dict[str, Path],
                                                      tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterLoadError, match=r"adapter_config\.json and adapter_model\.safetensors missing"):
        engine.load_adapter(AdapterSource("extra", str(tmp_path / "empty")))
    moved = with_config(lora_adapters["kids"], tmp_path / "moved", base_model_name_or_path="Qwen/Qwen3-VL-8B")
    with caplog.at_level(logging.WARNING, logger="seesay.engine.peft_adapters"):
        engine.load_adapter(AdapterSource("extra", str(moved)))  # folders move: a warning, not an error
    try:
        assert "trained on 'Qwen/Qwen3-VL-8B'" in caplog.text
    finally:
        engine.unload_adapter("extra")


# --- through the service and the API ----------------------------------------------------------


def chat(model: str, image_url: str) -> dict[str, object]:
    content = [{"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": QUESTION}]
    return {"model": model, "messages": [{"role": "user", "content": content}], "temperature": 0,
            "max_tokens": 12}


async def post(client: httpx.AsyncClient, body: dict[str, object]) -> tuple[str, str]:
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"], response.headers["x-seesay-cache"]


async def test_max_loras_unloads_the_least_recently_used_and_the_cache_knows_retrained_weights(
        engine: TransformersEngine, lora_adapters: dict[str, Path], tmp_path: Path) -> None:
    from fakes import data_url

    image = data_url(png_bytes(draw_picture(Item(KINDS_BY_KEY["tshirt"], COLOURS_BY_KEY["red"]), random.Random(0))))
    settings = fake_settings(served_model_name="seesay-demo", max_loras=2, allow_runtime_lora_updating=True,
                             lora_modules=[f"shop={lora_adapters['shop']}", f"kids={lora_adapters['kids']}"])
    async with app_client(build_app(settings, engine)) as client:
        shop, cache = await post(client, chat("shop", image))
        assert cache == "miss"
        loaded = await client.post("/v1/load_lora_adapter", json={"lora_name": "vision",
                                                                   "lora_path": str(lora_adapters["vision"])})
        assert loaded.status_code == 200
        models = [card["id"] for card in (await client.get("/v1/models")).json()["data"]]
        assert models == ["seesay-demo", "shop", "vision"]  # kids was the least recently used
        assert "kids" not in engine.adapters and "shop" in engine.adapters and "vision" in engine.adapters
        assert await post(client, chat("shop", image)) == (shop, "hit-memory")
        # The same name, retrained: other weights, never the old answers.
        retrained = make_adapter(tmp_path / "shop-2", seed=11)
        assert (await client.post("/v1/unload_lora_adapter", json={"lora_name": "shop"})).status_code == 200
        body = {"lora_name": "shop", "lora_path": str(retrained)}
        assert (await client.post("/v1/load_lora_adapter", json=body)).status_code == 200
        new_answer, cache = await post(client, chat("shop", image))
        assert cache == "miss" and new_answer != shop
    for name in ("shop", "vision"):
        engine.unload_adapter(name)


def test_seesay_ask_answers_with_an_adapter_by_folder_or_by_configured_name(
        lora_adapters: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from seesay.cli import main

    monkeypatch.setenv("SEESAY_DEVICE", "cpu")
    monkeypatch.setenv("SEESAY_SAFETY_IMAGE_DETECTOR", "off")
    monkeypatch.setenv("SEESAY_LORA_MODULES", f"shop={lora_adapters['shop']}")

    def ask_cli(*options: str) -> str:
        assert main(["ask", "example:red-tshirt", QUESTION, "--temperature", "0", "--max-new-tokens", "12",
                     *options]) == 0
        return capsys.readouterr().out.strip()

    base = ask_cli()
    assert base == "red"
    by_name = ask_cli("--adapter", "shop")
    assert by_name != base
    assert ask_cli("--adapter", str(lora_adapters["shop"])) == by_name  # the same adapter by its folder
