"""The real NudeNet detector, offline, on real benign pictures: the demo catalogue and sample photographs.

The photographs are the ones that ship inside the scikit-image wheel (no download: pooch is
not needed for them); NudeNet's model ships inside its wheel. Every picture goes through
seesay's own intake first, at the default pixel budget, exactly as a request would.
"""

from __future__ import annotations

import io
from importlib.util import find_spec

import numpy as np
import pytest
from PIL import Image

from seesay.demo.catalogue import KINDS, draw_samples
from seesay.images import NormalizedImage, PixelBudget, load_image
from seesay.safety.image import ImageScreen, load_detector

# Marks, not module-level importorskips: each test reports the skip, which the suite's CI rule fails.
pytestmark = [
    pytest.mark.skipif(find_spec("nudenet") is None, reason="needs NudeNet: pip install 'seesay[serve]'"),
    pytest.mark.skipif(find_spec("skimage") is None, reason="needs scikit-image for its sample photographs "
                       "(the dev extra)"),
]

# Photographs bundled in the scikit-image wheel (synthetic graphics such as the colour wheel are left out).
PHOTOGRAPHS = ("astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "grass", "gravel",
               "hubble_deep_field", "immunohistochemistry", "microaneurysms", "moon", "motorcycle", "page", "retina",
               "rocket", "text")


def photograph_pixels(name: str) -> np.ndarray:
    """One of the scikit-image wheel's photographs, as an array."""
    from skimage import data

    return data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()


def intake(image: Image.Image) -> NormalizedImage:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return load_image(buffer.getvalue(), PixelBudget())


def photograph(name: str) -> NormalizedImage:
    return intake(Image.fromarray(photograph_pixels(name)).convert("RGB"))


def catalogue_pictures() -> list[NormalizedImage]:
    """Two pictures of every item kind of the demo shop, in assorted colours."""
    samples = draw_samples(200, seed=11)
    chosen = [next(s for s in samples if s.item.kind == kind) for kind in KINDS]
    chosen += [next(s for s in reversed(samples) if s.item.kind == kind) for kind in KINDS]
    return [intake(s.image) for s in chosen]


@pytest.fixture(scope="module")
def screen() -> ImageScreen:
    return ImageScreen(load_detector("nudenet"))


def test_default_nudenet_blocks_none_of_the_benign_pictures(screen: ImageScreen) -> None:
    pictures = {f"catalogue-{i}": p for i, p in enumerate(catalogue_pictures())}
    pictures |= {name: photograph(name) for name in PHOTOGRAPHS}
    assert len(pictures) >= 20
    verdicts = {name: screen.screen(picture) for name, picture in pictures.items()}
    blocked = {name: v for name, v in verdicts.items() if v.blocked}
    assert blocked == {}
    # The flagged labels stay far from the threshold on every one of them.
    assert max(v.score for v in verdicts.values()) < 0.4, verdicts


def test_a_detector_configured_to_flag_blocks_through_the_same_path() -> None:
    flag_faces = ImageScreen(load_detector("nudenet", {"labels": ["FACE_FEMALE"], "threshold": 0.5}))
    verdict = flag_faces.screen(photograph("astronaut"))
    assert verdict.blocked and verdict.label == "FACE_FEMALE" and verdict.score > 0.7
    assert not flag_faces.screen(photograph("coffee")).blocked


@pytest.mark.parametrize("name", ["astronaut", "camera", "moon", "coffee", "retina"])
def test_detections_match_nudenet_itself(name: str) -> None:
    from nudenet import NudeDetector

    from seesay.safety.nudenet_detector import NudeNetDetector

    picture = photograph(name).image
    ours = NudeNetDetector().detect(picture)
    theirs = NudeDetector().detect(np.ascontiguousarray(np.asarray(picture)))  # an RGB array: see the module doc
    assert [(d.label, d.box) for d in ours] == [(d["class"], tuple(d["box"])) for d in theirs]
    assert [d.score for d in ours] == pytest.approx([d["score"] for d in theirs], abs=1e-5)


def test_label_order_is_nudenet_s_own() -> None:
    import nudenet.nudenet

    from seesay.safety.nudenet_detector import NUDENET_LABELS

    assert list(NUDENET_LABELS) == getattr(nudenet.nudenet, "__labels")  # module-private
