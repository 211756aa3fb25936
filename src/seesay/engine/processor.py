"""Loading the model's own processor (tokenizer + image processor + chat template).

Preprocessing must be exactly what the model was trained with, so seesay always uses the
checkpoint's processor. The stock Qwen-VL processors also want a video processor, which
needs torchvision; seesay answers questions about pictures only, so when torchvision is
missing it loads the same processor without its video half (:func:`image_only`).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoProcessor, ProcessorMixin
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor
from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor
from transformers.utils import is_torchvision_available

from seesay.errors import ModelLoadError

# model_type → the processor class its checkpoints are trained with.
PROCESSOR_CLASSES: dict[str, type[ProcessorMixin]] = {
    "qwen3_vl": Qwen3VLProcessor,
    "qwen3_vl_moe": Qwen3VLProcessor,
    "qwen2_5_vl": Qwen2_5_VLProcessor,
    "qwen2_vl": Qwen2VLProcessor,
}


@cache
def image_only(processor_cls: type[ProcessorMixin]) -> type[ProcessorMixin]:
    """``processor_cls`` without a video processor.

    ``ProcessorMixin`` reads the sub-processors from the ``__init__`` signature, so leaving
    ``video_processor`` out of the signature is what makes saving and loading skip it.
    """

    def __init__(self: Any, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None,
                 **kwargs: Any) -> None:
        processor_cls.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    name = processor_cls.__name__.replace("Processor", "ImageOnlyProcessor")
    return type(name, (processor_cls,), {"__init__": __init__, "__module__": __name__})


def load_processor(source: str | Path, *, trust_remote_code: bool = False, **hub_kwargs: Any) -> ProcessorMixin:
    """Load the processor for a hub id or local folder; see the module docstring.

    Raises:
        ModelLoadError: the checkpoint is not a Qwen-VL family model with a processor.
    """
    config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code, **hub_kwargs)
    processor_cls = PROCESSOR_CLASSES.get(config.model_type)
    if processor_cls is None:
        if not trust_remote_code:
            raise ModelLoadError(
                f"model type '{config.model_type}' of {source} is not a Qwen-VL family model that "
                f"seesay supports ({', '.join(sorted(PROCESSOR_CLASSES))}); for a custom model, "
                "enable trust_remote_code"
            )
        processor = AutoProcessor.from_pretrained(source, trust_remote_code=True, **hub_kwargs)
    elif is_torchvision_available():
        processor = processor_cls.from_pretrained(source, **hub_kwargs)
    else:
        processor = image_only(processor_cls).from_pretrained(source, **hub_kwargs)  # type: ignore[arg-type]
    if not hasattr(processor, "image_processor"):
        raise ModelLoadError(f"{source} has no image processor: is it a vision-language checkpoint?")
    return processor
