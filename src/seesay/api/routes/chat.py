"""``POST /v1/chat/completions``: the OpenAI Chat Completions API (see :mod:`seesay.api.protocol`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from seesay.api.answers import (
    answer_or_cancel,
    cache_header,
    cache_opt_out,
    completion_response,
    json_response,
    note_result,
    sse_stream,
)
from seesay.api.dependencies import RuntimeDep, require_caller
from seesay.api.openapi import answer_responses
from seesay.api.protocol import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse
from seesay.api.questions import chat_question
from seesay.api.record import record_of

router = APIRouter(dependencies=[Depends(require_caller)])


@router.post("/v1/chat/completions", response_model=None,
             responses=answer_responses(ChatCompletionResponse, events=ChatCompletionChunk))
async def create_chat_completion(body: ChatCompletionRequest, request: Request, runtime: RuntimeDep) -> Response:
    """Answer a conversation with images; ``stream: true`` for server-sent events."""
    record = record_of(request)
    question = chat_question(body, record.request_id)
    record.model = model = question.model or runtime.model_name  # an adapter answers under its own id
    if runtime.settings.debug:
        record.prompt = question.turns[-1].text
    opt_out = cache_opt_out(request, body.seesay.cache if body.seesay is not None else None)
    stream = await runtime.service.answer(question, stream=body.stream, opt_out=opt_out)
    headers = cache_header(stream, record)
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        events = sse_stream(stream, model, record, include_usage=include_usage)
        # The background task also covers a client that leaves before the stream starts.
        return StreamingResponse(events, media_type="text/event-stream", headers=headers,
                                 background=BackgroundTask(stream.cancel))
    result = await answer_or_cancel(request, stream)
    note_result(record, result, stream.first_text_at)
    return json_response(completion_response(result, model), headers)
