"""Batch job files in the OpenAI Batch API format: input lines in, output lines out, resumably.

An input line is ``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}``, the
body a chat completion request exactly as ``POST /v1/chat/completions`` takes it
(:class:`~seesay.api.protocol.ChatCompletionRequest`; ``stream`` must be off). An output line is
``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}``:

* answered: status 200, ``body`` the ``chat.completion`` object the API returns, ``error`` null;
* refused or invalid: ``status_code`` and ``body`` are the API's error response for it
  (``{"error": {"message", "type", "param", "code"}}``, :data:`seesay.errors.WIRE_FORMS`), and
  ``error`` is ``{"code", "message"}`` as in vLLM's ``run_batch``, so failures are found by
  ``error`` alone. A line that is not JSON, has no ``custom_id``, or names another method or url
  fails like its HTTP twin (400, 405, 404); a line without a usable ``custom_id`` is reported
  under ``"line-<n>"``.

Pictures: besides ``data:`` (and, when the settings allow, ``http(s)``) URLs, an ``image_url``
may name a local file, resolved against the input file's folder. A relative path may not leave
that folder (``..``), and an absolute path is refused unless absolute paths are allowed, so a
shared catalogue file cannot read other files of the machine running the job.

:class:`OutputFile` appends each line with one ``write`` and ``fsync``; on open, a trailing
partial line (a job killed mid-write) is cut off and the ``custom_id`` s already answered are
read, so a rerun skips them.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from seesay.api.answers import completion_response
from seesay.api.errors import describe_validation_errors
from seesay.api.protocol import ChatCompletionRequest, ErrorDetail, ErrorResponse
from seesay.api.questions import chat_question
from seesay.errors import ImageUrlError, InvalidRequestError, SeesayError
from seesay.types import GenerationResult, ImageInput, Question, Turn, new_request_id

CHAT_URL = "/v1/chat/completions"
_PLACEHOLDER_URL = "data:image/png;base64,"  # stands for a local file while the body is validated
_REMOTE_SCHEMES = ("data:", "http:", "https:")


@dataclass(frozen=True)
class LineFailure:
    """Why a line gets no answer: the HTTP status and the error object the API would send."""

    status: int
    error: ErrorDetail

    @classmethod
    def of(cls, exc: SeesayError) -> LineFailure:
        wire = exc.wire
        return cls(wire.status, ErrorDetail(message=exc.message, type=wire.type, param=exc.param, code=wire.code))


@dataclass(frozen=True)
class BatchRequest:
    """One input line made into a question; ``stream`` is never on."""

    custom_id: str
    question: Question
    cache_field: bool | None


@dataclass(frozen=True)
class PictureFolder:
    """Where local picture paths in an input file are resolved.

    Attributes:
        root: The input file's folder; relative paths must stay inside it.
        allow_absolute: Whether absolute paths are read at all.
    """

    root: Path
    allow_absolute: bool = False

    def resolve(self, url: str, param: str) -> Path:
        """The file ``url`` names.

        Raises:
            ImageUrlError: The path is absolute without ``allow_absolute``, or leaves ``root``.
        """
        path = Path(url)
        if path.is_absolute():
            if not self.allow_absolute:
                raise ImageUrlError(f"{url}: absolute picture paths are refused; give a path relative to the "
                                    "input file's folder, or pass --allow-absolute-paths", param=param)
            return path
        resolved = (self.root / path).resolve()
        if not resolved.is_relative_to(self.root.resolve()):
            raise ImageUrlError(f"{url}: a picture path must stay inside the input file's folder", param=param)
        return resolved


def line_custom_id(text: str, number: int) -> str:
    """The ``custom_id`` of input line ``number`` (1-based), or ``line-<number>`` when it has none."""
    try:
        value = json.loads(text).get("custom_id")
    except (ValueError, AttributeError):
        return f"line-{number}"
    return value if isinstance(value, str) and value else f"line-{number}"


def parse_line(text: str, number: int, pictures: PictureFolder) -> BatchRequest | LineFailure:
    """Input line ``number`` as a request, or the failure the API would report for it."""
    try:
        line = json.loads(text)
    except ValueError as exc:
        return _invalid(f"line {number} is not valid JSON ({exc})")
    if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str) or not line["custom_id"]:
        return _invalid(f"line {number} needs a non-empty string 'custom_id'", "custom_id")
    if line.get("method", "POST") != "POST":
        return _http(405, "method_not_allowed", f"method {line.get('method')!r}: only POST is supported")
    if line.get("url") != CHAT_URL:
        return _http(404, "not_found", f"url {line.get('url')!r}: batch jobs support {CHAT_URL} only")
    try:
        return _request(line["custom_id"], line.get("body"), pictures)
    except SeesayError as exc:
        return LineFailure.of(exc)


def _request(custom_id: str, body: Any, pictures: PictureFolder) -> BatchRequest | LineFailure:
    if not isinstance(body, dict):
        return _invalid("'body' must be a chat completion request object", "body")
    local = _local_pictures(body, pictures)
    try:
        request = ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        message, param = describe_validation_errors(exc.errors())
        return _invalid(message, param)
    if request.stream:
        return _invalid("stream must be off in a batch job", "stream")
    question = chat_question(request, new_request_id())
    turns = tuple(Turn(turn.role, tuple(_with_file(part, local) for part in turn.content)) for turn in question.turns)
    cache_field = request.seesay.cache if request.seesay is not None else None
    return BatchRequest(custom_id, replace(question, turns=turns), cache_field)


def _local_pictures(body: dict[str, Any], pictures: PictureFolder) -> dict[str, Path]:
    """Swap each local picture path in ``body`` for a placeholder URL; returns param → file."""
    files: dict[str, Path] = {}
    messages = body.get("messages")
    for index, message in enumerate(messages if isinstance(messages, list) else ()):
        content = message.get("content") if isinstance(message, dict) else None
        for number, part in enumerate(content if isinstance(content, list) else ()):
            image = part.get("image_url") if isinstance(part, dict) else None
            url = image.get("url") if isinstance(image, dict) else None
            if isinstance(image, dict) and isinstance(url, str) and url and not url.lower().startswith(_REMOTE_SCHEMES):
                param = f"messages[{index}].content[{number}].image_url"
                files[param] = pictures.resolve(url, param)
                image["url"] = _PLACEHOLDER_URL
    return files


def _with_file(part: str | ImageInput, local: dict[str, Path]) -> str | ImageInput:
    if isinstance(part, ImageInput) and part.param in local:
        return ImageInput(local[part.param], part.param)
    return part


def _invalid(message: str, param: str | None = None) -> LineFailure:
    return LineFailure.of(InvalidRequestError(message, param=param))


def _http(status: int, code: str, message: str) -> LineFailure:
    return LineFailure(status, ErrorDetail(message=message, type="invalid_request_error", code=code))


def answer_line(custom_id: str, result: GenerationResult, model: str) -> dict[str, Any]:
    """The output line of an answered request."""
    body = completion_response(result, model).model_dump(mode="json")
    return _line(custom_id, 200, result.request_id, body, None)


def failure_line(custom_id: str, failure: LineFailure, request_id: str | None = None) -> dict[str, Any]:
    """The output line of a request that got ``failure``."""
    body = ErrorResponse(error=failure.error).model_dump(mode="json")
    error = {"code": failure.error.code, "message": failure.error.message}
    return _line(custom_id, failure.status, request_id or new_request_id(), body, error)


def _line(custom_id: str, status: int, request_id: str, body: dict[str, Any],
          error: dict[str, Any] | None) -> dict[str, Any]:
    response = {"status_code": status, "request_id": request_id, "body": body}
    return {"id": f"batch_req_{uuid.uuid4().hex}", "custom_id": custom_id, "response": response, "error": error}


def input_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The non-blank lines of ``path`` with their 1-based numbers."""
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, text in enumerate(lines, start=1):
            if text.strip():
                yield number, text


class OutputFile:
    """An output file that survives a kill: whole lines appended, partial lines cut on open.

    Args:
        path: The output file; created when missing.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done = _recover(path)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, line: dict[str, Any]) -> None:
        """Write ``line`` in one ``write`` call and make it durable before returning."""
        data = (json.dumps(line, ensure_ascii=False) + "\n").encode()
        written = os.write(self._fd, data)
        if written != len(data):  # a full disk: leave no partial line behind for the next run to trust
            raise OSError(f"{self.path}: short write ({written} of {len(data)} bytes)")
        os.fsync(self._fd)
        self.done.add(line["custom_id"])

    def close(self) -> None:
        os.close(self._fd)


def _recover(path: Path) -> set[str]:
    """Cut a trailing partial line off ``path``; the ``custom_id`` s of its whole lines."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    if len(whole) != len(data):
        with path.open("r+b") as file:
            file.truncate(len(whole))
    done = set()
    for text in whole.decode("utf-8", errors="replace").splitlines():
        try:
            done.add(json.loads(text)["custom_id"])
        except (ValueError, KeyError, TypeError):
            continue  # not a line this command wrote: kept, never taken as answered
    return done
