"""ResponseCache: tier order, promotion, single flight through share/join, failures, counters."""

from __future__ import annotations

import asyncio

import pytest

from fakes import let_ready_tasks_run
from seesay.cache.keys import CacheKey
from seesay.cache.memory import MemoryCache, MemoryCacheConfig
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


def in_flight() -> asyncio.Future[GenerationResult]:
    """An answer being computed elsewhere, resolved by the test."""
    return asyncio.get_running_loop().create_future()


@pytest.fixture
def shared() -> FakeShared:
    return FakeShared()


@pytest.fixture
def cache(shared: FakeShared) -> ResponseCache:
    return ResponseCache(MemoryCache(), shared)


async def compute(cache: ResponseCache, key: CacheKey, text: str, *, write: bool = True) -> None:
    """What the service does on a miss: share the answer it computes, then resolve it."""
    answer_in_flight = in_flight()
    stored = cache.share(key, answer_in_flight, write=write)
    answer_in_flight.set_result(answer(text))
    await stored


async def test_a_shared_answer_is_stored_in_both_tiers_then_hits_memory(cache: ResponseCache,
                                                                        shared: FakeShared) -> None:
    assert await cache.get(KEY) is None
    await compute(cache, KEY, "computed once")
    assert KEY.digest in shared.data and cache.memory.get(KEY) == answer("computed once")
    hit = await cache.get(KEY)
    assert hit is not None and (hit.source, hit.header, hit.hit) == ("memory", "hit-memory", True)
    stats = cache.stats()
    assert stats.misses == 1 and stats.hits == {"memory": 1} and stats.stores == {"memory": 1, "redis": 1}


async def test_l2_hit_is_promoted_to_l1(cache: ResponseCache, shared: FakeShared) -> None:
    shared.data[KEY.digest] = answer("from another replica")
    lookup = await cache.get(KEY)
    assert lookup is not None
    assert (lookup.source, lookup.header, lookup.result.text) == ("redis", "hit-redis", "from another replica")
    assert cache.memory.get(KEY) == lookup.result
    gets = shared.gets
    again = await cache.get(KEY)
    assert again is not None and again.source == "memory"
    assert shared.gets == gets  # L1 answered: L2 was not asked
    assert cache.stats().hits == {"redis": 1, "memory": 1} and cache.stats().stores == {"memory": 1}


async def test_get_and_put(cache: ResponseCache, shared: FakeShared) -> None:
    assert await cache.get(KEY) is None
    await cache.put(KEY, answer())
    assert (await cache.get(KEY)) == CacheLookup(answer(), "memory")
    cache.memory.clear()
    assert (await cache.get(KEY)) == CacheLookup(answer(), "redis")


async def test_twenty_identical_concurrent_requests_share_one_answer(cache: ResponseCache, shared: FakeShared) -> None:
    answer_in_flight = in_flight()
    cache.share(KEY, answer_in_flight)
    joins = [asyncio.create_task(cache.join(KEY)) for _ in range(19)]
    await let_ready_tasks_run()  # every join is waiting
    answer_in_flight.set_result(answer("answer #1"))
    lookups = await asyncio.gather(*joins)
    assert all(lookup is not None and lookup.result.text == "answer #1" for lookup in lookups)
    assert {lookup.source for lookup in lookups if lookup is not None} == {"coalesced"}
    assert shared.puts == 1 and cache.memory.get(KEY) == answer("answer #1")
    assert cache.stats().misses == 20 and cache.stats().coalesced == 19
    assert not cache.in_flight(KEY)


async def test_a_joiner_that_goes_away_does_not_cancel_the_answer_for_the_others(cache: ResponseCache) -> None:
    answer_in_flight = in_flight()
    cache.share(KEY, answer_in_flight)
    leaving, staying = asyncio.create_task(cache.join(KEY)), asyncio.create_task(cache.join(KEY))
    await let_ready_tasks_run()  # both joins are waiting
    leaving.cancel()
    answer_in_flight.set_result(answer("still coming"))
    lookup = await staying
    assert lookup is not None and lookup.result.text == "still coming"
    assert leaving.cancelled() and cache.memory.get(KEY) is not None


async def test_different_keys_are_in_flight_separately(cache: ResponseCache) -> None:
    first, second = in_flight(), in_flight()
    cache.share(KEY, first)
    cache.share(OTHER, second)
    assert cache.share(KEY, in_flight()) is cache.share(KEY, in_flight())  # already in flight: ignored
    assert cache.in_flight(KEY) and cache.in_flight(OTHER)
    joins = asyncio.gather(cache.join(KEY), cache.join(OTHER))
    await let_ready_tasks_run()  # both joins are waiting
    first.set_result(answer("for KEY"))
    second.set_result(answer("for OTHER"))
    assert await joins == [CacheLookup(answer("for KEY"), "coalesced"), CacheLookup(answer("for OTHER"), "coalesced")]


async def test_a_failed_or_cut_short_answer_leaves_joiners_to_compute(cache: ResponseCache,
                                                                      shared: FakeShared) -> None:
    for outcome in (ConnectionResetError("client went away"), answer("half", finish_reason="cancelled")):
        answer_in_flight = in_flight()
        cache.share(KEY, answer_in_flight)
        joiner = asyncio.create_task(cache.join(KEY))
        await let_ready_tasks_run()  # the joiner is waiting
        if isinstance(outcome, Exception):
            answer_in_flight.set_exception(outcome)
        else:
            answer_in_flight.set_result(outcome)
        assert await joiner is None
        assert cache.memory.get(KEY) is None and not shared.data
        assert not cache.in_flight(KEY) and await cache.join(KEY) is None  # the flight is over
    assert cache.stats().misses == 2 and cache.stats().coalesced == 0  # the two sharers; no joiner got an answer


async def test_an_answer_shared_without_write_is_not_stored(cache: ResponseCache, shared: FakeShared) -> None:
    await compute(cache, KEY, "no-store", write=False)
    assert cache.memory.get(KEY) is None and not shared.data


async def test_put_refreshes_a_stored_answer(cache: ResponseCache) -> None:
    await cache.put(KEY, answer("old"))
    await cache.put(KEY, answer("fresh"))
    lookup = await cache.get(KEY)
    assert lookup is not None and lookup.result.text == "fresh"


async def test_result_for_readdresses_a_hit() -> None:
    lookup = CacheLookup(answer(), "memory")
    mine = lookup.result_for("req-mine")
    assert (mine.request_id, mine.text, mine.timings) == ("req-mine", answer().text, Timings())
    joined = CacheLookup(answer(), "coalesced").result_for("req-mine")
    assert joined.timings == answer().timings


async def test_stats_and_clear(cache: ResponseCache, shared: FakeShared) -> None:
    await compute(cache, KEY, "counted")
    await cache.get(KEY)
    stats = cache.stats()
    assert stats.hits == {"memory": 1} and stats.misses == 1 and stats.memory.entries == 1
    assert stats.redis is not None and stats.as_dict()["misses"] == 1 and stats.errors == {"redis": 0}
    report = await cache.clear()
    assert (report.memory, report.redis) == (1, 1)
    assert await cache.get(KEY) is None


async def test_l1_only_without_a_shared_tier() -> None:
    cache = build_response_cache(MemoryCacheConfig(max_entries=10))
    await compute(cache, KEY, "memory only")
    lookup = await cache.get(KEY)
    assert lookup is not None and lookup.source == "memory"
    assert cache.stats().redis is None and cache.stats().errors == {} and (await cache.clear()).redis is None
    await cache.close()


async def test_shared_tier_is_chosen_by_url_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []

    def fake_tier(config: RedisCacheConfig) -> FakeShared:
        made.append(config.url)
        return FakeShared()

    monkeypatch.setitem(SHARED_TIERS, "fake", fake_tier)
    cache = build_response_cache(shared=RedisCacheConfig(url="fake://somewhere"))
    assert made == ["fake://somewhere"] and isinstance(cache.shared, FakeShared)
    with pytest.raises(ValueError, match="redis://"):
        build_response_cache(shared=RedisCacheConfig(url="memcached://host"))
