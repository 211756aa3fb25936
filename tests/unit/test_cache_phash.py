"""Near-duplicate matching: lossy copies of one catalogue photo share a key, other colours never do."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
from PIL import Image

from seesay.cache.keys import key_for
from seesay.cache.phash import NearDuplicateIndex, NearDuplicateRule, _popcount, perceptual_hash
from seesay.demo.catalogue import COLOURS_BY_KEY, KINDS_BY_KEY, Item, draw_picture
from seesay.images import NormalizedImage, PixelBudget, load_image
from seesay.types import ChatMessage, GenerationRequest, SamplingParams


def picture(kind: str = "dress", colour: str = "red", seed: int = 11) -> Image.Image:
    return draw_picture(Item(KINDS_BY_KEY[kind], COLOURS_BY_KEY[colour]), random.Random(seed))


def normalised(image: Image.Image, fmt: str = "PNG", scale: float = 1.0, **options: object) -> NormalizedImage:
    if scale != 1.0:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return load_image(buffer.getvalue(), PixelBudget())


def ask(image: NormalizedImage) -> GenerationRequest:
    return GenerationRequest((ChatMessage.user(image, "这是什么颜色？"),), SamplingParams(temperature=0))


def test_lossy_copies_match_and_other_colours_do_not() -> None:
    rule = NearDuplicateRule()
    original = perceptual_hash(normalised(picture()).image)
    resized_jpeg = perceptual_hash(normalised(picture(), "JPEG", 0.6, quality=80).image)
    pink = perceptual_hash(normalised(picture(colour="pink")).image)
    assert original.hamming(resized_jpeg) <= 4 and original.colour_delta(resized_jpeg) <= 3
    assert rule.matches(original, resized_jpeg)
    # Same pose in another colour: the shape hash alone cannot tell them apart, the colour part can.
    assert original.colour_delta(pink) > 30
    assert not rule.matches(original, pink)


def test_hash_shape() -> None:
    fingerprint = perceptual_hash(picture())
    assert 0 <= fingerprint.structure < 2**64 and len(fingerprint.colour) == 8 * 8 * 3
    assert fingerprint.hamming(fingerprint) == 0 and fingerprint.colour_delta(fingerprint) == 0
    assert perceptual_hash(picture().convert("RGBA")) == fingerprint


def test_png_and_resized_jpeg_share_a_key_a_different_colour_does_not() -> None:
    index = NearDuplicateIndex()
    png, jpeg = normalised(picture()), normalised(picture(), "JPEG", 0.75, quality=85)
    blue = normalised(picture(colour="blue"))
    assert png.content_hash != jpeg.content_hash
    keys = [key_for(ask(image), "demo@w", "p1", image_hash=index.canonical_hash) for image in (png, jpeg, blue)]
    assert keys[0] == keys[1] and keys[2] != keys[0]
    assert index.canonical_hash(jpeg) == png.content_hash
    assert index.canonical_hash(blue) == blue.content_hash
    assert len(index) == 2


def test_other_kinds_and_photos_stay_apart() -> None:
    index = NearDuplicateIndex()
    images = [normalised(picture(kind, colour, seed)) for kind in ("dress", "tshirt") for colour in ("red", "green")
              for seed in (1, 2)]
    assert [index.canonical_hash(image) for image in images] == [image.content_hash for image in images]


def test_oldest_canonical_picture_is_replaced_when_full() -> None:
    index = NearDuplicateIndex(max_entries=2)
    first, second, third = (normalised(picture(colour=c)) for c in ("red", "green", "blue"))
    for image in (first, second, third):
        index.canonical_hash(image)
    assert len(index) == 2
    copy_of_first = normalised(picture(colour="red"), "JPEG", quality=90)
    assert index.canonical_hash(copy_of_first) == copy_of_first.content_hash  # the first was forgotten
    copy_of_third = normalised(picture(colour="blue"), "JPEG", quality=90)
    assert index.canonical_hash(copy_of_third) == third.content_hash


def test_a_cleared_index_forgets_every_picture() -> None:
    index = NearDuplicateIndex(max_entries=2)
    png, jpeg = normalised(picture()), normalised(picture(), "JPEG", 0.75, quality=85)
    assert index.canonical_hash(png) == png.content_hash
    assert index.clear() == 1 and len(index) == 0
    assert index.canonical_hash(jpeg) == jpeg.content_hash  # the original is no longer canonical
    assert index.canonical_for(png.content_hash, perceptual_hash(png.image)) == jpeg.content_hash


def test_popcount_without_numpy_bitwise_count(monkeypatch: pytest.MonkeyPatch) -> None:
    values = np.array([0, 1, 0b1011, 2**64 - 1], dtype=np.uint64)
    expected = [0, 1, 3, 64]
    assert _popcount(values).tolist() == expected
    monkeypatch.delattr(np, "bitwise_count", raising=False)
    assert _popcount(values).tolist() == expected


def test_rule_and_index_validation() -> None:
    with pytest.raises(ValueError, match="max_hamming"):
        NearDuplicateRule(max_hamming=65)
    with pytest.raises(ValueError, match="max_entries"):
        NearDuplicateIndex(max_entries=0)
