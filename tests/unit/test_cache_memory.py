"""L1: LRU order, TTL with an injected clock, the byte limit."""

from __future__ import annotations

import pytest

from fakes import FakeClock
from seesay.cache.codec import encode_result
from seesay.cache.keys import CacheKey
from seesay.cache.memory import MemoryCache, MemoryCacheConfig
from seesay.types import GenerationResult, Usage


def k(n: int) -> CacheKey:
    return CacheKey(f"{n:064x}")


def answer(text: str = "a jacket") -> GenerationResult:
    return GenerationResult("req-1", text, "stop", Usage(10, 2))


def size_of(result: GenerationResult) -> int:
    return len(encode_result(result)) + 64


def test_get_returns_what_was_put_and_misses_otherwise() -> None:
    cache = MemoryCache()
    assert cache.put(k(1), answer("one"))
    assert cache.get(k(1)) == answer("one")
    assert cache.get(k(2)) is None
    cache.put(k(1), answer("replaced"))
    assert cache.get(k(1)) == answer("replaced")
    assert len(cache) == 1


def test_least_recently_used_is_evicted_first() -> None:
    cache = MemoryCache(MemoryCacheConfig(max_entries=3))
    for n in (1, 2, 3):
        cache.put(k(n), answer(str(n)))
    cache.get(k(1))  # 2 is now the least recently used
    cache.put(k(4), answer("4"))
    assert [cache.get(k(n)) is not None for n in (1, 2, 3, 4)] == [True, False, True, True]
    assert cache.stats().evictions == 1


def test_default_holds_a_thousand_answers() -> None:
    cache = MemoryCache()
    for n in range(1001):
        cache.put(k(n), answer())
    assert len(cache) == 1000
    assert cache.get(k(0)) is None and cache.get(k(1000)) is not None


def test_entries_expire_after_the_ttl() -> None:
    clock = FakeClock(1000.0)
    cache = MemoryCache(MemoryCacheConfig(ttl_s=60), clock=clock)
    cache.put(k(1), answer())
    clock.now += 59.9
    assert cache.get(k(1)) is not None
    clock.now += 0.1
    assert cache.get(k(1)) is None
    assert len(cache) == 0 and cache.stats().expirations == 1 and cache.stats().bytes == 0


def test_no_ttl_keeps_entries() -> None:
    clock = FakeClock(1000.0)
    cache = MemoryCache(MemoryCacheConfig(ttl_s=None), clock=clock)
    cache.put(k(1), answer())
    clock.now += 1e9
    assert cache.get(k(1)) is not None


def test_byte_limit_evicts_oldest_and_refuses_an_oversized_answer() -> None:
    one = size_of(answer("x" * 100))
    cache = MemoryCache(MemoryCacheConfig(max_bytes=2 * one + 10))
    cache.put(k(1), answer("x" * 100))
    cache.put(k(2), answer("y" * 100))
    assert cache.stats().bytes == 2 * one
    cache.put(k(3), answer("z" * 100))
    assert cache.get(k(1)) is None and cache.get(k(2)) is not None and cache.get(k(3)) is not None
    assert not cache.put(k(4), answer("w" * 10_000))
    assert cache.get(k(4)) is None and len(cache) == 2


def test_replacing_an_entry_recounts_its_bytes() -> None:
    cache = MemoryCache()
    cache.put(k(1), answer("short"))
    cache.put(k(1), answer("a much longer answer than before"))
    assert cache.stats().bytes == size_of(answer("a much longer answer than before"))


def test_clear_and_disabled_tier() -> None:
    cache = MemoryCache()
    cache.put(k(1), answer())
    cache.put(k(2), answer())
    assert cache.clear() == 2
    assert len(cache) == 0 and cache.stats().bytes == 0
    off = MemoryCache(MemoryCacheConfig(max_entries=0))
    assert not off.put(k(1), answer()) and off.get(k(1)) is None


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        MemoryCacheConfig(ttl_s=0)
    with pytest.raises(ValueError, match="max_entries"):
        MemoryCacheConfig(max_entries=-1)
