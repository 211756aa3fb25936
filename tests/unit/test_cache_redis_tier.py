"""RedisCache without a server: time-box, breaker, value limits, through a scripted client.

The real-server behaviour (kill, restart, two replicas) is in tests/integration/test_cache_redis.py.
"""

from __future__ import annotations

import asyncio

import pytest

from fakes import FakeClock
from seesay.cache.breaker import BreakerConfig, BreakerState
from seesay.cache.codec import encode_result
from seesay.cache.keys import KEY_SCHEMA_VERSION, CacheKey
from seesay.cache.redis import RedisCache, RedisCacheConfig, SharedCacheUnavailableError
from seesay.types import GenerationResult, Usage

KEY = CacheKey("c" * 64)


class ScriptedRedis:
    """Stands in for redis.asyncio.Redis: a dict, plus a mode that hangs or refuses every call."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.mode = "ok"  # "ok", "hang" or "refuse"
        self.calls = 0
        self.ttls: dict[str, int] = {}
        self.entered = asyncio.Event()  # set by every call, as it reaches "Redis"

    async def _enter(self) -> None:
        self.calls += 1
        self.entered.set()
        if self.mode == "hang":
            await asyncio.Event().wait()
        if self.mode == "refuse":
            raise ConnectionRefusedError("Connection refused")

    async def get(self, name: str) -> bytes | None:
        await self._enter()
        return self.data.get(name)

    async def set(self, name: str, value: bytes, px: int) -> bool:
        await self._enter()
        self.data[name] = value
        self.ttls[name] = px
        return True

    def scan_iter(self, match: str, count: int) -> object:
        async def keys():  # type: ignore[no-untyped-def]
            await self._enter()
            for name in list(self.data):
                if name.startswith(match.rstrip("*")):
                    yield name
        return keys()

    async def unlink(self, *names: str) -> int:
        return sum(self.data.pop(name, None) is not None for name in names)

    async def aclose(self) -> None:
        pass


def answer(text: str = "This is a bag.") -> GenerationResult:
    return GenerationResult("req-1", text, "stop", Usage(30, 5))


@pytest.fixture
def client() -> ScriptedRedis:
    return ScriptedRedis()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tier(client: ScriptedRedis, clock: FakeClock) -> RedisCache:
    config = RedisCacheConfig(url="redis://unused", timeout_s=0.01, ttl_s=60, max_value_bytes=400,
                              breaker=BreakerConfig(failure_threshold=3, cooldown_s=5))
    return RedisCache(config, clock=clock, client=client)  # type: ignore[arg-type]


async def test_put_then_get_with_prefix_and_ttl(tier: RedisCache, client: ScriptedRedis) -> None:
    assert await tier.put(KEY, answer())
    name = f"seesay:v{KEY_SCHEMA_VERSION}:{KEY.digest}"
    assert list(client.data) == [name] and client.ttls[name] == 60_000
    assert await tier.get(KEY) == answer()
    assert await tier.get(CacheKey("d" * 64)) is None


async def test_oversized_and_corrupt_values(tier: RedisCache, client: ScriptedRedis) -> None:
    assert not await tier.put(KEY, answer("x" * 1000))
    assert client.calls == 0 and tier.stats().oversize == 1
    client.data[tier.redis_key(KEY)] = b"garbage"
    assert await tier.get(KEY) is None
    assert tier.stats().corrupt == 1 and tier.state is BreakerState.CLOSED


async def test_hanging_redis_is_time_boxed_then_skipped(tier: RedisCache, client: ScriptedRedis) -> None:
    client.mode = "hang"
    for _ in range(3):
        assert await tier.get(KEY) is None
    assert tier.stats().timeouts == 3 and tier.state is BreakerState.OPEN
    assert tier.stats().failures == 3 and tier.stats().state == "open"
    calls = client.calls
    for _ in range(10):
        assert await tier.get(KEY) is None
        assert not await tier.put(KEY, answer())
    assert client.calls == calls  # the open breaker kept every call away from Redis
    assert tier.stats().skipped == 20 and tier.stats().attempts == 3


async def test_probe_after_cooldown_closes_when_redis_is_back(tier: RedisCache, client: ScriptedRedis,
                                                              clock: FakeClock) -> None:
    client.mode = "refuse"
    for _ in range(3):
        await tier.get(KEY)
    assert tier.state is BreakerState.OPEN and tier.stats().timeouts == 0
    clock.now += 5
    assert await tier.get(KEY) is None  # the probe fails: open again
    assert tier.state is BreakerState.OPEN
    client.mode = "ok"
    client.data[tier.redis_key(KEY)] = encode_result(answer())
    assert await tier.get(KEY) is None  # still cooling down
    clock.now += 5
    assert await tier.get(KEY) == answer()
    assert tier.state is BreakerState.CLOSED and tier.stats().state == "closed"


async def test_cancelled_probe_does_not_wedge_the_breaker(tier: RedisCache, client: ScriptedRedis,
                                                          clock: FakeClock) -> None:
    client.mode = "refuse"
    for _ in range(3):
        await tier.get(KEY)
    clock.now += 5
    client.mode = "hang"
    client.entered.clear()
    probe = asyncio.create_task(tier.get(KEY))
    await client.entered.wait()  # the probe is at Redis, hanging
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    client.mode = "ok"
    await tier.get(KEY)
    assert tier.state is BreakerState.CLOSED


async def test_admin_calls_raise_with_advice(tier: RedisCache, client: ScriptedRedis) -> None:
    await tier.put(KEY, answer())
    client.data["someone-else:key"] = b"x"
    assert await tier.count() == 1
    assert await tier.clear() == 1
    assert list(client.data) == ["someone-else:key"]
    client.mode = "refuse"
    with pytest.raises(SharedCacheUnavailableError, match="check that Redis is running"):
        await tier.clear()


def test_config_checks_and_password_redaction() -> None:
    with pytest.raises(ValueError, match="namespace"):
        RedisCacheConfig(url="redis://x", namespace="bad space")
    with pytest.raises(ValueError, match="timeout_s"):
        RedisCacheConfig(url="redis://x", timeout_s=0)
    assert RedisCacheConfig(url="redis://x", namespace="shop").prefix == f"shop:v{KEY_SCHEMA_VERSION}:"


async def test_admin_error_hides_the_password(client: ScriptedRedis) -> None:
    tier = RedisCache(RedisCacheConfig(url="redis://user:hunter2@host:6379/0"), client=client)  # type: ignore[arg-type]
    client.mode = "refuse"
    with pytest.raises(SharedCacheUnavailableError) as raised:
        await tier.count()
    assert "hunter2" not in str(raised.value) and "user:***@host" in str(raised.value)
