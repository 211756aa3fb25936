"""The OpenAI chat-completions wire as seesay speaks it to an upstream (vLLM, SGLang, another seesay).

Contract, with no network in it so the contract tests can run it against recorded shapes:

* :func:`chat_body` turns a :class:`~seesay.types.GenerationRequest` into a streaming request
  body: each picture a ``data:image/png`` URL of seesay's normalised pixels (lossless, so the
  upstream sees exactly what seesay's intake and pixel budget produced), text parts as they are,
  and only the sampling fields the caller set (the upstream's own defaults apply to the rest, as
  they would if it were called directly). ``top_k`` and ``repetition_penalty`` go as vLLM's
  extra top-level fields, which SGLang, LMDeploy and seesay take too.
* :func:`parse_completion` reads a whole ``chat.completion`` from an upstream that does not stream.
* :func:`parse_event` reads one server-sent-event line: a text delta, a finish reason, the final
  usage (``stream_options.include_usage``: a last chunk with ``choices: []``), ``[DONE]``, or an
  error object, which it raises.
* :func:`upstream_failure` maps an upstream's error reply (status and OpenAI error object, in
  vLLM's ``{"error": {...}}`` or its older flat ``{"object": "error", ...}`` form) to seesay's
  error for the caller, and says whether another upstream may be tried and whether it counts
  against the upstream's circuit breaker.
"""

from __future__ import annotations

import base64
import enum
import io
import json
from dataclasses import dataclass
from typing import Any

from seesay.errors import (
    ContextLengthExceededError,
    EngineFailedError,
    InvalidRequestError,
    ModelNotFoundError,
    SeesayError,
    ServerBusyError,
    UpstreamUnavailableError,
)
from seesay.images import NormalizedImage
from seesay.types import ChatMessage, FinishReason, GenerationRequest, ImagePart, SamplingParams

# SamplingParams field → body field; None values are left out so the upstream's defaults apply.
_SAMPLING_FIELDS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",  # vLLM extra
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "repetition_penalty": "repetition_penalty",  # vLLM extra
    "seed": "seed",
}
_FINISH_REASONS: dict[str, FinishReason] = {"stop": "stop", "length": "length", "content_filter": "content_filter",
                                            "abort": "cancelled"}


def png_data_url(picture: NormalizedImage) -> str:
    """The picture's exact pixels as a ``data:image/png;base64,...`` URL (fast, lossless)."""
    buffer = io.BytesIO()
    picture.image.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def chat_messages(messages: tuple[ChatMessage, ...]) -> list[dict[str, Any]]:
    """The conversation in OpenAI form; a text-only turn has string content, as every server takes."""
    wire: list[dict[str, Any]] = []
    for message in messages:
        if not any(isinstance(part, ImagePart) for part in message.content):
            wire.append({"role": message.role, "content": message.text})
            continue
        parts = [_image_part(part.image) if isinstance(part, ImagePart) else {"type": "text", "text": part.text}
                 for part in message.content]
        wire.append({"role": message.role, "content": parts})
    return wire


def _image_part(picture: NormalizedImage) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": png_data_url(picture)}}


def sampling_fields(sampling: SamplingParams, max_tokens: int) -> dict[str, Any]:
    """``max_tokens``, ``stop`` and the sampling values the caller set."""
    fields: dict[str, Any] = {"max_tokens": max_tokens}
    for name, wire_name in _SAMPLING_FIELDS.items():
        value = getattr(sampling, name)
        if value is not None:
            fields[wire_name] = value
    if sampling.stop:
        fields["stop"] = list(sampling.stop)
    return fields


def chat_body(request: GenerationRequest, model: str, max_tokens: int) -> dict[str, Any]:
    """The streaming chat-completions body for ``request`` (see module docstring)."""
    return {
        "model": model,
        "messages": chat_messages(request.messages),
        **sampling_fields(request.sampling, max_tokens),
        "n": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


@dataclass(frozen=True)
class StreamEvent:
    """One parsed ``data:`` line of a chat-completions stream.

    Attributes:
        text: New answer text ("" when the chunk has none).
        finish_reason: Set on the chunk that ends the choice.
        usage: ``(prompt_tokens, completion_tokens)`` from the usage chunk.
        done: The ``[DONE]`` sentinel.
    """

    text: str = ""
    finish_reason: FinishReason | None = None
    usage: tuple[int, int] | None = None
    done: bool = False


class Retry(enum.Enum):
    """What an upstream's failure allows: ``NO`` (the request's own fault), ``ELSEWHERE`` (the upstream is
    busy: try another, the upstream is fine), ``FAILED`` (try another and count it against this one)."""

    NO = "no"
    ELSEWHERE = "elsewhere"
    FAILED = "failed"


class UpstreamFailure(Exception):
    """An upstream did not answer; ``error`` is what the caller gets if no other upstream does."""

    def __init__(self, error: SeesayError, retry: Retry) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry = retry


def parse_event(line: str, upstream: str) -> StreamEvent | None:
    """Parse one line of the event stream; ``None`` for blank lines, comments and other fields.

    Raises:
        UpstreamFailure: The line is an error object or not valid JSON.
    """
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if data == "[DONE]":
        return StreamEvent(done=True)
    try:
        chunk = json.loads(data)
    except ValueError:
        raise UpstreamFailure(UpstreamUnavailableError(
            f"upstream {upstream} sent a stream line that is not JSON: {data[:200]!r}"), Retry.FAILED) from None
    if not isinstance(chunk, dict):
        raise UpstreamFailure(UpstreamUnavailableError(f"upstream {upstream} sent {data[:200]!r}"), Retry.FAILED)
    if chunk.get("error") is not None or chunk.get("object") == "error":
        status = _error_fields(chunk).get("code")
        raise upstream_failure(upstream, status if isinstance(status, int) else 500, chunk)
    return _chunk_event(chunk)


def parse_completion(completion: Any, upstream: str) -> StreamEvent:
    """A whole (not streamed) ``chat.completion`` as one final event, for upstreams that ignore ``stream``.

    Raises:
        UpstreamFailure: It is not a chat completion with a choice.
    """
    try:
        choice = completion["choices"][0]
        usage = completion.get("usage") or {}
        return StreamEvent(
            text=str(choice["message"].get("content") or ""),
            finish_reason=_FINISH_REASONS.get(choice.get("finish_reason") or "stop", "stop"),
            usage=(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)) if usage else None,
            done=True,
        )
    except (KeyError, IndexError, TypeError, AttributeError):
        raise UpstreamFailure(UpstreamUnavailableError(
            f"upstream {upstream} answered with something that is not a chat completion"), Retry.FAILED) from None


def _chunk_event(chunk: dict[str, Any]) -> StreamEvent:
    usage = chunk.get("usage")  # the last chunk's (vLLM's continuous usage stats are cumulative)
    counts = (int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)) \
        if isinstance(usage, dict) else None
    choices = chunk.get("choices") or []
    first = choices[0] if choices and isinstance(choices[0], dict) else {}
    delta = first.get("delta") or {}
    reason = first.get("finish_reason")
    return StreamEvent(
        text=str(delta.get("content") or ""),
        finish_reason=_FINISH_REASONS.get(reason, "stop") if reason else None,
        usage=counts,
    )


def _error_fields(body: Any) -> dict[str, Any]:
    """The OpenAI error object's fields, in vLLM's current or older shape (``{}`` when neither)."""
    if not isinstance(body, dict):
        return {}
    inner = body.get("error")
    if isinstance(inner, dict):
        return inner
    if body.get("object") == "error":
        return body
    return {"message": inner} if isinstance(inner, str) else {}


def decode_json_body(content: bytes) -> Any:
    """A reply's JSON, or its text as an error object when it is not JSON."""
    try:
        return json.loads(content)
    except ValueError:
        return {"error": {"message": content.decode("utf-8", "replace")[:500]}}


def upstream_failure(upstream: str, status: int, body: Any, retry_after: int = 1) -> UpstreamFailure:
    """The seesay error for an upstream's error reply, and whether to try elsewhere (module docstring)."""
    fields = _error_fields(body)
    message = str(fields.get("message") or f"HTTP {status}")
    param = fields.get("param") if isinstance(fields.get("param"), str) else None
    said = f"upstream {upstream} answered {status}: {message}"
    if status in (429, 503):
        return UpstreamFailure(ServerBusyError(f"{said}; the model servers are busy, retry later",
                                               retry_after=retry_after), Retry.ELSEWHERE)
    if status in (401, 403):
        return UpstreamFailure(EngineFailedError(
            f"{said}; seesay's key was refused: set remote_api_key (SEESAY_REMOTE_API_KEY) to a key the "
            "upstream accepts"), Retry.NO)
    if status == 404:
        return UpstreamFailure(ModelNotFoundError(
            f"{said}; check that remote_model names a model the upstream serves (GET /v1/models)",
            param="model"), Retry.NO)
    if 400 <= status < 500 and status != 408:
        error_type = ContextLengthExceededError if "context length" in message.lower() else InvalidRequestError
        return UpstreamFailure(error_type(message, param=param), Retry.NO)
    return UpstreamFailure(UpstreamUnavailableError(said), Retry.FAILED)
