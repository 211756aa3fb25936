"""The demo model's architecture and processor: a tiny but real Qwen3-VL.

Contract: :func:`demo_config` gives a ``Qwen3VLConfig`` (so ``AutoModelForImageTextToText``
builds a ``Qwen3VLForConditionalGeneration``) sized by :class:`DemoModelSize`, with the
vocabulary and the image/video/vision-boundary token ids of the demo tokenizer.
:func:`build_processor` pairs that tokenizer with Qwen3-VL's image preprocessing (16 px
patches merged 2×2, mean and std 0.5) at a fixed budget of 128×128 pixels, which is 16 visual
tokens for a square picture; :func:`save_demo_model` writes everything the engine loads.
"""

from __future__ import annotations

import functools
from pathlib import Path

from transformers import (
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    ProcessorMixin,
    Qwen2VLImageProcessorPil,
    Qwen3VLConfig,
)
from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

from seesay.demo.options import DemoModelSize
from seesay.demo.tokenizer import (
    CHAT_TEMPLATE,
    EOS_TOKEN,
    IMAGE_TOKEN,
    PAD_TOKEN,
    VIDEO_TOKEN,
    VISION_END_TOKEN,
    VISION_START_TOKEN,
)
from seesay.engine.processor import image_only

# Pixel budget of the demo model: every picture becomes about 128×128 pixels.
PIXELS = 128 * 128
# Qwen3-VL's vision geometry: 16-px patches, two identical frames per picture, 2×2 patches per token.
PATCH_SIZE = 16
TEMPORAL_PATCH_SIZE = 2
MERGE_SIZE = 2
MAX_POSITION_EMBEDDINGS = 4096
# Attention head size of the language model; M-RoPE splits its 16 frequency pairs 6/5/5 over
# (time, height, width), as Qwen3-VL splits 64 pairs 24/20/20.
HEAD_DIM = 32
MROPE_SECTION = [6, 5, 5]


def demo_config(tokenizer: PreTrainedTokenizerFast, size: DemoModelSize | None = None) -> Qwen3VLConfig:
    """The Qwen3-VL configuration of the demo model for ``tokenizer``'s vocabulary."""
    size = size or DemoModelSize()
    vision = {
        "depth": size.vision_depth, "hidden_size": size.vision_hidden,
        "intermediate_size": 2 * size.vision_hidden,
        "num_heads": size.vision_heads, "patch_size": PATCH_SIZE, "spatial_merge_size": MERGE_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        "out_hidden_size": size.text_hidden, "num_position_embeddings": 2304,
        # One DeepStack level (Qwen3-VL feeds three intermediate vision layers to the decoder).
        "deepstack_visual_indexes": [size.vision_depth - 2] if size.vision_depth >= 2 else [],
    }
    text = {
        "vocab_size": len(tokenizer), "hidden_size": size.text_hidden,
        "intermediate_size": 2 * size.text_hidden,
        "num_hidden_layers": size.text_layers, "num_attention_heads": size.text_heads,
        "num_key_value_heads": size.text_kv_heads, "head_dim": HEAD_DIM,
        "max_position_embeddings": MAX_POSITION_EMBEDDINGS,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                            "mrope_section": MROPE_SECTION, "mrope_interleaved": True},
        "pad_token_id": tokenizer.pad_token_id,
    }
    ids = functools.partial(token_id, tokenizer)
    return Qwen3VLConfig(
        vision_config=vision, text_config=text,
        image_token_id=ids(IMAGE_TOKEN), video_token_id=ids(VIDEO_TOKEN),
        vision_start_token_id=ids(VISION_START_TOKEN), vision_end_token_id=ids(VISION_END_TOKEN),
    )


def token_id(tokenizer: PreTrainedTokenizerFast, token: str) -> int:
    """The id of one special token."""
    value = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(value, int):
        raise TypeError(f"{token} is not a single token of this tokenizer")
    return value


def demo_generation_config(tokenizer: PreTrainedTokenizerFast) -> GenerationConfig:
    """Stop at ``<|im_end|>`` (or ``<|endoftext|>``) and pad with ``<|endoftext|>``, as Qwen does."""
    ids = functools.partial(token_id, tokenizer)
    return GenerationConfig(eos_token_id=[ids(EOS_TOKEN), ids(PAD_TOKEN)], pad_token_id=ids(PAD_TOKEN))


def build_processor(tokenizer: PreTrainedTokenizerFast) -> ProcessorMixin:
    """Qwen3-VL's image preprocessing at the demo budget, with ``tokenizer`` and the chat template."""
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=PATCH_SIZE, merge_size=MERGE_SIZE, temporal_patch_size=TEMPORAL_PATCH_SIZE,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
        size={"shortest_edge": PIXELS, "longest_edge": PIXELS},
    )
    processor_cls = image_only(Qwen3VLProcessor)
    return processor_cls(image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)


def save_demo_model(model: PreTrainedModel, processor: ProcessorMixin, out_dir: str | Path) -> Path:
    """Write weights (safetensors), configs, tokenizer and processor into ``out_dir``.

    The folder then loads with ``AutoModelForImageTextToText.from_pretrained`` and
    :func:`seesay.engine.processor.load_processor`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config = demo_generation_config(processor.tokenizer)  # type: ignore[attr-defined]
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    # The weights are written owner-only; as package data they must be readable by every user.
    for path in out.iterdir():
        path.chmod(0o644)
    return out
