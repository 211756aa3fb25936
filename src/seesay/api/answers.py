"""Internal results to wire responses: whole completions and server-sent event streams.

A client that disconnects stops its request on both paths: a streaming response is
cancelled by the server framework (and :func:`sse_stream` cancels the answer on the way
out); a plain response watches the connection with :func:`answer_or_cancel`. Either way a
waiting request leaves the queue at once and a running one stops generating.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from seesay.answer_streams import AnswerStream
from seesay.api.protocol import (
    AssistantMessage,
    ChatCompletionChunk,
    ChatCompletionResponse,
    Choice,
    ChunkChoice,
    ChunkDelta,
    ErrorDetail,
    ErrorResponse,
    FinishReasonWire,
    PromptTokensDetails,
    UsageOut,
)
from seesay.api.record import RequestRecord
from seesay.cache import CacheOptOut, parse_cache_control
from seesay.errors import RequestCancelledError, SeesayError, wire_form
from seesay.types import GenerationResult, Usage

CACHE_HEADER = "X-Seesay-Cache"


def cache_opt_out(request: Request, field: bool | None) -> CacheOptOut:
    """The opt-outs of ``Cache-Control: no-cache | no-store`` and of the request's ``cache`` field."""
    return parse_cache_control(request.headers.get("cache-control"), cache_field=field)


def cache_header(stream: AnswerStream, record: RequestRecord) -> dict[str, str]:
    """``X-Seesay-Cache`` for ``stream``'s response, also noted on the request's record."""
    record.cache = stream.cache_status
    record.replayed = stream.replayed
    return {CACHE_HEADER: stream.cache_status}


def json_response(body: BaseModel, headers: dict[str, str]) -> Response:
    """``body`` as a JSON response, serialised by pydantic in one call (FastAPI's generic encoder
    would first walk the model in Python, field by field)."""
    return Response(body.model_dump_json(), media_type="application/json", headers=headers)


def usage_out(usage: Usage) -> UsageOut:
    return UsageOut(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                    total_tokens=usage.total_tokens,
                    prompt_tokens_details=PromptTokensDetails(image_tokens=usage.image_tokens))


def finish_reason(result: GenerationResult) -> FinishReasonWire:
    """The OpenAI finish reason; a cancelled result only reaches a caller that is gone."""
    if result.finish_reason == "cancelled":
        raise RequestCancelledError("the client closed the connection")
    return result.finish_reason


def completion_id(request_id: str) -> str:
    return "chatcmpl-" + request_id.removeprefix("req-")


def note_result(record: RequestRecord, result: GenerationResult, first_text_at: float | None) -> None:
    record.usage = result.usage
    record.finish_reason = result.finish_reason
    record.first_token_at = first_text_at or time.monotonic()


def completion_response(result: GenerationResult, model: str) -> ChatCompletionResponse:
    return ChatCompletionResponse(
        id=completion_id(result.request_id),
        created=int(time.time()),
        model=model,
        choices=[Choice(message=AssistantMessage(content=result.text), finish_reason=finish_reason(result))],
        usage=usage_out(result.usage),
    )


async def answer_or_cancel(request: Request, stream: AnswerStream) -> GenerationResult:
    """Wait for the whole answer, cancelling it if the client disconnects first."""

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        stream.cancel()

    watcher = asyncio.create_task(watch())
    try:
        return await stream.result()
    finally:
        watcher.cancel()


def _sse(payload: str) -> bytes:
    return f"data: {payload}\n\n".encode()


async def sse_stream(
    stream: AnswerStream, model: str, record: RequestRecord, *, include_usage: bool
) -> AsyncIterator[bytes]:
    """The answer as ``chat.completion.chunk`` events, ending in ``data: [DONE]``.

    An error after the stream has started is sent as an OpenAI error event (the ``openai``
    SDK raises it as ``APIError``).
    """
    created = int(time.time())
    finished = False

    def chunk(delta: ChunkDelta, reason: FinishReasonWire | None = None, usage: UsageOut | None = None) -> bytes:
        choices = [] if usage is not None else [ChunkChoice(delta=delta, finish_reason=reason)]
        body = ChatCompletionChunk(id=completion_id(record.request_id), created=created, model=model,
                                   choices=choices, usage=usage)
        return _sse(body.model_dump_json(exclude_none=usage is None and not include_usage))

    try:
        yield chunk(ChunkDelta(role="assistant", content=""))
        async for event in stream.events():
            if isinstance(event, str):
                yield chunk(ChunkDelta(content=event))
                continue
            note_result(record, event, stream.first_text_at)
            yield chunk(ChunkDelta(), finish_reason(event))
            if include_usage:
                yield chunk(ChunkDelta(), usage=usage_out(event.usage))
        finished = True
    except SeesayError as exc:
        finished = True
        record.error_code = exc.code
        error = ErrorDetail(message=exc.message, type=exc.wire.type, param=exc.param, code=exc.code)
        yield _sse(ErrorResponse(error=error).model_dump_json())
    finally:
        if not finished:  # the client went away mid-stream
            record.error_code = wire_form(RequestCancelledError).code
        stream.cancel()  # a no-op once the answer is complete
    yield b"data: [DONE]\n\n"
