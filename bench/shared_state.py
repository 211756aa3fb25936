"""Latency of the state replicas share through Redis: the rate limit and the near-duplicate index.

Starts a private ``redis-server`` on a free port (``tests/redis_server.py``), then prints p50
and p99 of: one rate-limit hit counted in memory (no Redis) and in Redis; a near-duplicate
lookup in this replica's index and in the shared index holding ``--pictures`` photos, for a
near copy of a registered photo (a hit) and for a new photo (lookup + registration). Each
lookup includes the perceptual hash, as the service pays it.

Run: ``python bench/shared_state.py [--n 1000] [--pictures 1000]``.
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
from seesay.api.rate_limit import RateLimit, SharedLimitConfig
from seesay.cache import NearDuplicateRule, RedisCacheConfig, SharedNearDuplicateIndex
from seesay.demo.catalogue import COLOURS, KINDS, Item, draw_picture
from seesay.images import NormalizedImage, PixelBudget, load_image
from timing import show, timed  # bench/ is on sys.path when this runs as a script


def photo(seed: int, *, near_copy: bool = False) -> NormalizedImage:
    picture = draw_picture(Item(KINDS[seed % len(KINDS)], COLOURS[seed % len(COLOURS)]), random.Random(seed))
    buffer = io.BytesIO()
    if near_copy:
        picture.resize((picture.width * 9 // 10, picture.height * 9 // 10)).save(buffer, format="JPEG", quality=90)
    else:
        picture.save(buffer, format="PNG")
    return load_image(buffer.getvalue(), PixelBudget())


async def rate_limits(url: str, n: int) -> None:
    for name, shared in (("rate limit hit, in memory", None), ("rate limit hit, in Redis", SharedLimitConfig(url))):
        limit = RateLimit(10**9, shared)
        show(name, await timed(n, lambda i, limit=limit: limit.hit(f"key-{i % 50}")))  # type: ignore[misc]
        await limit.close()


async def indexes(url: str, n: int, pictures: int) -> None:
    registered = [photo(seed) for seed in range(pictures)]
    copies = [photo(seed, near_copy=True) for seed in range(min(n, pictures))]
    fresh = [photo(pictures + seed) for seed in range(n)]
    config = RedisCacheConfig(url=url, timeout_s=1.0)
    for name, shared in (("local", None), ("shared", config)):
        index = SharedNearDuplicateIndex(NearDuplicateRule(), shared)
        for image in registered:
            await index.canonical_hash(image)
        show(f"near-duplicate {name}: near copy (hit)",
             await timed(len(copies), lambda i, index=index: index.canonical_hash(copies[i])))  # type: ignore[misc]
        show(f"near-duplicate {name}: new photo (registered)",
             await timed(n, lambda i, index=index: index.canonical_hash(fresh[i])))  # type: ignore[misc]
        await index.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="timed calls per figure")
    parser.add_argument("--pictures", type=int, default=1000, help="photos registered before the lookups")
    args = parser.parse_args()
    with RedisServer() as server:
        asyncio.run(rate_limits(server.url, args.n))
        asyncio.run(indexes(server.url, args.n, args.pictures))


if __name__ == "__main__":
    main()
