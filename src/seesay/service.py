"""The answering service: one call from a caller's question to its answer, with no HTTP in it.

:meth:`AnswerService.answer` is the only way to the model for the HTTP routes, ``seesay ask``
and in-process jobs. A :class:`~seesay.types.Question` goes in; an
:class:`~seesay.answer_streams.AnswerStream` comes out. The stages, in order:

1. **Admission.** The question's model and picture count are checked, then a queue place is
   taken before any picture is decoded, so overload is refused (429) before any work. A model
   that names a LoRA adapter takes a lease on it (:mod:`seesay.adapter_catalogue`) until the
   answer is complete, so the adapter stays loaded, and the cache key holds its fingerprint.
2. **Intake.** Every picture is decoded once and fitted to the request's pixel budget
   (:mod:`seesay.intake`).
3. **Cache lookup.** The :class:`~seesay.cache.CachePolicy` decides from the server's
   ``cache_policy`` and the caller's opt-outs whether the request reads and writes the cache.
   A hit (L1, then L2) or the answer of an identical request already in flight is replayed; it
   never takes the scheduler's time. Otherwise the request registers the answer it is about to
   compute (:meth:`~seesay.cache.ResponseCache.share`, with no await between the lookup and the
   registration), so identical requests that arrive meanwhile wait for it instead of running
   the engine again. A waiting request gives its queue place back, and takes a new one if that
   answer fails.
4. **Safety in, then the engine's preparation**, in one worker-thread trip. A blocked picture
   or prompt raises :class:`~seesay.errors.ContentPolicyViolation` (400) or, with
   ``safety_on_block = "refuse"``, is answered with the refusal and
   ``finish_reason="content_filter"``; such a refusal is never stored, so every blocked request
   is screened, audited and counted.
5. **Scheduler and engine**, in the queue place taken at admission.
6. **Safety out.** The answer is screened as it streams or as a whole; a blocked answer becomes
   the refusal (:class:`~seesay.answer_streams.ScreenedStream`).
7. **Cache store.** The final, screened result is stored under a key that holds the safety
   gate's version, so a policy change never replays an answer screened under another policy.

A cache hit skips input screening: its key holds the normalised pixels, the text and the policy
version, so it answers a request that passed the same screens. With ``cache_near_duplicates`` a
hit may answer a near-identical picture that was not screened itself (matched by this replica's
index, or by the index every replica shares through Redis); the model does not see
that picture either, and the answer is the one for the screened picture.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from seesay.adapter_catalogue import AdapterCatalogue, AdapterLease
from seesay.answer_streams import (
    MISS,
    AnswerStream,
    ReplayStream,
    ScreenedStream,
    SharedAnswer,
    new_shared_answer,
    refusal_result,
    withdraw,
)
from seesay.cache import (
    CacheKey,
    CacheMode,
    CachePolicy,
    ClearReport,
    ResponseCache,
    SharedCacheUnavailableError,
    SharedNearDuplicateIndex,
    build_response_cache,
    key_for,
)
from seesay.cache.policy import NO_OPT_OUT, CacheOptOut
from seesay.config import Settings
from seesay.engine.base import Engine, EngineInfo, PreparedRequest
from seesay.errors import CacheUnavailableError, ModelNotFoundError
from seesay.images import ImageLimits
from seesay.intake import RequestIntake
from seesay.safety import Refusal, SafetyGate
from seesay.scheduler import Reservation, Scheduler, SchedulerObserver
from seesay.types import GenerationRequest, Question


class AnswerService:
    """Answers questions about pictures; see the module docstring for the stages.

    Args:
        engine: The engine; its ``prepare`` runs here, its ``generate`` in the scheduler.
        scheduler: The running scheduler in front of ``engine``.
        intake: Decodes the pictures of a question.
        gate: The safety gate (its screens may be off, the gate is always there).
        cache: The response cache, or ``None`` when caching is off.
        adapters: The LoRA adapters served beside the base model; its ``parent`` is the served
            model's own name.
        cache_mode: Which requests are cacheable (see :class:`~seesay.cache.CacheMode`).
        near_duplicates: Names near-identical pictures alike in keys (shared through Redis when it has
            Redis); ``None``: pictures share keys only when their normalised pixels are equal.
    """

    def __init__(self, engine: Engine, scheduler: Scheduler, intake: RequestIntake, gate: SafetyGate,
                 cache: ResponseCache | None = None, *, adapters: AdapterCatalogue,
                 cache_mode: CacheMode = CacheMode.DETERMINISTIC,
                 near_duplicates: SharedNearDuplicateIndex | None = None) -> None:
        self._engine = engine
        self._scheduler = scheduler
        self._intake = intake
        self.adapters = adapters
        self._info = engine.info()
        self.gate = gate
        self.cache = cache
        self.cache_policy = CachePolicy(cache_mode if cache is not None else CacheMode.OFF,
                                        self._info.default_temperature)
        self._index = near_duplicates

    @property
    def info(self) -> EngineInfo:
        return self._info

    @property
    def model_names(self) -> tuple[str, ...]:
        """The names callers may send as ``model``: the served model's own, then its adapters'."""
        return (self.adapters.parent, *(adapter.name for adapter in self.adapters.adapters))

    def adapter_for(self, model: str | None) -> str | None:
        """The LoRA adapter that answers for ``model`` (``None``: the base model, also for no name).

        Raises:
            ModelNotFoundError: This server does not serve ``model``.
        """
        if model is None or model == self.adapters.parent:
            return None
        if model not in self.adapters:
            raise ModelNotFoundError(
                f"the model '{model}' does not exist here; this server serves: {', '.join(self.model_names)}",
                param="model",
            )
        return model

    async def answer(self, question: Question, *, stream: bool = False,
                     opt_out: CacheOptOut = NO_OPT_OUT) -> AnswerStream:
        """Answer ``question`` (see the module docstring for the stages).

        Args:
            question: The question, pictures still encoded.
            stream: Deliver text deltas as they are generated; without it the stream yields the
                final result only.
            opt_out: The caller's cache opt-outs (``Cache-Control``, the ``cache`` field).

        Raises:
            SeesayError: The request was refused: the server is full or shutting down, the
                model is unknown, a picture cannot be read, the content policy blocked it, or
                it does not fit the context.
        """
        with self.adapters.lease(self.adapter_for(question.model)) as lease:
            budget = self._intake.check(question)
            async with self._scheduler.reserve() as place:
                request = await self._intake.decode(question, budget, lease.name)
                return await self._answer(request, place, stream, opt_out, lease)

    async def _answer(self, request: GenerationRequest, place: Reservation, stream: bool,
                      opt_out: CacheOptOut, lease: AdapterLease) -> AnswerStream:
        """Stages 3 to 7 for a decoded request, in the queue place ``place``, holding its adapter."""
        decision = self.cache_policy.decide(request, opt_out)
        if self.cache is None or not decision.uses_cache:
            return await self._compute(request, place, stream, None, lease)
        key = await self._key(request, lease.fingerprint)
        if decision.read:
            lookup = await self.cache.get(key)
            if lookup is None and self.cache.in_flight(key):
                place.release()  # waiting for an identical request's answer takes no queue place
                lookup = await self.cache.join(key)
                if lookup is None:  # that answer failed: compute this one in a new place
                    async with self._scheduler.reserve() as new_place:
                        return await self._share_and_compute(key, request, new_place, stream, decision.write,
                                                             lease)
            if lookup is not None:
                return ReplayStream(lookup.result_for(request.request_id), lookup.header, stream=stream)
        return await self._share_and_compute(key, request, place, stream, decision.write, lease)

    async def _share_and_compute(self, key: CacheKey, request: GenerationRequest, place: Reservation,
                                 stream: bool, write: bool, lease: AdapterLease) -> AnswerStream:
        """Register the answer about to be computed, so identical requests wait for it, then compute it."""
        assert self.cache is not None
        shared = new_shared_answer()
        self.cache.share(key, shared, write=write)  # no await since the lookup: nobody can slip in between
        return await self._compute(request, place, stream, shared, lease)

    async def _compute(self, request: GenerationRequest, place: Reservation, stream: bool,
                       shared: SharedAnswer | None, lease: AdapterLease) -> AnswerStream:
        """Safety in and the engine's preparation, then the scheduler; the answer is screened on its way out."""
        try:
            screened = await asyncio.to_thread(self._screen_and_prepare, request)
            if isinstance(screened, Refusal):
                withdraw(shared, "the request was refused by the content policy")
                return ReplayStream(refusal_result(request, screened.text), MISS, stream=stream)
            submission = place.enqueue(screened, stream=stream)
            lease.keep_until(submission)
        except BaseException:
            withdraw(shared, "the request failed before it reached the engine")
            raise
        return ScreenedStream(submission, self.gate, shared)

    def _screen_and_prepare(self, request: GenerationRequest) -> Refusal | PreparedRequest:
        """Input screening, then the engine's preprocessing: CPU work done in one worker-thread trip."""
        refusal = self.gate.screen_request(request)
        return refusal if refusal is not None else self._engine.prepare(request)

    async def _key(self, request: GenerationRequest, adapter_fingerprint: str | None) -> CacheKey:
        model, policy = self._info.fingerprint, self.gate.version
        if self._index is None or not request.images:
            return key_for(request, model, policy, adapter_fingerprint=adapter_fingerprint)
        names = await self._index.canonical_hashes(request.images)
        return key_for(request, model, policy, adapter_fingerprint=adapter_fingerprint,
                       image_hash=lambda image: names[image.content_hash])

    async def cache_stats(self) -> dict[str, Any]:
        """This process's cache counters and the number of answers in the shared tier."""
        report: dict[str, Any] = {"policy": self.cache_policy.mode.value}
        if self.cache is None:
            return report
        report.update(self.cache.stats().as_dict())
        if self._index is not None:
            report["near_duplicates"] = self._index.stats()
        if self.cache.shared is not None:
            try:
                report["redis_entries"] = await self.cache.shared.count()
            except SharedCacheUnavailableError as exc:
                report["redis_error"] = str(exc)
        return report

    async def clear_cache(self) -> ClearReport:
        """Empty this process's L1 and near-duplicate index, and the shared L2 with its near-duplicate index.

        Raises:
            CacheUnavailableError: The shared tier could not be cleared.
        """
        if self.cache is None:
            return ClearReport(0, None)
        if self._index is not None:
            self._index.clear()
        try:
            return await self.cache.clear()
        except SharedCacheUnavailableError as exc:
            raise CacheUnavailableError(str(exc)) from exc

    @property
    def queue_depth(self) -> int:
        """Requests admitted and not yet generating."""
        return self._scheduler.queue_depth

    @property
    def running(self) -> int:
        """Requests in the batch being generated now."""
        return self._scheduler.running

    def readiness(self) -> tuple[bool, str]:
        """Whether requests can be served now, and why not."""
        if not self._scheduler.is_running:
            return False, "the scheduler is not running (starting up or shutting down)"
        health = self._engine.health()
        return health.ok, health.detail or "ready"


def request_intake(settings: Settings, engine: Engine, stack: AsyncExitStack) -> RequestIntake:
    """The picture intake these settings ask for; a URL fetcher, when enabled, is closed with ``stack``."""
    fetcher = None
    if settings.allow_url_images:
        from seesay.image_urls import UrlImageFetcher  # httpx, only when URL images are on

        fetcher = UrlImageFetcher(settings.url_allowlist, max_bytes=settings.max_image_bytes,
                                  timeout_s=settings.url_timeout_s, max_redirects=settings.url_max_redirects)
        stack.push_async_callback(fetcher.aclose)
    limits = ImageLimits(max_bytes=settings.max_image_bytes, max_source_pixels=settings.max_image_source_pixels)
    return RequestIntake(engine.info().pixel_budget, limits, settings.max_images_per_request, fetcher)


@asynccontextmanager
async def running_service(engine: Engine, settings: Settings, gate: SafetyGate, *,
                          scheduler_observer: SchedulerObserver | None = None) -> AsyncIterator[AnswerService]:
    """An :class:`AnswerService` with its scheduler started, its response cache and URL fetcher open.

    On exit the scheduler drains (up to ``drain_timeout_s``), then the cache and the fetcher
    close, in ``finally``. The engine and the gate belong to the caller.
    """
    async with AsyncExitStack() as stack:
        cache, index = None, None
        if settings.cache_policy is not CacheMode.OFF:
            cache = build_response_cache(settings.memory_cache_config(), settings.redis_cache_config())
            stack.push_async_callback(cache.close)
            index = near_duplicate_index(settings)
            if index is not None:
                stack.push_async_callback(index.close)
        intake = request_intake(settings, engine, stack)
        scheduler = Scheduler(engine, settings.scheduler_limits(), observer=scheduler_observer)
        stack.push_async_callback(scheduler.stop, settings.drain_timeout_s)
        await scheduler.start()
        adapters = AdapterCatalogue(engine, settings.served_model_name or engine.info().model, settings.max_loras)
        for source in settings.lora_modules:
            await adapters.load(source)
        yield AnswerService(engine, scheduler, intake, gate, cache, adapters=adapters,
                            cache_mode=settings.cache_policy, near_duplicates=index)


def near_duplicate_index(settings: Settings) -> SharedNearDuplicateIndex | None:
    """The near-duplicate index these settings ask for (shared through ``redis_url`` when set), or ``None``."""
    rule = settings.near_duplicate_rule()
    if rule is None:
        return None
    return SharedNearDuplicateIndex(rule, settings.redis_cache_config())
