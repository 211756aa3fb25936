"""L2: answers shared by every replica through Redis, via redis-py's asyncio client.

Contract: Redis trouble never fails or stalls a request.

* Every request-path call (:meth:`RedisCache.get`, :meth:`RedisCache.put`) is time-boxed
  with ``asyncio.wait_for`` (``timeout_s``, 50 ms by default). A timeout, a connection
  error, any other error of the client: the call reads as a miss (``get``) or as not
  stored (``put``), it is counted (:meth:`RedisCache.stats`), and the caller carries on.
* A :class:`~seesay.cache.breaker.CircuitBreaker` counts consecutive failures; once open,
  calls return at once without touching Redis, until a cool-down has passed and one probe
  call succeeds. Its state is observable (:attr:`RedisCache.state`, :meth:`RedisCache.stats`).
* Keys are ``<namespace>:v<KEY_SCHEMA_VERSION>:<digest>``; a key schema change therefore
  never reads old entries. Values are :mod:`~seesay.cache.codec` JSON written with a TTL;
  a value over ``max_value_bytes`` is not written, one that cannot be decoded reads as a miss.
* Admin calls (:meth:`RedisCache.clear`, :meth:`RedisCache.count`) use ``admin_timeout_s``,
  bypass the breaker and raise :class:`SharedCacheUnavailableError` on failure. ``clear`` also
  deletes the shared near-duplicate index (:mod:`seesay.cache.shared_phash`), whose canonical
  hashes name the answers it deletes.

redis-py is imported when a :class:`RedisCache` is created, so the package imports without
it; a missing install raises an ImportError naming the pip extra.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from seesay.cache.breaker import BreakerConfig, BreakerState, CircuitBreaker
from seesay.cache.codec import CorruptValueError, decode_result, encode_result
from seesay.cache.keys import KEY_SCHEMA_VERSION, CacheKey
from seesay.errors import MissingDependencyError
from seesay.types import GenerationResult

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)
T = TypeVar("T")
TIER = "redis"
_NAMESPACE = re.compile(r"[A-Za-z0-9_.-]+")


class SharedCacheUnavailableError(RuntimeError):
    """An admin call to the shared cache failed; the message says what to check."""


@dataclass(frozen=True)
class RedisCacheConfig:
    """Where the shared cache lives and how hard the service tries to use it.

    Attributes:
        url: ``redis://[user:password@]host:port/db``, ``rediss://…`` or ``unix:///path``.
        ttl_s: Seconds an answer lives in Redis.
        timeout_s: Time-box of every request-path call.
        max_value_bytes: Largest encoded answer written.
        namespace: First part of every key; replicas sharing answers share it.
        breaker: When to stop calling Redis and when to probe again.
        admin_timeout_s: Time-box of ``clear`` and ``count``.
    """

    url: str
    ttl_s: float = 86_400.0
    timeout_s: float = 0.05
    max_value_bytes: int = 1024 * 1024
    namespace: str = "seesay"
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    admin_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not _NAMESPACE.fullmatch(self.namespace):
            raise ValueError(f"redis namespace {self.namespace!r} must be letters, digits, '_', '.' or '-'")
        if self.ttl_s <= 0 or self.timeout_s <= 0 or self.max_value_bytes <= 0 or self.admin_timeout_s <= 0:
            raise ValueError(
                "redis cache ttl_s, timeout_s, max_value_bytes and admin_timeout_s must be positive, got "
                f"{self.ttl_s}, {self.timeout_s}, {self.max_value_bytes}, {self.admin_timeout_s}"
            )

    @property
    def prefix(self) -> str:
        return f"{self.namespace}:v{KEY_SCHEMA_VERSION}:"

    @property
    def near_duplicate_prefix(self) -> str:
        """First part of the shared near-duplicate index's keys (:mod:`seesay.cache.shared_phash`)."""
        return f"{self.namespace}:phash:"


@dataclass(frozen=True)
class RedisStats:
    """Counters of the shared tier since start.

    Attributes:
        state: The breaker state.
        attempts: Request-path calls actually sent to Redis.
        skipped: Calls not sent because the breaker was open or a probe was in flight.
        failures: Attempts that failed, timeouts included.
        timeouts: Attempts cut off by the time-box.
        corrupt: Values that could not be decoded (read as misses).
        oversize: Answers not written because they were over ``max_value_bytes``.
    """

    state: str
    attempts: int
    skipped: int
    failures: int
    timeouts: int
    corrupt: int
    oversize: int


class RedisCache:
    """The L2 tier (see the module docstring).

    Args:
        config: Connection and limits.
        clock: Monotonic seconds for the breaker; injectable for tests.
        client: A ready ``redis.asyncio.Redis`` (tests); by default one is made from ``config.url``.
    """

    name = TIER

    def __init__(
        self,
        config: RedisCacheConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        client: Redis | None = None,
    ) -> None:
        self.config = config
        self._client = client if client is not None else connect(config)
        self.breaker = CircuitBreaker(config.breaker, clock=clock, on_change=self._on_breaker_change)
        self._counts = dict.fromkeys(("attempts", "skipped", "failures", "timeouts", "corrupt", "oversize"), 0)

    @property
    def state(self) -> BreakerState:
        return self.breaker.state

    def redis_key(self, key: CacheKey) -> str:
        return self.config.prefix + key.digest

    async def get(self, key: CacheKey) -> GenerationResult | None:
        """The stored answer, or ``None`` on a miss, an error, a timeout or an open breaker."""
        ok, raw = await self._call(lambda: self._client.get(self.redis_key(key)))
        if not ok or raw is None:
            return None
        try:
            return decode_result(raw)
        except CorruptValueError as exc:
            self._counts["corrupt"] += 1
            log.warning("ignoring unreadable cache value %s: %s", self.redis_key(key), exc)
            return None

    async def put(self, key: CacheKey, result: GenerationResult) -> bool:
        """Write ``result`` with the TTL; returns whether Redis confirmed it."""
        data = encode_result(result)
        if len(data) > self.config.max_value_bytes:
            self._counts["oversize"] += 1
            return False
        ttl_ms = max(1, round(self.config.ttl_s * 1000))
        ok, reply = await self._call(lambda: self._client.set(self.redis_key(key), data, px=ttl_ms))
        return ok and bool(reply)

    async def clear(self) -> int:
        """Delete every answer under this schema's prefix, and the shared near-duplicate index.

        Returns:
            How many answers were deleted (index keys are not counted).

        Raises:
            SharedCacheUnavailableError: Redis did not answer within ``admin_timeout_s``.
        """
        answers = await self._admin(self._unlink_all(self.config.prefix), "clear")
        await self._admin(self._unlink_all(self.config.near_duplicate_prefix), "clear")
        return answers

    async def count(self) -> int:
        """How many answers are stored under this schema's prefix (a SCAN; for ``seesay cache stats``).

        Raises:
            SharedCacheUnavailableError: Redis did not answer within ``admin_timeout_s``.
        """
        return await self._admin(self._count_keys(), "count")

    def stats(self) -> RedisStats:
        return RedisStats(state=self.breaker.state.value, **self._counts)

    async def close(self) -> None:
        """Close the client's connections."""
        await self._client.aclose()

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> tuple[bool, T | None]:
        """Run one request-path call under the breaker and the time-box: (succeeded, value)."""
        if not self.breaker.allow():
            self._counts["skipped"] += 1
            return False, None
        self._counts["attempts"] += 1
        try:
            value = await asyncio.wait_for(operation(), self.config.timeout_s)
        except TimeoutError:
            self._counts["timeouts"] += 1
            self._fail(f"timed out after {self.config.timeout_s * 1000:.0f} ms")
            return False, None
        except asyncio.CancelledError:
            self.breaker.record_abandoned()  # our caller went away: no verdict on Redis
            raise
        except Exception as exc:  # any client error must degrade to "no L2", never fail the request
            self._fail(f"{type(exc).__name__}: {exc}")
            return False, None
        self.breaker.record_success()
        return True, value

    def _fail(self, reason: str) -> None:
        self._counts["failures"] += 1
        log.debug("redis cache call failed: %s", reason)
        self.breaker.record_failure()

    async def _admin(self, operation: Awaitable[T], what: str) -> T:
        try:
            return await asyncio.wait_for(operation, self.config.admin_timeout_s)
        except Exception as exc:
            raise SharedCacheUnavailableError(
                f"redis cache {what} failed ({type(exc).__name__}: {exc}); check that Redis is running "
                f"and reachable at {redacted_url(self.config.url)}"
            ) from exc

    def _scan(self, prefix: str) -> Any:
        return self._client.scan_iter(match=prefix + "*", count=1000)

    async def _unlink_all(self, prefix: str) -> int:
        deleted = 0
        batch: list[bytes] = []
        async for name in self._scan(prefix):
            batch.append(name)
            if len(batch) >= 500:
                deleted += await self._client.unlink(*batch)
                batch.clear()
        if batch:
            deleted += await self._client.unlink(*batch)
        return deleted

    async def _count_keys(self) -> int:
        return sum([1 async for _ in self._scan(self.config.prefix)])

    def _on_breaker_change(self, state: BreakerState) -> None:
        if state is BreakerState.OPEN:
            log.warning("redis cache at %s unavailable; serving from memory only, probing again in %.0f s",
                        redacted_url(self.config.url), self.config.breaker.cooldown_s)
        elif state is BreakerState.CLOSED:
            log.info("redis cache at %s is back", redacted_url(self.config.url))


def connect(config: RedisCacheConfig) -> Redis:
    """An asyncio Redis client for ``config.url``: one quick reconnect, no backoff (the time-box rules).

    Raises:
        MissingDependencyError: redis-py is not installed.
    """
    try:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
    except ImportError as exc:
        raise MissingDependencyError("redis", "serve", "The shared Redis response cache") from exc
    # One retry replaces a pooled connection that a Redis restart left dead; the time-box still bounds it.
    return Redis.from_url(
        config.url,
        retry=Retry(NoBackoff(), 1),
        socket_timeout=config.admin_timeout_s,
        socket_connect_timeout=config.admin_timeout_s,
    )


def redacted_url(url: str) -> str:
    """``url`` without a password, for messages and logs."""
    return re.sub(r"//([^:@/]*):[^@/]*@", r"//\1:***@", url)
