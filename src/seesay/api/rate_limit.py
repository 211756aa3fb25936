"""The per-key rate limit, shared by every replica through Redis, counted per replica when Redis is down.

Contract:

* A caller (a key id) may send ``per_minute`` requests in any 60 s: a moving window (the
  ``limits`` library's :class:`~limits.aio.strategies.MovingWindowRateLimiter`). The request
  over it raises :class:`~seesay.errors.RateLimitedError` whose ``retry_after`` is the whole
  seconds after which the oldest request in the window has left it (at least 1): a retry
  that waits that long is admitted, unless other requests of the caller came first.
* With a Redis URL the window lives in Redis (``<namespace>:ratelimit:…`` keys, written by
  one Lua script per request, so concurrent replicas never over-admit), and N replicas
  together admit ``per_minute``, not N times it.
* Redis trouble never fails a request: every Redis call goes through a
  :class:`~seesay.cache.guard.RedisGuard` (time-box, circuit breaker, one warning per
  outage). While Redis is unavailable each replica counts alone in memory (the same moving
  window), so the limit is per replica then; once the breaker's probe succeeds the shared
  count in Redis rules again. Counts made in memory during an outage are not copied to Redis.
* Without a Redis URL the count is per replica, as with one replica.

``limits`` and redis-py are imported when a limiter is created.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from seesay.cache.breaker import BreakerConfig
from seesay.cache.guard import RedisGuard
from seesay.cache.redis import redacted_url
from seesay.errors import MissingDependencyError, RateLimitedError

if TYPE_CHECKING:
    from limits import RateLimitItem
    from limits.aio.strategies import MovingWindowRateLimiter
    from limits.util import WindowStats
    from redis.asyncio import ConnectionPool

WINDOW_S = 60


@dataclass(frozen=True)
class SharedLimitConfig:
    """Where the shared count lives and how hard the limiter tries to reach it.

    Attributes:
        url: ``redis://…``, ``rediss://…`` or ``unix://…`` (the cache's ``redis_url``).
        namespace: First part of every key (``redis_namespace``).
        timeout_s: Time-box of one Redis call.
        breaker: When to stop calling Redis and when to probe again.
    """

    url: str
    namespace: str = "seesay"
    timeout_s: float = 0.05
    breaker: BreakerConfig = field(default_factory=BreakerConfig)


class RateLimit:
    """Moving-window requests per minute per caller (see the module docstring).

    Args:
        per_minute: Requests a caller may send in any 60 s; must be at least 1.
        shared: The Redis that every replica counts in; ``None``: count in this process.
        clock: Monotonic seconds for the Redis breaker (tests pass a fake clock).
        wall_clock: Unix seconds, the time source of the ``limits`` storages, for Retry-After.

    Raises:
        MissingDependencyError: ``limits`` (or, with ``shared``, redis-py) is not installed.
    """

    def __init__(self, per_minute: int, shared: SharedLimitConfig | None = None, *,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time) -> None:
        if per_minute < 1:
            raise ValueError(f"a rate limit needs at least 1 request a minute, got {per_minute}")
        try:
            from limits import RateLimitItemPerMinute
            from limits.aio.storage import MemoryStorage
            from limits.aio.strategies import MovingWindowRateLimiter
        except ImportError as exc:
            raise MissingDependencyError("limits", "serve", "The per-key rate limit") from exc
        self.per_minute = per_minute
        self._item: RateLimitItem = RateLimitItemPerMinute(per_minute)
        self._wall_clock = wall_clock
        self._local = MovingWindowRateLimiter(MemoryStorage())
        self._shared: MovingWindowRateLimiter | None = None
        self._pool: ConnectionPool | None = None
        self.guard: RedisGuard | None = None
        if shared is not None:
            storage, self._pool = _redis_storage(shared)
            self._shared = MovingWindowRateLimiter(storage)
            self.guard = RedisGuard("rate limit", "counting requests per replica", redacted_url(shared.url),
                                    timeout_s=shared.timeout_s, breaker=shared.breaker, clock=clock)

    async def hit(self, caller: str) -> None:
        """Count one request of ``caller``.

        Raises:
            RateLimitedError: ``caller`` already sent ``per_minute`` requests in the last 60 s.
        """
        limiter = self._local
        allowed: bool | None = None
        if self._shared is not None and self.guard is not None:
            shared = self._shared
            answered, allowed = await self.guard.call(lambda: shared.hit(self._item, caller))
            if answered:
                limiter = shared
        if limiter is self._local:
            allowed = await self._local.hit(self._item, caller)
        if not allowed:
            wait = await self._retry_after(limiter, caller)
            raise RateLimitedError(
                f"rate limit reached: {self.per_minute} requests per minute for this API key; retry in {wait} s",
                retry_after=wait,
            )

    async def close(self) -> None:
        """Close the Redis connections (nothing to do without Redis)."""
        if self._pool is not None:
            await self._pool.aclose()

    async def _retry_after(self, limiter: MovingWindowRateLimiter, caller: str) -> int:
        """Whole seconds until the window admits ``caller`` again; the full window if Redis cannot say."""
        if limiter is self._local or self.guard is None:
            stats: WindowStats | None = await limiter.get_window_stats(self._item, caller)
        else:
            _, stats = await self.guard.call(lambda: limiter.get_window_stats(self._item, caller))
        if stats is None:
            return WINDOW_S
        # +1: the window still holds a request at exactly its 60th second
        return max(1, math.floor(stats.reset_time - self._wall_clock()) + 1)


def _redis_storage(config: SharedLimitConfig) -> tuple[Any, ConnectionPool]:
    """A ``limits`` asyncio Redis storage on a redis-py connection pool that seesay owns (and closes)."""
    try:
        from limits.aio.storage import RedisStorage
        from redis.asyncio import ConnectionPool
    except ImportError as exc:
        raise MissingDependencyError("redis", "serve", "The rate limit shared through Redis") from exc
    connect_s = max(config.timeout_s, 1.0)  # the guard's time-box bounds every call; this bounds the socket
    pool = ConnectionPool.from_url(config.url, socket_timeout=connect_s, socket_connect_timeout=connect_s)
    # limits documents connection_pool but types its options as scalars
    storage = RedisStorage("async+redis://", implementation="redispy", key_prefix=f"{config.namespace}:ratelimit",
                           connection_pool=pool)  # type: ignore[arg-type]
    return storage, pool
