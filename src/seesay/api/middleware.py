"""Plain ASGI middleware: the request body limit, form text checks and per-request telemetry.

:class:`BodySizeLimit` answers 413 before any parsing when a body is over the limit (by its
Content-Length, or by counting when it is chunked); it reads and discards what the client is
still sending, up to a bound, so the client gets to read the error instead of a reset.

:class:`FormTextCheck` answers 400 when a text field of a multipart form is not UTF-8: the
framework would silently read it as Latin-1, and the model would see mojibake.

:class:`RequestTelemetry` gives every request an id (echoed as ``X-Request-ID``) and a
:class:`RequestRecord` that routes fill in (caller, token usage, time to first token), then
counts it in the metrics and writes one JSON log line when the response is finished. Image
bytes and prompts never reach the log; the prompt does in debug mode only.

Both are plain ASGI (not ``BaseHTTPMiddleware``) so streamed responses and client
disconnects pass through untouched.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from seesay.api.errors import error_response
from seesay.api.metrics import Metrics
from seesay.api.record import RECORD_KEY, RequestRecord
from seesay.types import new_request_id

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

access_log = logging.getLogger("seesay.access")

_DRAIN_FACTOR = 4  # read at most this many times the limit before closing on an oversize body


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` with 413, before the app parses them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(int(declared), 0, scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._refuse(size, size, scope, receive, send, more=message.get("more_body", False))
                return
            if not message.get("more_body", False):
                break
        pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay() -> Message:
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)

    async def _refuse(
        self, size: int, read: int, scope: Scope, receive: Receive, send: Send, *, more: bool = True
    ) -> None:
        while more and read <= self.max_bytes * _DRAIN_FACTOR:
            message = await receive()
            read += len(message.get("body", b""))
            more = message["type"] == "http.request" and message.get("more_body", False)
        response = error_response(
            413,
            f"the request body is {size:,} bytes, over this server's limit of {self.max_bytes:,} bytes; "
            "send fewer or smaller images",
            type="invalid_request_error",
            code="request_too_large",
        )
        await response(scope, receive, send)


class FormTextCheck:
    """Refuse a ``multipart/form-data`` body whose text fields are not UTF-8, with 400 naming the field."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type = dict(scope.get("headers", ())).get(b"content-type", b"")
        if scope["type"] != "http" or not content_type.lower().startswith(b"multipart/form-data"):
            await self.app(scope, receive, send)
            return
        body, message = await _read_body(receive)
        field = _non_utf8_field(content_type.decode("latin-1"), body)
        if field is not None:
            response = error_response(
                400, f"form field '{field}' is not valid UTF-8 text; send the form's text encoded as UTF-8",
                type="invalid_request_error", code="invalid_request", param=field)
            await response(scope, receive, send)
            return
        pending = [{**message, "body": body, "more_body": False}]

        async def replay() -> Message:
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)


async def _read_body(receive: Receive) -> tuple[bytes, Message]:
    """The whole request body and its last message (behind :class:`BodySizeLimit`, one message)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body", False):
            return b"".join(chunks), message


def _non_utf8_field(content_type: str, body: bytes) -> str | None:
    """The name of the first text field of a multipart body that is not UTF-8; ``None`` if all are.

    File parts are skipped without a copy; a body that does not parse is left to the framework's
    own parser, which reports it.
    """
    _, options = parse_options_header(content_type)
    fields = _TextFields()
    try:
        parser = MultipartParser(options.get(b"boundary", b""), fields.callbacks())
        parser.write(body)
        parser.finalize()
    except (FormParserError, ValueError):
        return None
    return fields.non_utf8


class _TextFields:
    """Callbacks for python-multipart's parser that keep the text fields only, and check them."""

    def __init__(self) -> None:
        self.non_utf8: str | None = None
        self._header: list[bytes] = []
        self._disposition = b""
        self._name = b""
        self._text: bytearray | None = None

    def callbacks(self) -> MultipartCallbacks:
        return {"on_header_field": self._on_header_field, "on_header_value": self._on_header_value,
                "on_headers_finished": self._on_headers_finished, "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end}

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header = [data[start:end].lower(), b""]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header[1] += data[start:end]
        if self._header[0] == b"content-disposition":
            self._disposition = self._header[1]

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._name = options.get(b"name", b"")
        self._text = bytearray() if b"filename" not in options else None
        self._disposition = b""

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._text is not None:
            self._text += data[start:end]

    def _on_part_end(self) -> None:
        if self._text is None or self.non_utf8 is not None:
            return
        try:
            self._text.decode("utf-8")
        except UnicodeDecodeError:
            self.non_utf8 = self._name.decode("utf-8", "replace")


class RequestTelemetry:
    """Request ids, metrics and one JSON log line per request; see the module docstring.

    Args:
        app: The wrapped application.
        metrics: Where requests are counted.
        routes: Path templates used as route labels; other paths are labelled ``unmatched``.
        debug: Log prompts too.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Collection[str], *, debug: bool = False) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = frozenset(routes)
        self.debug = debug

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = RequestRecord(new_request_id(), time.monotonic())
        scope.setdefault("state", {})[RECORD_KEY] = record
        status = 500  # what the client gets if the app fails before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), (b"x-request-id", record.request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._finish(scope, record, status)

    def _finish(self, scope: Scope, record: RequestRecord, status: int) -> None:
        seconds = time.monotonic() - record.started
        route = getattr(scope.get("route"), "path", None) or scope["path"]
        route = route if route in self.routes else "unmatched"
        self.metrics.observe_request(route, status, seconds)
        if record.usage is not None:
            self.metrics.observe_answer(record.usage, record.first_token_s, cached=record.replayed)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(json.dumps(self._fields(scope, record, status, seconds), ensure_ascii=False))

    def _fields(self, scope: Scope, record: RequestRecord, status: int, seconds: float) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "event": "request",
            "request_id": record.request_id,
            "key_id": record.key_id,
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "latency_ms": round(seconds * 1000, 1),
        }
        if record.usage is not None:
            fields.update(prompt_tokens=record.usage.prompt_tokens, completion_tokens=record.usage.completion_tokens,
                          image_tokens=record.usage.image_tokens)
        if record.first_token_s is not None:
            fields["ttft_ms"] = round(record.first_token_s * 1000, 1)
        optional = {"model": record.model, "finish_reason": record.finish_reason, "error": record.error_code,
                    "cache": record.cache}
        fields.update({k: v for k, v in optional.items() if v is not None})
        if self.debug and record.prompt is not None:
            fields["prompt"] = record.prompt
        return fields
