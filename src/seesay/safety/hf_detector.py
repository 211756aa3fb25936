"""A second image detector: a local Hugging Face image-classification model run through transformers.

Contract: ``model`` is a folder on disk holding an image-classification checkpoint (for
example ``Falconsai/nsfw_image_detection``, labels ``normal`` / ``nsfw``, fetched beforehand
with ``huggingface-cli download Falconsai/nsfw_image_detection --local-dir DIR``); nothing is
downloaded at start-up. The checkpoint's own image processor prepares the picture (its PIL
backend when torchvision is absent), ``AutoModelForImageClassification`` scores it, and the
picture is blocked when one of the configured labels gets a probability at or above the
threshold (softmax, or sigmoid for multi-label checkpoints). Needs ``pip install 'seesay[model]'``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from seesay.errors import MissingDependencyError, SafetyConfigError
from seesay.safety.image import ImageDetector, ImageVerdict, register_detector


@register_detector("hf-classifier")
class HFImageClassifierDetector(ImageDetector):
    """An image-classification model folder as an NSFW detector (see the module docstring).

    Args:
        model: Path of the local model folder.
        labels: The model's labels that block a picture (names from its ``id2label``).
        threshold: Lowest probability that blocks, in (0, 1].
        device: Torch device to run on (torch's thread settings are the engine's and stay untouched).

    Raises:
        SafetyConfigError: The folder is missing or not an image classifier, or a label is not one of its labels.
        MissingDependencyError: torch or transformers is not installed.
    """

    name = "hf-classifier"

    def __init__(self, model: str, labels: Sequence[str] = ("nsfw",), threshold: float = 0.5,
                 device: str = "cpu") -> None:
        folder = Path(model)
        if not folder.is_dir():
            raise SafetyConfigError(
                f"hf-classifier model folder {folder} does not exist; download the model first, e.g. "
                f"huggingface-cli download Falconsai/nsfw_image_detection --local-dir {folder}"
            )
        if not 0.0 < threshold <= 1.0:
            raise SafetyConfigError(f"hf-classifier threshold must be in (0, 1], got {threshold}")
        self._torch, self.processor, self.model = _load(folder, device)
        self.folder = folder
        self.threshold = float(threshold)
        self.device = device
        id2label = {int(i): str(name) for i, name in self.model.config.id2label.items()}
        unknown = sorted(set(labels) - set(id2label.values()))
        if unknown or not labels:
            raise SafetyConfigError(
                f"hf-classifier labels {sorted(unknown) or '(none)'} are not labels of {folder}; "
                f"its labels are: {', '.join(id2label[i] for i in sorted(id2label))}"
            )
        self.labels = tuple(labels)
        self._flagged = [i for i in sorted(id2label) if id2label[i] in self.labels]
        self._id2label = id2label
        self._multi_label = self.model.config.problem_type == "multi_label_classification"
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        return {"model": str(self.folder), "labels": "+".join(self.labels), "threshold": self.threshold}

    def classify(self, image: Image.Image) -> ImageVerdict:
        torch = self._torch
        inputs = self.processor(images=image.convert("RGB"), return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(self.device, dtype=self.model.dtype)
        with self._lock, torch.inference_mode():
            logits = self.model(pixel_values=pixel_values).logits[0].float()
        probabilities = torch.sigmoid(logits) if self._multi_label else torch.softmax(logits, dim=-1)
        index = max(self._flagged, key=lambda i: float(probabilities[i]))
        score = float(probabilities[index])
        return ImageVerdict(score >= self.threshold, self._id2label[index], score)


def _load(folder: Path, device: str) -> tuple[Any, Any, Any]:
    try:
        import torch
        from transformers import AutoImageProcessor, AutoModelForImageClassification
        from transformers.utils import is_torchvision_available
    except ImportError as exc:
        raise MissingDependencyError("transformers", "model", "Image screening with a Hugging Face classifier") from exc
    backend = None if is_torchvision_available() else "pil"
    try:
        processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True, backend=backend)
        model = AutoModelForImageClassification.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise SafetyConfigError(
            f"{folder} is not a loadable image-classification model ({exc}); it needs config.json, the "
            "weights and preprocessor_config.json, as saved by save_pretrained or huggingface-cli download"
        ) from exc
    return torch, processor, model.to(device).eval()
