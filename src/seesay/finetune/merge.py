"""``seesay merge``: a LoRA adapter folded into its base model, saved as a standard checkpoint.

Contract: :func:`merge_adapter` loads the base model in its own dtype, applies the adapter
with PEFT and ``merge_and_unload()`` (W + scale · B·A in every adapted layer), and saves the
result with the base model's processor and generation settings: a plain
``Qwen3VLForConditionalGeneration`` folder that stock transformers, seesay and vLLM load like
any model, with no PEFT needed at serving time.
"""

from __future__ import annotations

from pathlib import Path

from peft import PeftModel
from transformers import AutoModelForImageTextToText

from seesay.engine.processor import load_processor


def merge_adapter(base: str, adapter: str | Path, out: str | Path) -> Path:
    """Merge ``adapter`` into ``base`` and save the merged model into ``out`` (see the module docstring).

    Raises:
        ValueError: ``adapter`` is not a PEFT adapter folder for this model.
    """
    adapter_dir = Path(adapter)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ValueError(f"{adapter_dir} is not a PEFT adapter folder (no adapter_config.json); "
                         "give the folder `seesay finetune --out` wrote")
    processor = load_processor(base)
    model = AutoModelForImageTextToText.from_pretrained(base, dtype="auto", use_safetensors=True)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(target, safe_serialization=True)
    processor.save_pretrained(target)
    return target
