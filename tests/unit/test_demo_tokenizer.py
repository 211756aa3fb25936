"""The demo tokenizer: byte-level round trips, Qwen special tokens, Qwen chat format, reloading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from seesay.demo.tokenizer import CHAT_TEMPLATE, SPECIAL_TOKENS, build_tokenizer
from seesay.engine.config import demo_model_dir


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer()


@pytest.mark.parametrize("text", [
    "What colour is this item?",
    "这件外套适合什么场合穿？",
    "Mixed 中英文 text, emoji 🎉👗 and ünïcödé — never seen in training.",
    "  leading and trailing spaces\n\ttabs  ",
])
def test_any_text_round_trips(tokenizer: PreTrainedTokenizerFast, text: str) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    assert tokenizer.unk_token_id is None or tokenizer.unk_token_id not in ids


def test_vocabulary_is_small(tokenizer: PreTrainedTokenizerFast) -> None:
    assert 500 <= len(tokenizer) <= 1100


def test_special_tokens_follow_the_vocabulary_in_qwen_order(tokenizer: PreTrainedTokenizerFast) -> None:
    ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    first = len(tokenizer) - len(SPECIAL_TOKENS)
    assert ids == list(range(first, len(tokenizer)))
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == ids[2]
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.pad_token_id == ids[0]
    vision = tokenizer.encode("<|vision_start|><|image_pad|><|vision_end|>", add_special_tokens=False)
    assert vision == [ids[9], ids[12], ids[10]]
    assert tokenizer.decode([*tokenizer.encode("red", add_special_tokens=False), ids[2]],
                            skip_special_tokens=True) == "red"


def test_shipped_model_uses_this_tokenizer_and_its_ids() -> None:
    """The bundled model's tokenizer is what build_tokenizer makes, and its config names the same ids."""
    folder = demo_model_dir()
    shipped = AutoTokenizer.from_pretrained(folder)
    rebuilt = build_tokenizer()
    assert shipped.get_vocab() == rebuilt.get_vocab()
    config = json.loads((folder / "config.json").read_text())
    ids = rebuilt.convert_tokens_to_ids
    assert config["image_token_id"] == ids("<|image_pad|>")
    assert config["video_token_id"] == ids("<|video_pad|>")
    assert config["vision_start_token_id"] == ids("<|vision_start|>")
    assert config["vision_end_token_id"] == ids("<|vision_end|>")
    assert config["text_config"]["vocab_size"] == len(rebuilt)
    generation = json.loads((folder / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [ids("<|im_end|>"), ids("<|endoftext|>")]
    assert generation["pad_token_id"] == ids("<|endoftext|>")


def test_chat_template_renders_qwen_format(tokenizer: PreTrainedTokenizerFast) -> None:
    messages = [
        {"role": "system", "content": "You are a shop assistant."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]},
        {"role": "assistant", "content": "This is a hat."},
        {"role": "user", "content": [{"type": "text", "text": "这是什么颜色？"}, {"type": "image"}]},
    ]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered == (
        "<|im_start|>system\nYou are a shop assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is this?<|im_end|>\n"
        "<|im_start|>assistant\nThis is a hat.<|im_end|>\n"
        "<|im_start|>user\n这是什么颜色？<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    without_prompt = tokenizer.apply_chat_template(messages[:2], tokenize=False)
    assert without_prompt.endswith("What is this?<|im_end|>\n")


def test_building_is_deterministic(tokenizer: PreTrainedTokenizerFast) -> None:
    assert build_tokenizer().backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()


def test_reloads_with_auto_tokenizer(tokenizer: PreTrainedTokenizerFast, tmp_path: Path) -> None:
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "<|im_start|>user\n这是什么？<|im_end|>"
    assert reloaded.encode(text) == tokenizer.encode(text)
    assert (reloaded.eos_token_id, reloaded.pad_token_id) == (tokenizer.eos_token_id, tokenizer.pad_token_id)
    assert reloaded.chat_template == CHAT_TEMPLATE
    assert reloaded.padding_side == "left"
