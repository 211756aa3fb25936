"""The per-key rate limit shared by two replicas through a real redis-server that each test starts.

Two apps built by ``build_app`` with their own FakeEngine stand for two replicas behind a
balancer. The limit is 30 a minute; a test sends its requests well within one minute (the
moving window counts from each test's first request, so no window boundary can fall inside a
test). Redis is killed and restarted mid-test; the breaker's cool-down is 0 so the first
request after Redis returns is the probe that moves the count back to Redis. No sleeps.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack

import httpx
import pytest

from fakes import FakeEngine, app_client, fake_settings
from redis_server import RedisServer, running_redis
from seesay.api.app import build_app
from seesay.config import Settings

KEYS = ("sk-shop-0123456789", "sk-kids-9876543210")
LIMIT = 30
CHAT = {"model": "fake-vl", "messages": [{"role": "user", "content": "hello"}], "temperature": 0.7}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


def replica_settings(server: RedisServer) -> Settings:
    # A generous time-box: a loaded test machine must not turn a slow answer into an "outage".
    return fake_settings(api_keys=KEYS, rate_limit_per_minute=LIMIT, redis_url=server.url, redis_timeout_ms=5000,
                         redis_cooldown_s=0, redis_failure_threshold=1, cache_policy="off")


@pytest.fixture
async def replicas(redis_server: RedisServer) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(app_client(build_app(replica_settings(redis_server), FakeEngine())))
        second = await stack.enter_async_context(app_client(build_app(replica_settings(redis_server), FakeEngine())))
        yield first, second


async def statuses(client: httpx.AsyncClient, key: str, count: int) -> list[int]:
    return [(await client.post("/v1/chat/completions", json=CHAT, headers=bearer(key))).status_code
            for _ in range(count)]


@pytest.mark.parametrize("last", [0, 1])
async def test_two_replicas_share_one_limit_per_key(
        replicas: tuple[httpx.AsyncClient, httpx.AsyncClient], last: int) -> None:
    first, second = replicas
    assert await statuses(first, KEYS[0], 20) == [200] * 20
    assert await statuses(second, KEYS[0], 10) == [200] * 10  # 30 in all: each replica alone would allow 60
    refused = await replicas[last].post("/v1/chat/completions", json=CHAT, headers=bearer(KEYS[0]))
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 61
    assert (await first.post("/v1/chat/completions", json=CHAT, headers=bearer(KEYS[1]))).status_code == 200
    assert (await second.post("/v1/chat/completions", json=CHAT, headers=bearer(KEYS[1]))).status_code == 200


async def test_without_redis_each_replica_counts_alone_then_the_shared_count_returns(
        redis_server: RedisServer, replicas: tuple[httpx.AsyncClient, httpx.AsyncClient],
        caplog: pytest.LogCaptureFixture) -> None:
    first, second = replicas
    assert await statuses(first, KEYS[0], 25) == [200] * 25  # counted in Redis
    redis_server.kill()
    with caplog.at_level(logging.INFO, logger="seesay.cache.guard"):
        # Each replica now counts alone, from zero: 30 each pass, the 31st on a replica is refused.
        assert await statuses(first, KEYS[0], LIMIT) == [200] * LIMIT
        assert await statuses(second, KEYS[0], LIMIT) == [200] * LIMIT
        assert await statuses(first, KEYS[0], 1) == [429]
        outage = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(outage) == 2  # once per replica for the whole outage, not once per request
        assert all("counting requests per replica" in r.getMessage() for r in outage)
        caplog.clear()
        redis_server.start()  # a fresh, empty Redis (the test server keeps no data)
        # The first replica's own count is full, so these pass only because Redis counts again; 15 + 15
        # pass, and the next one is refused on either replica: the count is shared again.
        assert await statuses(first, KEYS[0], 15) == [200] * 15
        assert await statuses(second, KEYS[0], 15) == [200] * 15
        refused = await second.post("/v1/chat/completions", json=CHAT, headers=bearer(KEYS[0]))
    assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 61
    assert [r.levelno for r in caplog.records if "answers again" in r.getMessage()] == [logging.INFO] * 2
