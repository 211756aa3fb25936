"""LoRA adapters for the demo model, made the way users make them: PEFT's ``get_peft_model`` and
``save_pretrained``, seeded (``lora_A``'s initialisation and random ``lora_B`` weights large enough
to change greedy answers; a fresh LoRA has ``lora_B = 0`` and changes nothing), so an adapter is the
same whichever test makes it first."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

LANGUAGE_ATTENTION = r".*language_model.*\.(q_proj|v_proj)"
WITH_VISION_TOWER = r".*(language_model.*\.(q_proj|v_proj)|visual\.blocks.*\.attn\.qkv)"


def make_adapter(folder: Path, seed: int, target_modules: str = LANGUAGE_ATTENTION, scale: float = 0.5) -> Path:
    """Save an r=8 LoRA adapter of the shipped demo model into ``folder``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    from seesay.engine.config import demo_model_dir

    model = AutoModelForImageTextToText.from_pretrained(str(demo_model_dir()))
    with torch.random.fork_rng(devices=[]):  # lora_A's initialisation too: the same adapter whatever ran before
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, target_modules=target_modules))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, weight in peft_model.named_parameters():
            if "lora_B" in name:
                weight.copy_(torch.randn(weight.shape, generator=generator) * scale)
    peft_model.save_pretrained(str(folder))
    return folder


def with_extra_tensor(source: Path, folder: Path, key: str, shape: tuple[int, ...]) -> Path:
    """A copy of the adapter ``source`` whose weights file also holds ``key``, a tensor of ``shape``."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, folder)
    weights = load_file(str(source / "adapter_model.safetensors"))
    weights[key] = torch.ones(shape)
    save_file(weights, str(folder / "adapter_model.safetensors"))
    return folder


def with_config(source: Path, folder: Path, **fields: object) -> Path:
    """A copy of the adapter ``source`` with ``fields`` changed in its ``adapter_config.json``."""
    shutil.copytree(source, folder)
    path = folder / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))
    return folder
