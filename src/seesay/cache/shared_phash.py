"""Near-duplicate canonical hashes shared by every replica through Redis, the in-process index as fallback.

Contract (the match rule and the canonical hash are :mod:`seesay.cache.phash`'s):

* :meth:`SharedNearDuplicateIndex.canonical_hash` names a picture by the content hash of the
  first picture *any replica* registered that matches it, else by its own content hash, which
  it registers for later near copies. So a resized JPEG sent to replica B finds the answer
  replica A stored for the original.
* **Bounded lookups (LSH by bands).** The 64-bit structure hash is cut into
  ``max_hamming + 1`` bands; two hashes within ``max_hamming`` bits agree on at least one
  whole band (pigeonhole). Each band value is a Redis list of entries (structure, colour grid,
  canonical hash), newest first, trimmed to ``bucket_size``. A lookup reads the picture's
  bands in one pipelined round trip: at most ``bands × bucket_size`` entries, matched here.
* **Atomic registration, first writer wins.** A picture with no match is registered by one
  Lua script that pushes its entry onto all its bands only if none of them changed since the
  lookup read them (their newest entries are compared). Two replicas registering near copies
  at once share a band, so the second one's script refuses; it reads again, finds the first
  one's entry and takes its canonical hash. After ``attempts`` refusals the picture keeps its
  own content hash unregistered (correct, merely not shared).
* **Redis trouble never fails a request.** The lookup and registration run under a
  :class:`~seesay.cache.guard.RedisGuard` (the cache's time-box and breaker settings, one
  warning per outage); without an answer from Redis, or without Redis configured, the
  picture is named by this replica's :class:`~seesay.cache.phash.NearDuplicateIndex`.
* Keys live under :attr:`~seesay.cache.redis.RedisCacheConfig.near_duplicate_prefix`, expire
  ``ttl_s`` after their last registration, and are deleted by the cache's ``clear``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from seesay.cache.guard import RedisGuard
from seesay.cache.phash import NearDuplicateIndex, NearDuplicateRule, PerceptualHash, perceptual_hash
from seesay.cache.redis import RedisCacheConfig, connect, redacted_url
from seesay.images import NormalizedImage

if TYPE_CHECKING:
    from redis.asyncio import Redis

INDEX_VERSION = 1
_STRUCTURE_BYTES = 8
_COLOUR_BYTES = 192

# KEYS: the picture's band lists. ARGV: entry, bucket size, TTL in ms, then the newest entry the
# lookup saw in each band ("" for an empty one). Registers only if no band changed meanwhile.
_REGISTER = """
for i = 1, #KEYS do
  if (redis.call('LINDEX', KEYS[i], 0) or '') ~= ARGV[3 + i] then return 0 end
end
for i = 1, #KEYS do
  redis.call('LPUSH', KEYS[i], ARGV[1])
  redis.call('LTRIM', KEYS[i], 0, tonumber(ARGV[2]) - 1)
  redis.call('PEXPIRE', KEYS[i], ARGV[3])
end
return 1
"""


def band_layout(max_hamming: int) -> tuple[tuple[int, int], ...]:
    """``(shift, width)`` of each band: ``max_hamming + 1`` bands (at most 64) covering the 64 bits."""
    count = min(max_hamming + 1, 64)
    widths = [64 // count + (1 if index < 64 % count else 0) for index in range(count)]
    shifts = [sum(widths[index + 1:]) for index in range(count)]
    return tuple(zip(shifts, widths, strict=True))


@dataclass(frozen=True)
class _Entry:
    fingerprint: PerceptualHash
    canonical: str

    def encode(self) -> bytes:
        return (self.fingerprint.structure.to_bytes(_STRUCTURE_BYTES, "big") + self.fingerprint.colour
                + self.canonical.encode())

    @classmethod
    def decode(cls, raw: bytes) -> _Entry | None:
        if len(raw) <= _STRUCTURE_BYTES + _COLOUR_BYTES:
            return None  # not an entry of this version: ignored, never a failed request
        structure = int.from_bytes(raw[:_STRUCTURE_BYTES], "big")
        colour = raw[_STRUCTURE_BYTES:_STRUCTURE_BYTES + _COLOUR_BYTES]
        return cls(PerceptualHash(structure, colour), raw[_STRUCTURE_BYTES + _COLOUR_BYTES:].decode())


@dataclass(frozen=True)
class _Lookup:
    canonical: str | None
    newest: tuple[bytes, ...]  # the newest entry of each band, b"" for an empty band


class SharedNearDuplicateIndex:
    """Canonical image hashes shared through Redis (see the module docstring).

    Args:
        rule: When two pictures are the same photo.
        shared: The cache's Redis settings; ``None``: this replica's index only.
        local: The per-replica index used without Redis (default: a new one with ``rule``).
        bucket_size: Most entries kept per band value, the bound of a lookup.
        attempts: Registrations tried before a picture keeps its own hash unregistered.
        clock: Monotonic seconds for the breaker.
        client: A ready ``redis.asyncio.Redis`` (tests); by default one is made from ``shared.url``.
    """

    def __init__(self, rule: NearDuplicateRule, shared: RedisCacheConfig | None = None, *,
                 local: NearDuplicateIndex | None = None, bucket_size: int = 256, attempts: int = 3,
                 clock: Callable[[], float] = time.monotonic, client: Redis | None = None) -> None:
        if bucket_size < 1 or attempts < 1:
            raise ValueError(f"bucket_size and attempts must be at least 1, got {bucket_size} and {attempts}")
        self.rule = rule
        self.local = local or NearDuplicateIndex(rule)
        self.bucket_size = bucket_size
        self.attempts = attempts
        self._bands = band_layout(rule.max_hamming)
        self._shared = shared
        self._client: Redis | None = None
        self.guard: RedisGuard | None = None
        if shared is not None:
            self._client = client if client is not None else connect(shared)
            self.guard = RedisGuard("near-duplicate index", "each replica matches near-duplicates in its own index",
                                    redacted_url(shared.url), timeout_s=shared.timeout_s, breaker=shared.breaker,
                                    clock=clock)
            self._register = self._client.register_script(_REGISTER)
        self._conflicts = 0

    async def canonical_hashes(self, images: Iterable[NormalizedImage]) -> dict[str, str]:
        """Content hash → canonical hash for each of ``images`` (for :func:`~seesay.cache.keys.key_for`)."""
        names: dict[str, str] = {}
        for image in images:
            if image.content_hash not in names:
                names[image.content_hash] = await self.canonical_hash(image)
        return names

    async def canonical_hash(self, image: NormalizedImage) -> str:
        """The content hash that stands for ``image`` in cache keys, agreed through Redis when it answers."""
        if self.guard is None:
            return await asyncio.to_thread(self.local.canonical_hash, image)
        fingerprint = await asyncio.to_thread(perceptual_hash, image.image)  # CPU work: off the event loop
        answered, canonical = await self.guard.call(lambda: self._shared_canonical(image.content_hash, fingerprint))
        if answered and canonical is not None:
            return canonical
        return self.local.canonical_for(image.content_hash, fingerprint)

    def clear(self) -> int:
        """Forget this replica's own index (the shared one is cleared with the cache's Redis keys)."""
        return self.local.clear()

    def stats(self) -> dict[str, int | bool]:
        """Whether Redis is configured (``redis``), lookups it answered (``shared``), lookups this replica's
        index answered (``fallback``), failed Redis calls, registrations lost to a concurrent one (``conflicts``)
        and the canonical pictures in this replica's index (``local_entries``)."""
        counts: dict[str, int | bool] = {"redis": self.guard is not None, "local_entries": len(self.local),
                                         "conflicts": self._conflicts}
        if self.guard is not None:
            counts.update(self.guard.counts())
        return counts

    async def close(self) -> None:
        """Close the Redis connections (nothing to do without Redis)."""
        if self._client is not None:
            await self._client.aclose()

    async def _shared_canonical(self, content_hash: str, fingerprint: PerceptualHash) -> str:
        """Look up, else register; see the module docstring. Raises the client's errors (the guard absorbs them)."""
        keys = self._band_keys(fingerprint.structure)
        entry = _Entry(fingerprint, content_hash).encode()
        ttl_ms = max(1, round(self._config.ttl_s * 1000))
        for _ in range(self.attempts):
            found = await self._lookup(keys, fingerprint)
            if found.canonical is not None:
                return found.canonical
            if await self._register(keys=keys, args=[entry, self.bucket_size, ttl_ms, *found.newest]):
                return content_hash
            self._conflicts += 1  # another replica registered into one of these bands meanwhile: read again
        return content_hash

    async def _lookup(self, keys: Sequence[str], fingerprint: PerceptualHash) -> _Lookup:
        assert self._client is not None
        async with self._client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.lrange(key, 0, self.bucket_size - 1)
            buckets: list[list[bytes]] = await pipe.execute()
        best: tuple[int, int, str] | None = None
        for bucket in buckets:
            for raw in bucket:
                candidate = _Entry.decode(raw)
                if candidate is None or not self.rule.matches(fingerprint, candidate.fingerprint):
                    continue
                rank = (fingerprint.hamming(candidate.fingerprint), fingerprint.colour_delta(candidate.fingerprint),
                        candidate.canonical)
                best = rank if best is None or rank < best else best
        return _Lookup(best[2] if best is not None else None, tuple(bucket[0] if bucket else b"" for bucket in buckets))

    def _band_keys(self, structure: int) -> list[str]:
        prefix = f"{self._config.near_duplicate_prefix}v{INDEX_VERSION}:b{len(self._bands)}:"
        return [f"{prefix}{index}:{(structure >> shift) & ((1 << width) - 1):x}"
                for index, (shift, width) in enumerate(self._bands)]

    @property
    def _config(self) -> RedisCacheConfig:
        assert self._shared is not None
        return self._shared
