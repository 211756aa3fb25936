"""ResponseCache: tier order, promotion, single flight, failures, observer events."""

from __future__ import annotations

import asyncio

import pytest

from seesay.cache.keys import CacheKey
from seesay.cache.memory import MemoryCache, MemoryCacheConfig
from seesay.cache.observer import CountingObserver
from seesay.cache.redis import RedisCacheConfig, RedisStats
from seesay.cache.tiered import SHARED_TIERS, CacheLookup, ResponseCache, build_response_cache
from seesay.types import FinishReason, GenerationResult, Timings, Usage

KEY = CacheKey("a" * 64)
OTHER = CacheKey("b" * 64)


def answer(text: str = "This is a jacket.", finish_reason: FinishReason = "stop") -> GenerationResult:
    return GenerationResult("req-first", text, finish_reason, Usage(40, 5), Timings(0.01, 0.05, 0.2))


class FakeShared:
    """An L2 tier in a dict, counting calls."""

    name = "redis"

    def __init__(self) -> None:
        self.data: dict[str, GenerationResult] = {}
        self.gets = 0
        self.puts = 0

    async def get(self, key: CacheKey) -> GenerationResult | None:
        self.gets += 1
        await asyncio.sleep(0)
        return self.data.get(key.digest)

    async def put(self, key: CacheKey, result: GenerationResult) -> bool:
        self.puts += 1
        self.data[key.digest] = result
        return True

    async def clear(self) -> int:
        count = len(self.data)
        self.data.clear()
        return count

    async def count(self) -> int:
        return len(self.data)

    def stats(self) -> RedisStats:
        return RedisStats("closed", self.gets + self.puts, 0, 0, 0, 0, 0)

    async def close(self) -> None:
        pass


class Engine:
    """A compute function that counts runs and can be held at a gate or made to fail."""

    def __init__(self) -> None:
        self.runs = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.error: Exception | None = None

    async def __call__(self) -> GenerationResult:
        self.runs += 1
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        return answer(f"answer #{self.runs}")


@pytest.fixture
def shared() -> FakeShared:
    return FakeShared()


@pytest.fixture
def events() -> CountingObserver:
    return CountingObserver()


@pytest.fixture
def cache(shared: FakeShared, events: CountingObserver) -> ResponseCache:
    return ResponseCache(MemoryCache(), shared, observer=events)


async def test_miss_computes_and_stores_in_both_tiers(cache: ResponseCache, shared: FakeShared,
                                                      events: CountingObserver) -> None:
    engine = Engine()
    first = await cache.get_or_compute(KEY, engine)
    assert (first.source, first.header, first.hit) == ("computed", "miss", False)
    assert KEY.digest in shared.data and cache.memory.get(KEY) == first.result
    second = await cache.get_or_compute(KEY, engine)
    assert (second.source, second.header, second.result) == ("memory", "hit-memory", first.result)
    assert engine.runs == 1
    assert events.misses == 1 and events.hits == {"memory": 1} and events.stores == {"memory": 1, "redis": 1}


async def test_l2_hit_is_promoted_to_l1(cache: ResponseCache, shared: FakeShared, events: CountingObserver) -> None:
    shared.data[KEY.digest] = answer("from another replica")
    engine = Engine()
    lookup = await cache.get_or_compute(KEY, engine)
    assert (lookup.source, lookup.header, lookup.result.text) == ("redis", "hit-redis", "from another replica")
    assert engine.runs == 0
    assert cache.memory.get(KEY) == lookup.result
    gets = shared.gets
    assert (await cache.get_or_compute(KEY, engine)).source == "memory"
    assert shared.gets == gets  # L1 answered: L2 was not asked
    assert events.hits == {"redis": 1, "memory": 1} and events.stores == {"memory": 1}


async def test_get_and_put(cache: ResponseCache, shared: FakeShared) -> None:
    assert await cache.get(KEY) is None
    await cache.put(KEY, answer())
    assert (await cache.get(KEY)) == CacheLookup(answer(), "memory")
    cache.memory.clear()
    assert (await cache.get(KEY)) == CacheLookup(answer(), "redis")


async def test_twenty_identical_concurrent_misses_compute_once(cache: ResponseCache, shared: FakeShared,
                                                               events: CountingObserver) -> None:
    engine = Engine()
    engine.gate.clear()
    tasks = [asyncio.create_task(cache.get_or_compute(KEY, engine)) for _ in range(20)]
    await asyncio.sleep(0.01)
    engine.gate.set()
    lookups = await asyncio.gather(*tasks)
    assert engine.runs == 1
    assert {lookup.result.text for lookup in lookups} == {"answer #1"}
    assert sorted(lookup.source for lookup in lookups) == ["coalesced"] * 19 + ["computed"]
    assert shared.gets == 1 and shared.puts == 1
    assert events.misses == 20 and cache.stats().coalesced == 19


async def test_different_keys_compute_separately(cache: ResponseCache) -> None:
    engine = Engine()
    await asyncio.gather(cache.get_or_compute(KEY, engine), cache.get_or_compute(OTHER, engine))
    assert engine.runs == 2


async def test_a_failure_reaches_every_waiter_and_is_not_cached(cache: ResponseCache, shared: FakeShared) -> None:
    engine = Engine()
    engine.gate.clear()
    engine.error = RuntimeError("engine exploded")
    tasks = [asyncio.create_task(cache.get_or_compute(KEY, engine)) for _ in range(5)]
    await asyncio.sleep(0.01)
    engine.gate.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(o, RuntimeError) and str(o) == "engine exploded" for o in outcomes)
    assert engine.runs == 1 and not shared.data and cache.memory.get(KEY) is None
    engine.error = None
    assert (await cache.get_or_compute(KEY, engine)).source == "computed"
    assert engine.runs == 2


async def test_the_first_caller_going_away_does_not_cancel_the_others(cache: ResponseCache) -> None:
    engine = Engine()
    engine.gate.clear()
    leader = asyncio.create_task(cache.get_or_compute(KEY, engine))
    await asyncio.sleep(0)
    follower = asyncio.create_task(cache.get_or_compute(KEY, engine))
    await asyncio.sleep(0.01)
    leader.cancel()
    await asyncio.sleep(0)
    engine.gate.set()
    assert (await follower).result.text == "answer #1"
    assert leader.cancelled() and engine.runs == 1
    assert cache.memory.get(KEY) is not None  # the shared computation finished and was stored


async def test_cancelled_answers_are_not_stored(cache: ResponseCache, shared: FakeShared) -> None:
    async def cut_short() -> GenerationResult:
        return answer("half an ans", finish_reason="cancelled")

    assert (await cache.get_or_compute(KEY, cut_short)).result.finish_reason == "cancelled"
    assert cache.memory.get(KEY) is None and not shared.data


async def test_no_cache_recomputes_and_refreshes(cache: ResponseCache) -> None:
    engine = Engine()
    await cache.get_or_compute(KEY, engine)
    fresh = await cache.get_or_compute(KEY, engine, read=False)
    assert (fresh.source, fresh.header, fresh.result.text) == ("bypass", "miss", "answer #2")
    assert cache.memory.get(KEY) == fresh.result
    await cache.get_or_compute(OTHER, engine, read=False, write=False)
    assert cache.memory.get(OTHER) is None


async def test_result_for_readdresses_a_hit() -> None:
    lookup = CacheLookup(answer(), "memory")
    mine = lookup.result_for("req-mine")
    assert (mine.request_id, mine.text, mine.timings) == ("req-mine", answer().text, Timings())
    computed = CacheLookup(answer(), "computed").result_for("req-mine")
    assert computed.timings == answer().timings


async def test_stats_and_clear(cache: ResponseCache, shared: FakeShared) -> None:
    engine = Engine()
    await cache.get_or_compute(KEY, engine)
    await cache.get_or_compute(KEY, engine)
    stats = cache.stats()
    assert stats.hits == {"memory": 1} and stats.misses == 1 and stats.memory.entries == 1
    assert stats.redis is not None and stats.as_dict()["misses"] == 1
    report = await cache.clear()
    assert (report.memory, report.redis) == (1, 1)
    assert (await cache.get_or_compute(KEY, engine)).source == "computed"


async def test_l1_only_without_a_shared_tier() -> None:
    cache = build_response_cache(MemoryCacheConfig(max_entries=10))
    engine = Engine()
    assert (await cache.get_or_compute(KEY, engine)).source == "computed"
    assert (await cache.get_or_compute(KEY, engine)).source == "memory"
    assert cache.stats().redis is None and (await cache.clear()).redis is None
    await cache.close()


async def test_shared_tier_is_chosen_by_url_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []

    def fake_tier(config: RedisCacheConfig, observer: object) -> FakeShared:
        made.append(config.url)
        return FakeShared()

    monkeypatch.setitem(SHARED_TIERS, "fake", fake_tier)
    cache = build_response_cache(shared=RedisCacheConfig(url="fake://somewhere"))
    assert made == ["fake://somewhere"] and isinstance(cache.shared, FakeShared)
    with pytest.raises(ValueError, match="redis://"):
        build_response_cache(shared=RedisCacheConfig(url="memcached://host"))


async def test_a_broken_observer_never_fails_a_request(shared: FakeShared) -> None:
    class Broken(CountingObserver):
        def on_hit(self, tier: str) -> None:
            raise RuntimeError("metrics backend down")

    cache = ResponseCache(MemoryCache(), shared, observer=Broken())
    engine = Engine()
    await cache.get_or_compute(KEY, engine)
    assert (await cache.get_or_compute(KEY, engine)).source == "memory"


async def test_a_streaming_answer_is_shared_with_identical_requests(cache: ResponseCache, shared: FakeShared,
                                                                    events: CountingObserver) -> None:
    assert await cache.join(KEY) is None  # nothing in flight
    streamed: asyncio.Future[GenerationResult] = asyncio.get_running_loop().create_future()
    cache.share(KEY, streamed)
    engine = Engine()
    followers = [asyncio.create_task(cache.join(KEY)), asyncio.create_task(cache.get_or_compute(KEY, engine))]
    await asyncio.sleep(0.01)
    streamed.set_result(answer("streamed answer"))
    lookups = await asyncio.gather(*followers)
    assert all(lookup is not None and lookup.result.text == "streamed answer" for lookup in lookups)
    assert [lookup.source for lookup in lookups if lookup] == ["coalesced", "coalesced"]
    assert engine.runs == 0 and KEY.digest in shared.data and cache.memory.get(KEY) is not None
    assert events.misses == 3


async def test_a_failed_or_cut_short_stream_leaves_followers_to_compute(cache: ResponseCache,
                                                                        shared: FakeShared) -> None:
    for outcome in (ConnectionResetError("client went away"), answer("half", finish_reason="cancelled")):
        streamed: asyncio.Future[GenerationResult] = asyncio.get_running_loop().create_future()
        cache.share(KEY, streamed)
        follower = asyncio.create_task(cache.join(KEY))
        await asyncio.sleep(0)
        if isinstance(outcome, Exception):
            streamed.set_exception(outcome)
        else:
            streamed.set_result(outcome)
        assert await follower is None
        assert cache.memory.get(KEY) is None and not shared.data
        assert await cache.join(KEY) is None  # the flight is over
