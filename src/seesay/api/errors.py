"""Every failure leaves the server as an OpenAI error object with the right HTTP status.

``{"error": {"message", "type", "param", "code"}}``: a :class:`~seesay.errors.SeesayError`
with the status and code of :data:`seesay.errors.WIRE_FORMS`; FastAPI's validation errors (invalid JSON, a wrong field)
become 400s whose message names the field; unknown routes and methods become 404/405;
anything unexpected becomes a 500 that hides the details (logged, shown in debug mode).
``ServerBusyError`` adds a ``Retry-After`` header.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from seesay.api.protocol import UNION_TAGS, ErrorDetail, ErrorResponse
from seesay.api.record import RECORD_KEY
from seesay.errors import AuthenticationError, SeesayError, ServerBusyError

log = logging.getLogger(__name__)

_HTTP_CODES = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


def error_response(
    status: int, message: str, *, type: str, code: str | None, param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorResponse(error=ErrorDetail(message=message, type=type, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def seesay_error_response(exc: SeesayError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, ServerBusyError) else None
    if isinstance(exc, AuthenticationError):
        headers = {"WWW-Authenticate": "Bearer"}
    wire = exc.wire
    return error_response(wire.status, exc.message, type=wire.type, code=wire.code, param=exc.param, headers=headers)


def describe_validation_errors(errors: Sequence[Any]) -> tuple[str, str | None]:
    """A readable message naming each bad field, and the first field's name for ``param``."""
    described = [_describe_one(error) for error in errors]
    message = "; ".join(text for text, _ in described) or "the request is invalid"
    return message, next((where for _, where in described if where), None)


def _describe_one(error: Any) -> tuple[str, str]:
    if error.get("type") == "json_invalid":
        return f"the body is not valid JSON ({error.get('ctx', {}).get('error', 'parse error')})", ""
    where = field_path(error.get("loc", ()))
    if error.get("type") == "extra_forbidden":
        return f"'{where}' is not a parameter this server supports; remove it", where
    if error.get("type") == "missing":
        return f"'{where}' is required", where
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    given = error.get("input")
    if where and isinstance(given, str | int | float) and not isinstance(given, bool):
        message += f" (got {json.dumps(given)[:60]})"
    return (f"{where}: {message}" if where else message), where


def field_path(loc: Sequence[Any]) -> str:
    """``("body", "messages", 0, "content")`` → ``messages[0].content``.

    Union tags are dropped and a tag followed by the field of the same name is said once
    (``content[0].image_url.image_url.url`` → ``content[0].image_url.url``).
    """
    path = ""
    previous: Any = None
    for index, part in enumerate(loc):
        if (index == 0 and part in ("body", "form")) or part in UNION_TAGS or part == previous:
            continue
        previous = part
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _http_message(exc: StarletteHTTPException) -> str:
    """The framework's message, made specific where its cause says more (a body that is not UTF-8)."""
    cause = exc.__cause__
    if isinstance(cause, UnicodeDecodeError):
        return (f"the body is not valid UTF-8 (byte {cause.start} cannot be decoded); "
                "send the JSON encoded as UTF-8")
    return str(exc.detail)


def _note(request: Request, code: str) -> None:
    """Put the error code on the request's log record."""
    record = getattr(request.state, RECORD_KEY, None)
    if record is not None:
        record.error_code = code


def install_error_handlers(app: FastAPI, *, debug: bool = False) -> None:
    """Register the handlers described in the module docstring."""

    @app.exception_handler(SeesayError)
    async def _seesay(request: Request, exc: SeesayError) -> JSONResponse:
        _note(request, exc.code)
        return seesay_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        _note(request, "invalid_request")
        message, param = describe_validation_errors(exc.errors())
        return error_response(400, message, type="invalid_request_error", code="invalid_request", param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        _note(request, code)
        kind = "server_error" if exc.status_code >= 500 else "invalid_request_error"
        headers = dict(exc.headers) if exc.headers else None
        return error_response(exc.status_code, _http_message(exc), type=kind, code=code, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        _note(request, "internal_error")
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        detail = f": {type(exc).__name__}: {exc}" if debug else "; it has been logged"
        return error_response(500, f"internal server error{detail}", type="server_error", code="internal_error")
