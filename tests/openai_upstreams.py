"""In-process OpenAI-compatible upstreams for the remote engine's tests, behind one ``httpx.MockTransport``.

Each :class:`FakeUpstream` answers ``GET /v1/models`` and streams chat completions in vLLM's
shapes (a role chunk, one chunk per word, a chunk with ``finish_reason``, a usage chunk with
``choices: []``, ``data: [DONE]``). Its ``mode`` decides what it does: ``"ok"``, ``"down"``
(connection refused), ``"error"`` (``status`` with an OpenAI error object), ``"break"`` (one
word, then the connection drops), ``"stall"`` (sends nothing after the role chunk, forever),
``"stall-later"`` (one word, then nothing), ``"plain"`` (a whole ``chat.completion``, not
streamed). Every mode ignores stop strings. Nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

VLLM_MODEL = "Qwen/Qwen3-VL-8B-Instruct"


def sse(payload: Any) -> bytes:
    return f"data: {json.dumps(payload) if not isinstance(payload, str) else payload}\n\n".encode()


def chunk(content: str | None = None, *, role: str | None = None, finish: str | None = None) -> dict[str, Any]:
    """A vLLM ``chat.completion.chunk`` with one choice."""
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": VLLM_MODEL,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def usage_chunk(prompt: int, completion: int) -> dict[str, Any]:
    """vLLM's last chunk with ``stream_options.include_usage``: no choices, the usage."""
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": VLLM_MODEL,
            "choices": [], "usage": {"prompt_tokens": prompt, "total_tokens": prompt + completion,
                                     "completion_tokens": completion}}


def error_object(message: str, status: int, param: str | None = None) -> dict[str, Any]:
    """vLLM's error response: ``{"error": {"message", "type", "param", "code"}}`` (code is the HTTP status)."""
    kind = "BadRequestError" if status < 500 else "InternalServerError"
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def completion(content: str, prompt: int, completion_tokens: int) -> dict[str, Any]:
    """A whole vLLM ``chat.completion``."""
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": VLLM_MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "tool_calls": []},
                         "logprobs": None, "finish_reason": "stop", "stop_reason": None}],
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt + completion_tokens,
                      "completion_tokens": completion_tokens}}


@dataclass
class FakeUpstream:
    """One upstream (see module docstring); ``answer`` is what it says, one chunk per word."""

    host: str
    answer: str = "a red shirt"
    mode: str = "ok"
    status: int = 500
    message: str = "boom"
    models: tuple[str, ...] = (VLLM_MODEL,)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    model_probes: int = 0
    hold: threading.Event | None = None  # when set here, every answer waits for it before its first word
    roots: dict[str, str] = field(default_factory=dict)  # where a model is served from (default /models/<id>)

    @property
    def url(self) -> str:
        return f"http://{self.host}:8000"

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.mode == "down":
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path == "/v1/models":
            self.model_probes += 1
            cards = [{"id": m, "object": "model", "created": 1, "owned_by": "vllm",
                      "root": self.roots.get(m, f"/models/{m}"), "max_model_len": 8192} for m in self.models]
            return httpx.Response(200, json={"object": "list", "data": cards})
        body = json.loads(request.content)
        self.bodies.append(body)
        if self.mode == "error":
            return httpx.Response(self.status, json=error_object(self.message, self.status))
        if self.mode == "plain":
            return httpx.Response(200, json=completion(self.answer, 40, len(self.answer.split())))
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=self._events(request))

    async def _events(self, request: httpx.Request) -> AsyncIterator[bytes]:
        words = self.answer.split(" ")
        yield sse(chunk("", role="assistant"))
        if self.hold is not None:
            await asyncio.to_thread(self.hold.wait, 30)
        if self.mode == "stall":
            await asyncio.Future()  # never done: only a time-out or a cancellation ends this
        for index, word in enumerate(words):
            yield sse(chunk(word if index == 0 else " " + word))
            if self.mode == "break":
                raise httpx.ReadError("connection reset by peer", request=request)
            if self.mode == "stall-later":
                await asyncio.Future()
        yield sse(chunk(finish="stop"))
        yield sse(usage_chunk(40, len(words)))
        yield sse("[DONE]")


class FakeUpstreams:
    """Several fake upstreams behind one transport, routed by host."""

    def __init__(self, *upstreams: FakeUpstream) -> None:
        self.by_host = {u.host: u for u in upstreams}
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        return self.by_host[request.url.host].handle(request)

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(u.url for u in self.by_host.values())
