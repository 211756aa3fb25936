"""Loading the model's own processor (tokenizer + image processor + chat template).

Preprocessing must be exactly what the model was trained with, so seesay always uses the
checkpoint's processor. The stock Qwen-VL processors also want a video processor, which
needs torchvision; seesay answers questions about pictures only, so when torchvision is
missing it loads the same processor without its video half (:func:`image_only`). That is a
loading detail, never written into a checkpoint: an image-only processor saves exactly as
the stock one does, so every folder seesay writes loads in stock transformers.
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
from seesay.images import PixelBudget

# model_type → the processor class its checkpoints are trained with.
PROCESSOR_CLASSES: dict[str, type[ProcessorMixin]] = {
    "qwen3_vl": Qwen3VLProcessor,
    "qwen3_vl_moe": Qwen3VLProcessor,
    "qwen2_5_vl": Qwen2_5_VLProcessor,
    "qwen2_vl": Qwen2VLProcessor,
}


# Processor class → the video processor its stock checkpoints carry beside the image processor.
VIDEO_PROCESSOR_TYPES: dict[type[ProcessorMixin], str] = {
    Qwen3VLProcessor: "Qwen3VLVideoProcessor",
    Qwen2_5_VLProcessor: "Qwen2VLVideoProcessor",
    Qwen2VLProcessor: "Qwen2VLVideoProcessor",
}
# Settings the video processor shares with the image processor: same patches, same pixels.
_SHARED_SETTINGS = ("patch_size", "temporal_patch_size", "merge_size", "image_mean", "image_std", "resample",
                    "do_convert_rgb", "do_rescale", "rescale_factor", "do_normalize")


@cache
def image_only(processor_cls: type[ProcessorMixin]) -> type[ProcessorMixin]:
    """``processor_cls`` without a video processor, which saves as ``processor_cls`` itself.

    ``ProcessorMixin`` reads the sub-processors from the ``__init__`` signature, so leaving
    ``video_processor`` out of the signature is what makes loading skip it. Saving must not
    reveal that: ``ProcessorMixin`` writes ``type(self).__name__`` as ``processor_class`` into
    ``processor_config.json`` and ``tokenizer_config.json``, so the subclass carries its
    parent's name (its ``__qualname__`` and module still tell it apart), and :func:`_to_dict`
    adds the ``video_processor`` section the stock class needs in order to load the folder.
    """

    def __init__(self: Any, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None,
                 **kwargs: Any) -> None:
        processor_cls.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    def to_dict(self: Any) -> dict[str, Any]:
        return _to_dict(self, processor_cls)

    namespace = {"__init__": __init__, "to_dict": to_dict, "__module__": __name__,
                 "__qualname__": f"image_only({processor_cls.__qualname__})"}
    return type(processor_cls.__name__, (processor_cls,), namespace)


def _to_dict(processor: Any, processor_cls: type[ProcessorMixin]) -> dict[str, Any]:
    """What ``processor_cls`` would save: its config plus a video processor matching the image one."""
    output: dict[str, Any] = processor_cls.to_dict(processor)
    video_type = VIDEO_PROCESSOR_TYPES.get(processor_cls)
    image = output.get("image_processor")
    if video_type is not None and isinstance(image, dict) and "video_processor" not in output:
        shared = {key: image[key] for key in _SHARED_SETTINGS if key in image}
        output["video_processor"] = {"video_processor_type": video_type, **shared}
    return output


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


def processor_pixel_budget(processor: ProcessorMixin, min_pixels: int | None = None,
                           max_pixels: int | None = None) -> PixelBudget:
    """The pixel budget of a Qwen-VL processor (its ``size``), with either bound overridden."""
    image_processor: Any = processor.image_processor  # type: ignore[attr-defined]
    size = image_processor.size
    return PixelBudget(min_pixels=min_pixels or int(size["shortest_edge"]),
                       max_pixels=max_pixels or int(size["longest_edge"]),
                       factor=int(image_processor.patch_size * image_processor.merge_size))
