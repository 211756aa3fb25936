"""``seesay cache stats`` and ``seesay cache clear`` against a real redis-server, with no seesay server running.

The commands with servers are exercised end to end in ``tests/e2e/test_cache.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from redis_server import RedisServer, free_port, running_redis
from seesay.cache import CacheKey, RedisCache, RedisCacheConfig
from seesay.types import GenerationResult, Usage


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


def seesay_cache(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEESAY_")}
    env["SEESAY_PORT"] = str(free_port())  # the default server: nothing listens there
    return subprocess.run([sys.executable, "-m", "seesay.cli", "cache", *args], capture_output=True, text=True,
                          env=env, timeout=60, check=False)


async def store(url: str, count: int) -> None:
    tier = RedisCache(RedisCacheConfig(url=url))
    for number in range(count):
        result = GenerationResult(f"req-{number}", "an answer", "stop", Usage(10, 2))
        assert await tier.put(CacheKey(f"{number:064x}"), result)
    await tier.close()


def test_stats_and_clear_reach_redis_without_a_server(redis_server: RedisServer) -> None:
    asyncio.run(store(redis_server.url, 3))
    stats = seesay_cache("stats", "--redis-url", redis_server.url, "--json")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)[f"redis {redis_server.url} (namespace seesay)"] == {"entries": 3}
    assert "seesay: note: server http://127.0.0.1:" in stats.stderr and "cannot be reached" in stats.stderr
    cleared = seesay_cache("clear", "--redis-url", redis_server.url)
    assert cleared.returncode == 0 and '{"deleted": 3}' in cleared.stdout
    again = seesay_cache("stats", "--redis-url", redis_server.url, "--json")
    assert json.loads(again.stdout)[f"redis {redis_server.url} (namespace seesay)"] == {"entries": 0}


def test_an_unreachable_redis_or_server_is_a_failure_that_says_so(redis_server: RedisServer) -> None:
    url = redis_server.url
    redis_server.kill()
    done = seesay_cache("clear", "--redis-url", url)
    assert done.returncode == 1 and "check that Redis is running and reachable" in done.stderr
    alone = seesay_cache("stats", "--server", f"http://127.0.0.1:{free_port()}")
    assert alone.returncode == 1 and "is `seesay serve` running there?" in alone.stderr
