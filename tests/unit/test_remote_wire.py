"""Contract test: seesay's request building and response parsing against vLLM's OpenAI protocol.

The fixtures are written from vLLM's documented chat-completions protocol (``ChatCompletionRequest``,
``ChatCompletionStreamResponse`` with ``stream_options.include_usage``, ``ErrorResponse``), in
``tests/openai_upstreams.py``; the remote engine talks to them through ``httpx.MockTransport``.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator

import pytest
from PIL import Image

from fakes import make_request, png_bytes
from openai_upstreams import VLLM_MODEL, FakeUpstream, FakeUpstreams, chunk, error_object, usage_chunk
from seesay.engine.config import RemoteEngineConfig
from seesay.engine.openai_wire import Retry, StreamEvent, UpstreamFailure, chat_body, parse_event, upstream_failure
from seesay.engine.remote import RemoteEngine
from seesay.errors import (
    ContextLengthExceededError,
    EngineFailedError,
    InvalidRequestError,
    ModelNotFoundError,
    ServerBusyError,
    UpstreamUnavailableError,
)
from seesay.images import PixelBudget, load_image
from seesay.types import ChatMessage, GenerationRequest, SamplingParams

BUDGET = PixelBudget(min_pixels=32 * 32, max_pixels=64 * 64)


@pytest.fixture
def vllm() -> Iterator[tuple[RemoteEngine, FakeUpstream]]:
    upstream = FakeUpstream("vllm")
    engine = RemoteEngine(RemoteEngineConfig((upstream.url,), upstream_model=VLLM_MODEL, min_pixels=BUDGET.min_pixels,
                                             max_pixels=BUDGET.max_pixels),
                          transport=FakeUpstreams(upstream).transport)
    yield engine, upstream
    engine.close()


def test_the_body_is_a_vllm_chat_completion_request_with_exactly_seesays_pixels() -> None:
    picture = load_image(png_bytes((10, 200, 30), size=(300, 200)), BUDGET)
    request = GenerationRequest(
        (ChatMessage("system", ()), ChatMessage.user(picture, "What colour?")),
        SamplingParams(max_new_tokens=7, temperature=0.0, top_k=20, presence_penalty=1.5, seed=3, stop=("\n",)))
    body = chat_body(request, VLLM_MODEL, 7)
    assert body["model"] == VLLM_MODEL and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert {k: body[k] for k in ("max_tokens", "temperature", "top_k", "presence_penalty", "seed", "stop")} == {
        "max_tokens": 7, "temperature": 0.0, "top_k": 20, "presence_penalty": 1.5, "seed": 3, "stop": ["\n"]}
    assert "top_p" not in body and "repetition_penalty" not in body  # unset: the upstream's defaults apply
    image_part, text_part = body["messages"][1]["content"]
    assert text_part == {"type": "text", "text": "What colour?"}
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent.size == picture.size and sent.tobytes() == picture.image.tobytes()
    json.dumps(body)  # it is plain JSON


def test_stream_chunks_and_the_usage_chunk_parse() -> None:
    def event(payload: object) -> StreamEvent | None:
        return parse_event(f"data: {json.dumps(payload)}", "u")

    assert event(chunk("", role="assistant")) == StreamEvent()
    assert event(chunk("red")) == StreamEvent(text="red")
    assert event(chunk(finish="length")) == StreamEvent(finish_reason="length")
    assert event(usage_chunk(40, 3)) == StreamEvent(usage=(40, 3))
    assert parse_event("data: [DONE]", "u") == StreamEvent(done=True)
    assert parse_event("", "u") is None and parse_event(": keep-alive", "u") is None


def test_a_streamed_answer_reaches_the_observer_with_the_upstreams_usage(vllm: tuple[RemoteEngine, FakeUpstream]
                                                                         ) -> None:
    engine, upstream = vllm
    deltas: list[str] = []

    class Observer:
        def on_text(self, row: int, delta: str) -> None:
            deltas.append(delta)

        def is_cancelled(self, row: int) -> bool:
            return False

    [result] = engine.generate([engine.prepare(make_request(images=1, temperature=0))], Observer())
    assert result.text == "a red shirt" == "".join(deltas) and len(deltas) == 3
    assert result.finish_reason == "stop"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (40, 3)
    assert upstream.bodies[0]["model"] == VLLM_MODEL


def test_a_plain_completion_is_read_too(vllm: tuple[RemoteEngine, FakeUpstream]) -> None:
    engine, upstream = vllm
    upstream.mode = "plain"
    [result] = engine.generate([engine.prepare(make_request())])
    assert (result.text, result.finish_reason, result.usage.prompt_tokens) == ("a red shirt", "stop", 40)


def test_an_error_object_in_the_stream_is_the_upstreams_error() -> None:
    with pytest.raises(UpstreamFailure) as caught:
        parse_event(f"data: {json.dumps(error_object('prompt too long', 400))}", "u")
    assert isinstance(caught.value.error, InvalidRequestError) and caught.value.retry is Retry.NO
    old_shape = {"object": "error", "message": "engine dead", "type": "InternalServerError", "param": None,
                 "code": 500}
    with pytest.raises(UpstreamFailure) as caught:
        parse_event(f"data: {json.dumps(old_shape)}", "u")
    assert isinstance(caught.value.error, UpstreamUnavailableError) and caught.value.retry is Retry.FAILED


@pytest.mark.parametrize(("status", "message", "error", "retry"), [
    (400, "temperature must be non-negative", InvalidRequestError, Retry.NO),
    (400, "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens",
     ContextLengthExceededError, Retry.NO),
    (404, "The model `x` does not exist.", ModelNotFoundError, Retry.NO),
    (401, "Unauthorized", EngineFailedError, Retry.NO),
    (429, "too many requests", ServerBusyError, Retry.ELSEWHERE),
    (503, "overloaded", ServerBusyError, Retry.ELSEWHERE),
    (500, "EngineCore encountered an issue", UpstreamUnavailableError, Retry.FAILED),
])
def test_error_replies_map_to_seesays_errors(status: int, message: str, error: type, retry: Retry) -> None:
    failure = upstream_failure("http://vllm:8000", status, error_object(message, status, param="temperature"))
    assert type(failure.error) is error and failure.retry is retry
    if status == 400:
        assert failure.error.message == message and failure.error.status == 400
        assert failure.error.param == "temperature"
    else:
        assert "http://vllm:8000" in failure.error.message and message in failure.error.message


def test_a_400_from_the_upstream_is_the_callers_400_with_its_message(vllm: tuple[RemoteEngine, FakeUpstream]
                                                                     ) -> None:
    engine, upstream = vllm
    upstream.mode, upstream.status, upstream.message = "error", 400, "top_k must be -1 or at least 1"
    with pytest.raises(InvalidRequestError, match="top_k must be -1") as caught:
        engine.generate([engine.prepare(make_request())])
    assert caught.value.status == 400
    assert len(upstream.bodies) == 1  # the request's own fault: never retried
