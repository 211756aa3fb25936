"""Image screening: the detector registry, fail-closed loading, the verdict cache and the test detector."""

from __future__ import annotations

import io
import sys
import threading

import pytest
from PIL import Image

from seesay.errors import SafetyConfigError, SafetyUnavailableError
from seesay.images import NormalizedImage, PixelBudget, load_image
from seesay.safety.image import (
    FlagDetector,
    ImageDetector,
    ImageScreen,
    ImageVerdict,
    detector_names,
    load_detector,
    register_detector,
)


def picture(colour: tuple[int, int, int], size: tuple[int, int] = (96, 64)) -> NormalizedImage:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return load_image(buffer.getvalue(), PixelBudget(min_pixels=32 * 32, max_pixels=256 * 32 * 32))


class CountingDetector(ImageDetector):
    """Blocks red pictures; counts calls."""

    name = "counting"

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def classify(self, image: Image.Image) -> ImageVerdict:
        with self.lock:
            self.calls += 1
        red = image.getpixel((0, 0))[0] > 200  # type: ignore[index]
        return ImageVerdict(red, "RED", 0.9 if red else 0.1)


def test_builtin_detectors_are_registered() -> None:
    assert {"nudenet", "hf-classifier", "flag"} <= set(detector_names())


def test_importing_the_safety_package_loads_no_detector_library() -> None:
    code = ("import sys, seesay.safety; heavy = {'torch', 'transformers', 'onnxruntime', 'cv2', 'nudenet'}; "
            "print(sorted(heavy & set(sys.modules)))")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_flag_detector_flags_everything_or_listed_hashes() -> None:
    red, blue = picture((255, 0, 0)), picture((0, 0, 255))
    assert load_detector("flag").classify(red.image) == ImageVerdict(True, "FLAGGED_BY_TEST_DETECTOR", 1.0)
    only_red = load_detector("flag", {"hashes": [red.content_hash], "label": "KNOWN_BAD"})
    assert only_red.classify(red.image) == ImageVerdict(True, "KNOWN_BAD", 1.0)
    assert only_red.classify(blue.image).blocked is False
    assert "flag(" in only_red.fingerprint


def test_unknown_detector_lists_the_choices() -> None:
    with pytest.raises(SafetyConfigError, match=r"unknown image detector 'nudenett'.*flag.*nudenet"):
        load_detector("nudenett")


def test_unknown_option_lists_the_options() -> None:
    with pytest.raises(SafetyConfigError, match=r"no option 'treshold'.*label, score, hashes"):
        load_detector("flag", {"treshold": 0.5})


def test_missing_nudenet_fails_closed_with_the_pip_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(SafetyConfigError, match=r"pip install 'seesay\[safety\]'.*turn image screening off"):
        load_detector("nudenet")


def test_a_detector_that_cannot_classify_fails_at_load() -> None:
    @register_detector("broken-for-test")
    class Broken(ImageDetector):
        name = "broken-for-test"

        def classify(self, image: Image.Image) -> ImageVerdict:
            raise RuntimeError("model weights are garbage")

    with pytest.raises(SafetyConfigError, match=r"failed to load or to classify a test picture.*garbage"):
        load_detector("broken-for-test")
    screen = ImageScreen(Broken())
    with pytest.raises(SafetyUnavailableError) as caught:
        screen.screen(picture((1, 2, 3)))
    assert caught.value.status == 503


def test_screen_caches_verdicts_by_content_hash() -> None:
    detector = CountingDetector()
    screen = ImageScreen(detector, cache_size=2)
    red, blue, green = picture((255, 0, 0)), picture((0, 0, 255)), picture((0, 255, 0))
    assert screen.screen(red).blocked and detector.calls == 1
    assert screen.screen(picture((255, 0, 0))).blocked and detector.calls == 1  # same pixels, new object
    assert not screen.screen(blue).blocked and detector.calls == 2
    screen.screen(red)  # red is now the most recent
    screen.screen(green)  # evicts blue
    assert detector.calls == 3
    screen.screen(red)
    assert detector.calls == 3
    screen.screen(blue)
    assert detector.calls == 4
    info = screen.cache_info()
    assert (info.hits, info.misses, info.size, info.capacity) == (3, 4, 2, 2)


def test_first_blocked_returns_the_offending_picture() -> None:
    screen = ImageScreen(CountingDetector(), cache_size=0)
    blue, red = picture((0, 0, 255)), picture((255, 0, 0))
    assert screen.first_blocked([blue]) is None
    found = screen.first_blocked([blue, red, blue])
    assert found is not None and found[0] is red and found[1].label == "RED"


def test_screen_version_is_the_detector_fingerprint() -> None:
    assert ImageScreen(FlagDetector(label="A")).version != ImageScreen(FlagDetector(label="B")).version
