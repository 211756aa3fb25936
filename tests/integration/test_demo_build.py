"""Building the demo model: reproducible, loadable the way the engine loads it, and the shipped one works."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from readme_claims import accuracy_claim
from transformers import AutoModelForImageTextToText, Qwen3VLForConditionalGeneration

from checkpoint_format import assert_stock_checkpoint
from seesay.demo.catalogue import (
    COLOURS_BY_KEY,
    KINDS_BY_KEY,
    LANGUAGES,
    QUESTION_TYPES,
    Item,
    answer_for,
    iter_picture_groups,
    png_bytes,
)
from seesay.demo.evaluate import evaluate
from seesay.demo.examples import example_path
from seesay.demo.model import PIXELS, build_processor
from seesay.demo.options import DemoModelSize, TrainConfig
from seesay.demo.tokenizer import build_tokenizer
from seesay.demo.train import build_demo_model, encode_group
from seesay.engine.config import demo_model_dir
from seesay.engine.processor import load_processor
from seesay.engine.transformers import TransformersEngine
from seesay.images import PixelBudget, load_image
from seesay.training.batches import IGNORE_INDEX, PictureStore, PixelCodec
from seesay.types import ChatMessage, GenerationRequest, SamplingParams

TINY_SIZE = DemoModelSize(vision_depth=2, vision_hidden=32, text_hidden=64, text_heads=2, text_kv_heads=1)
TINY = TrainConfig(steps=3, batch_size=4, pictures=4, warmup_steps=1, log_every=1, size=TINY_SIZE)


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    logs: list[str] = []
    return build_demo_model(TINY, tmp_path_factory.mktemp("tiny"), report=logs.append), logs


def test_same_seed_builds_identical_weights(tiny_build: tuple[Path, list[str]], tmp_path: Path) -> None:
    first, logs = tiny_build
    threads = torch.get_num_threads()
    second = build_demo_model(TINY, tmp_path, report=lambda _line: None)
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()
    assert any(line.startswith("step 3/3 loss") for line in logs)
    assert torch.get_num_threads() == threads, "a build must not change the process's thread count"


def test_built_folder_loads_like_the_engine_loads_it(tiny_build: tuple[Path, list[str]]) -> None:
    folder, _ = tiny_build
    model = AutoModelForImageTextToText.from_pretrained(folder)
    assert isinstance(model, Qwen3VLForConditionalGeneration)
    processor = load_processor(folder)
    image_processor = processor.image_processor
    assert (image_processor.size["shortest_edge"], image_processor.size["longest_edge"]) == (PIXELS, PIXELS)
    assert image_processor.patch_size == 16
    assert (image_processor.merge_size, image_processor.temporal_patch_size) == (2, 2)
    tokenizer = processor.tokenizer
    assert model.generation_config.eos_token_id == [tokenizer.eos_token_id, tokenizer.pad_token_id]
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    assert model.config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert model.config.vision_start_token_id == tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert model.config.text_config.vocab_size == len(tokenizer)


def test_built_folder_is_a_stock_checkpoint(tiny_build: tuple[Path, list[str]]) -> None:
    assert_stock_checkpoint(tiny_build[0])


def test_training_sequences_match_serving_and_label_only_the_answer() -> None:
    processor = build_processor(build_tokenizer())
    budget = PixelBudget(min_pixels=PIXELS, max_pixels=PIXELS)
    group = next(iter_picture_groups(0))
    pictures = PictureStore()
    rows = encode_group(processor, group, budget, pictures)
    picture = load_image(png_bytes(group[0].image), budget).image
    for sample, row in zip(group, rows, strict=True):
        content = [{"type": "image"}, {"type": "text", "text": sample.question}]
        messages = [{"role": "user", "content": content}]
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        served = processor(text=[prompt], images=[picture], do_resize=False, return_tensors="pt")
        prompt_ids = served["input_ids"][0].tolist()
        assert row.input_ids[: len(prompt_ids)] == prompt_ids
        assert row.mm_token_type_ids[: len(prompt_ids)] == served["mm_token_type_ids"][0].tolist()
        assert set(row.labels[: len(prompt_ids)]) == {IGNORE_INDEX}
        assert processor.tokenizer.decode(row.labels[len(prompt_ids):]) == sample.answer + "<|im_end|>"
        assert row.pictures == (0,)
        torch.testing.assert_close(pictures.pixel_values([0]), served["pixel_values"], atol=1e-6, rtol=0)
        assert pictures.grid_thw([0]).tolist() == served["image_grid_thw"].tolist()


def test_uint8_patches_round_trip_exactly() -> None:
    codec = PixelCodec()
    values = np.random.default_rng(0).integers(0, 256, (64, 3, 256)).astype(np.uint8)
    floats = codec.to_float(torch.from_numpy(values)).numpy()
    assert (codec.to_uint8(floats) == values).all()


def test_shipped_weights_are_small_and_a_real_qwen3_vl() -> None:
    weights = demo_model_dir() / "model.safetensors"
    assert weights.stat().st_size <= 20 * 1024 * 1024
    model = AutoModelForImageTextToText.from_pretrained(demo_model_dir())
    assert isinstance(model, Qwen3VLForConditionalGeneration)


def test_shipped_model_answers_the_bundled_example(engine: TransformersEngine) -> None:
    red_tshirt = load_image(example_path("red-tshirt").read_bytes(), engine.info().pixel_budget)
    item = Item(KINDS_BY_KEY["tshirt"], COLOURS_BY_KEY["red"])
    expected = {"What colour is this item?": "red", "What is this?": "This is a T-shirt.",
                "这件T恤适合什么场合穿？": answer_for("occasion", "zh", item)}
    greedy = SamplingParams(temperature=0.0, max_new_tokens=48)
    prepared = [engine.prepare(GenerationRequest((ChatMessage.user(red_tshirt, question),), greedy))
                for question in expected]
    answers = {question: result.text for question, result in zip(expected, engine.generate(prepared), strict=True)}
    assert answers == expected


def test_shipped_model_keeps_the_readme_s_accuracy_promise(engine: TransformersEngine) -> None:
    """The README's figures, on the README's own evaluation: every question type in each language."""
    claim = accuracy_claim()
    assert claim.seed != TrainConfig().seed, "the README's evaluation seed must be one training never used"
    report = evaluate(engine, n=claim.n, seed=claim.seed)
    assert report.overall.total == claim.n
    assert set(report.by_type_language) == {f"{t}/{lang}" for t in QUESTION_TYPES for lang in LANGUAGES}
    below = {cell: f"{score.accuracy:.1%}" for cell, score in report.by_type_language.items()
             if score.accuracy < claim.per_type_and_language}
    assert not below, f"under the README's {claim.per_type_and_language:.0%} per type and language: {below}\n" \
                      f"{report.table()}"
    assert report.overall.accuracy >= claim.overall_low, report.table()
