"""The response cache: L1 in process, optional L2 shared by replicas, single flight for misses.

Contract:

* :meth:`ResponseCache.get` reads L1, then L2; an L2 hit is promoted into L1. It reports
  where the answer came from (:class:`CacheLookup`).
* :meth:`ResponseCache.put` writes L1 and L2 (L2 failures are absorbed by the tier).
  Only complete answers are stored: a ``cancelled`` result never is.
* :meth:`ResponseCache.get_or_compute` is the request path: a hit returns at once;
  otherwise identical concurrent misses share **one** computation, run as its own task so
  that a caller going away does not cancel it for the others. Its result is stored and
  handed to every waiter; its exception reaches every waiter and nothing is stored, so the
  next request computes afresh.
* A streaming request cannot hand its stream to others, so it registers the answer it is
  producing with :meth:`ResponseCache.share` (a future resolved as its stream ends);
  identical requests :meth:`ResponseCache.join` it, and compute themselves if it fails.
* The L2 tier is chosen by URL scheme from :data:`SHARED_TIERS` (a registry), so another
  shared store plugs in without touching this module.

The cached :class:`~seesay.types.GenerationResult` is all a streaming replay needs: the API
sends its text as SSE chunks (see :meth:`CacheLookup.result_for`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from seesay.cache.keys import CacheKey
from seesay.cache.memory import MemoryCache, MemoryCacheConfig, MemoryStats
from seesay.cache.observer import CacheObserver, CountingObserver, ObserverFanout
from seesay.cache.redis import RedisCache, RedisCacheConfig, RedisStats
from seesay.types import GenerationResult, Timings

log = logging.getLogger(__name__)

CacheSource = Literal["memory", "redis", "computed", "coalesced", "bypass"]
_HEADER_VALUES: dict[CacheSource, str] = {
    "memory": "hit-memory", "redis": "hit-redis", "computed": "miss", "coalesced": "miss", "bypass": "miss",
}
_HITS: frozenset[CacheSource] = frozenset({"memory", "redis"})
Compute = Callable[[], Awaitable[GenerationResult]]


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
        source: ``memory`` or ``redis`` for hits; ``computed`` when this caller computed it,
            ``coalesced`` when it joined an identical computation, ``bypass`` when the cache
            was not read.
    """

    result: GenerationResult
    source: CacheSource

    @property
    def hit(self) -> bool:
        return self.source in _HITS

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
        observer: Hears hits, misses and stores (metrics); errors and breaker transitions
            come from the shared tier's own observer (see :func:`build_response_cache`).
    """

    def __init__(self, memory: MemoryCache, shared: SharedTier | None = None, *,
                 observer: CacheObserver | None = None) -> None:
        self.memory = memory
        self.shared = shared
        self._counts = CountingObserver()
        self._observer = ObserverFanout([self._counts, *([observer] if observer else [])])
        self._inflight: dict[str, asyncio.Task[CacheLookup]] = {}
        self._coalesced = 0

    async def get(self, key: CacheKey) -> CacheLookup | None:
        """L1, then L2 (promoting a hit into L1); ``None`` on a miss. Reports no miss itself."""
        result = self.memory.get(key)
        if result is not None:
            self._observer.on_hit(self.memory.name)
            return CacheLookup(result, "memory")
        return await self._shared_lookup(key)

    async def put(self, key: CacheKey, result: GenerationResult) -> None:
        """Store ``result`` in L1 and L2 (unless :func:`should_store` says no)."""
        if not should_store(result):
            return
        if self.memory.put(key, result):
            self._observer.on_store(self.memory.name)
        if self.shared is not None and await self.shared.put(key, result):
            self._observer.on_store(self.shared.name)

    async def get_or_compute(self, key: CacheKey, compute: Compute, *, read: bool = True,
                             write: bool = True) -> CacheLookup:
        """The answer for ``key``: cached, joined, or computed once and stored.

        Args:
            key: The request's key.
            compute: Produces the answer (the engine call); run at most once per concurrent key.
            read: Look up the cache and join computations in flight (``False``: ``no-cache``).
            write: Store a computed answer.

        Returns:
            The answer and its source.

        Raises:
            Exception: Whatever ``compute`` raised; nothing is stored then.
        """
        if not read:
            result = await compute()
            if write:
                await self.put(key, result)
            return CacheLookup(result, "bypass")
        cached = self.memory.get(key)  # synchronous: nothing can slip in before the join below
        if cached is not None:
            self._observer.on_hit(self.memory.name)
            return CacheLookup(cached, "memory")
        flight = self._inflight.get(key.digest)
        if flight is None:
            return await asyncio.shield(self._start(key, self._fill(key, compute, write)))
        return await self._follow(flight)

    def share(self, key: CacheKey, result: Awaitable[GenerationResult], *, write: bool = True) -> None:
        """Make an answer produced elsewhere the computation in flight for ``key``.

        For a streaming request: the service passes a future that it resolves with the final
        result as the stream ends (or fails if the stream fails or the client goes away);
        meanwhile identical requests can :meth:`join` it. The result is stored when it arrives.
        Does nothing if ``key`` already has a computation in flight.
        """
        if key.digest not in self._inflight:
            self._observer.on_miss()
            self._start(key, self._settle(key, result, write))

    async def join(self, key: CacheKey) -> CacheLookup | None:
        """The outcome of ``key``'s computation in flight; ``None`` if there is none or it failed.

        The streaming path's counterpart of :meth:`get_or_compute`: a caller that gets ``None``
        computes the answer itself.
        """
        flight = self._inflight.get(key.digest)
        if flight is None:
            return None
        try:
            lookup = await self._follow(flight)
        except Exception:
            return None
        return lookup if should_store(lookup.result) else None

    def in_flight(self, key: CacheKey) -> bool:
        """Whether an answer for ``key`` is being computed now (:meth:`join` would wait for it)."""
        return key.digest in self._inflight

    def _start(self, key: CacheKey, work: Awaitable[CacheLookup]) -> asyncio.Task[CacheLookup]:
        task = asyncio.ensure_future(work)
        self._inflight[key.digest] = task
        task.add_done_callback(_consume_exception)
        return task

    async def _follow(self, flight: asyncio.Task[CacheLookup]) -> CacheLookup:
        """Wait for another caller's computation; report a hit or a (coalesced) miss."""
        lookup = await asyncio.shield(flight)
        if lookup.hit:
            self._observer.on_hit(lookup.source)
            return lookup
        self._coalesced += 1
        self._observer.on_miss()
        return CacheLookup(lookup.result, "coalesced")

    async def _fill(self, key: CacheKey, compute: Compute, write: bool) -> CacheLookup:
        """The one computation for ``key``: L2, else ``compute`` and store. Leaves the in-flight table."""
        try:
            lookup = await self._shared_lookup(key)
            if lookup is not None:
                return lookup
            self._observer.on_miss()
            return await self._store_when_done(key, compute(), write)
        finally:
            del self._inflight[key.digest]

    async def _settle(self, key: CacheKey, result: Awaitable[GenerationResult], write: bool) -> CacheLookup:
        try:
            return await self._store_when_done(key, result, write)
        finally:
            del self._inflight[key.digest]

    async def _store_when_done(self, key: CacheKey, result: Awaitable[GenerationResult], write: bool) -> CacheLookup:
        answer = await result
        if write:
            await self.put(key, answer)
        return CacheLookup(answer, "computed")

    async def _shared_lookup(self, key: CacheKey) -> CacheLookup | None:
        """L2, promoting a hit into L1; ``None`` without L2 or on an L2 miss."""
        if self.shared is None or (result := await self.shared.get(key)) is None:
            return None
        self._observer.on_hit(self.shared.name)
        if self.memory.put(key, result):
            self._observer.on_store(self.memory.name)
        return CacheLookup(result, "redis")

    def stats(self) -> CacheStats:
        """Counters and sizes of this process (L2 entry counts need :meth:`SharedTier.count`)."""
        return CacheStats(
            hits=dict(self._counts.hits), misses=self._counts.misses, coalesced=self._coalesced,
            stores=dict(self._counts.stores),
            errors={self.shared.name: self.shared.stats().failures} if self.shared else {},
            memory=self.memory.stats(), redis=self.shared.stats() if self.shared else None,
        )

    async def clear(self) -> ClearReport:
        """Empty L1 and L2 (L2: every key of this schema; raises if Redis cannot be reached)."""
        memory = self.memory.clear()
        return ClearReport(memory, await self.shared.clear() if self.shared is not None else None)

    async def close(self) -> None:
        """Wait for computations in flight, then close the shared tier."""
        if self._inflight:
            await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        if self.shared is not None:
            await self.shared.close()


def _consume_exception(task: asyncio.Task[CacheLookup]) -> None:
    """Mark a failed fill's exception as seen even when every waiter went away."""
    if not task.cancelled():
        task.exception()


SharedTierFactory = Callable[[RedisCacheConfig, CacheObserver | None], SharedTier]

SHARED_TIERS: dict[str, SharedTierFactory] = {
    "redis": lambda config, observer: RedisCache(config, observer=observer),
    "rediss": lambda config, observer: RedisCache(config, observer=observer),
    "unix": lambda config, observer: RedisCache(config, observer=observer),
}
"""URL scheme → L2 tier factory."""


def build_response_cache(memory: MemoryCacheConfig | None = None, shared: RedisCacheConfig | None = None, *,
                         observer: CacheObserver | None = None) -> ResponseCache:
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
        tier = factory(shared, observer)
    return ResponseCache(MemoryCache(memory), tier, observer=observer)
