"""Wire schemas: the OpenAI Chat Completions API as seesay speaks it, plus seesay's own routes.

Everything a client sends or receives over HTTP is defined here and nowhere else; inside the
server, requests become :mod:`seesay.types` dataclasses (see :mod:`seesay.api.questions`).

Compatibility, field by field:

* ``messages``: roles ``system``, ``developer`` (treated as ``system``), ``user`` and
  ``assistant``; content as a string or a list of ``text`` and ``image_url`` parts. Images
  are allowed in user turns only and the conversation must end with a user turn.
* ``image_url.url``: a ``data:image/...;base64,...`` URL, or ``http(s)`` when the server
  enables URL images (see :mod:`seesay.image_urls`). ``detail`` is accepted and ignored:
  the pixel budget decides the resolution.
* Sampling: ``max_completion_tokens`` (or the older ``max_tokens``), ``temperature``,
  ``top_p``, ``seed``, ``stop`` (up to 4 strings), ``presence_penalty`` and
  ``frequency_penalty`` are honoured; so are the common extensions ``top_k`` and
  ``repetition_penalty``. ``n`` must be 1; ``logprobs`` must be off.
* ``stream`` sends server-sent events ending in ``data: [DONE]``;
  ``stream_options.include_usage`` adds a last chunk with usage and no choices.
* The seesay extension: ``"seesay": {"min_pixels": ..., "max_pixels": ...}`` sets this
  request's pixel budget (``extra_body={"seesay": {...}}`` with the ``openai`` SDK); it may
  lower the server's budget, never raise it. ``"cache": false`` keeps this request out of the
  response cache (neither read nor stored), like the header ``Cache-Control: no-store``;
  ``Cache-Control: no-cache`` skips the lookup but stores the fresh answer.
* Every answer carries the header ``X-Seesay-Cache: hit-memory | hit-redis | miss``.
* Any other field (``tools``, ``response_format``, ``logit_bias`` …) is refused with a 400
  that names it, rather than silently ignored; so is a value of the wrong JSON type
  (``"max_tokens": "5"``), as OpenAI does. ``2.0`` is an integer, as in JSON Schema.
* ``POST /v1/vqa`` is a multipart form: a number's or boolean's text is read as JSON
  (``max_tokens=64``, ``cache=false``), and an empty field is a field left out.

The models' JSON schemas say every rule the validators check that JSON Schema can express
(a user turn needs text that is not blank or an image; ``n`` is 1; at most 4 ``stop``
strings …; see :mod:`seesay.api.schema_rules`); :mod:`seesay.api.openapi` makes the OpenAPI
document of them.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import UploadFile
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_serializer,
    field_validator,
    model_validator,
)

from seesay.api.schema_rules import (
    IMAGE_URL_PATTERN,
    NOT_BLANK,
    form_fields,
    is_blank,
    message_variants,
    request_rules,
)
from seesay.types import SAMPLING_LIMITS, SEED_LIMITS, valid_text

FinishReasonWire = Literal["stop", "length", "content_filter"]


class WireModel(BaseModel):
    """Requests refuse unknown fields, so an unsupported OpenAI option is never silently dropped, and
    values of the wrong JSON type (``"max_tokens": "5"``, ``"stream": "true"``), as OpenAI does."""

    model_config = ConfigDict(extra="forbid", strict=True)


Text = Annotated[str, AfterValidator(valid_text)]
"""A request string that is valid Unicode: every text a client sends is one."""


def _whole_number(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


# JSON integers as JSON Schema reads them: 2.0 is 2; 2.5 and "2" are refused. (Bounds go before the
# validator, or pydantic cannot put them in the JSON schema.)
Count = Annotated[int, Field(ge=0), BeforeValidator(_whole_number)]
PositiveCount = Annotated[int, Field(ge=1), BeforeValidator(_whole_number)]
Seed = Annotated[int, Field(ge=SEED_LIMITS[0], le=SEED_LIMITS[1]), BeforeValidator(_whole_number)]
TopK = Annotated[int, Field(ge=SAMPLING_LIMITS["top_k"][0], le=SAMPLING_LIMITS["top_k"][1]),
                 BeforeValidator(_whole_number)]


def _sampling(name: str) -> Any:
    """An optional sampling value's field, within the range the engine takes (:data:`SAMPLING_LIMITS`)."""
    low, high = SAMPLING_LIMITS[name]
    return Field(None, ge=low, le=high)

# --- requests --------------------------------------------------------------------------------


class TextContent(WireModel):
    type: Literal["text"]
    text: Text


class ImageUrl(WireModel):
    url: Text = Field(
        min_length=1, json_schema_extra={"format": "uri", "pattern": IMAGE_URL_PATTERN},
        description="A base64 data URL of a picture (data:image/png;base64,...) or, when the server fetches "
                    "URLs, an http(s) URL. The picture must decode as JPEG, PNG, WebP, GIF, BMP or TIFF "
                    "(HEIC/AVIF with pillow-heif); anything else is a 400.")
    detail: Literal["auto", "low", "high"] | None = None


class ImageContent(WireModel):
    type: Literal["image_url"]
    image_url: ImageUrl


ContentPart = Annotated[TextContent | ImageContent, Field(discriminator="type")]


def _string_or_list(value: Any) -> str | None:
    if isinstance(value, str):
        return "string"
    return "list" if isinstance(value, list) else None


# Tagged unions report errors from the matching branch only, not from every branch.
MessageContent = Annotated[
    Annotated[Text, Tag("string")] | Annotated[list[ContentPart], Tag("list")],
    Discriminator(
        _string_or_list,
        custom_error_type="content_type",
        custom_error_message="content must be a string or a list of content parts",
    ),
]
StopStrings = Annotated[
    Annotated[Text, Tag("string")] | Annotated[list[Text], Tag("list")],
    Discriminator(
        _string_or_list,
        custom_error_type="stop_type",
        custom_error_message="stop must be a string or a list of strings",
    ),
]
UNION_TAGS = frozenset({"string", "list"})  # error locations include these; field_path drops them


class ChatMessageIn(WireModel):
    model_config = ConfigDict(json_schema_extra=message_variants)

    role: Literal["system", "developer", "user", "assistant"]
    content: MessageContent
    name: Text | None = None
    # Echoed back by clients that append a previous answer's message object as it came.
    refusal: Text | None = None
    annotations: list[Any] | None = None
    tool_calls: list[Any] | None = Field(None, max_length=0)

    @property
    def image_urls(self) -> list[str]:
        if isinstance(self.content, str):
            return []
        return [part.image_url.url for part in self.content if isinstance(part, ImageContent)]

    @property
    def is_empty(self) -> bool:
        if isinstance(self.content, str):
            return is_blank(self.content)
        return not any(isinstance(p, ImageContent) or not is_blank(p.text) for p in self.content)


class StreamOptions(WireModel):
    include_usage: bool = False


class SeesayOptions(WireModel):
    """The seesay extension: this request's pixel budget and cache opt-out (see the module docstring)."""

    min_pixels: PositiveCount | None = None
    max_pixels: PositiveCount | None = None
    cache: bool | None = Field(None, description="false: neither read nor store the response cache.")


class ChatCompletionRequest(WireModel):
    """``POST /v1/chat/completions``.

    The conversation must end with a user message, and a request may hold at most the server's
    ``max_images_per_request`` pictures; the prompt and the answer's ``max_completion_tokens``
    must fit the model's context window (``context_length_exceeded``). JSON Schema cannot say
    these, so they are written here; everything else the server checks is in the schema.
    """

    model_config = ConfigDict(json_schema_extra=request_rules)

    model: Text
    messages: list[ChatMessageIn] = Field(
        min_length=1, description="The conversation; the last message must come from the user.")
    max_completion_tokens: PositiveCount | None = None
    max_tokens: PositiveCount | None = None
    temperature: float | None = _sampling("temperature")
    top_p: float | None = _sampling("top_p")
    top_k: TopK | None = None
    repetition_penalty: float | None = _sampling("repetition_penalty")
    presence_penalty: float | None = _sampling("presence_penalty")
    frequency_penalty: float | None = _sampling("frequency_penalty")
    seed: Seed | None = None
    stop: StopStrings | None = None
    n: PositiveCount = 1
    logprobs: bool | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: Text | None = None
    seesay: SeesayOptions | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError("n must be 1: this server returns one choice per request; send n requests instead")
        return n

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, logprobs: bool | None) -> bool | None:
        if logprobs:
            raise ValueError("logprobs are not supported by this server; leave logprobs unset")
        return logprobs

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > 4:
            raise ValueError(f"stop takes at most 4 strings, got {len(stop)}")
        return stop

    @field_validator("messages")
    @classmethod
    def _check_conversation(cls, messages: list[ChatMessageIn]) -> list[ChatMessageIn]:
        for index, message in enumerate(messages):
            if message.image_urls and message.role != "user":
                raise ValueError(f"messages[{index}]: images are only allowed in user messages")
            if message.is_empty and message.role == "user":
                raise ValueError(f"messages[{index}]: a user message needs text or an image")
        if messages and messages[-1].role != "user":
            raise ValueError(
                f"the last message must come from the user (got role '{messages[-1].role}'); "
                "end the conversation with the question to answer"
            )
        return messages

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> ChatCompletionRequest:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self

    @property
    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class VqaForm(WireModel):
    """``POST /v1/vqa`` (multipart): one picture and one question, plus optional controls.

    ``curl -F image=@photo.jpg -F question='What colour is it?' http://host/v1/vqa``
    """

    model_config = ConfigDict(json_schema_extra=form_fields)

    image: UploadFile
    question: Text = Field(min_length=1, max_length=8000)
    model: Text | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = _sampling("temperature")
    top_p: float | None = _sampling("top_p")
    top_k: TopK | None = None
    presence_penalty: float | None = _sampling("presence_penalty")
    frequency_penalty: float | None = _sampling("frequency_penalty")
    seed: Seed | None = None
    min_pixels: int | None = Field(None, ge=1)
    max_pixels: int | None = Field(None, ge=1)
    cache: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _read_form_text(cls, data: Any) -> Any:
        """A form sends text: a number or boolean field's text is read as the JSON value it spells."""
        if not isinstance(data, dict):
            return data
        return {name: value if name in _FORM_TEXT_FIELDS else _json_value(value) for name, value in data.items()}


_FORM_TEXT_FIELDS = frozenset({"image", "question", "model"})


def _json_value(value: Any) -> Any:
    """``"5"`` → 5, ``"2.0"`` → 2, ``"true"`` → True; any other text stays text, for the field's own error."""
    if not isinstance(value, str):
        return value
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    return _whole_number(parsed) if isinstance(parsed, bool | int | float) else value


# --- responses -------------------------------------------------------------------------------


class PromptTokensDetails(BaseModel):
    image_tokens: int = Field(description="How many of the prompt tokens are the pictures' visual tokens.")


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class PixelLimits(BaseModel):
    """``GET /v1/seesay/limits``: the pixel budget pictures are resized into, and the input limits.

    A picture of w × h pixels is resized as the model's processor would (sides multiples of
    ``factor``, area within [min_pixels, max_pixels]) and costs one visual token per
    ``factor`` × ``factor`` pixels; a request's ``seesay.max_pixels`` may lower the budget.
    """

    min_pixels: int
    max_pixels: int
    factor: int
    max_images_per_request: int
    max_image_bytes: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReasonWire
    logprobs: None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: UsageOut


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: FinishReasonWire | None = None
    logprobs: None = None

    @field_serializer("delta")
    def _delta_without_nulls(self, delta: ChunkDelta) -> dict[str, Any]:
        return delta.model_dump(exclude_none=True)


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: UsageOut | None = None


class VqaResponse(BaseModel):
    """``POST /v1/vqa``: the answer to one question about one uploaded picture."""

    id: str
    model: str
    answer: str
    finish_reason: FinishReasonWire
    usage: UsageOut


class ModelCard(BaseModel):
    """One model id, as OpenAI lists models; as vLLM, a LoRA adapter's ``parent`` is the served model."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "seesay"
    root: str | None = Field(None, description="The model's weights: the base model's id, an adapter's path.")
    parent: str | None = Field(None, description="For a LoRA adapter, the served model it adapts.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class LoadLoRAAdapterRequest(WireModel):
    """``POST /v1/load_lora_adapter`` (vLLM's body): serve the adapter at ``lora_path`` as the model ``lora_name``."""

    lora_name: Text = Field(pattern=NOT_BLANK, description="The model id clients will send as ``model``.")
    lora_path: Text = Field(pattern=NOT_BLANK, description="A PEFT adapter folder on the server "
                            "(adapter_config.json and adapter_model.safetensors), or a hub id it can fetch.")


class UnloadLoRAAdapterRequest(WireModel):
    """``POST /v1/unload_lora_adapter`` (vLLM's body); ``lora_int_id`` is accepted for vLLM clients and unused."""

    lora_name: Text
    lora_int_id: int | None = None


class HealthStatus(BaseModel):
    status: Literal["ok", "ready", "not ready"]
    detail: str | None = None
    model: str | None = None
    queue_depth: int | None = None


class CacheStatsResponse(BaseModel):
    """``GET /admin/cache``: this replica's response cache (``seesay cache stats``).

    ``hits``/``stores``/``errors`` are per tier (``memory``, ``redis``); ``memory`` and ``redis``
    are the tiers' own counters; ``redis_entries`` is the number of answers in Redis;
    ``near_duplicates`` counts near-duplicate lookups answered through Redis (``shared``) or by
    this replica's own index (``fallback``), with ``cache_near_duplicates`` only.
    Without a cache (``cache_policy = "off"``) only ``policy`` is set.
    """

    policy: str
    hits: dict[str, int] | None = None
    misses: int | None = None
    coalesced: int | None = None
    stores: dict[str, int] | None = None
    errors: dict[str, int] | None = None
    memory: dict[str, Any] | None = None
    redis: dict[str, Any] | None = None
    redis_entries: int | None = None
    redis_error: str | None = None
    near_duplicates: dict[str, Any] | None = None


class CacheClearResponse(BaseModel):
    """``POST /admin/cache/clear``: answers removed from this replica's L1 and from Redis (``null``: no Redis)."""

    memory: int
    redis: int | None


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
