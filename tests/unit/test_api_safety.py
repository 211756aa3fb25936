"""Content safety behind the HTTP API, with a FakeEngine and the real SSE path.

Images are screened with the ``flag`` detector (it flags every picture) where a test is about
images; the text policy is seesay's default one. The FakeEngine's ``scripted`` answers let an
answer contain a blocked phrase that the prompt does not, split across deltas at will.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from fakes import FakeEngine, app_client, data_url, fake_settings, metric, png_bytes
from seesay.api.app import build_app
from seesay.safety import SafetyConfigError

REFUSAL_EN = "Sorry, I can't help with that."
REFUSAL_ZH = "抱歉，我无法回答这个问题。"
PHRASE = "break the law"
TAIL = [f" step {i}." for i in range(40)]  # keeps generating long after the phrase
SPLIT_EN = ["Sure, you can ", "bre", "ak the ", "la", "w by ", "doing ", "this.", *TAIL]
SPLIT_ZH = ["好的，", "这件事", "违", "法", "，但是", "可以", *TAIL]


def chat(content: Any = "what is this?", **fields: Any) -> dict[str, Any]:
    return {"model": "fake-vl", "messages": [{"role": "user", "content": content}], **fields}


def with_image(text: str) -> list[dict[str, Any]]:
    return [{"type": "image_url", "image_url": {"url": data_url(png_bytes())}}, {"type": "text", "text": text}]


def sse_events(text: str) -> list[dict[str, Any]]:
    return [json.loads(block[6:]) for block in text.split("\n\n")
            if block.startswith("data: ") and block != "data: [DONE]"]


def content_deltas(events: list[dict[str, Any]]) -> list[str]:
    return [e["choices"][0]["delta"]["content"] for e in events
            if e["choices"] and e["choices"][0]["delta"].get("content")]


def finish_reasons(events: list[dict[str, Any]]) -> list[str]:
    return [e["choices"][0]["finish_reason"] for e in events if e["choices"] and e["choices"][0].get("finish_reason")]


# --- pictures ----------------------------------------------------------------------------------


async def test_a_blocked_picture_is_a_400_content_policy_violation_and_never_reaches_the_engine(
    tmp_path: Path,
) -> None:
    engine = FakeEngine()
    audit = tmp_path / "audit.jsonl"
    settings = fake_settings(safety_image_detector="flag", safety_audit_log=audit)
    async with app_client(build_app(settings, engine)) as client:
        response = await client.post("/v1/chat/completions", json=chat(with_image("what is this?")))
        upload = await client.post("/v1/vqa", files={"image": ("x.png", png_bytes(), "image/png")},
                                   data={"question": "what is this?"})
        page = (await client.get("/metrics")).text
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "content_policy_violation"
    assert error["type"] == "invalid_request_error"
    assert error["message"] == ("image 1 of the request was blocked by the content policy "
                                "(FLAGGED_BY_TEST_DETECTOR, score 1.00); send a different picture")
    assert upload.status_code == 400 and upload.json()["error"]["code"] == "content_policy_violation"
    assert engine.requests == []
    assert metric(page, 'seesay_safety_blocks_total{rule="FLAGGED_BY_TEST_DETECTOR",where="image"}') == 2
    assert metric(page, 'seesay_safety_check_seconds_count{where="image"}') == 2
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(line["where"], line["rule"], line["detector"]) for line in lines] == [
        ("image", "FLAGGED_BY_TEST_DETECTOR", "flag")] * 2
    assert "what is this" not in audit.read_text()  # the user's text never reaches the audit trail


async def test_refuse_mode_answers_a_blocked_picture_with_the_refusal() -> None:
    engine = FakeEngine()
    settings = fake_settings(safety_image_detector="flag", safety_on_block="refuse")
    async with app_client(build_app(settings, engine)) as client:
        whole = await client.post("/v1/chat/completions", json=chat(with_image("这是什么？"), temperature=0))
        again = await client.post("/v1/chat/completions", json=chat(with_image("这是什么？"), temperature=0))
        streamed = await client.post("/v1/chat/completions", json=chat(with_image("what is it?"), stream=True))
        page = (await client.get("/metrics")).text
    choice = whole.json()["choices"][0]
    assert whole.status_code == 200 and choice["message"]["content"] == REFUSAL_ZH
    assert choice["finish_reason"] == "content_filter"
    assert again.headers["x-seesay-cache"] == "miss"  # refusals are not stored: each is screened and counted
    events = sse_events(streamed.text)
    assert content_deltas(events) == [REFUSAL_EN] and finish_reasons(events) == ["content_filter"]
    assert engine.requests == []
    assert metric(page, 'seesay_safety_blocks_total{rule="FLAGGED_BY_TEST_DETECTOR",where="image"}') == 3


async def test_identical_blocked_requests_at_once_are_each_screened_and_counted() -> None:
    engine = FakeEngine()
    settings = fake_settings(safety_image_detector="flag", safety_on_block="refuse")
    async with app_client(build_app(settings, engine)) as client:
        body = chat(with_image("what is this?"), temperature=0)
        responses = await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for _ in range(5)))
        page = (await client.get("/metrics")).text
    assert {r.json()["choices"][0]["message"]["content"] for r in responses} == {REFUSAL_EN}
    assert metric(page, 'seesay_safety_blocks_total{rule="FLAGGED_BY_TEST_DETECTOR",where="image"}') == 5


# --- prompts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("on_block", ["error", "refuse"])
async def test_a_prompt_that_breaks_the_policy_is_refused(on_block: str) -> None:
    engine = FakeEngine()
    async with app_client(build_app(fake_settings(safety_on_block=on_block), engine)) as client:
        response = await client.post("/v1/chat/completions", json=chat("How do I break the law?"))
        system = await client.post("/v1/chat/completions", json={"model": "fake-vl", "messages": [
            {"role": "system", "content": "帮我破解这个软件"}, {"role": "user", "content": "好的吗？"}]})
    assert engine.requests == []
    if on_block == "error":
        assert response.status_code == 400 and response.json()["error"]["code"] == "content_policy_violation"
        assert response.json()["error"]["message"] == (
            "the prompt was blocked by the content policy (rule 'illegal'); rephrase the request")
        assert system.status_code == 400 and "rule 'cracking'" in system.json()["error"]["message"]
    else:
        assert response.json()["choices"][0] == {"index": 0, "logprobs": None, "finish_reason": "content_filter",
                                                 "message": {"role": "assistant", "content": REFUSAL_EN}}
        assert system.json()["choices"][0]["message"]["content"] == REFUSAL_ZH


# --- answers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("question", "deltas", "refusal", "start"), [
    ("How do I fix it?", SPLIT_EN, REFUSAL_EN, "bre"),
    ("这件衣服怎么洗？", SPLIT_ZH, REFUSAL_ZH, "违"),
])
async def test_a_blocked_phrase_split_across_stream_deltas_never_reaches_the_client(
    question: str, deltas: list[str], refusal: str, start: str
) -> None:
    engine = FakeEngine(scripted={question: deltas})
    engine.lockstep = asyncio.get_running_loop()  # the guard's cancel lands before the next token
    async with app_client(build_app(fake_settings(), engine)) as client:
        streamed = await client.post("/v1/chat/completions", json=chat(question, stream=True, temperature=0))
        replayed = await client.post("/v1/chat/completions", json=chat(question, stream=True, temperature=0))
        page = (await client.get("/metrics")).text
    answer = "".join(deltas)
    events = sse_events(streamed.text)
    sent = content_deltas(events)
    assert sent[-1] == refusal and finish_reasons(events) == ["content_filter"]
    released = "".join(sent[:-1])
    assert answer.startswith(released) and len(released) <= answer.index(start)  # not one character of it
    assert all(start not in delta for delta in sent)
    assert streamed.text.endswith("data: [DONE]\n\n")
    # Generation was cancelled when the phrase was decided, long before the answer's end.
    assert engine.results[0].finish_reason == "cancelled"
    assert engine.results[0].usage.completion_tokens < len(deltas) // 2
    assert metric(page, 'seesay_safety_blocks_total{rule="illegal",where="answer"}') == 1
    # What the cache stored is the refusal, never the blocked answer.
    replay = sse_events(replayed.text)
    assert replayed.headers["x-seesay-cache"] == "hit-memory"
    assert content_deltas(replay) == [refusal] and finish_reasons(replay) == ["content_filter"]


async def test_a_clean_stream_passes_whole_through_the_guard() -> None:
    deltas = ["This jacket ", "suits ", "spring ", "and autumn", "."]
    engine = FakeEngine(scripted={"When can I wear it?": deltas})
    async with app_client(build_app(fake_settings(), engine)) as client:
        streamed = await client.post("/v1/chat/completions", json=chat("When can I wear it?", stream=True))
    events = sse_events(streamed.text)
    assert "".join(content_deltas(events)) == "".join(deltas) and finish_reasons(events) == ["stop"]


async def test_a_blocked_whole_answer_is_replaced_by_the_refusal_and_cached_so() -> None:
    engine = FakeEngine(scripted={"这件外套怎么样？": SPLIT_ZH[:6]})
    async with app_client(build_app(fake_settings(), engine)) as client:
        first = await client.post("/v1/chat/completions", json=chat("这件外套怎么样？", temperature=0))
        second = await client.post("/v1/chat/completions", json=chat("这件外套怎么样？", temperature=0))
    for response in (first, second):
        choice = response.json()["choices"][0]
        assert (choice["message"]["content"], choice["finish_reason"]) == (REFUSAL_ZH, "content_filter")
    assert first.json()["usage"]["completion_tokens"] == 6  # the tokens were generated, and are reported
    assert second.headers["x-seesay-cache"] == "hit-memory" and len(engine.batches) == 1


async def test_a_changed_policy_is_never_bypassed_by_the_cache(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[[rule]]\nname = "shop"\nphrases = ["counterfeit"]\n')
    engine = FakeEngine(scripted={"Is it real?": ["It is ", "a replica", "."]})
    settings = fake_settings(safety_policy_file=policy, safety_policy_check_interval_s=0)
    async with app_client(build_app(settings, engine)) as client:
        before = await client.post("/v1/chat/completions", json=chat("Is it real?", temperature=0))
        policy.write_text('[[rule]]\nname = "shop"\nphrases = ["counterfeit", "replica"]\n')
        after = await client.post("/v1/chat/completions", json=chat("Is it real?", temperature=0))
    assert before.json()["choices"][0]["message"]["content"] == "It is a replica."
    assert after.headers["x-seesay-cache"] == "miss"
    assert after.json()["choices"][0]["finish_reason"] == "content_filter"


# --- settings ----------------------------------------------------------------------------------


async def test_screening_off_is_an_explicit_setting() -> None:
    engine = FakeEngine(scripted={"How do I break the law?": SPLIT_EN[:7]})
    settings = fake_settings(safety=False, safety_image_detector="flag")
    async with app_client(build_app(settings, engine)) as client:
        streamed = await client.post("/v1/chat/completions", json=chat(with_image("How do I break the law?"),
                                                                        stream=True))
    assert "".join(content_deltas(sse_events(streamed.text))) == "".join(SPLIT_EN[:7])


async def test_a_detector_that_cannot_load_stops_the_start_up_with_the_fix() -> None:
    app = build_app(fake_settings(safety_image_detector="bogus"), FakeEngine())
    with pytest.raises(SafetyConfigError, match=r"unknown image detector 'bogus'; choose one of: flag, "):
        async with app_client(app):
            pass


async def test_the_default_detector_without_nudenet_fails_closed_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "nudenet" else find_spec(name, *args))
    app = build_app(fake_settings(safety_image_detector="nudenet"), FakeEngine())
    fix = r"image detector 'nudenet' cannot start: .* pip install 'seesay\[safety\]'"
    with pytest.raises(SafetyConfigError, match=fix):
        async with app_client(app):
            pass


async def test_concurrent_blocked_streams_each_get_the_refusal() -> None:
    engine = FakeEngine(token_delay_s=0.002, scripted={"How do I fix it?": SPLIT_EN})
    async with app_client(build_app(fake_settings(max_batch_size=8), engine)) as client:
        responses = await asyncio.gather(*(client.post("/v1/chat/completions", json=chat(
            "How do I fix it?", stream=True, seed=i)) for i in range(4)))
    for response in responses:
        assert content_deltas(sse_events(response.text))[-1] == REFUSAL_EN
        assert "bre" not in "".join(content_deltas(sse_events(response.text)))

