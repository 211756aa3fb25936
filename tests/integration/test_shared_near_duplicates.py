"""The near-duplicate index shared by replicas through a real redis-server that each test starts.

Two apps built by ``build_app`` (each with its own FakeEngine, L1 and index) stand for two
replicas. A resized, recompressed JPEG of a catalogue photo has other pixels than the PNG
original, so it can hit only through a canonical hash the replicas agree on. The race between
two replicas registering near copies is ordered by hand (one registers inside the other's
lookup), never by sleeping.
"""

from __future__ import annotations

import io
import logging
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from PIL import Image
from redis import Redis

from fakes import FakeEngine, app_client, data_url, fake_settings, wait_until
from redis_server import RedisServer, running_redis
from seesay.api.app import build_app
from seesay.cache import BreakerConfig, NearDuplicateRule, RedisCache, RedisCacheConfig, SharedNearDuplicateIndex
from seesay.cache.keys import KEY_SCHEMA_VERSION
from seesay.cache.phash import perceptual_hash
from seesay.cache.shared_phash import band_layout
from seesay.config import Settings
from seesay.demo.catalogue import COLOURS_BY_KEY, KINDS_BY_KEY, Item, draw_picture
from seesay.images import PixelBudget, load_image

HEADER = "x-seesay-cache"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


def replica_settings(server: RedisServer) -> Settings:
    # A generous time-box: a loaded test machine must not turn a slow answer into an "outage".
    return fake_settings(cache_near_duplicates=True, redis_url=server.url, redis_timeout_ms=5000,
                         redis_cooldown_s=0, redis_failure_threshold=1)


@pytest.fixture
async def replicas(redis_server: RedisServer) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(app_client(build_app(replica_settings(redis_server), FakeEngine())))
        second = await stack.enter_async_context(app_client(build_app(replica_settings(redis_server), FakeEngine())))
        yield first, second


def photo(kind: str, colour: str = "red") -> Image.Image:
    return draw_picture(Item(KINDS_BY_KEY[kind], COLOURS_BY_KEY[colour]), random.Random(3))


def encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def near_copy(image: Image.Image) -> bytes:
    return encoded(image.resize((image.width * 9 // 10, image.height * 9 // 10)), "JPEG", quality=90)


async def ask(client: httpx.AsyncClient, picture: bytes) -> str:
    body = {"model": "fake-vl", "temperature": 0, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(picture)}}, {"type": "text", "text": "What is it?"}]}]}
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.headers[HEADER]


async def stored_in_redis(server: RedisServer, answers: int) -> None:
    """Wait until ``answers`` answers are in Redis: a replica stores an answer after it has sent it."""
    with Redis.from_url(server.url) as raw:
        await wait_until(lambda: len(raw.keys(f"seesay:v{KEY_SCHEMA_VERSION}:*")) == answers)


async def test_a_near_copy_sent_to_the_other_replica_hits_through_the_shared_canonical_hash(
        redis_server: RedisServer, replicas: tuple[httpx.AsyncClient, httpx.AsyncClient]) -> None:
    first, second = replicas
    jacket = photo("jacket")
    assert await ask(first, encoded(jacket, "PNG")) == "miss"
    await stored_in_redis(redis_server, 1)
    assert await ask(second, near_copy(jacket)) == "hit-redis"
    assert await ask(second, encoded(photo("jacket", "blue"), "PNG")) == "miss"  # another colour never matches
    stats = (await second.get("/admin/cache")).json()["near_duplicates"]
    assert stats["redis"] is True and stats["shared"] == 2  # both of replica 2's lookups went to Redis
    assert stats["fallback"] == 0 and stats["local_entries"] == 0


async def test_with_redis_down_each_replica_falls_back_to_its_own_index(
        redis_server: RedisServer, replicas: tuple[httpx.AsyncClient, httpx.AsyncClient],
        caplog: pytest.LogCaptureFixture) -> None:
    first, second = replicas
    bag = photo("bag")
    redis_server.kill()
    with caplog.at_level(logging.WARNING, logger="seesay.cache.guard"):
        assert await ask(first, encoded(bag, "PNG")) == "miss"
        assert await ask(second, near_copy(bag)) == "miss"  # replica 2's own index never saw the original
        assert await ask(first, near_copy(bag)) == "hit-memory"  # replica 1's own index did
    outage = [r.getMessage() for r in caplog.records if "near-duplicate index" in r.getMessage()]
    assert len(outage) == 2 and all("its own index" in line for line in outage)  # one per replica
    stats = (await first.get("/admin/cache")).json()["near_duplicates"]
    assert stats["fallback"] == 2 and stats["local_entries"] == 1


async def test_clearing_the_cache_clears_the_shared_index(
        redis_server: RedisServer, replicas: tuple[httpx.AsyncClient, httpx.AsyncClient]) -> None:
    first, second = replicas
    shoe = photo("shoes")
    assert await ask(first, encoded(shoe, "PNG")) == "miss"
    await stored_in_redis(redis_server, 1)
    with Redis.from_url(redis_server.url) as raw:
        assert raw.keys("seesay:phash:*")
        cleared = await first.post("/admin/cache/clear")
        assert cleared.status_code == 200 and cleared.json()["redis"] == 1  # answers, not index keys
        assert raw.keys("*") == []
    assert await ask(second, near_copy(shoe)) == "miss"  # registered afresh under its own hash


def index(server: RedisServer) -> SharedNearDuplicateIndex:
    config = RedisCacheConfig(url=server.url, timeout_s=5.0, breaker=BreakerConfig(1, 0.0))
    return SharedNearDuplicateIndex(NearDuplicateRule(), config)


async def test_when_two_replicas_register_near_copies_at_once_the_first_writer_wins(
        redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = index(redis_server), index(redis_server)
    shirt = photo("tshirt")
    original = load_image(encoded(shirt, "PNG"), PixelBudget())
    copy = load_image(near_copy(shirt), PixelBudget())
    assert original.content_hash != copy.content_hash
    real_lookup = b._lookup
    raced = []

    async def lookup_then_lose_the_race(*args: Any) -> Any:
        found = await real_lookup(*args)
        if not raced:  # between B's first lookup and its registration, A registers the original
            raced.append(await a.canonical_hash(original))
        return found

    monkeypatch.setattr(b, "_lookup", lookup_then_lose_the_race)
    try:
        assert await b.canonical_hash(copy) == original.content_hash == raced[0]
        assert b.stats()["conflicts"] == 1 and b.stats()["shared"] == 1
        assert await a.canonical_hash(copy) == original.content_hash
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("max_hamming", [0, 6, 12])
def test_hashes_within_max_hamming_bits_share_a_band(max_hamming: int) -> None:
    layout = band_layout(max_hamming)
    assert len(layout) == max_hamming + 1 and sum(width for _, width in layout) == 64
    rng = random.Random(max_hamming)
    for _ in range(500):
        structure = rng.getrandbits(64)
        flipped = structure
        for bit in rng.sample(range(64), max_hamming):
            flipped ^= 1 << bit
        assert any((structure >> shift) & ((1 << width) - 1) == (flipped >> shift) & ((1 << width) - 1)
                   for shift, width in layout)


def test_a_near_copy_is_within_the_rule_so_the_replica_tests_exercise_matching() -> None:
    jacket = photo("jacket")
    rule = NearDuplicateRule()
    original = perceptual_hash(load_image(encoded(jacket, "PNG"), PixelBudget()).image)
    copy = perceptual_hash(load_image(near_copy(jacket), PixelBudget()).image)
    assert original != copy and rule.matches(original, copy)


async def test_the_cache_tier_clears_the_index_keys_too(redis_server: RedisServer) -> None:
    config = RedisCacheConfig(url=redis_server.url)
    with Redis.from_url(redis_server.url) as raw:
        raw.set("seesay:phash:v1:b7:0:1f", b"x")
        raw.set("other:phash:v1:b7:0:1f", b"x")  # another namespace is left alone
        tier = RedisCache(config)
        try:
            assert await tier.clear() == 0
        finally:
            await tier.close()
        assert raw.keys("*") == [b"other:phash:v1:b7:0:1f"]
