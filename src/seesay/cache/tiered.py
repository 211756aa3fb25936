"""The response cache: L1 in process, optional L2 shared by replicas, single flight for misses.

Contract:

* :meth:`ResponseCache.get` reads L1, then L2; an L2 hit is promoted into L1. It reports
  where the answer came from (:class:`CacheLookup`).
* :meth:`ResponseCache.put` writes L1 and L2 (L2 failures are absorbed by the tier).
  Only complete answers are stored: a ``cancelled`` result never is.
* Single flight: a caller about to compute a missing answer registers it with
  :meth:`ResponseCache.share` (an awaitable it resolves with the final result, or fails);
  identical requests that arrive meanwhile :meth:`ResponseCache.join` it instead of computing
  again, and compute themselves if it fails. The shared answer is stored when it arrives.
* Every cache event is counted in one place, this class's :class:`CacheStats`; the tiers add
  their own counters to it. ``/admin/cache``, ``seesay cache stats`` and the Prometheus metrics
  all read :meth:`ResponseCache.stats`.
* The L2 tier is chosen by URL scheme from :data:`SHARED_TIERS` (a registry), so another
  shared store plugs in without touching this module.

The cached :class:`~seesay.types.GenerationResult` is all a streaming replay needs: the API
sends its text as SSE chunks (see :meth:`CacheLookup.result_for`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from seesay.cache.keys import CacheKey
from seesay.cache.memory import MemoryCache, MemoryCacheConfig, MemoryStats
from seesay.cache.redis import RedisCache, RedisCacheConfig, RedisStats
from seesay.types import GenerationResult, Timings

log = logging.getLogger(__name__)

CacheSource = Literal["memory", "redis", "coalesced"]
_HEADER_VALUES: dict[CacheSource, str] = {"memory": "hit-memory", "redis": "hit-redis", "coalesced": "miss"}


class SharedTier(Protocol):
    """What :class:`ResponseCache` needs from an L2 tier (see :class:`~seesay.cache.redis.RedisCache`)."""

    name: str

    async def get(self, key: CacheKey) -> GenerationResult | None: ...

    async def put(self, key: CacheKey, result: GenerationResult) -> bool: ...

    async def clear(self) -> int: ...

    async def count(self) -> int: ...

    def stats(self) -> RedisStats: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class CacheLookup:
    """An answer and where it came from.

    Attributes:
        result: The answer as stored (its ``request_id`` is the one that computed it).
        source: ``memory`` or ``redis`` for hits; ``coalesced`` for the answer of an identical
            request computed meanwhile.
    """

    result: GenerationResult
    source: CacheSource

    @property
    def hit(self) -> bool:
        return self.source != "coalesced"

    @property
    def header(self) -> str:
        """The ``X-Seesay-Cache`` value: ``hit-memory``, ``hit-redis`` or ``miss``."""
        return _HEADER_VALUES[self.source]

    def result_for(self, request_id: str) -> GenerationResult:
        """The answer re-addressed to ``request_id``; a hit reports zero engine timings."""
        timings = Timings() if self.hit else self.result.timings
        return dataclasses.replace(self.result, request_id=request_id, timings=timings)


@dataclass(frozen=True)
class CacheStats:
    """What ``seesay cache stats`` shows for one process.

    Attributes:
        hits: Lookups answered, per tier.
        misses: Lookups that computed or joined a computation.
        coalesced: Of those, the ones that joined another request's computation.
        stores: Answers written, per tier.
        errors: Failed tier calls, per tier.
        memory: The L1 snapshot.
        redis: The L2 counters, or ``None`` without L2.
    """

    hits: Mapping[str, int]
    misses: int
    coalesced: int
    stores: Mapping[str, int]
    errors: Mapping[str, int]
    memory: MemoryStats
    redis: RedisStats | None

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ClearReport:
    """How many answers :meth:`ResponseCache.clear` removed; ``redis`` is ``None`` without L2."""

    memory: int
    redis: int | None


def should_store(result: GenerationResult) -> bool:
    """Only complete answers are worth replaying; a cancelled one is cut short."""
    return result.finish_reason != "cancelled"


class ResponseCache:
    """Two-level response cache with single flight (see the module docstring).

    Args:
        memory: The L1 tier.
        shared: The L2 tier, or ``None`` for L1 only.
    """

    def __init__(self, memory: MemoryCache, shared: SharedTier | None = None) -> None:
        self.memory = memory
        self.shared = shared
        self._inflight: dict[str, asyncio.Task[GenerationResult]] = {}
        self._hits: Counter[str] = Counter()
        self._stores: Counter[str] = Counter()
        self._misses = 0
        self._coalesced = 0

    async def get(self, key: CacheKey) -> CacheLookup | None:
        """L1, then L2 (promoting a hit into L1); ``None`` on a miss, which it does not count:
        the caller counts it by computing (:meth:`share`) or joining (:meth:`join`)."""
        result = self.memory.get(key)
        if result is not None:
            self._hits[self.memory.name] += 1
            return CacheLookup(result, "memory")
        if self.shared is None or (result := await self.shared.get(key)) is None:
            return None
        self._hits[self.shared.name] += 1
        self._store_in_memory(key, result)
        return CacheLookup(result, "redis")

    async def put(self, key: CacheKey, result: GenerationResult) -> None:
        """Store ``result`` in L1 and L2 (unless :func:`should_store` says no)."""
        if not should_store(result):
            return
        self._store_in_memory(key, result)
        if self.shared is not None and await self.shared.put(key, result):
            self._stores[self.shared.name] += 1

    def share(self, key: CacheKey, answer: Awaitable[GenerationResult], *,
              write: bool = True) -> asyncio.Future[GenerationResult]:
        """Register ``answer``, about to be computed by the caller, as the one in flight for ``key``.

        The caller resolves it with the final result (or fails it if the answer fails or its
        client goes away); meanwhile identical requests can :meth:`join` it. The result is
        stored when it arrives if ``write``. Counts a miss. If ``key`` already has an answer in
        flight, ``answer`` is ignored.

        Returns:
            The answer in flight for ``key``: done once it is stored (when ``write``) or failed.
        """
        flight = self._inflight.get(key.digest)
        if flight is not None:
            return flight
        self._misses += 1
        task = asyncio.ensure_future(self._settle(key, answer, write))
        task.add_done_callback(_consume_exception)
        self._inflight[key.digest] = task
        return task

    async def join(self, key: CacheKey) -> CacheLookup | None:
        """The answer in flight for ``key``; ``None`` if there is none or it failed (then compute it).

        An answer joined counts as a miss and as coalesced; a failed one counts nothing here (the
        caller counts its miss when it computes the answer itself).
        """
        flight = self._inflight.get(key.digest)
        if flight is None:
            return None
        try:
            result = await asyncio.shield(flight)
        except Exception:
            return None
        if not should_store(result):
            return None
        self._misses += 1
        self._coalesced += 1
        return CacheLookup(result, "coalesced")

    def in_flight(self, key: CacheKey) -> bool:
        """Whether an answer for ``key`` is being computed now (:meth:`join` would wait for it)."""
        return key.digest in self._inflight

    async def _settle(self, key: CacheKey, answer: Awaitable[GenerationResult], write: bool) -> GenerationResult:
        try:
            result = await answer
            if write:
                await self.put(key, result)
            return result
        finally:
            del self._inflight[key.digest]

    def _store_in_memory(self, key: CacheKey, result: GenerationResult) -> None:
        if self.memory.put(key, result):
            self._stores[self.memory.name] += 1

    def stats(self) -> CacheStats:
        """Every counter of this process's cache (L2 entry counts need :meth:`SharedTier.count`)."""
        shared = self.shared.stats() if self.shared is not None else None
        errors = {self.shared.name: shared.failures} if self.shared is not None and shared is not None else {}
        return CacheStats(hits=dict(self._hits), misses=self._misses, coalesced=self._coalesced,
                          stores=dict(self._stores), errors=errors, memory=self.memory.stats(), redis=shared)

    async def clear(self) -> ClearReport:
        """Empty L1 and L2 (L2: every key of this schema; raises if Redis cannot be reached)."""
        memory = self.memory.clear()
        return ClearReport(memory, await self.shared.clear() if self.shared is not None else None)

    async def close(self) -> None:
        """Wait for answers in flight, then close the shared tier."""
        if self._inflight:
            await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        if self.shared is not None:
            await self.shared.close()


def _consume_exception(task: asyncio.Task[GenerationResult]) -> None:
    """Mark a failed answer's exception as seen even when nobody joined it."""
    if not task.cancelled():
        task.exception()


SharedTierFactory = Callable[[RedisCacheConfig], SharedTier]

SHARED_TIERS: dict[str, SharedTierFactory] = {"redis": RedisCache, "rediss": RedisCache, "unix": RedisCache}
"""URL scheme → L2 tier factory."""


def build_response_cache(memory: MemoryCacheConfig | None = None,
                         shared: RedisCacheConfig | None = None) -> ResponseCache:
    """A :class:`ResponseCache` from settings; ``shared=None`` (no ``--redis-url``) means L1 only.

    Raises:
        ValueError: The URL's scheme has no registered tier; the message lists those that do.
    """
    tier = None
    if shared is not None:
        scheme = shared.url.partition("://")[0].lower()
        try:
            factory = SHARED_TIERS[scheme]
        except KeyError:
            raise ValueError(
                f"unsupported shared cache URL {scheme + '://'!r}; use one of: "
                + ", ".join(f"{name}://" for name in sorted(SHARED_TIERS))
            ) from None
        tier = factory(shared)
    return ResponseCache(MemoryCache(memory), tier)
