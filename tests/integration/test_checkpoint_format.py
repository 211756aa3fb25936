"""Checkpoint folders seesay writes are standard ones, and still load through seesay and answer alike.

Stock loading is checked by class resolution (see ``tests/checkpoint_format.py``): the stock
Qwen3-VL processor cannot be built here, without torchvision, and a test that skipped would
prove nothing.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from tokenizers import Tokenizer
from transformers import AutoModelForImageTextToText, AutoTokenizer

from checkpoint_format import assert_stock_checkpoint
from seesay.demo.catalogue import COLOURS_BY_KEY, KINDS_BY_KEY, Item, corpus, draw_picture, png_bytes
from seesay.demo.model import save_demo_model
from seesay.engine.config import TransformersEngineConfig, demo_model_dir
from seesay.engine.processor import load_processor
from seesay.engine.transformers import TransformersEngine
from seesay.images import load_image
from seesay.types import ChatMessage, GenerationRequest, SamplingParams

# Text the catalogue never has: digits, case, punctuation runs, CJK, emoji, and a decomposed
# accent (e + U+0301), which a tokenizer with an NFC normaliser would encode differently.
ODD_TEXTS = ["I have 12345 shoes\n\n\tand 3.5 hats!!", "IT'S Red's (x)...", "这件外套😀", "cafe\u0301 naïve"]


@pytest.fixture(scope="module")
def saved_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model as seesay loads it, written back by seesay's checkpoint writer."""
    source = demo_model_dir()
    model = AutoModelForImageTextToText.from_pretrained(source)
    return save_demo_model(model, load_processor(source), tmp_path_factory.mktemp("saved"))


def test_the_shipped_demo_model_is_a_stock_checkpoint() -> None:
    assert_stock_checkpoint(demo_model_dir())


def test_a_folder_seesay_saves_is_a_stock_checkpoint(saved_folder: Path) -> None:
    assert_stock_checkpoint(saved_folder)


@pytest.mark.parametrize("which", ["shipped", "saved"])
def test_the_named_tokenizer_class_encodes_exactly_like_tokenizer_json(which: str, saved_folder: Path) -> None:
    folder = demo_model_dir() if which == "shipped" else saved_folder
    trained = Tokenizer.from_file(str(folder / "tokenizer.json"))  # what the model was trained with
    stock = AutoTokenizer.from_pretrained(folder)
    for text in [*corpus(), *ODD_TEXTS]:
        assert stock(text).input_ids == trained.encode(text).ids, text


def test_a_saved_folder_loads_through_seesay_and_answers_alike(engine: TransformersEngine, saved_folder: Path) -> None:
    reloaded = TransformersEngine(TransformersEngineConfig(model=str(saved_folder), device="cpu"))
    assert type(reloaded.model).__name__ == "Qwen3VLForConditionalGeneration"
    assert reloaded.pixel_budget == engine.pixel_budget
    picture = draw_picture(Item(KINDS_BY_KEY["tshirt"], COLOURS_BY_KEY["red"]), random.Random(0))
    image = load_image(png_bytes(picture), engine.pixel_budget)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=32)
    requests = [GenerationRequest((ChatMessage.user(image, question),), greedy)
                for question in ["What colour is this item?", "这是什么颜色？", "What is this item?"]]
    answers = [result.text for result in reloaded.generate([reloaded.prepare(request) for request in requests])]
    assert answers == [result.text for result in engine.generate([engine.prepare(request) for request in requests])]
    assert answers[0] == "red"
