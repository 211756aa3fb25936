"""The answering pipeline, with no HTTP in it.

A :class:`~seesay.types.GenerationRequest` (images already decoded and fitted to their pixel
budget) goes in; an :class:`AnswerStream` comes out: the answer's text deltas, then its
:class:`~seesay.types.GenerationResult`. The stages, in order::

    (response cache lookup) → (prompt and image screening) → scheduler → engine → (text screening)

The stages in brackets arrive with later work: a cache hit returns a stream that replays the
stored answer without touching the scheduler, and text screening wraps the stream that the
scheduler returns. ``GenerationRequest.adapter`` travels through to the scheduler, where it
is part of the batch-compatibility key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from seesay.engine.base import EngineInfo
from seesay.scheduler import Reservation, Scheduler
from seesay.types import GenerationRequest, GenerationResult


class AnswerStream(Protocol):
    """One answer on its way (implemented by :class:`seesay.scheduler.Submission`)."""

    @property
    def request_id(self) -> str: ...

    first_text_at: float | None

    def events(self) -> AsyncIterator[str | GenerationResult]:
        """Text deltas, then the final result; errors are raised as ``SeesayError``."""

    async def result(self) -> GenerationResult:
        """The final result."""

    def cancel(self) -> None:
        """The caller went away: stop working on the answer."""


class AnswerService:
    """Answers questions about pictures; the HTTP routes' only way to the model."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        self._info = scheduler.engine.info()

    @property
    def info(self) -> EngineInfo:
        return self._info

    def admission(self) -> Reservation:
        """Take a queue place as soon as a request arrives, before its images are decoded.

        Use it as ``async with service.admission() as admission:``; an unused place is given
        back on exit.

        Raises:
            SeesayError: The server is full (429) or shutting down (503).
        """
        return self._scheduler.reserve()

    async def submit(
        self, request: GenerationRequest, admission: Reservation, *, stream: bool = False
    ) -> AnswerStream:
        """Run ``request`` through the pipeline in the place ``admission`` holds.

        Args:
            request: The question, images decoded.
            admission: The place taken by :meth:`admission`.
            stream: Deliver text deltas as they are generated; without it the stream yields
                the final result only.

        Raises:
            SeesayError: The request was refused (invalid, too long for the context).
        """
        return await admission.submit(request, stream=stream)

    @property
    def queue_depth(self) -> int:
        return self._scheduler.queue_depth

    def readiness(self) -> tuple[bool, str]:
        """Whether requests can be served now, and why not."""
        if not self._scheduler.is_running:
            return False, "the scheduler is not running (starting up or shutting down)"
        health = self._scheduler.engine.health()
        return health.ok, health.detail or "ready"
