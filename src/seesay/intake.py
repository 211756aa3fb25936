"""From a caller's :class:`~seesay.types.Question` to a :class:`~seesay.types.GenerationRequest`.

Contract: :meth:`RequestIntake.check` refuses what is wrong with a question before any work
(too many pictures, a pixel budget over the server's), and :meth:`RequestIntake.decode` then
decodes every picture once, off the event loop, fitted to the request's pixel budget: the
server's, lowered by the caller, never raised. Pictures arrive as bytes, ``data:`` URLs or
base64, ``http(s)`` URLs (through :class:`~seesay.image_urls.UrlImageFetcher`, when the
operator enables them) or local files (``Path``, from the CLI and batch jobs only). Every error
names the request field to blame.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from seesay.errors import ImageUrlError, InvalidRequestError, SeesayError
from seesay.images import ImageLimits, NormalizedImage, PixelBudget, decode_image_string, load_image, load_image_file
from seesay.types import (
    ChatMessage,
    ContentPart,
    GenerationRequest,
    ImageInput,
    ImagePart,
    PixelRequest,
    Question,
    TextPart,
    Turn,
)

if TYPE_CHECKING:
    from seesay.image_urls import UrlImageFetcher


class RequestIntake:
    """Checks questions and decodes their pictures (see the module docstring).

    Args:
        budget: The server's pixel budget (the engine's).
        limits: Payload limits for each picture.
        max_images: Pictures allowed in one request.
        fetcher: Downloads ``http(s)`` image URLs; ``None`` refuses them.
    """

    def __init__(self, budget: PixelBudget, limits: ImageLimits, max_images: int,
                 fetcher: UrlImageFetcher | None = None) -> None:
        self.budget = budget
        self.limits = limits
        self.max_images = max_images
        self.fetcher = fetcher

    def check(self, question: Question) -> PixelBudget | None:
        """What can be refused before decoding; returns the request's own budget (``None``: the server's).

        Raises:
            InvalidRequestError: Too many pictures, or a pixel budget this server does not allow.
        """
        count = len(question.images)
        if count > self.max_images:
            raise InvalidRequestError(
                f"the request has {count} images; this server takes at most {self.max_images} per request",
                param="messages",
            )
        return self.pixel_budget(question.pixels)

    def pixel_budget(self, pixels: PixelRequest | None) -> PixelBudget | None:
        """The budget a caller asks for, checked against the server's; ``None`` when it asks for nothing."""
        if pixels is None or (pixels.min_pixels is None and pixels.max_pixels is None):
            return None
        server = self.budget
        if pixels.max_pixels is not None and pixels.max_pixels > server.max_pixels:
            raise InvalidRequestError(
                f"max_pixels {pixels.max_pixels} is over this server's limit of {server.max_pixels}; "
                "ask for fewer pixels",
                param=f"{pixels.where}max_pixels",
            )
        max_pixels = pixels.max_pixels or server.max_pixels
        with blame(f"{pixels.where}min_pixels"):
            return PixelBudget(pixels.min_pixels or min(server.min_pixels, max_pixels), max_pixels, server.factor)

    async def decode(self, question: Question, budget: PixelBudget | None, adapter: str | None) -> GenerationRequest:
        """The request for the engine: ``question`` with every picture decoded and fitted to ``budget``.

        Args:
            question: The question, checked by :meth:`check`.
            budget: What :meth:`check` returned.
            adapter: The LoRA adapter the question's model names (``None``: the base model).

        Raises:
            InvalidImageError: A picture cannot be read or fetched; ``param`` names it.
        """
        fitted = budget or self.budget
        messages = await asyncio.gather(*(self._message(turn, fitted) for turn in question.turns))
        return GenerationRequest(tuple(messages), question.sampling, budget, adapter, question.request_id)

    async def _message(self, turn: Turn, budget: PixelBudget) -> ChatMessage:
        parts: list[ContentPart] = []
        for part in turn.content:
            parts.append(TextPart(part) if isinstance(part, str) else ImagePart(await self._image(part, budget)))
        return ChatMessage(turn.role, tuple(parts))

    async def _image(self, image: ImageInput, budget: PixelBudget) -> NormalizedImage:
        with blame(image.param):
            source = image.source
            if isinstance(source, bytes):
                return await asyncio.to_thread(load_image, source, budget, limits=self.limits)
            if isinstance(source, Path):
                return await asyncio.to_thread(load_image_file, source, budget, limits=self.limits)
            scheme = source[:8].partition(":")[0].lower()
            if scheme == "data":
                return await asyncio.to_thread(decode_image_string, source, budget, limits=self.limits)
            if scheme not in ("http", "https"):
                raise ImageUrlError("an image_url must be a data: URL (data:image/png;base64,...) or http(s)")
            data = await self._fetch(source)
            return await asyncio.to_thread(load_image, data, budget, limits=self.limits)

    async def _fetch(self, url: str) -> bytes:
        if self.fetcher is None:
            raise ImageUrlError(
                "this server does not fetch http(s) image URLs; send the image as a base64 data: URL "
                "(data:image/jpeg;base64,...)"
            )
        return await self.fetcher.fetch(url)


@contextmanager
def blame(param: str) -> Iterator[None]:
    """Name ``param`` as the culprit of any :class:`SeesayError` raised inside."""
    try:
        yield
    except SeesayError as exc:
        exc.param = param
        raise
