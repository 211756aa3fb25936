"""The Hugging Face image-classifier detector on a tiny model saved to disk (labels normal / nsfw)."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

from seesay.errors import SafetyConfigError
from seesay.safety.image import load_detector

# A mark, not a module-level importorskip: each test reports the skip, which the suite's CI rule fails.
pytestmark = pytest.mark.skipif(find_spec("torch") is None or find_spec("transformers") is None,
                                reason="needs the model extra: pip install 'seesay[model]'")


@pytest.fixture(scope="module")
def torch() -> ModuleType:
    import torch

    return torch


def save_tiny_classifier(folder: Path, bias: tuple[float, float], *, multi_label: bool = False) -> Path:
    """A randomly initialised 1-layer ViT whose answer is fixed by the classifier bias."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification
    from transformers.models.vit import ViTImageProcessorPil

    config = ViTConfig(image_size=32, patch_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, id2label={0: "normal", 1: "nsfw"}, label2id={"normal": 0, "nsfw": 1},
                       problem_type="multi_label_classification" if multi_label else None)
    model = ViTForImageClassification(config)
    head = model.classifier
    assert isinstance(head, torch.nn.Linear)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor(bias))
    model.save_pretrained(folder)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def nsfw_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_classifier(tmp_path_factory.mktemp("nsfw"), (-2.0, 2.0))


@pytest.fixture(scope="module")
def normal_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_classifier(tmp_path_factory.mktemp("normal"), (2.0, -2.0))


PICTURE = Image.new("RGB", (120, 90), (200, 180, 160))


def test_flagged_label_above_threshold_blocks(nsfw_model: Path, torch: ModuleType) -> None:
    detector = load_detector("hf-classifier", {"model": str(nsfw_model)})
    verdict = detector.classify(PICTURE)
    assert verdict.blocked and verdict.label == "nsfw"
    assert verdict.score == pytest.approx(torch.softmax(torch.tensor([-2.0, 2.0]), 0)[1].item(), abs=1e-4)
    assert "hf-classifier(" in detector.fingerprint


def test_below_threshold_passes_and_reports_the_score(normal_model: Path) -> None:
    verdict = load_detector("hf-classifier", {"model": str(normal_model)}).classify(PICTURE)
    assert not verdict.blocked and verdict.label == "nsfw" and verdict.score < 0.05


def test_threshold_and_labels_are_configurable(normal_model: Path) -> None:
    strict = load_detector("hf-classifier", {"model": str(normal_model), "threshold": 0.01})
    assert strict.classify(PICTURE).blocked
    by_normal = load_detector("hf-classifier", {"model": str(normal_model), "labels": ["normal"]})
    assert by_normal.classify(PICTURE).label == "normal" and by_normal.classify(PICTURE).blocked


def test_multi_label_models_use_sigmoid(tmp_path: Path, torch: ModuleType) -> None:
    folder = save_tiny_classifier(tmp_path / "multi", (3.0, 0.5), multi_label=True)
    verdict = load_detector("hf-classifier", {"model": str(folder)}).classify(PICTURE)
    assert verdict.score == pytest.approx(torch.sigmoid(torch.tensor(0.5)).item(), abs=1e-4)
    assert verdict.blocked  # 0.62 >= 0.5; a softmax would have said 0.08


def test_unknown_label_names_the_model_labels(nsfw_model: Path) -> None:
    with pytest.raises(SafetyConfigError, match="its labels are: normal, nsfw"):
        load_detector("hf-classifier", {"model": str(nsfw_model), "labels": ["porn"]})


def test_missing_folder_says_how_to_get_the_model(tmp_path: Path) -> None:
    with pytest.raises(SafetyConfigError, match="huggingface-cli download Falconsai/nsfw_image_detection"):
        load_detector("hf-classifier", {"model": str(tmp_path / "absent")})


def test_a_folder_without_a_model_fails_closed(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SafetyConfigError, match="not a loadable image-classification model"):
        load_detector("hf-classifier", {"model": str(tmp_path / "empty")})
