"""The stream guard: no part of a blocked phrase reaches the client, however the answer is chunked."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

import pytest
from test_safety_text import MUST_BLOCK, MUST_PASS

from seesay.demo.catalogue import corpus
from seesay.safety.policy import default_policy
from seesay.safety.stream import StreamGuard
from seesay.safety.text import RegexPattern, Rule, TextPolicy, TextVerdict

POLICY = default_policy()


def stream(policy: TextPolicy, chunks: Iterable[str]) -> tuple[str, StreamGuard]:
    """Feed ``chunks``, then finish; return everything released and the guard."""
    guard = StreamGuard(policy)
    released = "".join(guard.feed(chunk) for chunk in chunks)
    return released + guard.finish(), guard


def splits(text: str) -> Iterable[list[str]]:
    """The text in two chunks at every position, and one character at a time."""
    for cut in range(len(text) + 1):
        yield [text[:cut], text[cut:]]
    yield list(text)


def assert_nothing_of_the_match_leaked(policy: TextPolicy, text: str, chunks: list[str]) -> None:
    verdict = policy.check(text)
    released, guard = stream(policy, chunks)
    assert guard.verdict is not None, (text, chunks)
    assert verdict.start is not None
    assert text.startswith(released)
    assert len(released) <= verdict.start, (text, chunks, released)


@pytest.mark.parametrize(("text", "rule"), MUST_BLOCK)
def test_blocked_phrase_split_anywhere_never_leaks(text: str, rule: str) -> None:
    chinese = any("\u4e00" <= c <= "\u9fff" for c in text)
    framed = f"这件外套很好看，{text}，谢谢" if chinese else f"Nice coat. {text} ok"
    for chunks in splits(framed):
        assert_nothing_of_the_match_leaked(POLICY, framed, chunks)
    _, guard = stream(POLICY, list(framed))
    assert guard.verdict is not None and guard.verdict.rule == rule


@pytest.mark.parametrize("text", MUST_PASS)
def test_clean_answers_come_through_whole(text: str) -> None:
    for chunks in splits(text):
        released, guard = stream(POLICY, chunks)
        assert released == text and guard.verdict is None


def test_the_guard_releases_the_clean_prefix_and_stops_at_the_block() -> None:
    guard = StreamGuard(POLICY)
    assert guard.feed("适合约会，") == "适合约会，"
    assert guard.feed("违") == ""  # could be the start of 违法
    assert guard.feed(" ") == ""
    assert guard.feed("法的事") == ""
    assert guard.verdict is not None and guard.verdict.rule == "illegal"
    assert guard.feed("更多文字") == ""
    assert guard.finish() == ""
    assert guard.stats.released == 5


def test_a_false_start_is_released_as_soon_as_it_is_decided() -> None:
    guard = StreamGuard(POLICY)
    assert guard.feed("红色") == "红"  # 色 may begin 色情
    assert guard.feed("情") == ""  # 色情 is complete, but the allow-list phrase 色情侣 may still excuse it
    assert guard.feed("侣款") == "色情侣款"
    assert guard.finish() == ""
    assert guard.verdict is None


def test_an_english_word_is_held_only_until_it_ends() -> None:
    guard = StreamGuard(POLICY)
    assert guard.feed("It is illegal") == "It is "
    assert guard.feed("ly") == ""
    assert guard.feed(" parked") == ""
    assert guard.verdict is not None and guard.verdict.pattern == "illegally"
    guard = StreamGuard(POLICY)
    assert guard.feed("crack") == ""
    assert guard.feed(" an egg") == "crack an egg"


def test_full_width_and_spaced_evasions_are_held_from_the_first_character() -> None:
    cases = (["ＶＩ", "ＯＬＡＴＥ", " ＴＨＥ ", "ＬＡＷ"], ["v i o", " l a t e", " the law"], ["P", ".", "O", ".R.N"])
    for chunks in cases:
        released, guard = stream(POLICY, chunks)
        assert released == "" and guard.verdict is not None


def test_stream_agrees_with_the_whole_text_check_on_random_text() -> None:
    rng = random.Random(5)
    pieces = ["违", "法", "色", "情", "侣", "况", "破", "解", "防", "p", "o", "r", "n", "il", "legal", "ly", "top ",
              " ", ".", "，", "\u200b", "ｐ", "ＯＲＮ", "好看", "the ", "law", "violate ", "a", "nude ", "photos"]
    for _ in range(400):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 14)))
        cuts = sorted(rng.sample(range(len(text) + 1), k=min(len(text) + 1, rng.randint(0, 5))))
        chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        verdict = POLICY.check(text)
        released, guard = stream(POLICY, chunks)
        assert (guard.verdict is not None) == verdict.blocked, (text, chunks)
        if verdict.blocked:
            assert verdict.start is not None and len(released) <= verdict.start
        else:
            assert released == text
        assert guard.stats.max_held <= POLICY.max_hold_chars


def words(text: str) -> list[str]:
    """Token-like chunks: each word with the space before it, each CJK character alone."""
    chunks: list[str] = []
    for char in text:
        if chunks and not ("\u4e00" <= char <= "\u9fff") and (char != " ") and chunks[-1][-1:].isascii():
            chunks[-1] += char
        else:
            chunks.append(char)
    return chunks


@pytest.mark.parametrize(("chunking", "mean_delay", "max_delay"), [(list, 0.6, 2), (words, 0.1, 2)])
def test_holding_back_costs_little_on_real_answers(
    chunking: Callable[[str], list[str]], mean_delay: float, max_delay: int
) -> None:
    """The added time-to-first-token, in characters, on every demo-shop question and answer."""
    delays = []
    for text in corpus():
        chunks = chunking(text)
        assert "".join(chunks) == text
        released, guard = stream(POLICY, chunks)
        assert released == text
        assert guard.stats.first_release_after is not None
        first_chunk = len(chunks[0])
        delays.append(guard.stats.first_release_after - first_chunk)
        assert guard.stats.max_held <= 8
    assert max(delays) <= max_delay
    assert sum(delays) / len(delays) <= mean_delay


def test_regex_rules_hold_their_declared_window() -> None:
    policy = TextPolicy((Rule("escort", regexes=(RegexPattern(r"\bescort\s+services?\b", 20),)),))
    text = "We sell coats and hats. Escort"
    guard = StreamGuard(policy)
    out = "".join(guard.feed(c) for c in text)
    assert out == text[: len(text) - 21]  # max_chars + 1 held back
    out += guard.feed(" services")
    assert out == "We sell coats and hats. Escort services"[:-21]
    assert guard.feed(" here") == ""
    assert guard.verdict is not None and guard.verdict.rule == "escort"
    for chunks in splits("Nice. escort service!"):
        assert_nothing_of_the_match_leaked(policy, "Nice. escort service!", chunks)


def test_on_block_is_called_once() -> None:
    seen: list[TextVerdict] = []
    guard = StreamGuard(POLICY, on_block=seen.append)
    guard.feed("porn ")
    guard.feed("more")
    guard.finish()
    assert [v.rule for v in seen] == ["pornography"]
