"""The answering pipeline, with no HTTP in it.

A :class:`~seesay.types.GenerationRequest` (images already decoded and fitted to their pixel
budget) goes in; an :class:`AnswerStream` comes out: the answer's text deltas, then its
:class:`~seesay.types.GenerationResult`. The stages, in order::

    response cache → safety in → scheduler → engine → safety out → response cache

* **Cache lookup.** The :class:`~seesay.cache.CachePolicy` decides from the server's
  ``cache_policy`` and the caller's opt-outs whether the request reads and writes the cache.
  A hit (L1, then L2) or the answer of an identical request already in flight is replayed
  (:class:`~seesay.pipeline.ReplayStream`); it never takes the scheduler's time. Otherwise the
  request registers the answer it is about to compute (:meth:`ResponseCache.share`, with no
  await between the lookup and the registration), so identical requests that arrive meanwhile,
  streamed or not, wait for it instead of running the engine again. A waiting request gives
  its queue place back, and takes a new one if that answer fails.
* **Safety in.** :meth:`SafetyGate.screen_request` screens the pictures and the prompt, then
  the engine prepares the request (``Engine.prepare``), in one worker-thread trip. A block
  raises :class:`~seesay.safety.ContentPolicyViolation` (HTTP 400) or, with
  ``safety_on_block = "refuse"``, is answered with the refusal and
  ``finish_reason="content_filter"``. Such a refusal is never stored, so every blocked request
  is screened, audited and counted.
* **Scheduler and engine**, in the queue place the caller reserved with :meth:`admission`.
* **Safety out.** :class:`~seesay.pipeline.ScreenedStream` screens the answer as it streams
  or as a whole; a blocked answer becomes the refusal with ``finish_reason="content_filter"``.
* **Cache store.** The final, screened result (a refused answer included) is stored; the key
  holds the safety gate's version, so a policy change never replays an answer screened under
  another policy.

A cache hit skips input screening: its key holds the normalised pixels, the text and the
policy version, so it answers a request that passed the same screens. With
``cache_near_duplicates`` a hit may answer a near-identical picture that was not screened
itself; the model does not see that picture either, and the answer is the one for the
screened picture. ``GenerationRequest.adapter`` travels through to the scheduler, where it is
part of the batch-compatibility key.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

from seesay.cache import (
    CacheKey,
    CacheMode,
    CacheObserver,
    CacheOptOut,
    CachePolicy,
    ClearReport,
    NearDuplicateIndex,
    NearDuplicateRule,
    ResponseCache,
    SharedCacheUnavailableError,
    build_response_cache,
    key_for,
)
from seesay.cache.policy import NO_OPT_OUT
from seesay.config import Settings
from seesay.engine.base import Engine, EngineInfo, PreparedRequest
from seesay.errors import SeesayError
from seesay.pipeline import MISS, ReplayStream, ScreenedStream, Settle, abandon, new_settle, refusal_result
from seesay.safety import Refusal, SafetyGate
from seesay.scheduler import Reservation, Scheduler, SchedulerObserver
from seesay.types import GenerationRequest, GenerationResult


class AnswerStream(Protocol):
    """One answer on its way (see :mod:`seesay.pipeline`)."""

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
        """Text deltas, then the final result; errors are raised as ``SeesayError``."""

    async def result(self) -> GenerationResult:
        """The final result."""

    def cancel(self) -> None:
        """The caller went away: stop working on the answer."""


class CacheUnavailableError(SeesayError):
    """An operator's cache command could not reach the shared cache."""

    status = 503
    code = "cache_unavailable"


class AnswerService:
    """Answers questions about pictures; the HTTP routes' and ``seesay ask``'s only way to the model.

    Args:
        scheduler: The running scheduler in front of the engine.
        gate: The safety gate (its screens may be off, the gate is always there).
        cache: The response cache, or ``None`` when caching is off.
        cache_mode: Which requests are cacheable (see :class:`~seesay.cache.CacheMode`).
        near_duplicates: When near-identical pictures share keys; ``None``: never.
    """

    def __init__(self, scheduler: Scheduler, gate: SafetyGate, cache: ResponseCache | None = None, *,
                 cache_mode: CacheMode = CacheMode.DETERMINISTIC,
                 near_duplicates: NearDuplicateRule | None = None) -> None:
        self._scheduler = scheduler
        self._info = scheduler.engine.info()
        self.gate = gate
        self.cache = cache
        mode = cache_mode if cache is not None else CacheMode.OFF
        self.cache_policy = CachePolicy(mode, self._info.default_temperature)
        self._index = NearDuplicateIndex(near_duplicates) if near_duplicates is not None else None

    @property
    def info(self) -> EngineInfo:
        return self._info

    def admission(self) -> Reservation:
        """Take a queue place as soon as a request arrives, before its images are decoded.

        Use it as ``async with service.admission() as admission:``; an unused place (a cache
        hit, a refusal) is given back on exit.

        Raises:
            SeesayError: The server is full (429) or shutting down (503).
        """
        return self._scheduler.reserve()

    async def submit(self, request: GenerationRequest, admission: Reservation, *, stream: bool = False,
                     opt_out: CacheOptOut = NO_OPT_OUT) -> AnswerStream:
        """Run ``request`` through the pipeline (see the module docstring).

        Args:
            request: The question, images decoded.
            admission: The place taken by :meth:`admission`, used if the engine must answer.
            stream: Deliver text deltas as they are generated; without it the stream yields
                the final result only.
            opt_out: The caller's cache opt-outs (``Cache-Control``, the ``cache`` field).

        Raises:
            SeesayError: The request was refused (blocked by the content policy, invalid, too
                long for the context).
        """
        decision = self.cache_policy.decide(request, opt_out)
        if self.cache is None or not decision.uses_cache:
            return await self._compute(request, admission, stream, None)
        key = await self._key(request)
        if decision.read:
            lookup = await self.cache.get(key)
            if lookup is None and self.cache.in_flight(key):
                admission.release()  # waiting for an identical request's answer takes no queue place
                lookup = await self.cache.join(key)
                if lookup is None:  # that answer failed: compute this one in a new place
                    async with self.admission() as place:
                        return await self._share_and_compute(key, request, place, stream, decision.write)
            if lookup is not None:
                return ReplayStream(lookup.result_for(request.request_id), lookup.header, stream=stream)
        return await self._share_and_compute(key, request, admission, stream, decision.write)

    async def _share_and_compute(self, key: CacheKey, request: GenerationRequest, admission: Reservation,
                                 stream: bool, write: bool) -> AnswerStream:
        """Register the answer about to be computed, so identical requests wait for it, then compute it."""
        assert self.cache is not None
        settle = new_settle()
        self.cache.share(key, settle, write=write)  # no await since the lookup: nobody can slip in between
        return await self._compute(request, admission, stream, settle)

    async def _compute(self, request: GenerationRequest, admission: Reservation, stream: bool,
                       settle: Settle | None) -> AnswerStream:
        """Safety in, then the scheduler; the answer is screened on its way out."""
        try:
            screened = await asyncio.to_thread(self._screen_and_prepare, request)
            if isinstance(screened, Refusal):
                abandon(settle, "the request was refused by the content policy")
                return ReplayStream(refusal_result(request, screened.text), MISS, stream=stream)
            submission = admission.enqueue(screened, stream=stream)
        except BaseException:
            abandon(settle, "the request failed before it reached the engine")
            raise
        return ScreenedStream(submission, self.gate, settle)

    def _screen_and_prepare(self, request: GenerationRequest) -> Refusal | PreparedRequest:
        """Input screening, then the engine's preprocessing: CPU work done in one worker-thread trip."""
        refusal = self.gate.screen_request(request)
        return refusal if refusal is not None else self._scheduler.engine.prepare(request)

    async def _key(self, request: GenerationRequest) -> CacheKey:
        model, policy = self._info.fingerprint, self.gate.version
        if self._index is None or not request.images:
            return key_for(request, model, policy)
        # A perceptual hash per picture is CPU work: off the event loop.
        return await asyncio.to_thread(key_for, request, model, policy, image_hash=self._index.canonical_hash)

    async def cache_stats(self) -> dict[str, Any]:
        """This process's cache counters and the number of answers in the shared tier."""
        report: dict[str, Any] = {"policy": self.cache_policy.mode.value}
        if self.cache is None:
            return report
        report.update(self.cache.stats().as_dict())
        if self.cache.shared is not None:
            try:
                report["redis_entries"] = await self.cache.shared.count()
            except SharedCacheUnavailableError as exc:
                report["redis_error"] = str(exc)
        return report

    async def clear_cache(self) -> ClearReport:
        """Empty this process's L1 and the shared L2.

        Raises:
            CacheUnavailableError: The shared tier could not be cleared.
        """
        if self.cache is None:
            return ClearReport(0, None)
        try:
            return await self.cache.clear()
        except SharedCacheUnavailableError as exc:
            raise CacheUnavailableError(str(exc)) from exc

    @property
    def queue_depth(self) -> int:
        return self._scheduler.queue_depth

    @property
    def running(self) -> int:
        """Requests in the batch being generated now."""
        return self._scheduler.running

    def readiness(self) -> tuple[bool, str]:
        """Whether requests can be served now, and why not."""
        if not self._scheduler.is_running:
            return False, "the scheduler is not running (starting up or shutting down)"
        health = self._scheduler.engine.health()
        return health.ok, health.detail or "ready"


@asynccontextmanager
async def running_service(
    engine: Engine, settings: Settings, gate: SafetyGate, *, scheduler_observer: SchedulerObserver | None = None,
    cache_observer: CacheObserver | None = None,
) -> AsyncIterator[AnswerService]:
    """An :class:`AnswerService` with its scheduler started and its response cache open.

    On exit the scheduler drains (up to ``drain_timeout_s``) and the cache closes, in
    ``finally``. The engine and the gate belong to the caller.
    """
    cache = None
    if settings.cache_policy is not CacheMode.OFF:
        cache = build_response_cache(settings.memory_cache_config(), settings.redis_cache_config(),
                                     observer=cache_observer)
    scheduler = Scheduler(engine, settings.scheduler_limits(), observer=scheduler_observer)
    try:
        await scheduler.start()
        yield AnswerService(scheduler, gate, cache, cache_mode=settings.cache_policy,
                            near_duplicates=settings.near_duplicate_rule())
    finally:
        await scheduler.stop(settings.drain_timeout_s)
        if cache is not None:
            await cache.close()
