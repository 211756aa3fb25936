"""The demo catalogue: deterministic samples, full coverage, one answer per question, clean tokens."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seesay.demo.catalogue import (
    COLOURS,
    COLOURS_BY_KEY,
    COMBINATIONS,
    KINDS,
    LANGUAGES,
    QUESTION_TYPES,
    Item,
    answer_for,
    draw_picture,
    draw_samples,
    iter_picture_groups,
    questions_for,
    write_demo_images,
)
from seesay.demo.examples import EXAMPLES, example_path, write_examples
from seesay.demo.tokenizer import EOS_TOKEN, build_tokenizer


def _fingerprint(samples: list) -> list[tuple[str, str, str, str, bytes]]:
    return [(s.question, s.answer, s.question_type, s.language, s.image.tobytes()) for s in samples]


def test_samples_are_deterministic_for_a_seed() -> None:
    assert _fingerprint(draw_samples(20, 3)) == _fingerprint(draw_samples(20, 3))
    assert _fingerprint(draw_samples(20, 3)) != _fingerprint(draw_samples(20, 4))


def test_a_prefix_of_the_stream_is_the_shorter_draw() -> None:
    assert _fingerprint(draw_samples(5, 9)) == _fingerprint(draw_samples(12, 9))[:5]


def test_every_combination_is_reached_once_per_block() -> None:
    samples = draw_samples(len(COMBINATIONS), 0)
    seen = {(s.item.kind.key, s.item.colour.key, s.question_type, s.language) for s in samples}
    assert len(seen) == len(COMBINATIONS) == len(KINDS) * len(COLOURS) * 3 * 2
    assert len(KINDS) >= 6 and len(COLOURS) >= 8


def test_training_groups_ask_every_question_type_in_every_language() -> None:
    groups = list(zip(range(len(KINDS) * len(COLOURS)), iter_picture_groups(0), strict=False))
    assert {group[0].item for _, group in groups} == {Item(k, c) for k in KINDS for c in COLOURS}
    for _, group in groups:
        assert {(s.question_type, s.language) for s in group} == {(t, lang) for t in QUESTION_TYPES
                                                                   for lang in LANGUAGES}
        assert len({id(s.image) for s in group}) == 1


def test_samples_carry_the_canonical_answer_in_the_question_language() -> None:
    for sample in draw_samples(60, 5):
        assert sample.answer == answer_for(sample.question_type, sample.language, sample.item)
        assert sample.question in questions_for(sample.question_type, sample.language, sample.item.kind)
        assert sample.image.size == (256, 256) and sample.image.mode == "RGB"


def test_canonical_answers() -> None:
    red_tshirt = Item(KINDS[1], COLOURS_BY_KEY["red"])
    assert answer_for("colour", "en", red_tshirt) == "red"
    assert answer_for("colour", "zh", red_tshirt) == "红色"
    assert answer_for("item", "en", red_tshirt) == "This is a T-shirt."
    assert answer_for("item", "zh", red_tshirt) == "这是一件T恤。"
    shoes = Item(KINDS[3], COLOURS[0])
    assert answer_for("item", "en", shoes) == "This is a pair of shoes."
    assert answer_for("item", "zh", shoes) == "这是一双鞋。"
    jacket = Item(KINDS[0], COLOURS[0])
    assert answer_for("occasion", "zh", jacket) == "适合春秋季休闲出行，可搭配牛仔裤。"


def test_answers_tell_kinds_and_colours_apart() -> None:
    for question_type in QUESTION_TYPES:
        for language in LANGUAGES:
            if question_type == "colour":
                answers = {answer_for(question_type, language, Item(KINDS[0], c)) for c in COLOURS}
                assert len(answers) == len(COLOURS)
            else:
                answers = {answer_for(question_type, language, Item(k, COLOURS[0])) for k in KINDS}
                assert len(answers) == len(KINDS)


def test_every_phrasing_and_answer_is_nonempty_text() -> None:
    for kind, colour, question_type, language in COMBINATIONS:
        questions = questions_for(question_type, language, kind)
        assert len(questions) >= 3
        for question in questions:
            assert question.strip() == question and question[-1] in "?？"
            assert "{" not in question
        answer = answer_for(question_type, language, Item(kind, colour))
        assert answer.strip() == answer != ""


def test_no_answer_repeats_a_token() -> None:
    """The engine's default presence penalty (1.5) would push a repeated token out of the answer."""
    tokenizer = build_tokenizer()
    for kind, colour, question_type, language in COMBINATIONS:
        answer = answer_for(question_type, language, Item(kind, colour))
        ids = tokenizer.encode(answer + EOS_TOKEN, add_special_tokens=False)
        tokens = tokenizer.convert_ids_to_tokens(ids)
        assert len(ids) == len(set(ids)), f"{answer!r} repeats a token: {tokens}"


def test_items_are_painted_in_their_colour_on_a_pale_background() -> None:
    rng = random.Random(1)
    for colour in COLOURS:
        for kind in KINDS:
            hsv = np.asarray(draw_picture(Item(kind, colour), rng).convert("HSV"), dtype=np.float64) / 255
            corners = hsv[[0, 0, -1, -1], [0, -1, 0, -1]]
            assert (corners[:, 1] <= 0.2).all() and (corners[:, 2] >= 0.8).all(), "background is not pale"
            item = hsv[(hsv[..., 1] > 0.3) | (hsv[..., 2] < 0.3)]
            assert len(item) > 2000, f"{colour.key} {kind.key} covers too little of the picture"
            if colour.key == "black":
                assert np.median(item[:, 2]) < 0.25
            else:
                low, high = colour.hue
                hue = np.median((item[:, 0] - low + 0.05) % 1.0)  # distance past the range start
                assert hue <= high - low + 0.1, f"{colour.key} {kind.key}: median hue off by {hue}"


def test_write_demo_images(tmp_path: Path) -> None:
    index = write_demo_images(12, 7, tmp_path)
    records = [json.loads(line) for line in index.read_text(encoding="utf-8").splitlines()]
    samples = draw_samples(12, 7)
    assert len(records) == 12
    for record, sample in zip(records, samples, strict=True):
        assert set(record) == {"image", "question", "answer", "question_type", "language"}
        assert (record["question"], record["answer"]) == (sample.question, sample.answer)
        assert (record["question_type"], record["language"]) == (sample.question_type, sample.language)
        with Image.open(tmp_path / record["image"]) as picture:
            assert picture.tobytes() == sample.image.tobytes()


def test_example_pictures_are_bundled_and_reproducible(tmp_path: Path) -> None:
    redrawn = {path.name: path.read_bytes() for path in write_examples(tmp_path)}
    for name in EXAMPLES:
        bundled = example_path(name)
        assert bundled.is_file(), f"{bundled} is missing: run `seesay demo examples`"
        assert bundled.read_bytes() == redrawn[f"{name}.png"]
    assert {"red-tshirt", "blue-jacket", "black-shoes"} <= set(EXAMPLES)


def test_unknown_example_lists_the_names() -> None:
    with pytest.raises(ValueError, match="red-tshirt"):
        example_path("purple-unicorn")
