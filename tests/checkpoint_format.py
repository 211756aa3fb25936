"""What a standard checkpoint folder is: every class it names is one stock transformers maps to it.

Contract: :func:`assert_stock_checkpoint` checks a folder the way ``AutoProcessor``,
``AutoTokenizer`` and ``AutoModelForImageTextToText`` would read it, by resolving names
through transformers' own mappings, so it runs without torchvision (which the stock Qwen-VL
processors need to be built, and which this machine cannot import): ``config.json`` names
the architecture transformers maps to its ``model_type``; ``processor_config.json`` names
the processor class transformers maps to that ``model_type`` (not a loading-time subclass
of seesay's), a stock image processor, and a video processor section the stock processor
can load, with the image processor's geometry; ``tokenizer_config.json`` names the same
processor and a tokenizer class transformers resolves.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES, processor_class_from_name
from transformers.models.auto.tokenization_auto import tokenizer_class_from_name
from transformers.video_processing_utils import BaseVideoProcessor

# What the image and video halves of one processor must agree on.
SHARED_GEOMETRY = ("patch_size", "temporal_patch_size", "merge_size", "image_mean", "image_std")


def read_json(path: Path) -> dict[str, Any]:
    value = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(value, dict), path
    return value


def assert_stock_checkpoint(folder: Path) -> None:
    """Fail, naming the file and the class, unless stock transformers resolves every class ``folder`` names."""
    config = read_json(folder / "config.json")
    model_type = config["model_type"]
    assert config["architectures"] == [MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES[model_type]], "config.json"

    processor_config = read_json(folder / "processor_config.json")
    stock_processor = PROCESSOR_MAPPING_NAMES[model_type]
    assert processor_config["processor_class"] == stock_processor, (
        f"processor_config.json names {processor_config['processor_class']}, which "
        f"AutoProcessor resolves to {processor_class_from_name(processor_config['processor_class'])}")
    assert processor_class_from_name(stock_processor) is not None
    image = processor_config["image_processor"]
    assert image["image_processor_type"] in IMAGE_PROCESSOR_MAPPING_NAMES[model_type].values(), "image processor"
    assert_stock_video_processor(folder, model_type, image)

    tokenizer_file = folder / "tokenizer_config.json"
    if tokenizer_file.exists():
        tokenizer_config = read_json(tokenizer_file)
        assert tokenizer_config.get("processor_class", stock_processor) == stock_processor, "tokenizer_config.json"
        assert tokenizer_class_from_name(tokenizer_config["tokenizer_class"]) is not None, (
            f"tokenizer_config.json names {tokenizer_config['tokenizer_class']}, unknown to AutoTokenizer")


def assert_stock_video_processor(folder: Path, model_type: str, image: dict[str, Any]) -> None:
    """The stock processor loads a video processor too; it must find one, of a stock class."""
    try:
        video, _ = BaseVideoProcessor.get_video_processor_dict(str(folder))
    except OSError as exc:
        raise AssertionError(f"the stock {PROCESSOR_MAPPING_NAMES[model_type]} could not load: {exc}") from exc
    module = importlib.import_module(f"transformers.models.{model_type}.video_processing_{model_type}")
    video_class = getattr(module, video["video_processor_type"], None)
    assert isinstance(video_class, type) and issubclass(video_class, BaseVideoProcessor), video
    assert {k: video[k] for k in SHARED_GEOMETRY} == {k: image[k] for k in SHARED_GEOMETRY}
