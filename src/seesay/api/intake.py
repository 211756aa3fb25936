"""Wire requests to internal ones: :class:`ChatCompletionRequest` → :class:`GenerationRequest`.

Checks the model name and the image count before any image is decoded, builds the
request's pixel budget (the server's, lowered by the seesay extension, never raised),
decodes every image once, off the event loop, fitted to that budget (``data:`` URLs here;
``http(s)`` through :class:`~seesay.api.image_urls.UrlImageFetcher` when enabled), and maps
the OpenAI sampling fields to :class:`SamplingParams`. Errors name the offending field.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from seesay.api.image_urls import ImageUrlError, UrlImageFetcher
from seesay.api.protocol import ChatCompletionRequest, ChatMessageIn, ImageContent, SeesayOptions, VqaForm
from seesay.errors import InvalidRequestError, SeesayError
from seesay.images import ImageLimits, NormalizedImage, PixelBudget, decode_image_string, load_image
from seesay.types import ChatMessage, ContentPart, GenerationRequest, ImagePart, SamplingParams, TextPart


class ModelNotFoundError(InvalidRequestError):
    """The request names a model this server does not serve (OpenAI answers 404)."""

    status = 404
    code = "model_not_found"


class RequestIntake:
    """Turns validated wire requests into :class:`GenerationRequest` objects.

    Args:
        model_names: Names clients may send as ``model``.
        budget: The server's pixel budget (the engine's).
        limits: Payload limits for each image.
        max_images: Images allowed in one request.
        fetcher: Downloads ``http(s)`` image URLs; ``None`` refuses them.
    """

    def __init__(
        self,
        model_names: Sequence[str],
        budget: PixelBudget,
        limits: ImageLimits,
        max_images: int,
        fetcher: UrlImageFetcher | None = None,
    ) -> None:
        self.model_names = tuple(model_names)
        self.budget = budget
        self.limits = limits
        self.max_images = max_images
        self.fetcher = fetcher

    def check_model(self, name: str | None) -> None:
        if name is not None and name not in self.model_names:
            raise ModelNotFoundError(
                f"the model '{name}' does not exist here; this server serves: {', '.join(self.model_names)}",
                param="model",
            )

    def pixel_budget(self, options: SeesayOptions | None, prefix: str = "seesay.") -> PixelBudget | None:
        """This request's budget; ``None`` when it asks for nothing special.

        ``prefix`` is where the options sit in the request, for error messages.
        """
        if options is None or (options.min_pixels is None and options.max_pixels is None):
            return None
        server = self.budget
        if options.max_pixels is not None and options.max_pixels > server.max_pixels:
            raise InvalidRequestError(
                f"max_pixels {options.max_pixels} is over this server's limit of {server.max_pixels}; "
                "ask for fewer pixels",
                param=f"{prefix}max_pixels",
            )
        max_pixels = options.max_pixels or server.max_pixels
        with blame(f"{prefix}min_pixels"):
            return PixelBudget(options.min_pixels or min(server.min_pixels, max_pixels), max_pixels, server.factor)

    async def chat_request(self, body: ChatCompletionRequest, request_id: str) -> GenerationRequest:
        """The internal request for a chat completion; see the module docstring."""
        self.check_model(body.model)
        self.check_image_count(sum(len(m.image_urls) for m in body.messages))
        budget = self.pixel_budget(body.seesay)
        messages = await asyncio.gather(
            *(self._message(m, i, budget or self.budget) for i, m in enumerate(body.messages))
        )
        sampling = SamplingParams(
            max_new_tokens=body.max_completion_tokens or body.max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            top_k=body.top_k,
            presence_penalty=body.presence_penalty,
            frequency_penalty=body.frequency_penalty,
            repetition_penalty=body.repetition_penalty,
            seed=body.seed,
            stop=body.stop_strings,
        )
        return GenerationRequest(tuple(messages), sampling, budget, request_id=request_id)

    async def vqa_request(self, form: VqaForm, request_id: str) -> GenerationRequest:
        """The internal request for a ``/v1/vqa`` upload."""
        self.check_model(form.model)
        options = SeesayOptions(min_pixels=form.min_pixels, max_pixels=form.max_pixels)
        budget = self.pixel_budget(options, prefix="")
        with blame("image"):
            image = await self._load(await form.image.read(), budget or self.budget)
        sampling = SamplingParams(
            max_new_tokens=form.max_tokens,
            temperature=form.temperature,
            top_p=form.top_p,
            top_k=form.top_k,
            presence_penalty=form.presence_penalty,
            frequency_penalty=form.frequency_penalty,
            seed=form.seed,
        )
        return GenerationRequest((ChatMessage.user(image, form.question),), sampling, budget, request_id=request_id)

    def check_image_count(self, count: int) -> None:
        if count > self.max_images:
            raise InvalidRequestError(
                f"the request has {count} images; this server takes at most {self.max_images} per request",
                param="messages",
            )

    async def _load(self, data: bytes, budget: PixelBudget) -> NormalizedImage:
        """Encoded image bytes as a normalised image, decoded off the event loop."""
        return await asyncio.to_thread(load_image, data, budget, limits=self.limits)

    async def _message(self, message: ChatMessageIn, index: int, budget: PixelBudget) -> ChatMessage:
        role = "system" if message.role == "developer" else message.role
        if isinstance(message.content, str):
            return ChatMessage(role, (TextPart(message.content),))
        parts: list[ContentPart] = []
        for number, part in enumerate(message.content):
            if isinstance(part, ImageContent):
                param = f"messages[{index}].content[{number}].image_url"
                parts.append(ImagePart(await self._image(part.image_url.url, budget, param)))
            else:
                parts.append(TextPart(part.text))
        return ChatMessage(role, tuple(parts))

    async def _image(self, url: str, budget: PixelBudget, param: str) -> NormalizedImage:
        with blame(param):
            if url[:5].lower() == "data:":
                return await asyncio.to_thread(decode_image_string, url, budget, limits=self.limits)
            if url.split(":", 1)[0].lower() not in ("http", "https"):
                raise ImageUrlError("an image_url must be a data: URL (data:image/png;base64,...) or http(s)")
            if self.fetcher is None:
                raise ImageUrlError(
                    "this server does not fetch http(s) image URLs; send the image as a base64 data: URL "
                    "(data:image/jpeg;base64,...)"
                )
            return await self._load(await self.fetcher.fetch(url), budget)


@contextmanager
def blame(param: str) -> Iterator[None]:
    """Name ``param`` as the culprit of any :class:`SeesayError` raised inside."""
    try:
        yield
    except SeesayError as exc:
        exc.param = param
        raise
