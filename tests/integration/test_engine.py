"""The transformers engine end to end on the real demo model."""

from __future__ import annotations

import random

import pytest
import torch
from PIL import Image
from torch import nn
from transformers import AutoModelForImageTextToText

from seesay.demo.catalogue import COLOURS_BY_KEY, KINDS_BY_KEY, Item, draw_picture, png_bytes
from seesay.engine.config import TransformersEngineConfig
from seesay.engine.patch_embedding import PatchProjection
from seesay.engine.transformers import TransformersEngine
from seesay.errors import ContextLengthExceededError, InvalidRequestError, SeesayError
from seesay.images import NormalizedImage, PixelBudget, load_image
from seesay.types import ChatMessage, GenerationRequest, GenerationResult, SamplingParams

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=32)


def drawn(kind: str, colour: str, seed: int = 0) -> Image.Image:
    """A fresh catalogue picture of a ``colour`` ``kind``."""
    return draw_picture(Item(KINDS_BY_KEY[kind], COLOURS_BY_KEY[colour]), random.Random(seed))


def picture(engine: TransformersEngine, kind: str, colour: str, seed: int = 0,
            budget: PixelBudget | None = None) -> NormalizedImage:
    return load_image(png_bytes(drawn(kind, colour, seed)), budget or engine.pixel_budget)


def ask(image: NormalizedImage, question: str, sampling: SamplingParams = GREEDY,
        **kwargs: object) -> GenerationRequest:
    return GenerationRequest((ChatMessage.user(image, question),), sampling, **kwargs)  # type: ignore[arg-type]


def answer(engine: TransformersEngine, request: GenerationRequest) -> GenerationResult:
    """One request on its own, the way the scheduler runs every batch: prepare, then generate."""
    return engine.generate([engine.prepare(request)])[0]


class DeltaRecorder:
    """A generation observer that keeps each row's text deltas."""

    def __init__(self) -> None:
        self.deltas: list[str] = []

    def on_text(self, row: int, delta: str) -> None:
        self.deltas.append(delta)

    def is_cancelled(self, row: int) -> bool:
        return False


def test_demo_model_answers_catalogue_questions(engine: TransformersEngine) -> None:
    red_tshirt = picture(engine, "tshirt", "red")
    assert answer(engine, ask(red_tshirt, "What colour is this item?")).text == "red"
    assert answer(engine, ask(red_tshirt, "这是什么颜色？")).text == "红色"


def test_batch_equals_one_by_one_under_greedy(engine: TransformersEngine) -> None:
    wide = load_image(png_bytes(drawn("jacket", "blue", 3).resize((256, 128))), engine.pixel_budget)
    requests = [
        ask(picture(engine, "tshirt", "red"), "What colour is this item?"),
        ask(wide, "这件外套适合什么场合穿？"),
        ask(picture(engine, "hat", "green", 5), "What is this item?",
            SamplingParams(temperature=0.0, max_new_tokens=3)),
        # A sampled row in the same batch must not change the greedy rows.
        ask(picture(engine, "bag", "black"), "What is this?", SamplingParams(temperature=1.0, seed=7)),
    ]
    prepared = [engine.prepare(r) for r in requests]
    assert len({p.prompt_tokens for p in prepared}) > 1, "rows of different lengths exercise left padding"
    batched = engine.generate(prepared)
    alone = [engine.generate([p])[0] for p in prepared]
    assert [r.text for r in batched] == [r.text for r in alone]
    assert [r.finish_reason for r in batched] == [r.finish_reason for r in alone]
    assert batched[2].finish_reason == "length" and batched[2].usage.completion_tokens == 3


def test_seeded_sampling_is_reproducible_whatever_shares_the_batch(engine: TransformersEngine) -> None:
    image = picture(engine, "dress", "pink")
    seeded = ask(image, "How should I wear it?", SamplingParams(temperature=1.5, top_p=1.0, top_k=0, seed=11))
    other = ask(picture(engine, "shoes", "blue"), "What is this?", SamplingParams(temperature=1.5, seed=1))
    first = answer(engine, seeded).text
    in_batch = engine.generate([engine.prepare(other), engine.prepare(seeded)])[1].text
    assert first == in_batch


def test_stream_deltas_concatenate_to_the_answer(engine: TransformersEngine) -> None:
    request = ask(picture(engine, "jacket", "orange"), "这件外套适合什么场合穿？")
    recorder = DeltaRecorder()
    result = engine.generate([engine.prepare(request)], recorder)[0]
    assert len(recorder.deltas) > 1
    assert "".join(recorder.deltas) == result.text == answer(engine, request).text


def test_usage_counts_the_processors_tokens_including_image_tokens(engine: TransformersEngine) -> None:
    image = picture(engine, "bag", "yellow")
    request = ask(image, "What is this item?")
    prepared = engine.prepare(request)
    prompt = engine.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this item?"}]}],
        add_generation_prompt=True, tokenize=False,
    )
    expected = engine.processor(text=[prompt], images=[image.image], return_tensors="pt")
    grid = expected["image_grid_thw"][0]
    assert prepared.prompt_tokens == expected["input_ids"].shape[1]
    assert prepared.image_tokens == int(grid.prod()) // 4
    result = engine.generate([prepared])[0]
    assert result.usage.prompt_tokens == prepared.prompt_tokens
    assert result.usage.image_tokens == prepared.image_tokens


@pytest.mark.parametrize("max_pixels", [64 * 64, 96 * 160, 128 * 128])
def test_request_pixel_budget_sets_image_tokens_as_the_processor_does(
    engine: TransformersEngine, max_pixels: int
) -> None:
    original = drawn("shoes", "purple", 1).resize((300, 200))
    budget = PixelBudget(min_pixels=32 * 32, max_pixels=max_pixels, factor=32)
    prepared = engine.prepare(ask(load_image(png_bytes(original), budget), "What is this?", pixel_budget=budget))
    stock = engine.processor.image_processor(
        images=[original], size={"shortest_edge": budget.min_pixels, "longest_edge": budget.max_pixels},
        return_tensors="pt",
    )
    assert prepared.image_tokens == int(stock["image_grid_thw"][0].prod()) // 4


def test_request_budget_above_the_engine_limit_is_refused(engine: TransformersEngine) -> None:
    budget = PixelBudget(min_pixels=32 * 32, max_pixels=engine.pixel_budget.max_pixels * 4)
    with pytest.raises(InvalidRequestError, match="above this server's limit"):
        engine.prepare(ask(picture(engine, "hat", "red", budget=budget), "What is this?", pixel_budget=budget))


def test_stop_string_cuts_the_answer(engine: TransformersEngine) -> None:
    request = ask(picture(engine, "jacket", "red"), "What occasions does this jacket suit?")
    full = answer(engine, request).text
    cut_at = full.index(" ", 5)
    stop = full[cut_at:cut_at + 3]
    stopped = answer(engine, ask(request.messages[0].images[0], "What occasions does this jacket suit?",
                                SamplingParams(temperature=0.0, max_new_tokens=32, stop=(stop,))))
    assert stopped.finish_reason == "stop"
    assert stopped.text == full[: full.index(stop)]


def test_request_over_the_context_limit_is_refused_before_generation() -> None:
    small = TransformersEngine(TransformersEngineConfig(device="cpu", max_model_len=40, default_max_new_tokens=8))
    image = load_image(png_bytes(drawn("bag", "red", 0)), small.pixel_budget)
    with pytest.raises(ContextLengthExceededError, match=r"over the context limit of 40.*fewer images"):
        small.prepare(ask(image, "What is this?", SamplingParams(max_new_tokens=30)))
    # Without an explicit bound the output is clipped to what is left of the context.
    prepared = small.prepare(ask(image, "What is this?", SamplingParams()))
    assert prepared.prompt_tokens + prepared.max_new_tokens <= 40


def test_token_ids_stay_integers_and_pixels_take_the_model_dtype(engine: TransformersEngine) -> None:
    prepared = engine.prepare(ask(picture(engine, "tshirt", "blue"), "What is this?"))
    inputs, _ = engine._collate([prepared])
    assert inputs["input_ids"].dtype == torch.long
    assert inputs["attention_mask"].dtype in (torch.long, torch.int64, torch.bool)
    assert inputs["pixel_values"].dtype == engine.model.dtype


def test_engine_info_reports_cpu_placement(engine: TransformersEngine) -> None:
    info = engine.info()
    assert (info.device, info.dtype, info.attention) == ("cpu", "float32", "sdpa")
    assert info.model == "seesay-demo"
    assert info.parameters == sum(p.numel() for p in engine.model.parameters())


def test_unknown_image_size_is_refused(engine: TransformersEngine) -> None:
    raw = Image.new("RGB", (100, 70), "red")
    unnormalised = NormalizedImage(raw, "x", "PNG", raw.size)
    with pytest.raises(InvalidRequestError, match="not normalised") as refused:
        engine.prepare(ask(unnormalised, "What is this?"))
    assert refused.value.status == 400
    fitted = engine.pixel_budget.target_size(100, 70)
    assert f"load_image with that budget, which makes it {fitted[0]}x{fitted[1]}" in refused.value.message


def test_a_picture_intake_sized_wrongly_is_reported_as_a_server_bug(
    engine: TransformersEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should intake ever produce a size the model cannot take, the caller is told it is not their fault."""
    monkeypatch.setattr(PixelBudget, "target_size", lambda self, width, height: (192, 96))
    oversized = load_image(png_bytes(Image.new("RGB", (80, 40), "red")), engine.pixel_budget)
    with pytest.raises(SeesayError, match="This is a bug in seesay; please report it") as refused:
        engine.prepare(ask(oversized, "What is this?"))
    assert refused.value.status == 500
    assert "resized this 80x40 picture to 192x96" in refused.value.message


def test_text_only_and_image_requests_share_a_batch(engine: TransformersEngine) -> None:
    text_only = GenerationRequest((ChatMessage.user("What colour is this item?"),), GREEDY)
    with_image = ask(picture(engine, "tshirt", "red"), "What colour is this item?")
    for order in ([text_only, with_image], [with_image, text_only]):
        prepared = [engine.prepare(r) for r in order]
        batched = engine.generate(prepared)
        alone = [engine.generate([p])[0] for p in prepared]
        assert [r.text for r in batched] == [r.text for r in alone]
    assert answer(engine, with_image).text == "red"


def test_patch_embedding_runs_as_a_matmul_and_agrees_with_the_stock_model(engine: TransformersEngine) -> None:
    stock = AutoModelForImageTextToText.from_pretrained(engine.config.model_source).eval()
    assert isinstance(stock.model.visual.patch_embed.proj, nn.Conv3d)
    assert isinstance(engine.model.model.visual.patch_embed.proj, PatchProjection)
    assert stock.state_dict().keys() == engine.model.state_dict().keys()
    requests = [ask(picture(engine, kind, colour, seed), question) for seed, (kind, colour, question) in enumerate(
        [("tshirt", "red", "What colour is this item?"), ("jacket", "blue", "这件外套适合什么场合穿？"),
         ("bag", "green", "What is this item?")])]
    inputs, _ = engine._collate([engine.prepare(r) for r in requests])
    with torch.inference_mode():
        assert torch.allclose(engine.model(**inputs).logits, stock(**inputs).logits, atol=1e-4)
