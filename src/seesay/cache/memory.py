"""L1: an in-process LRU of answers with an entry limit, a time to live and a byte limit.

Contract: :meth:`MemoryCache.get` returns a stored, unexpired answer and marks it most
recently used; an expired one is dropped and reads as a miss. :meth:`MemoryCache.put`
stores an answer, charged at its encoded size (:func:`~seesay.cache.codec.encode_result`),
then evicts least recently used entries until both ``max_entries`` and ``max_bytes`` hold;
an answer larger than ``max_bytes`` on its own is not stored. Every method is synchronous
and never awaits, so on one event loop a lookup and the decision that follows it are
atomic; a lock also makes the cache safe to call from worker threads. The clock is
injectable for tests.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from seesay.cache.codec import encode_result
from seesay.cache.keys import CacheKey
from seesay.types import GenerationResult

MiB = 1024 * 1024


@dataclass(frozen=True)
class MemoryCacheConfig:
    """Limits of the in-process cache.

    Attributes:
        max_entries: Most answers kept; 0 disables the tier.
        ttl_s: Seconds an answer stays valid; ``None`` keeps it until evicted.
        max_bytes: Most encoded bytes kept, all entries together.
    """

    max_entries: int = 1000
    ttl_s: float | None = 3600.0
    max_bytes: int = 64 * MiB

    def __post_init__(self) -> None:
        if self.max_entries < 0 or self.max_bytes < 0 or (self.ttl_s is not None and self.ttl_s <= 0):
            raise ValueError(
                "memory cache limits must be non-negative and ttl_s positive (or None), got "
                f"max_entries={self.max_entries}, max_bytes={self.max_bytes}, ttl_s={self.ttl_s}"
            )


@dataclass(frozen=True)
class MemoryStats:
    """A snapshot of the in-process cache."""

    entries: int
    bytes: int
    evictions: int
    expirations: int


@dataclass(frozen=True)
class _Entry:
    result: GenerationResult
    size: int
    expires_at: float


class MemoryCache:
    """The L1 tier (see the module docstring).

    Args:
        config: Limits.
        clock: Monotonic seconds; injectable for tests.
    """

    name = "memory"

    def __init__(self, config: MemoryCacheConfig | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or MemoryCacheConfig()
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self._evictions = 0
        self._expirations = 0
        self._lock = threading.Lock()

    def get(self, key: CacheKey) -> GenerationResult | None:
        """The stored answer for ``key``, or ``None`` when absent or expired."""
        with self._lock:
            entry = self._entries.get(key.digest)
            if entry is None:
                return None
            if entry.expires_at <= self._clock():
                self._drop(key.digest)
                self._expirations += 1
                return None
            self._entries.move_to_end(key.digest)
            return entry.result

    def put(self, key: CacheKey, result: GenerationResult) -> bool:
        """Store ``result`` under ``key``; returns whether it was stored (see the module docstring)."""
        size = len(encode_result(result)) + len(key.digest)
        if self.config.max_entries == 0 or size > self.config.max_bytes:
            return False
        ttl = self.config.ttl_s
        expires_at = float("inf") if ttl is None else self._clock() + ttl
        with self._lock:
            if key.digest in self._entries:
                self._drop(key.digest)
            self._entries[key.digest] = _Entry(result, size, expires_at)
            self._bytes += size
            while len(self._entries) > self.config.max_entries or self._bytes > self.config.max_bytes:
                self._drop(next(iter(self._entries)))
                self._evictions += 1
        return True

    def clear(self) -> int:
        """Drop every entry; returns how many there were."""
        with self._lock:
            count = len(self._entries)
            self._entries.clear()
            self._bytes = 0
            return count

    def stats(self) -> MemoryStats:
        with self._lock:
            return MemoryStats(len(self._entries), self._bytes, self._evictions, self._expirations)

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, digest: str) -> None:
        self._bytes -= self._entries.pop(digest).size
