"""The response cache against a real redis-server that each test starts on a free port.

Two ``ResponseCache`` objects with their own clients stand for two replicas sharing Redis.
Redis is killed, stalled (SIGSTOP) and restarted mid-test; requests must keep succeeding, and
the breaker must keep them off Redis while it is down. Attempts are counted, wall-clock time
is never asserted.
"""

from __future__ import annotations

import asyncio
import io
import random
from collections.abc import AsyncIterator, Iterator

import pytest
from redis import Redis

from fakes import FakeClock
from redis_server import RedisServer, running_redis
from seesay.cache import (
    BreakerConfig,
    BreakerState,
    CacheKey,
    MemoryCache,
    RedisCache,
    RedisCacheConfig,
    ResponseCache,
    key_for,
)
from seesay.cache.keys import KEY_SCHEMA_VERSION
from seesay.demo.catalogue import COLOURS_BY_KEY, KINDS_BY_KEY, Item, draw_picture
from seesay.images import PixelBudget, load_image
from seesay.types import ChatMessage, GenerationRequest, GenerationResult, SamplingParams, Usage

MODEL = "demo@weights-1"
COOLDOWN_S = 5.0


class Engine:
    """Counts how often each replica really computes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.runs = 0

    async def __call__(self) -> GenerationResult:
        self.runs += 1
        return GenerationResult(f"req-{self.name}-{self.runs}", f"answer from {self.name}", "stop", Usage(70, 4))


async def ask(cache: ResponseCache, key: CacheKey, engine: Engine) -> tuple[str, GenerationResult]:
    """What the service does with a cacheable request: a hit, else compute, share and store the answer.

    Returns the ``X-Seesay-Cache`` value and the answer.
    """
    lookup = await cache.get(key)
    if lookup is not None:
        return lookup.header, lookup.result
    computing: asyncio.Future[GenerationResult] = asyncio.get_running_loop().create_future()
    stored = cache.share(key, computing)
    computing.set_result(await engine())
    return "miss", await stored


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def replicas(redis_server: RedisServer, clock: FakeClock) -> AsyncIterator[tuple[ResponseCache, ResponseCache]]:
    caches = tuple(replica(redis_server.url, clock) for _ in range(2))
    yield caches  # type: ignore[misc]
    for cache in caches:
        await cache.close()


def replica(url: str, clock: FakeClock, *, timeout_s: float = 1.0, namespace: str = "seesay") -> ResponseCache:
    """One replica's cache; a generous time-box so a loaded CI machine does not trip it by accident."""
    config = RedisCacheConfig(url=url, timeout_s=timeout_s, ttl_s=600, namespace=namespace,
                              breaker=BreakerConfig(failure_threshold=3, cooldown_s=COOLDOWN_S))
    return ResponseCache(MemoryCache(), RedisCache(config, clock=clock))


def tier(cache: ResponseCache) -> RedisCache:
    assert isinstance(cache.shared, RedisCache)
    return cache.shared


def photo_request(fmt: str, **options: object) -> GenerationRequest:
    picture = draw_picture(Item(KINDS_BY_KEY["bag"], COLOURS_BY_KEY["green"]), random.Random(3))
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt, **options)
    image = load_image(buffer.getvalue(), PixelBudget())
    return GenerationRequest((ChatMessage.user(image, "What is this item?"),), SamplingParams(temperature=0))


def k(n: int) -> CacheKey:
    return CacheKey(f"{n:064x}")


async def test_replica_b_hits_what_replica_a_computed(replicas: tuple[ResponseCache, ResponseCache],
                                                      redis_server: RedisServer) -> None:
    a, b = replicas
    engine_a, engine_b = Engine("A"), Engine("B")
    # The same catalogue photo uploaded as PNG to one replica and as lossless WebP to the other.
    key_a = key_for(photo_request("PNG"), MODEL, "policy-1")
    key_b = key_for(photo_request("WEBP", lossless=True), MODEL, "policy-1")
    assert key_a == key_b

    computed = await ask(a, key_a, engine_a)
    shared = await ask(b, key_b, engine_b)
    assert (computed[0], shared[0]) == ("miss", "hit-redis")
    assert shared[1] == computed[1] and engine_b.runs == 0
    assert (await ask(b, key_b, engine_b))[0] == "hit-memory"  # promoted into B's L1
    assert b.stats().hits == {"redis": 1, "memory": 1}

    with Redis.from_url(redis_server.url) as raw:
        name = f"seesay:v{KEY_SCHEMA_VERSION}:{key_a.digest}"
        assert raw.keys("*") == [name.encode()]
        assert 0 < raw.pttl(name) <= 600_000


async def test_killed_redis_degrades_to_memory_then_recovers(replicas: tuple[ResponseCache, ResponseCache],
                                                             redis_server: RedisServer, clock: FakeClock) -> None:
    a, b = replicas
    engine_a, engine_b = Engine("A"), Engine("B")
    await ask(a, k(0), engine_a)
    redis_server.kill()

    # Every request still succeeds, computed locally; three failed calls open B's breaker.
    for n in range(6):
        header, result = await ask(b, k(n), engine_b)
        assert header == "miss" and result.text == "answer from B"
    assert tier(b).state is BreakerState.OPEN
    attempts = tier(b).stats().attempts
    assert attempts == 3  # get k(0), put k(0), get k(1): then the breaker stops trying
    for n in range(6, 20):
        assert (await ask(b, k(n), engine_b))[0] == "miss"
        assert (await ask(b, k(n), engine_b))[0] == "hit-memory"  # L1 keeps working
    assert tier(b).stats().attempts == attempts and tier(b).stats().skipped > 0

    redis_server.start()  # same port, empty (no persistence)
    clock.now += COOLDOWN_S
    await ask(b, k(100), engine_b)  # the half-open probe: Redis answers, the breaker closes
    assert tier(b).state is BreakerState.CLOSED
    await ask(b, k(101), engine_b)
    a.memory.clear()
    engine_a.runs = 0
    assert (await ask(a, k(101), engine_a))[0] == "hit-redis"  # L2 is shared again
    assert engine_a.runs == 0


async def test_stalled_redis_is_time_boxed(redis_server: RedisServer, clock: FakeClock) -> None:
    cache = replica(redis_server.url, clock, timeout_s=0.2)
    engine = Engine("A")
    try:
        await ask(cache, k(0), engine)
        redis_server.pause()  # the port accepts, nothing answers: only the time-box ends a call
        for n in range(1, 6):
            assert (await ask(cache, k(n), engine))[0] == "miss"
        stats = tier(cache).stats()
        assert stats.state == "open" and stats.timeouts == 3 and stats.attempts == 2 + 3
        redis_server.resume()
        await _until_closed(cache, clock, engine)
        cache.memory.clear()
        assert (await ask(cache, k(0), engine))[0] == "hit-redis"
    finally:
        redis_server.resume()
        await cache.close()


async def _until_closed(cache: ResponseCache, clock: FakeClock, engine: Engine) -> None:
    """Probe after each cool-down until the breaker closes (a loaded machine may miss one probe)."""
    for attempt in range(5):
        clock.now += COOLDOWN_S
        await ask(cache, k(1000 + attempt), engine)
        if tier(cache).state is BreakerState.CLOSED:
            return
    pytest.fail(f"the breaker did not close after Redis came back: {tier(cache).stats()}")


async def test_count_and_clear_touch_only_this_namespace(redis_server: RedisServer, clock: FakeClock) -> None:
    shop, other = replica(redis_server.url, clock), replica(redis_server.url, clock, namespace="other")
    engine = Engine("A")
    try:
        for n in range(5):
            await ask(shop, k(n), engine)
        await ask(other, k(0), engine)
        assert await tier(shop).count() == 5
        report = await shop.clear()
        assert (report.memory, report.redis) == (5, 5)
        assert await tier(shop).count() == 0 and await tier(other).count() == 1
    finally:
        await shop.close()
        await other.close()


def test_helper_restarts_on_the_same_port(redis_server: RedisServer) -> None:
    port = redis_server.port
    redis_server.kill()
    assert not redis_server.ping()
    redis_server.start()
    assert redis_server.port == port and redis_server.ping()

