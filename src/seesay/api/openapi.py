"""The OpenAPI document (``/openapi.json``): FastAPI's, made true to what this server accepts and answers.

FastAPI builds the document from the wire models (:mod:`seesay.api.protocol`) and each route's
``responses``, which routes build with :func:`error_responses` and :func:`answer_responses`
(every status a route can answer, an OpenAI error object for each error, the headers, and
``text/event-stream`` for a streamed answer). This module then corrects what FastAPI cannot know:

* Validation errors are 400s (:mod:`seesay.api.errors`), so FastAPI's 422 and its
  ``HTTPValidationError`` schemas are removed.
* ``POST /v1/vqa`` takes ``multipart/form-data`` with a picture file, not the URL-encoded form
  FastAPI infers from a form model.
* The settings: http(s) image URLs are documented only when the server fetches them, and with
  API keys the protected routes declare bearer authentication.
* The running server: once the app has started, the model names it serves become an enum (for
  ``model`` and ``GET /v1/models/{model_id}``), the pixel fields take the engine's pixel budget
  as bounds, and the token fields its context window. Before start-up the document leaves them
  open and is not cached; once started, it is made again when a LoRA adapter is loaded or unloaded.

What JSON Schema cannot say (the last message comes from the user, ``min_pixels`` at most
``max_pixels``, at most ``max_images_per_request`` pictures, a prompt that fits the context, a
picture that decodes) is in the descriptions; ``tests/unit/test_openapi.py`` fuzzes the app
against this document.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from seesay.api.answers import CACHE_HEADER
from seesay.api.dependencies import Runtime
from seesay.api.protocol import ChatCompletionChunk, ErrorResponse
from seesay.api.schema_rules import DATA_URL_PATTERN, IMAGE_MEDIA_TYPES
from seesay.config import Settings

# --- what routes answer (their ``responses=``) ------------------------------------------------

_ERROR_DESCRIPTIONS = {
    400: "The request is invalid; ``param`` names the field.",
    401: "A missing or wrong API key (when the server has keys).",
    404: "No such model here.",
    413: "The request body or a picture is over this server's limit.",
    429: "Over the API key's rate limit, or every queue place is taken; retry after Retry-After seconds.",
    500: "The server or its engine failed; the details are logged.",
    503: "Not ready, draining, queue wait too long, or a screen or the shared cache is unavailable.",
}
_ERROR_HEADERS = {
    401: {"WWW-Authenticate": {"description": "Bearer", "required": True, "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "Seconds to wait.", "required": True, "schema": {"type": "integer"}}},
}
ANSWER_ERRORS = (400, 401, 404, 413, 429, 500, 503)
"""What a route that answers questions can refuse with (see :data:`seesay.errors.WIRE_FORMS`)."""


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a route: each status answered with an :class:`ErrorResponse`."""
    return {status: {"model": ErrorResponse, "description": _ERROR_DESCRIPTIONS[status],
                     **({"headers": _ERROR_HEADERS[status]} if status in _ERROR_HEADERS else {})}
            for status in statuses}


def event_stream(events: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI content of a ``text/event-stream`` of ``events``: each event's ``data`` is one as JSON,
    or an error object (an error after the stream started), and the last is ``[DONE]``."""
    payload = {"anyOf": [{"$ref": f"#/components/schemas/{name}"} for name in (events.__name__, "ErrorResponse")]}
    data = {"anyOf": [{"const": "[DONE]"},
                      {"type": "string", "contentMediaType": "application/json", "contentSchema": payload}]}
    return {"text/event-stream": {"schema": {"type": "object", "required": ["data"], "properties": {"data": data}}}}


def answer_responses(
    answer: type[BaseModel], *, events: type[BaseModel] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of a route that answers questions: ``answer`` on 200, errors otherwise.

    Such routes return ready-made responses (see :func:`seesay.api.answers.json_response`), so
    the 200 schema is documented here rather than taken from a ``response_model``; ``events``
    is the chunk of a streamed answer (``stream: true``).
    """
    cache = {"description": "Where the answer came from.", "required": True,
             "schema": {"type": "string", "enum": ["hit-memory", "hit-redis", "miss"]}}
    ok: dict[str, Any] = {"model": answer, "description": "The answer.", "headers": {CACHE_HEADER: cache}}
    if events is not None:
        ok["content"] = event_stream(events)
    return {200: ok, **error_responses(*ANSWER_ERRORS)}


# --- the document -------------------------------------------------------------------------------

_FORM = "application/x-www-form-urlencoded"
_MULTIPART = "multipart/form-data"
_SECURITY_SCHEME = "apiKey"


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Make :func:`openapi_document` the app's document (``/openapi.json`` and ``/docs``)."""

    served: tuple[str, ...] = ()  # the model names the cached document lists

    def openapi() -> dict[str, Any]:
        nonlocal served
        runtime: Runtime | None = getattr(app.state, "runtime", None)
        names = () if runtime is None else runtime.service.model_names
        if app.openapi_schema is not None and names == served:
            return app.openapi_schema
        document = openapi_document(app, settings, runtime)
        if runtime is not None:
            app.openapi_schema, served = document, names
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def openapi_document(app: FastAPI, settings: Settings, runtime: Runtime | None = None) -> dict[str, Any]:
    """The document of ``app``, for ``settings`` and, once started, for what ``runtime`` serves."""
    document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schemas = document["components"]["schemas"]
    _remove_validation_errors(document)
    _multipart_forms(document)
    _add_model(schemas, ChatCompletionChunk)
    if not settings.allow_url_images:
        schemas["ImageUrl"]["properties"]["url"]["pattern"] = DATA_URL_PATTERN
    if settings.all_api_keys():
        _require_api_key(document)
    if runtime is not None:
        _describe_server(document, runtime)
    return document


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(path, method, operation)`` for every operation of ``document``."""
    return [(path, method, operation) for path, item in document["paths"].items()
            for method, operation in item.items()]


def _remove_validation_errors(document: dict[str, Any]) -> None:
    for _, _, operation in operations(document):
        operation["responses"].pop("422", None)
    for name in ("HTTPValidationError", "ValidationError"):
        document["components"]["schemas"].pop(name, None)


def _multipart_forms(document: dict[str, Any]) -> None:
    """A form whose model has a file field is sent as ``multipart/form-data``; the file is a picture."""
    schemas = document["components"]["schemas"]
    for _, _, operation in operations(document):
        content = operation.get("requestBody", {}).get("content", {})
        if _FORM not in content:
            continue
        form = content.pop(_FORM)
        properties = schemas[form["schema"]["$ref"].rsplit("/", 1)[-1]]["properties"]
        files = [name for name, field in properties.items() if field.get("format") == "binary"]
        form["encoding"] = {name: {"contentType": ", ".join(IMAGE_MEDIA_TYPES)} for name in files}
        content[_MULTIPART if files else _FORM] = form


def _add_model(schemas: dict[str, Any], model: type[BaseModel]) -> None:
    """Put ``model`` (a response FastAPI does not collect, such as a streamed chunk) in the components."""
    schema = model.model_json_schema(mode="serialization", ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        schemas.setdefault(name, definition)
    schemas[model.__name__] = schema


def _require_api_key(document: dict[str, Any]) -> None:
    """Routes that can answer 401 need ``Authorization: Bearer <key>``."""
    document["components"]["securitySchemes"] = {_SECURITY_SCHEME: {"type": "http", "scheme": "bearer"}}
    for _, _, operation in operations(document):
        if "401" in operation["responses"]:
            operation["security"] = [{_SECURITY_SCHEME: []}]


def _describe_server(document: dict[str, Any], runtime: Runtime) -> None:
    """Fill in the model names, the pixel budget and the context window that ``runtime`` serves."""
    schemas = document["components"]["schemas"]
    names = list(runtime.service.model_names)
    info = runtime.service.info
    pixels = {"minimum": info.pixel_budget.factor**2, "maximum": info.pixel_budget.max_pixels}
    tokens = {"maximum": info.max_model_len}
    request, options, form = schemas["ChatCompletionRequest"], schemas["SeesayOptions"], schemas["VqaForm"]
    request["properties"]["model"]["enum"] = names
    _value(form["properties"]["model"])["enum"] = names
    for field in ("min_pixels", "max_pixels"):
        _bound(options["properties"][field], pixels)
        _bound(form["properties"][field], pixels)
    for field in ("max_completion_tokens", "max_tokens"):
        _bound(request["properties"][field], tokens)
    _bound(form["properties"]["max_tokens"], tokens)
    for parameter in document["paths"]["/v1/models/{model_id}"]["get"]["parameters"]:
        if parameter["name"] == "model_id":
            parameter["schema"]["enum"] = names


def _bound(field: dict[str, Any], bounds: dict[str, int]) -> None:
    """Add ``bounds`` to a number field, or to the number branch of an optional one."""
    _value(field).update(bounds)


def _value(field: dict[str, Any]) -> dict[str, Any]:
    """The branch of an optional field (``null``, or an empty form field) that has the value's type."""
    return next((branch for branch in field.get("anyOf", ()) if branch.get("type", "null") != "null"), field)
