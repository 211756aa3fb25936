"""Response cache over HTTP: p50 and p99 latency of an L1 hit, an L2 hit and a miss, and of a miss while Redis stalls.

Two in-process replicas (uvicorn on free local ports, ``bench/serve.py``'s ``InProcessServer``)
share one engine and a private ``redis-server`` (``tests/redis_server.py``), with the default
settings otherwise: NudeNet image screening and the text policy on, ``cache_policy =
"deterministic"``. Each request is a distinct demo catalogue picture (a PNG data URL) and a
question, greedy, sent one at a time over one keep-alive connection, and its ``X-Seesay-Cache``
header is checked, so each figure measures what it says:

1. miss: every request to replica A (L1 and L2 miss, screening, the model, stored in L1 and L2);
2. L2 hit: each request to replica B (its L1 misses, Redis answers, promoted into L1), and
3. L1 hit: the same request to A again, interleaved with the L2 hits;
4. miss while Redis is stalled (SIGSTOP): new requests to a third replica whose breaker never
   opens, so each pays the lookup's time-box (``redis_timeout_ms``, 50 ms; the store happens
   after the answer is sent); with the default breaker only the first three calls do.

Goals: L1 hit p50 <= 5 ms, L2 hit p50 <= 10 ms. Prints the figures and rewrites the "Response
cache" section of BENCHMARKS.md (``--no-write``: print only).

Usage: python bench/cache.py [--model DIR] [--requests N] [--stalled N] [--max-tokens N] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from redis_server import RedisServer
from seesay.demo.catalogue import draw_samples, png_bytes
from seesay.engine.base import Engine
from seesay.engine.config import TransformersEngineConfig
from seesay.engine.registry import create_engine
from serve import REPORT, InProcessServer, chat_body, write_section

SECTION = "## Response cache (bench/cache.py)"
GOALS = {"L1 hit": 5.0, "L2 hit": 10.0}


def bodies(model: str, count: int, seed: int, max_tokens: int) -> list[dict[str, Any]]:
    """``count`` distinct greedy requests: a catalogue picture and its question each."""
    return [chat_body(model, png_bytes(s.image), s.question, max_tokens) for s in draw_samples(count, seed=seed)]


class Client:
    """One keep-alive connection to a replica that times requests and checks where answers came from."""

    def __init__(self, server: InProcessServer) -> None:
        self.http = httpx.Client(base_url=server.base_url, timeout=120)

    def timed(self, body: dict[str, Any], expected: str) -> float:
        """Milliseconds of one request, whose answer must come from ``expected``."""
        started = time.perf_counter()
        response = self.http.post("/v1/chat/completions", json=body)
        took = (time.perf_counter() - started) * 1000
        if response.status_code != 200 or response.headers["x-seesay-cache"] != expected:
            raise RuntimeError(f"expected a 200 {expected}, got {response.status_code} "
                               f"{response.headers.get('x-seesay-cache')}: {response.text[:200]}")
        return took

    def each(self, requests: Iterable[dict[str, Any]], expected: str) -> list[float]:
        return [self.timed(body, expected) for body in requests]


def percentiles(samples: list[float]) -> tuple[float, float]:
    return statistics.median(samples), statistics.quantiles(samples, n=100, method="inclusive")[98]


def measure(engine: Engine, redis: RedisServer, args: argparse.Namespace) -> dict[str, list[float]]:
    """The four figures (see the module docstring)."""
    model = engine.info().model
    shared = {"redis_url": redis.url, "cache_policy": "deterministic", "max_wait_ms": 0}
    with InProcessServer(engine, **shared) as a, InProcessServer(engine, **shared) as b, \
            InProcessServer(engine, **shared, redis_failure_threshold=1_000_000) as c:
        clients = [Client(server) for server in (a, b, c)]
        for seed, client in enumerate(clients, start=7):  # warm-up: model, NudeNet, Redis connections
            client.each(bodies(model, 4, seed, args.max_tokens), "miss")
        work = bodies(model, args.requests, 5, args.max_tokens)
        figures = {"miss": clients[0].each(work, "miss"), "L2 hit": [], "L1 hit": []}
        for body in work:  # the hits interleaved, so load from other processes falls on both alike
            figures["L2 hit"].append(clients[1].timed(body, "hit-redis"))
            figures["L1 hit"].append(clients[0].timed(body, "hit-memory"))
        redis.pause()
        try:
            figures["miss, Redis stalled"] = clients[2].each(bodies(model, args.stalled, 6, args.max_tokens), "miss")
        finally:
            redis.resume()
    return figures


def report(figures: dict[str, list[float]], command: str, model: str) -> str:
    rows = []
    for name, samples in figures.items():
        p50, p99 = percentiles(samples)
        goal = f"p50 <= {GOALS[name]:g} ms" if name in GOALS else ""
        rows.append(f"| {name} | {len(samples)} | {p50:.2f} | {p99:.2f} | {goal} |")
    miss = statistics.median(figures["miss"])
    stalled = statistics.median(figures["miss, Redis stalled"])
    table = "\n".join(rows)
    return f"""{SECTION}

Command: `{command}`

Model {model}; uvicorn in-process on 127.0.0.1, one request at a time over a keep-alive
connection; each request a distinct demo catalogue picture as a PNG data URL plus a question,
greedy; default settings (NudeNet and the text policy on) with a private redis-server; latency
from the client's send to the whole JSON response; {os.cpu_count()} CPUs, 1-minute load average
{os.getloadavg()[0]:.1f} at the end of the run, other jobs included.

| answer | requests | p50 ms | p99 ms | goal |
|---|---|---|---|---|
{table}

- A hit skips screening, the scheduler and the model: what is left is HTTP, JSON, decoding the
  picture to its normalised pixels (the key hashes them) and the key. An L2 hit adds one Redis
  round trip and the promotion into L1. The replicas share one process (and its GIL) here, and
  the hit figures move by about 1 ms between runs on this shared machine.
- With Redis stalled, a miss took {stalled - miss:+.0f} ms at the median against a healthy Redis: the
  lookup's time-box (`redis_timeout_ms`, 50 ms). The store is time-boxed too but runs after the
  answer is handed over, off the request path. This replica's breaker was set never to open; with
  the default breaker (3 failures, 5 s cool-down) only the first calls pay the time-box, then
  Redis is skipped until a probe succeeds.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder or hub id (default: the demo model)")
    parser.add_argument("--requests", type=int, default=200, help="distinct requests per figure")
    parser.add_argument("--stalled", type=int, default=20, help="requests while Redis is stalled")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md")
    args = parser.parse_args()
    engine = create_engine("transformers", TransformersEngineConfig(model=args.model))
    model = engine.info().model
    try:
        with RedisServer() as redis:
            figures = measure(engine, redis, args)
    finally:
        engine.close()
    command = " ".join(["python bench/cache.py", *sys.argv[1:]])
    if os.environ.get("OMP_NUM_THREADS"):
        command = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} {command}"
    text = report(figures, command, model)
    print("\n" + text)
    if not args.no_write:
        write_section(text, SECTION, REPORT)


if __name__ == "__main__":
    main()
