"""Cache keys: what must change a key, what must not, and the value codec."""

from __future__ import annotations

import dataclasses
import io
import random

import pytest
from PIL import Image

from seesay.cache.codec import CorruptValueError, decode_result, encode_result
from seesay.cache.keys import KEY_SCHEMA_VERSION, CacheKey, key_for
from seesay.demo.catalogue import COLOURS_BY_KEY, KINDS_BY_KEY, Item, draw_picture
from seesay.images import NormalizedImage, PixelBudget, load_image
from seesay.types import ChatMessage, GenerationRequest, GenerationResult, SamplingParams, Timings, Usage

MODEL = "demo/qwen3-vl-tiny@weights-abc"
POLICY = "policy-1"
BUDGET = PixelBudget()


def picture(kind: str = "jacket", colour: str = "red", seed: int = 7) -> Image.Image:
    return draw_picture(Item(KINDS_BY_KEY[kind], COLOURS_BY_KEY[colour]), random.Random(seed))


def encoded(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def normalised(data: bytes) -> NormalizedImage:
    return load_image(data, BUDGET)


def request(image: NormalizedImage | None = None, text: str = "What colour is this item?", *,
            adapter: str | None = None, budget: PixelBudget | None = BUDGET, **sampling: object) -> GenerationRequest:
    parts = (image, text) if image is not None else (text,)
    return GenerationRequest((ChatMessage.user(*parts),), SamplingParams(**sampling),  # type: ignore[arg-type]
                             pixel_budget=budget, adapter=adapter)


def key(req: GenerationRequest, model: str = MODEL, policy: str = POLICY, adapter_weights: str = "a1") -> CacheKey:
    return key_for(req, model, policy, adapter_fingerprint=adapter_weights if req.adapter is not None else None)


@pytest.fixture(scope="module")
def red_jacket() -> NormalizedImage:
    return normalised(encoded(picture()))


def test_key_is_a_versioned_sha256_that_ignores_the_request_id(red_jacket: NormalizedImage) -> None:
    first = key(request(red_jacket, temperature=0))
    again = key(dataclasses.replace(request(red_jacket, temperature=0), request_id="req-other"))
    assert first == again
    assert len(first.digest) == 64 and int(first.digest, 16) >= 0
    assert first.schema == KEY_SCHEMA_VERSION
    assert str(first) == first.digest


@pytest.mark.parametrize("fmt, options", [("PNG", {}), ("WEBP", {"lossless": True}), ("TIFF", {}), ("BMP", {})])
def test_lossless_re_encodings_share_the_key(red_jacket: NormalizedImage, fmt: str, options: dict[str, object]) -> None:
    copy = normalised(encoded(picture(), fmt, **options))
    assert copy.source_format == fmt
    assert key(request(copy, temperature=0)) == key(request(red_jacket, temperature=0))


def test_key_is_taken_after_the_orientation_fix(red_jacket: NormalizedImage) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": the stored pixels are turned the other way
    stored_turned = picture().transpose(Image.Transpose.ROTATE_90)
    copy = normalised(encoded(stored_turned, "PNG", exif=exif.tobytes()))
    assert key(request(copy, temperature=0)) == key(request(red_jacket, temperature=0))


def test_another_colour_or_kind_of_the_same_pose_changes_the_key(red_jacket: NormalizedImage) -> None:
    blue = normalised(encoded(picture(colour="blue")))
    dress = normalised(encoded(picture(kind="dress")))
    keys = {key(request(image, temperature=0)) for image in (red_jacket, blue, dress)}
    assert len(keys) == 3


def test_a_lossy_copy_is_a_different_picture_without_near_duplicate_matching(red_jacket: NormalizedImage) -> None:
    jpeg = normalised(encoded(picture(), "JPEG", quality=90))
    assert key(request(jpeg, temperature=0)) != key(request(red_jacket, temperature=0))


@pytest.mark.parametrize("change", [
    {"temperature": 0.5},
    {"max_new_tokens": 16},
    {"top_p": 0.5},
    {"top_k": 5},
    {"presence_penalty": 0.0},
    {"frequency_penalty": 0.5},
    {"repetition_penalty": 1.1},
    {"stop": ("。",)},
])
def test_every_sampling_field_changes_the_key(red_jacket: NormalizedImage, change: dict[str, object]) -> None:
    changed = request(red_jacket, **{"temperature": 0, **change})  # type: ignore[arg-type]
    assert key(changed) != key(request(red_jacket, temperature=0))


def test_seed_matters_only_when_sampling(red_jacket: NormalizedImage) -> None:
    assert key(request(red_jacket, temperature=0, seed=1)) == key(request(red_jacket, temperature=0, seed=2))
    assert key(request(red_jacket, temperature=0, seed=1)) == key(request(red_jacket, temperature=0))
    assert key(request(red_jacket, temperature=0.7, seed=1)) != key(request(red_jacket, temperature=0.7, seed=2))
    # Unset temperature means the engine's default, which may sample: the seed counts.
    assert key(request(red_jacket, seed=1)) != key(request(red_jacket, seed=2))


def test_equal_numbers_written_differently_share_the_key(red_jacket: NormalizedImage) -> None:
    assert key(request(red_jacket, temperature=0)) == key(request(red_jacket, temperature=0.0))
    assert key(request(red_jacket, temperature=0, top_p=1)) == key(request(red_jacket, temperature=0, top_p=1.0))


def test_stop_strings_are_a_set(red_jacket: NormalizedImage) -> None:
    one = key(request(red_jacket, temperature=0, stop=("a", "b")))
    assert one == key(request(red_jacket, temperature=0, stop=("b", "a", "a")))
    assert one != key(request(red_jacket, temperature=0, stop=("a",)))


def test_model_adapter_policy_and_budget_change_the_key(red_jacket: NormalizedImage) -> None:
    base = request(red_jacket, temperature=0)
    other_weights = "demo/qwen3-vl-tiny@weights-def"
    other_defaults = "demo/qwen3-vl-tiny@weights-abc-max-new-64"
    keys = [
        key(base),
        key(base, model=other_weights),
        key(base, model=other_defaults),
        key(base, policy="policy-2"),
        key(request(red_jacket, temperature=0, adapter="shop-lora")),
        key(request(red_jacket, temperature=0, adapter="shop-lora"), adapter_weights="a2"),
        key(request(red_jacket, temperature=0, adapter="kids-lora")),
        key(request(red_jacket, temperature=0, budget=PixelBudget(max_pixels=512 * 32 * 32))),
        key(request(red_jacket, temperature=0, budget=None)),
    ]
    assert len(set(keys)) == len(keys)


def test_an_adapter_key_needs_the_adapter_weights(red_jacket: NormalizedImage) -> None:
    with pytest.raises(ValueError, match="fingerprint of its weights"):
        key_for(request(red_jacket, adapter="shop-lora"), MODEL, POLICY)


def test_conversation_roles_text_and_image_order_change_the_key(red_jacket: NormalizedImage) -> None:
    blue = normalised(encoded(picture(colour="blue")))
    greedy = SamplingParams(temperature=0)
    base = GenerationRequest((ChatMessage.user(red_jacket, blue, "Which is darker?"),), greedy)
    swapped = GenerationRequest((ChatMessage.user(blue, red_jacket, "Which is darker?"),), greedy)
    as_system = GenerationRequest((ChatMessage("system", base.messages[0].content),), greedy)
    reworded = GenerationRequest((ChatMessage.user(red_jacket, blue, "Which is darker? "),), greedy)
    keys = [key(r) for r in (base, swapped, as_system, reworded)]
    assert len(set(keys)) == len(keys)


def test_a_custom_image_hasher_names_the_images(red_jacket: NormalizedImage) -> None:
    jpeg = normalised(encoded(picture(), "JPEG", quality=90))
    same_name = lambda image: "canonical"  # noqa: E731
    assert key_for(request(jpeg, temperature=0), MODEL, POLICY, image_hash=same_name) == key_for(
        request(red_jacket, temperature=0), MODEL, POLICY, image_hash=same_name)


def test_missing_model_fingerprint_or_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="model fingerprint"):
        key_for(request(), "", POLICY)
    with pytest.raises(ValueError, match="policy version"):
        key_for(request(), MODEL, "")



def test_codec_round_trips_and_rejects_foreign_values() -> None:
    result = GenerationResult("req-1", "适合春秋季休闲出行。", "stop", Usage(80, 9, 64), Timings(0.01, 0.1, 0.4))
    assert decode_result(encode_result(result)) == result
    assert decode_result(encode_result(dataclasses.replace(result, timings=Timings()))).timings.first_token_s is None
    for bad in (b"not json", b'{"v": 99}', b'{"v": 1, "text": "x"}', b"[]",
                encode_result(result).replace(b'"stop"', b'"exploded"')):
        with pytest.raises(CorruptValueError):
            decode_result(bad)
