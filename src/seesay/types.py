"""Internal request and result types, shared by the service, the scheduler and every engine.

These are frozen dataclasses: the HTTP layer converts its pydantic wire schemas into them,
and nothing downstream sees a wire schema. A :class:`Question` is what a caller asks, its
pictures still encoded; the service decodes them (:mod:`seesay.intake`) into a
:class:`GenerationRequest`, whose pictures are normalised (:mod:`seesay.images`), and the
engine answers that with a :class:`GenerationResult`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from seesay.images import NormalizedImage, PixelBudget

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "cancelled", "content_filter"]


@dataclass(frozen=True)
class TextPart:
    """A piece of text inside a message."""

    text: str


@dataclass(frozen=True)
class ImagePart:
    """A picture inside a message, already decoded, oriented and fitted to its pixel budget."""

    image: NormalizedImage


ContentPart = TextPart | ImagePart


@dataclass(frozen=True)
class ChatMessage:
    """One turn of a conversation."""

    role: Role
    content: tuple[ContentPart, ...]

    @classmethod
    def user(cls, *parts: str | NormalizedImage) -> ChatMessage:
        """A user turn from strings and images, in order."""
        return cls("user", tuple(TextPart(p) if isinstance(p, str) else ImagePart(p) for p in parts))

    @property
    def images(self) -> tuple[NormalizedImage, ...]:
        return tuple(p.image for p in self.content if isinstance(p, ImagePart))

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    def as_template(self) -> dict[str, Any]:
        """The turn as Hugging Face chat templates take it (an ``{"type": "image"}`` part per picture)."""
        content = [{"type": "image"} if isinstance(p, ImagePart) else {"type": "text", "text": p.text}
                   for p in self.content]
        return {"role": self.role, "content": content}


@dataclass(frozen=True)
class SamplingParams:
    """What the caller asked for; ``None`` means "the model's default" (see ``engine.sampling``).

    Attributes:
        max_new_tokens: Upper bound on generated tokens; unset means the engine default,
            clipped to what is left of the context window.
        temperature: 0 means greedy decoding.
        top_p: Nucleus sampling mass in (0, 1].
        top_k: Keep only the k most likely tokens; 0 disables.
        presence_penalty: OpenAI semantics: subtracted once from the logit of every token
            already generated in this answer.
        frequency_penalty: OpenAI semantics: subtracted per occurrence in this answer.
        repetition_penalty: transformers/CTRL semantics (divides positive logits), over the
            prompt and the answer; 1.0 disables.
        seed: Makes sampling reproducible for this request, whatever else shares its batch.
        stop: Strings that end generation; they are not included in the answer.
    """

    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()


SAMPLING_LIMITS: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (1e-6, 1.0),
    "top_k": (0, 1_000_000),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
    "repetition_penalty": (0.01, 10.0),
}
"""The inclusive range of each sampling value: the engine checks them, the wire schemas state them."""
SEED_LIMITS = (-(2**63), 2**63 - 1)
"""Seeds as OpenAI takes them (64-bit signed), all of which a torch random generator takes."""


def valid_text(text: str) -> str:
    """``text`` itself, if it is valid Unicode; every text a caller sends passes this at the edge.

    A JSON ``\\ud800`` escape, or bytes the terminal could not decode, arrive as lone UTF-16
    surrogates, which no tokenizer, log or response can encode.

    Raises:
        ValueError: ``text`` holds a lone surrogate; the message says which character.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"the text is not valid Unicode: character {exc.start} is a lone UTF-16 surrogate "
            f"(U+{ord(text[exc.start]):04X}); send text that encodes as UTF-8"
        ) from None
    return text


def new_request_id() -> str:
    return f"req-{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class ImageInput:
    """A picture as the caller sent it, not yet decoded.

    Attributes:
        source: The encoded file (``bytes``); a ``data:image/...;base64,`` URL or an ``http(s)``
            URL (``str``); or a local file (``Path``: only callers on this machine, the CLI and
            batch jobs, make these; the HTTP API never does).
        param: Where the picture sits in the caller's request, named in errors
            (``messages[0].content[1].image_url``).
    """

    source: bytes | str | Path
    param: str = "image"


@dataclass(frozen=True)
class Turn:
    """One turn of a caller's conversation: text and pictures, in order."""

    role: Role
    content: tuple[str | ImageInput, ...]

    @property
    def images(self) -> tuple[ImageInput, ...]:
        return tuple(part for part in self.content if isinstance(part, ImageInput))

    @property
    def text(self) -> str:
        return "".join(part for part in self.content if isinstance(part, str))


@dataclass(frozen=True)
class PixelRequest:
    """A caller's pixel budget for its pictures; unset fields take the server's.

    Attributes:
        min_pixels: Smaller pictures are upsampled to about this many pixels.
        max_pixels: Larger pictures are downsampled to at most this many; never above the server's.
        where: The prefix of these fields in the caller's request, named in errors (``seesay.``).
    """

    min_pixels: int | None = None
    max_pixels: int | None = None
    where: str = ""


@dataclass(frozen=True)
class Question:
    """What a caller asks: a conversation whose last user turn is the question, and how to answer it.

    Attributes:
        turns: The conversation; pictures still encoded.
        sampling: Generation controls.
        pixels: This request's pixel budget; ``None`` takes the server's.
        model: The model the caller names (``None``: the served model).
        request_id: Correlates logs, metrics and results.
    """

    turns: tuple[Turn, ...]
    sampling: SamplingParams = SamplingParams()
    pixels: PixelRequest | None = None
    model: str | None = None
    request_id: str = field(default_factory=new_request_id)

    @property
    def images(self) -> tuple[ImageInput, ...]:
        return tuple(image for turn in self.turns for image in turn.images)


@dataclass(frozen=True)
class GenerationRequest:
    """One question for the engine: a conversation plus how to answer it.

    Attributes:
        messages: The conversation; images are already normalised to ``pixel_budget``.
        sampling: Generation controls.
        pixel_budget: The budget the images were fitted to; ``None`` means the engine's.
        adapter: Name of a LoRA adapter to answer with (``None``: the base model).
        request_id: Correlates logs, metrics and results.
    """

    messages: tuple[ChatMessage, ...]
    sampling: SamplingParams = SamplingParams()
    pixel_budget: PixelBudget | None = None
    adapter: str | None = None
    request_id: str = field(default_factory=new_request_id)

    @property
    def images(self) -> tuple[NormalizedImage, ...]:
        return tuple(image for message in self.messages for image in message.images)


@dataclass(frozen=True)
class Usage:
    """Token accounting as OpenAI reports it; ``prompt_tokens`` includes image tokens."""

    prompt_tokens: int
    completion_tokens: int
    image_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Timings:
    """Seconds spent on each stage of one request inside the engine."""

    preprocess_s: float = 0.0
    first_token_s: float | None = None
    generate_s: float = 0.0


@dataclass(frozen=True)
class GenerationResult:
    """The answer to one :class:`GenerationRequest`: decoded new text only, no special tokens."""

    request_id: str
    text: str
    finish_reason: FinishReason
    usage: Usage
    timings: Timings = Timings()
