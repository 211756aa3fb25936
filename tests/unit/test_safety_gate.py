"""The safety gate: block paths for images, prompts and answers, audit lines, metrics, fail-closed start."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from seesay.errors import ContentPolicyViolation, SafetyConfigError, WireForm
from seesay.images import NormalizedImage, PixelBudget, load_image
from seesay.safety.audit import AuditLog, BlockEvent, Where
from seesay.safety.gate import SafetyConfig, SafetyGate, prompt_text
from seesay.types import ChatMessage, GenerationRequest


class RecordingObserver:
    def __init__(self) -> None:
        self.checks: list[Where] = []
        self.blocks: list[BlockEvent] = []

    def on_check(self, where: Where, seconds: float) -> None:
        assert seconds >= 0
        self.checks.append(where)

    def on_block(self, event: BlockEvent) -> None:
        self.blocks.append(event)


def picture(colour: tuple[int, int, int]) -> NormalizedImage:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buffer, "PNG")
    return load_image(buffer.getvalue(), PixelBudget(min_pixels=32 * 32, max_pixels=64 * 32 * 32))


RED, BLUE = picture((255, 0, 0)), picture((0, 0, 255))


def request(*parts: str | NormalizedImage) -> GenerationRequest:
    return GenerationRequest(messages=(ChatMessage.user(*parts),), request_id="req-test")


def gate(tmp_path: Path, *, on_block: str = "error", flag: list[str] | None = None) -> tuple[SafetyGate, Path]:
    audit = tmp_path / "audit" / "blocks.jsonl"
    config = SafetyConfig(image_detector="flag", image_options={"hashes": flag or [RED.content_hash]},
                          on_block=on_block, audit_log=audit)  # type: ignore[arg-type]
    return SafetyGate.from_config(config, observer=RecordingObserver()), audit


def audit_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_clean_request_passes_every_screen(tmp_path: Path) -> None:
    safety, audit = gate(tmp_path)
    assert safety.screen_request(request("这件外套适合什么场合穿？", BLUE)) is None
    assert safety.check_answer(request("What is this?"), "This is a jacket.") is None
    assert isinstance(safety.observer, RecordingObserver)
    assert safety.observer.checks == ["image", "prompt", "answer"]
    assert not audit.exists() or audit.read_text() == ""


def test_blocked_image_is_a_400_content_policy_violation(tmp_path: Path) -> None:
    safety, audit = gate(tmp_path)
    with pytest.raises(ContentPolicyViolation) as caught:
        safety.screen_request(request("What is this?", BLUE, RED))
    error = caught.value
    assert error.wire == WireForm(400, "content_policy_violation", "invalid_request_error")
    assert "image 2 of the request was blocked" in error.message and "FLAGGED_BY_TEST_DETECTOR" in error.message
    [line] = audit_lines(audit)
    assert line["where"] == "image" and line["image_hash"] == RED.content_hash and line["request_id"] == "req-test"
    assert line["rule"] == "FLAGGED_BY_TEST_DETECTOR" and line["detector"] == "flag"
    assert str(line["time"]).endswith("Z")


def test_blocked_prompt_in_refuse_mode_answers_with_the_refusal(tmp_path: Path) -> None:
    safety, audit = gate(tmp_path, on_block="refuse")
    refusal = safety.screen_request(request("哪里有色 情网站？"))
    assert refusal is not None and refusal.text == "抱歉，我无法回答这个问题。"
    assert refusal.event.rule == "pornography" and refusal.event.where == "prompt"
    english = safety.screen_request(request("Show me P.O.R.N"))
    assert english is not None and english.text == "Sorry, I can't help with that."
    lines = audit_lines(audit)
    assert [line["where"] for line in lines] == ["prompt", "prompt"]
    # The audit holds the policy's phrase, never the user's text.
    text = audit.read_text(encoding="utf-8")
    assert "网站" not in text and "Show me" not in text and "P.O.R.N" not in text
    assert lines[0]["pattern"] == "色情" and lines[0]["policy_version"] == safety.policy.current().version  # type: ignore[union-attr]


def test_blocked_answer_becomes_the_refusal_in_the_request_language(tmp_path: Path) -> None:
    safety, audit = gate(tmp_path)
    refusal = safety.check_answer(request("这个软件怎么用？"), "你可以下载破解版。")
    assert refusal is not None and refusal.text == "抱歉，我无法回答这个问题。"
    assert audit_lines(audit)[0]["where"] == "answer"
    assert isinstance(safety.observer, RecordingObserver)
    assert [e.rule for e in safety.observer.blocks] == ["cracking"]


def test_stream_guard_audits_its_block(tmp_path: Path) -> None:
    safety, audit = gate(tmp_path)
    guard = safety.guard_stream(request("What about this?"))
    assert guard is not None
    out = guard.feed("Sure, it is ill") + guard.feed("egal to") + guard.finish()
    assert out == "Sure, it is " and guard.verdict is not None
    assert audit_lines(audit)[0]["rule"] == "illegal"


def test_screens_turned_off_explicitly(tmp_path: Path) -> None:
    safety = SafetyGate.from_config(SafetyConfig(image_detector=None, text_policy=False))
    assert safety.screen_request(request("porn", RED)) is None
    assert safety.check_answer(request("hi"), "porn") is None
    assert safety.guard_stream(request("hi")) is None
    assert safety.version == "text-off/images-off"
    assert safety.refusal_text(request("你好")) == "抱歉，我无法回答这个问题。"


def test_version_follows_the_policy_file(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[[rule]]\nname = "r"\nphrases = ["alpha"]\n', encoding="utf-8")
    safety = SafetyGate.from_config(SafetyConfig(image_detector="flag", policy_file=policy,
                                                 policy_check_interval_s=0))
    before = safety.version
    policy.write_text('[[rule]]\nname = "r"\nphrases = ["alpha", "beta"]\n', encoding="utf-8")
    assert safety.version != before
    with pytest.raises(ContentPolicyViolation, match="rule 'r'"):
        safety.screen_request(request("BETA!"))


@pytest.mark.parametrize(("config", "message"), [
    (SafetyConfig(image_detector="no-such-detector"), "unknown image detector"),
    (SafetyConfig(image_detector="flag", policy_file=Path("/nonexistent/policy.toml")), "cannot be read"),
])
def test_misconfigured_screens_refuse_to_start(config: SafetyConfig, message: str) -> None:
    with pytest.raises(SafetyConfigError, match=message):
        SafetyGate.from_config(config)


def test_prompt_text_joins_every_message() -> None:
    conversation = GenerationRequest(messages=(ChatMessage("system", ()), ChatMessage.user("a", BLUE, "b"),
                                               ChatMessage.user("c")))
    assert prompt_text(conversation) == "ab\nc"


def test_audit_log_to_a_stream_and_to_the_logger(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    AuditLog(stream=stream).record(BlockEvent("req-1", "answer", "illegal", pattern="违法"))
    record = json.loads(stream.getvalue())
    assert list(record) == ["time", "request_id", "where", "rule", "pattern"]
    with caplog.at_level("INFO", logger="seesay.safety.audit"):
        AuditLog().record(BlockEvent("req-2", "image", "LABEL", image_hash="ab" * 32, score=0.9))
    assert '"image_hash": "' + "ab" * 32 in caplog.text
