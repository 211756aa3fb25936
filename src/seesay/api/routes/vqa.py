"""``POST /v1/vqa``: one picture and one question as a multipart upload (``curl -F``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, Response

from seesay.api.answers import (
    answer_or_cancel,
    cache_header,
    cache_opt_out,
    completion_id,
    finish_reason,
    note_result,
    usage_out,
)
from seesay.api.dependencies import RuntimeDep, require_caller
from seesay.api.protocol import VqaForm, VqaResponse, error_responses
from seesay.api.record import record_of

router = APIRouter(dependencies=[Depends(require_caller)])

_ERRORS = error_responses(400, 401, 404, 413, 429, 503)


@router.post("/v1/vqa", responses=_ERRORS)
async def answer_question(
    form: Annotated[VqaForm, Form()], request: Request, response: Response, runtime: RuntimeDep
) -> VqaResponse:
    """Answer ``question`` about the uploaded ``image``."""
    record = record_of(request)
    record.model = runtime.model_name
    async with runtime.service.admission() as admission:  # 429 before the image is decoded
        generation = await runtime.intake.vqa_request(form, record.request_id)
        if runtime.settings.debug:
            record.prompt = form.question
        stream = await runtime.service.submit(generation, admission, opt_out=cache_opt_out(request, form.cache))
    response.headers.update(cache_header(stream, record))
    result = await answer_or_cancel(request, stream)
    note_result(record, result, stream.first_text_at)
    return VqaResponse(id=completion_id(result.request_id), model=runtime.model_name, answer=result.text,
                       finish_reason=finish_reason(result), usage=usage_out(result.usage))
