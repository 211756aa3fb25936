"""``POST /v1/vqa``: one picture and one question as a multipart upload (``curl -F``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from seesay.api.answers import (
    answer_or_cancel,
    cache_header,
    cache_opt_out,
    completion_id,
    finish_reason,
    json_response,
    note_result,
    usage_out,
)
from seesay.api.dependencies import RuntimeDep, require_caller
from seesay.api.openapi import answer_responses
from seesay.api.protocol import VqaForm, VqaResponse
from seesay.api.questions import vqa_question
from seesay.api.record import record_of

router = APIRouter(dependencies=[Depends(require_caller)])


@router.post("/v1/vqa", response_model=None, responses=answer_responses(VqaResponse))
async def answer_question(form: Annotated[VqaForm, Form()], request: Request, runtime: RuntimeDep) -> Response:
    """Answer ``question`` about the uploaded ``image``."""
    record = record_of(request)
    question = vqa_question(form, await form.image.read(), record.request_id)
    record.model = model = question.model or runtime.model_name  # an adapter answers under its own id
    if runtime.settings.debug:
        record.prompt = form.question
    stream = await runtime.service.answer(question, opt_out=cache_opt_out(request, form.cache))
    headers = cache_header(stream, record)
    result = await answer_or_cancel(request, stream)
    note_result(record, result, stream.first_text_at)
    answer = VqaResponse(id=completion_id(result.request_id), model=model, answer=result.text,
                         finish_reason=finish_reason(result), usage=usage_out(result.usage))
    return json_response(answer, headers)
