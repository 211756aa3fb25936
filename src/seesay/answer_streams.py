"""Answer streams: how one answer reaches its caller, whatever produced it.

Contract: every answer the service hands out is an :class:`AnswerStream`: text deltas (when
streamed), then the final :class:`~seesay.types.GenerationResult`, with where it came from.

* :class:`ReplayStream` is an answer that is already complete: a response-cache hit, the answer
  of an identical request, or a refusal of a blocked image or prompt. Streamed, its text
  arrives as one delta, then the result.
* :class:`ScreenedStream` wraps the scheduler's :class:`~seesay.scheduler.Submission` and
  screens the answer before any of it leaves: a streamed answer through the safety gate's
  :class:`~seesay.safety.StreamGuard` (no part of a blocked phrase is ever yielded; once the
  guard blocks, generation is cancelled and the refusal is the last delta), a whole answer
  through :meth:`~seesay.safety.SafetyGate.check_answer`. A blocked answer's result carries the
  refusal text and ``finish_reason="content_filter"``.
* A :class:`ScreenedStream` may resolve a :data:`SharedAnswer` with its final, screened result:
  what the response cache stores and hands to identical requests (see
  :meth:`seesay.cache.ResponseCache.share`). Every way out resolves it: with the result, or
  with :class:`AnswerNotShared` when the answer failed, was cancelled or its consumer left.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Protocol

from seesay.errors import EngineFailedError
from seesay.safety import SafetyGate
from seesay.scheduler import Submission
from seesay.types import GenerationRequest, GenerationResult, Usage

MISS = "miss"
"""The ``X-Seesay-Cache`` value of an answer computed for this request (hits: ``hit-memory``, ``hit-redis``)."""

SharedAnswer = asyncio.Future[GenerationResult]
"""An answer being computed for one request and shared with identical ones (see the module docstring)."""


class AnswerStream(Protocol):
    """One answer on its way to its caller (see the module docstring)."""

    @property
    def request_id(self) -> str: ...

    @property
    def first_text_at(self) -> float | None:
        """``time.monotonic()`` when the first answer text was ready for the client."""

    @property
    def cache_status(self) -> str:
        """``hit-memory``, ``hit-redis`` or ``miss`` (the ``X-Seesay-Cache`` header)."""

    @property
    def replayed(self) -> bool:
        """The engine did not generate this answer for this request (cache, identical request, refusal)."""

    def events(self) -> AsyncIterator[str | GenerationResult]:
        """Text deltas (when streamed), then the final result; errors are raised as ``SeesayError``."""

    async def result(self) -> GenerationResult:
        """The final result."""

    def cancel(self) -> None:
        """The caller went away: stop working on the answer."""


class AnswerNotShared(Exception):
    """The answer identical requests were waiting for will not come; they compute their own."""


def new_shared_answer() -> SharedAnswer:
    """A future for :class:`ScreenedStream` to resolve; a failure is never reported as unretrieved."""
    future: SharedAnswer = asyncio.get_running_loop().create_future()
    future.add_done_callback(lambda done: done.exception())
    return future


def withdraw(shared: SharedAnswer | None, reason: str) -> None:
    """Fail ``shared`` with :class:`AnswerNotShared` unless it is already resolved."""
    if shared is not None and not shared.done():
        shared.set_exception(AnswerNotShared(reason))


def refusal_result(request: GenerationRequest, text: str, usage: Usage | None = None) -> GenerationResult:
    """A refusal in place of an answer, with ``finish_reason="content_filter"``."""
    return GenerationResult(request.request_id, text, "content_filter", usage or Usage(0, 0))


async def final_result(stream: AsyncIterator[str | GenerationResult]) -> GenerationResult:
    """The result at the end of an answer's events (deltas are skipped)."""
    async with aclosing(stream) as events:  # type: ignore[type-var]
        async for event in events:
            if isinstance(event, GenerationResult):
                return event
    raise EngineFailedError("the answer ended without a result")


class ReplayStream:
    """An answer that is already complete (see the module docstring).

    Args:
        result: The answer, addressed to this request.
        cache_status: The ``X-Seesay-Cache`` value.
        stream: Yield the text as a delta before the result.
    """

    def __init__(self, result: GenerationResult, cache_status: str, *, stream: bool) -> None:
        self._result = result
        self.cache_status = cache_status
        self.replayed = True
        self._stream = stream
        self.first_text_at: float | None = time.monotonic()

    @property
    def request_id(self) -> str:
        return self._result.request_id

    async def events(self) -> AsyncIterator[str | GenerationResult]:
        if self._stream and self._result.text:
            yield self._result.text
        yield self._result

    async def result(self) -> GenerationResult:
        return self._result

    def cancel(self) -> None:
        """Nothing runs for a finished answer."""


class ScreenedStream:
    """The scheduler's answer, screened on its way out (see the module docstring).

    Args:
        submission: The queued request.
        gate: The safety gate.
        shared: Resolved with the final, screened result (for the response cache), or ``None``.
    """

    cache_status = MISS
    replayed = False

    def __init__(self, submission: Submission, gate: SafetyGate, shared: SharedAnswer | None = None) -> None:
        self._submission = submission
        self._request = submission.prepared.request
        self._gate = gate
        self._shared = shared
        self._guard = gate.guard_stream(self._request) if submission.stream else None
        self._released_at: float | None = None

    @property
    def request_id(self) -> str:
        return self._submission.request_id

    @property
    def first_text_at(self) -> float | None:
        """When the first text was let out (streamed) or generated (whole answers)."""
        return self._released_at or self._submission.first_text_at

    async def events(self) -> AsyncIterator[str | GenerationResult]:
        """Screened text deltas, then the screened result."""
        try:
            async for event in self._submission.events():
                if isinstance(event, str):
                    if released := self._release(event):
                        yield released
                    continue
                for item in self._finish(event):
                    yield item
                return
        finally:
            withdraw(self._shared, "the request computing this answer ended without one")

    async def result(self) -> GenerationResult:
        return await final_result(self.events())

    def cancel(self) -> None:
        self._submission.cancel()
        withdraw(self._shared, "the request computing this answer was cancelled")

    def _release(self, delta: str) -> str:
        """What of ``delta`` may go out now; a block cancels the generation."""
        if self._guard is None:
            released = delta
        elif self._guard.blocked:
            return ""
        else:
            released = self._guard.feed(delta)
            if self._guard.blocked:
                self._submission.cancel()
        if released and self._released_at is None:
            self._released_at = time.monotonic()
        return released

    def _finish(self, result: GenerationResult) -> list[str | GenerationResult]:
        """The last events: the held-back tail or the refusal, then the screened result."""
        tail = self._guard.finish() if self._guard is not None else ""
        final = self._screened(result)
        if final.finish_reason == "content_filter" and self._submission.stream:
            tail = final.text  # the refusal, after the clean text already sent
        self._resolve(final)
        return [tail, final] if tail else [final]

    def _screened(self, result: GenerationResult) -> GenerationResult:
        refusal = self._refusal(result)
        if refusal is None:
            return result
        return dataclasses.replace(result, text=refusal, finish_reason="content_filter")

    def _refusal(self, result: GenerationResult) -> str | None:
        """The refusal that replaces this answer, or ``None`` when the answer may go out."""
        if self._guard is not None:
            return self._gate.refusal_text(self._request) if self._guard.blocked else None
        if self._submission.stream:
            return None  # a stream without a guard: text screening is off
        refusal = self._gate.check_answer(self._request, result.text)
        return None if refusal is None else refusal.text

    def _resolve(self, final: GenerationResult) -> None:
        if self._shared is not None and not self._shared.done():
            self._shared.set_result(final)
