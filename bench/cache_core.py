"""In-process latency of the response cache core, without HTTP: what a hit costs inside the service.

Starts a private ``redis-server`` on a free port (``tests/redis_server.py``), then measures
p50 and p99 of: building a key for a one-picture request; an L1 hit; an L2 hit (L1 emptied
before each lookup); the cache's own overhead on a miss (L1 miss, L2 miss, sharing the answer
in flight, L1 + L2 store, with an instant compute), each step the way the service takes it; a
lookup in a near-duplicate index of 1,000 pictures. The HTTP
figures the issue asks for come from ``bench/cache.py``, which adds the server around this.

Run: ``python bench/cache_core.py [--n 2000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from redis_server import RedisServer
from seesay.cache import (
    CacheKey,
    MemoryCache,
    NearDuplicateIndex,
    RedisCache,
    RedisCacheConfig,
    ResponseCache,
    key_for,
)
from seesay.demo.catalogue import COLOURS, KINDS, Item, draw_picture
from seesay.images import NormalizedImage, PixelBudget, load_image
from seesay.types import ChatMessage, GenerationRequest, GenerationResult, SamplingParams, Usage
from timing import show, timed  # bench/ is on sys.path when this runs as a script

ANSWER = GenerationResult("req-bench", "适合春秋季休闲出行，可搭配牛仔裤。", "stop", Usage(90, 12))


def photo(seed: int) -> NormalizedImage:
    item = Item(KINDS[seed % len(KINDS)], COLOURS[seed % len(COLOURS)])
    buffer = io.BytesIO()
    draw_picture(item, random.Random(seed)).save(buffer, format="PNG")
    return load_image(buffer.getvalue(), PixelBudget())


async def measure(n: int, url: str) -> None:
    image = photo(0)
    request = GenerationRequest((ChatMessage.user(image, "这件外套适合什么场合穿？"),), SamplingParams(temperature=0))
    model = "demo@weights"

    async def make_key(i: int) -> CacheKey:
        return key_for(request, model, "policy-1")

    show("key_for (1 picture)", await timed(n, make_key))
    cache = ResponseCache(MemoryCache(), RedisCache(RedisCacheConfig(url=url)))
    key = key_for(request, model, "policy-1")
    await answer(cache, key)
    show("L1 hit", await timed(n, lambda i: answer(cache, key)))

    async def l2_hit(i: int) -> object:
        cache.memory.clear()
        return await answer(cache, key)

    show("L2 hit (promoted)", await timed(n, l2_hit))
    show("miss overhead (instant compute)", await timed(n, lambda i: answer(cache, CacheKey(f"{i + 1:064x}"))))
    await cache.close()
    index = NearDuplicateIndex()
    pictures = [photo(seed) for seed in range(1, 1001)]
    for picture in pictures:
        index.canonical_hash(picture)
    fresh = [photo(2000 + i) for i in range(200)]  # drawn beforehand: only the lookup is timed
    show("near-duplicate lookup (1,000 known)", await timed(200, lambda i: _canonical(index, fresh[i])))


async def answer(cache: ResponseCache, key: CacheKey) -> GenerationResult:
    """The service's cache steps: a lookup; on a miss, share the answer in flight, compute it at once, store it."""
    lookup = await cache.get(key)
    if lookup is not None:
        return lookup.result
    computing: asyncio.Future[GenerationResult] = asyncio.get_running_loop().create_future()
    stored = cache.share(key, computing)
    computing.set_result(ANSWER)
    return await stored


async def _canonical(index: NearDuplicateIndex, image: NormalizedImage) -> str:
    return index.canonical_hash(image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="samples per measurement")
    args = parser.parse_args()
    with RedisServer() as server:
        asyncio.run(measure(args.n, server.url))


if __name__ == "__main__":
    main()
