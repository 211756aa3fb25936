"""The OpenAPI document is true: schemathesis fuzzes the real app against its own ``/openapi.json``.

Every operation goes through schemathesis's examples, coverage and fuzzing phases with all of its
checks, derandomized from a fixed seed, against the app ``build_app`` makes in front of a
:class:`FakeEngine`, once open and once behind an API key. So: no 5xx; no status code, content
type, header or body the document does not list; every request it calls valid is accepted
(``positive_data_acceptance``, with 2xx only) and every request it calls invalid is refused
(``negative_data_rejection``, with 400 or 404); without the key every protected route says 401.
(The stateful phase is left out: no operation's answer feeds another's request.)

Where JSON Schema cannot say what the server needs, generated data is made realistic, each time
for a rule the document states in words (see :mod:`seesay.api.openapi`):

* pictures: the ``uri`` format (``image_url.url``) and the form's image part draw real PNG and
  JPEG pictures, since a string or bytes that match the schema rarely decode as an image;
* a request meant to be valid keeps the rules between fields: its conversation ends with the
  user's turn and ``min_pixels`` is at most ``max_pixels`` (:func:`_keep_the_written_rules`), and
  it holds at most ``max_images_per_request`` pictures (:func:`_few_enough_pictures`);
* the refusals accepted for a valid request are the documented 400 ``context_length_exceeded``,
  since whether a prompt fits is the engine's count of its tokens (:func:`_not_context_overflow`),
  and, for the LoRA endpoints, the documented 400 ``invalid_adapter`` and 404 ``model_not_found``,
  since whether a path holds an adapter or a name is loaded is the server's state, not the
  request's form (:func:`_not_an_adapter_here`).

Three hooks work around schemathesis 4.32: it compares integers beyond 2**53 as floats
(:func:`_exact_seed`); its coverage phase calls a form with an empty required field valid
(:func:`_forms_as_documented`); and it takes a number mutated into the text "0" for an invalid
form field although a form sends nothing but text (:func:`_mutation_survived_the_form`).
"""

from __future__ import annotations

import base64
import io
import json
import re
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from hypothesis import strategies as st
from PIL import Image
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import AcceptedNegativeData
from schemathesis.generation import GenerationMode
from schemathesis.openapi.checks import RejectedPositiveData

from fakes import FakeEngine, app_client, fake_settings
from seesay.api.app import build_app
from seesay.api.openapi import operations
from seesay.api.schema_rules import NOT_BLANK, is_blank
from seesay.errors import (
    WIRE_FORMS,
    AdapterLoadError,
    AuthenticationError,
    CacheUnavailableError,
    ModelNotFoundError,
    RateLimitedError,
    RequestCancelledError,
    SeesayError,
    ServerBusyError,
    wire_form,
)
from seesay.types import SEED_LIMITS

SETTINGS = fake_settings(allow_runtime_lora_updating=True)
CONFIG = {
    "seed": 20250611,
    "generation": {"deterministic": True, "max-examples": 100, "database": "none"},
    "checks": {
        "positive_data_acceptance": {"expected-statuses": ["2xx"]},
        "negative_data_rejection": {"expected-statuses": ["400", "404"]},
    },
}
API_KEY = "sk-fuzz"
# The same server behind an API key: the document declares bearer authentication, requests carry
# the key, and schemathesis's ``ignored_auth`` check sends them without it (or with a wrong one).
KEYED = (SETTINGS.model_copy(update={"api_keys": (API_KEY,)}),
         {**CONFIG, "headers": {"Authorization": f"Bearer {API_KEY}"},
          "generation": {**CONFIG["generation"], "max-examples": 25}})


@st.composite
def pictures(draw: st.DrawFn, format: str) -> bytes:
    """A small picture in ``format``, of a drawn size and colour."""
    size = (draw(st.integers(1, 64)), draw(st.integers(1, 64)))
    colour = draw(st.tuples(*[st.integers(0, 255)] * 3))
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=format)
    return buffer.getvalue()


def _data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


# Registered for the whole session: nothing else here uses schemathesis.
schemathesis.openapi.media_type("image/png", pictures("PNG"))
schemathesis.openapi.media_type("image/jpeg", pictures("JPEG"))
schemathesis.openapi.format("uri", st.one_of(pictures("PNG").map(lambda data: _data_url("image/png", data)),
                                             pictures("JPEG").map(lambda data: _data_url("image/jpeg", data))))


def _is_positive(case: Any) -> bool:
    return case.meta is not None and case.meta.generation.mode is GenerationMode.POSITIVE


def _keep_the_written_rules(context: Any, case: Any) -> Any:
    """A case meant to be valid, made to keep the rules between fields that JSON Schema cannot state:
    a conversation ends with the user's question, and ``min_pixels`` is at most ``max_pixels``."""
    if not _is_positive(case) or not isinstance(case.body, dict):
        return case
    pixels = case.body
    if case.path == "/v1/chat/completions":
        messages = case.body["messages"]
        if messages[-1]["role"] != "user":
            messages.append({"role": "user", "content": "What is in the picture?"})
        pixels = case.body.get("seesay") or {}
    low, high = pixels.get("min_pixels"), pixels.get("max_pixels")
    if all(isinstance(value, int | float) for value in (low, high)):  # not left out, null or an empty form field
        pixels["min_pixels"], pixels["max_pixels"] = min(low, high), max(low, high)
    return case


def _exact_seed(context: Any, case: Any) -> bool:
    """Whether a case meant to be valid has a seed within the document's bounds, compared exactly.

    schemathesis 4.32 compares integers beyond 2**53 as floats, so it calls 2**63 + 100 valid
    for ``maximum: 2**63 - 1``; the server compares exactly.
    """
    seed = case.body.get("seed") if _is_positive(case) and isinstance(case.body, dict) else None
    return not isinstance(seed, int) or SEED_LIMITS[0] <= seed <= SEED_LIMITS[1]


def _few_enough_pictures(context: Any, case: Any) -> bool:
    """Whether a case meant to be valid holds at most ``max_images_per_request`` pictures in all."""
    if not _is_positive(case) or case.path != "/v1/chat/completions":
        return True
    parts = [part for message in case.body["messages"] if isinstance(message["content"], list)
             for part in message["content"]]
    return sum(part["type"] == "image_url" for part in parts) <= SETTINGS.max_images_per_request


def _form_validator(document: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """A validator of the ``/v1/vqa`` form as the document has it, and the form's fields."""
    content = document["paths"]["/v1/vqa"]["post"]["requestBody"]["content"]["multipart/form-data"]
    validator = jsonschema_rs.Draft202012Validator({**content["schema"], "components": document["components"]})
    name = content["schema"]["$ref"].rsplit("/", 1)[-1]
    return validator, document["components"]["schemas"][name]["properties"]


def _forms_as_documented(document: dict[str, Any]) -> Any:
    """A ``filter_case`` hook: drop form bodies schemathesis calls valid that the document does not.

    Works around schemathesis 4.32's coverage phase, which fills the other required fields of a
    form that has a picture part with "" whatever their schema (``question`` has ``minLength: 1``).
    """
    validator, _ = _form_validator(document)

    def hook(context: Any, case: Any) -> bool:
        if not _is_positive(case) or case.path != "/v1/vqa":
            return True
        return bool(validator.is_valid({k: "" if isinstance(v, bytes) else v for k, v in case.body.items()}))

    return hook


def _form_sent(request: Any) -> dict[str, list[str]]:
    """The fields of the multipart form ``request`` sent, as text (a file part as "")."""
    head = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + request.body)
    fields: dict[str, list[str]] = {}
    for part in message.iter_parts():
        text = "" if part.get_filename() is not None else part.get_payload(decode=True).decode("utf-8")
        fields.setdefault(part.get_param("name", header="content-disposition"), []).append(text)
    return fields


def _is_text(field: dict[str, Any]) -> bool:
    """Whether a form field holds text (its value, not its empty-field branch, is a string)."""
    return any(branch.get("type") == "string" for branch in [field, *field.get("anyOf", ())])


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _mutation_survived_the_form(document: dict[str, Any]) -> Any:
    """A ``filter_failure`` hook: keep "invalid form accepted" only if the form the server received is invalid.

    A form sends text, so the negative value "0" for a number, or an empty list, arrives as a valid
    number, or as nothing; schemathesis 4.32 allows for that in query and path parameters only.
    Each field is read as the document types it (a number's or boolean's text as JSON), and the
    failure stands when the form so read breaks the document.
    """
    validator, properties = _form_validator(document)

    def hook(context: Any, failure: Any, case: Any, response: Any) -> bool:
        if case.path != "/v1/vqa" or not isinstance(failure, AcceptedNegativeData):
            return True
        fields = _form_sent(response.request)
        if any(len(texts) > 1 or name not in properties for name, texts in fields.items()):
            return True
        form = {name: texts[0] if _is_text(properties[name]) else _json_or_text(texts[0])
                for name, texts in fields.items()}
        return not validator.is_valid(form)

    return hook


def _not_context_overflow(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """A ``filter_failure`` hook: keep every failure but a valid request refused with the documented
    400 ``context_length_exceeded``; whether a prompt fits is the engine's count of its tokens."""
    if not isinstance(failure, RejectedPositiveData) or response.status_code != 400:
        return True
    return bool(json.loads(response.content)["error"]["code"] != "context_length_exceeded")


_ADAPTER_REFUSALS = {("/v1/load_lora_adapter", 400, "invalid_adapter"),
                     ("/v1/unload_lora_adapter", 404, "model_not_found")}


def _not_an_adapter_here(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """A ``filter_failure`` hook: keep every failure but a valid request to load an adapter from a path
    that holds none, or to unload one that is not loaded, refused as documented (400, 404)."""
    if not isinstance(failure, RejectedPositiveData) or response.status_code not in (400, 404):
        return True
    refusal = (case.path, response.status_code, json.loads(response.content)["error"]["code"])
    return refusal not in _ADAPTER_REFUSALS


@pytest.fixture(params=[(SETTINGS, CONFIG), KEYED], ids=["open", "api-key"])
def api_schema(request: pytest.FixtureRequest) -> Any:
    # schemathesis 4.32's pytest plugin reads ``_nodeid``, which pytest 9 no longer has.
    request.node._nodeid = request.node.nodeid
    settings, config = request.param
    app = build_app(settings, FakeEngine())
    # Loading the document starts the app's lifespan; schemathesis's plugin ends it after the test.
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=SchemathesisConfig.from_dict(config))
    schema.hook("map_case")(_keep_the_written_rules)
    schema.hook("filter_case")(_few_enough_pictures)
    schema.hook("filter_case")(_exact_seed)
    schema.hook("filter_case")(_forms_as_documented(schema.raw_schema))
    schema.hook("filter_failure")(_not_context_overflow)
    schema.hook("filter_failure")(_not_an_adapter_here)
    schema.hook("filter_failure")(_mutation_survived_the_form(schema.raw_schema))
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_the_server_does_what_its_document_says(case: Any) -> None:
    case.call_and_validate()


# --- the document cannot drift from the errors ----------------------------------------------

CALLER_ERRORS = {AuthenticationError, RateLimitedError}
# Everything the service can raise while answering, but the cancellation: its 499 goes to a client
# that has already gone.
ANSWERING = set(WIRE_FORMS) - {RequestCancelledError}
ROUTE_ERRORS: dict[tuple[str, str], set[type[SeesayError]]] = {
    ("post", "/v1/chat/completions"): ANSWERING,
    ("post", "/v1/vqa"): ANSWERING,
    ("get", "/v1/models"): CALLER_ERRORS,
    ("get", "/v1/models/{model_id}"): CALLER_ERRORS | {ModelNotFoundError},
    ("get", "/v1/seesay/limits"): CALLER_ERRORS,
    ("post", "/v1/load_lora_adapter"): CALLER_ERRORS | {AdapterLoadError, ServerBusyError},
    ("post", "/v1/unload_lora_adapter"): CALLER_ERRORS | {ModelNotFoundError, ServerBusyError},
    ("get", "/admin/cache"): CALLER_ERRORS | {CacheUnavailableError},
    ("post", "/admin/cache/clear"): CALLER_ERRORS | {CacheUnavailableError},
    ("get", "/health"): set(),
    ("get", "/ready"): set(),
    ("get", "/metrics"): set(),
}
"""The errors each route can answer with; a new route fails the tests below until it is listed."""


def _document(**settings: Any) -> dict[str, Any]:
    return build_app(fake_settings(**{"allow_runtime_lora_updating": True, **settings}), FakeEngine()).openapi()


def test_no_response_is_a_422() -> None:
    """Validation errors are 400s, so FastAPI's 422 and its validation-error schemas are gone."""
    document = _document()
    for path, method, operation in operations(document):
        assert "422" not in operation["responses"], f"{method.upper()} {path}"
    assert not {"HTTPValidationError", "ValidationError"} & set(document["components"]["schemas"])
    assert "422" not in json.dumps(document)


def test_each_route_documents_the_statuses_of_its_errors() -> None:
    document = _document()
    assert {(method, path) for path, method, _ in operations(document)} == set(ROUTE_ERRORS)
    for path, method, operation in operations(document):
        expected = {wire_form(error).status for error in ROUTE_ERRORS[method, path]}
        if "requestBody" in operation:
            expected |= {400, 413}  # an invalid body; one over max_request_bytes
        responses = operation["responses"]
        assert expected <= {int(status) for status in responses}, f"{method.upper()} {path}"
        for status in expected:
            schema = responses[str(status)]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, f"{method.upper()} {path} {status}"


def test_the_document_declares_bearer_keys_only_when_the_server_has_keys() -> None:
    protected = {(method, path) for (method, path), errors in ROUTE_ERRORS.items() if AuthenticationError in errors}
    keyed = _document(api_keys=("sk-test",))
    assert keyed["components"]["securitySchemes"] == {"apiKey": {"type": "http", "scheme": "bearer"}}
    assert {(method, path) for path, method, operation in operations(keyed) if "security" in operation} == protected
    assert "securitySchemes" not in _document()["components"]


async def test_once_started_the_document_names_the_models_and_the_engine_limits() -> None:
    engine = FakeEngine()
    app = build_app(fake_settings(served_model_name="shop-vl"), engine)
    before = app.openapi()["components"]["schemas"]
    assert "enum" not in before["ChatCompletionRequest"]["properties"]["model"]
    async with app_client(app) as client:
        document = (await client.get("/openapi.json")).json()
    schemas, budget = document["components"]["schemas"], engine.budget
    assert schemas["ChatCompletionRequest"]["properties"]["model"]["enum"] == ["shop-vl"]
    assert document["paths"]["/v1/models/{model_id}"]["get"]["parameters"][0]["schema"]["enum"] == ["shop-vl"]
    pixels = schemas["SeesayOptions"]["properties"]["max_pixels"]["anyOf"][0]
    assert (pixels["minimum"], pixels["maximum"]) == (budget.factor**2, budget.max_pixels)
    assert schemas["VqaForm"]["properties"]["max_tokens"]["anyOf"][0]["maximum"] == engine.max_model_len


def test_the_blank_pattern_is_what_strip_removes() -> None:
    """``NOT_BLANK`` spells out ``str.strip()``'s white space, for regex dialects that disagree on ``\\s``."""
    pattern = re.compile(NOT_BLANK)
    for code in range(0x110000):
        character = chr(code)
        assert (pattern.search(character) is None) == (not character.strip()) == is_blank(character), hex(code)
