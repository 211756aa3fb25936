"""The GPU path with the real Qwen3-VL-8B architecture (random weights): dtype, placement, attention.

Skipped without CUDA (CI has no GPU); run it on a machine with one: ``pytest -m gpu``.
"""

from __future__ import annotations

import pytest
import torch

from qwen3vl_8b import TEXT_8B, VISION_8B
from seesay.demo.catalogue import png_bytes
from seesay.engine.config import TransformersEngineConfig
from seesay.engine.transformers import TransformersEngine
from seesay.images import load_image
from seesay.types import ChatMessage, GenerationRequest, SamplingParams

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_8b_architecture_generates_in_bf16_on_the_gpu(engine: TransformersEngine, tmp_path_factory) -> None:
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    folder = tmp_path_factory.mktemp("qwen3vl-8b-random")
    demo = engine.model.config
    config = Qwen3VLConfig(
        text_config=TEXT_8B, vision_config=VISION_8B, image_token_id=demo.image_token_id,
        video_token_id=demo.video_token_id, vision_start_token_id=demo.vision_start_token_id,
        vision_end_token_id=demo.vision_end_token_id,
    )
    with torch.device("cuda"):
        model = Qwen3VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    assert sum(p.numel() for p in model.parameters()) > 8.0e9
    model.generation_config = engine.model.generation_config
    model.save_pretrained(folder)
    engine.processor.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()

    big = TransformersEngine(TransformersEngineConfig(model=str(folder)))
    info = big.info()
    assert (info.device, info.dtype) == ("cuda:0", "bfloat16" if torch.cuda.is_bf16_supported() else "float16")
    assert info.attention in ("flash_attention_2", "sdpa")
    assert big.model.device.type == "cuda"
    from PIL import Image

    image = load_image(png_bytes(Image.new("RGB", (640, 480), "red")), big.pixel_budget)
    request = GenerationRequest((ChatMessage.user(image, "What colour is this?"),),
                                SamplingParams(temperature=0.0, max_new_tokens=8))
    prepared = big.prepare(request)
    result = big.generate([prepared, prepared])
    assert result[0].text == result[1].text
    assert 1 <= result[0].usage.completion_tokens <= 8
    assert result[0].usage.image_tokens == prepared.image_tokens > 0
    big.close()


def test_8b_architecture_trains_a_lora_step_and_generates_mixed_adapter_batches(
        engine: TransformersEngine, tmp_path_factory: pytest.TempPathFactory) -> None:
    """seesay's training loop and PEFT's mixed batches on the 8B shapes in bf16 (random weights)."""
    from peft import LoraConfig, get_peft_model
    from PIL import Image
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    from seesay.finetune.datasets import load_dataset
    from seesay.finetune.encoding import ConversationEncoder
    from seesay.finetune.options import LANGUAGE_MODEL_QV
    from seesay.training.loop import LoopSettings, train
    from seesay.training.progress import LogLines

    demo = engine.model.config
    config = Qwen3VLConfig(text_config=TEXT_8B, vision_config=VISION_8B, image_token_id=demo.image_token_id,
                           video_token_id=demo.video_token_id, vision_start_token_id=demo.vision_start_token_id,
                           vision_end_token_id=demo.vision_end_token_id)
    with torch.device("cuda"):
        base = Qwen3VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=32, target_modules=LANGUAGE_MODEL_QV), adapter_name="a")
    folder = tmp_path_factory.mktemp("lora-8b")
    Image.new("RGB", (640, 480), "red").save(folder / "red.png")
    (folder / "data.jsonl").write_text('{"messages": [{"role": "user", "content": "<image>Colour?"}, '
                                       '{"role": "assistant", "content": "red"}], "images": ["red.png"]}\n')
    encoder = ConversationEncoder(engine.processor, engine.pixel_budget, max_length=4096)
    data = encoder.encode_all(load_dataset(folder / "data.jsonl"), folder / "data.jsonl")
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    history = train(model, data, LoopSettings(steps=1, batch_size=1, lr=1e-3), pad_id=engine.pad_token_id,
                    progress=LogLines(lambda _line: None, 1))
    assert len(history.losses) == 1 and torch.isfinite(torch.tensor(history.losses[0]))
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert changed and all("lora_" in n and "language_model" in n for n in changed)

    model.add_adapter("b", LoraConfig(r=8, lora_alpha=32, target_modules=LANGUAGE_MODEL_QV))
    prompt = engine.prepare(GenerationRequest((ChatMessage.user(
        load_image(png_bytes(Image.new("RGB", (640, 480), "red")), engine.pixel_budget), "Colour?"),),
        SamplingParams(temperature=0.0, max_new_tokens=4)))
    inputs = {k: v.repeat(3, 1) if k in ("input_ids", "attention_mask", "mm_token_type_ids") else v
              for k, v in prompt.payload.tensors.items()}  # type: ignore[attr-defined]
    inputs["pixel_values"] = inputs["pixel_values"].repeat(3, 1)
    inputs["image_grid_thw"] = inputs["image_grid_thw"].repeat(3, 1)
    inputs = {k: v.to("cuda", torch.bfloat16) if v.is_floating_point() else v.to("cuda") for k, v in inputs.items()}
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False, adapter_names=["a", "__base__", "b"])
    assert out.shape[0] == 3 and out.shape[1] > inputs["input_ids"].shape[1]
