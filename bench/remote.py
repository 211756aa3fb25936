"""Remote engine benchmark: what seesay B (``engine = "remote"``) adds in front of seesay A (the demo model).

Both run as ``seesay serve`` subprocesses, as operators run them; the clients are this process.
The same greedy requests (a demo catalogue picture as a base64 data URL plus a question, cache
off) go to A directly and through B, interleaved request by request (concurrency 1) or round
by round (concurrency 16), so load from other processes falls on both alike. Reported: the
median latency of each and their ratio, per concurrency. Then throughput through B when every
request is a cache hit (B never calls A). Prints the figures and rewrites the "Remote engine"
section of BENCHMARKS.md.

Usage: python bench/remote.py [--requests N] [--max-tokens N] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from server_process import ServerProcess, model_dir, running_server

from seesay.demo.catalogue import draw_samples, png_bytes
from serve import REPORT, chat_body, write_section

SECTION = "## Remote engine (bench/remote.py)"
DEMO_PIXELS = {"min_pixels": 16384, "max_pixels": 16384}


def requests_for(server: ServerProcess, count: int, max_tokens: int, *, cache: bool) -> list[dict[str, Any]]:
    samples = draw_samples(count, seed=77)
    return [{**chat_body(server.model_name, png_bytes(s.image), s.question, max_tokens), "seed": i,
             "seesay": {"cache": cache}} for i, s in enumerate(samples)]


async def timed(client: httpx.AsyncClient, server: ServerProcess, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    response = await client.post(f"{server.base_url}/v1/chat/completions", json=body)
    response.raise_for_status()
    return time.perf_counter() - started


async def latencies(a: ServerProcess, b: ServerProcess, bodies: list[dict[str, Any]],
                    concurrency: int) -> tuple[list[float], list[float]]:
    """Latencies of ``bodies`` sent to A and to B, ``concurrency`` at a time, alternating rounds."""
    direct: list[float] = []
    through: list[float] = []
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=64)) as client:
        for start in range(0, len(bodies), concurrency):
            chunk = bodies[start:start + concurrency]
            for server, out in ((a, direct), (b, through)):
                out.extend(await asyncio.gather(*(timed(client, server, body) for body in chunk)))
    return direct, through


async def hit_throughput(b: ServerProcess, bodies: list[dict[str, Any]], concurrency: int) -> float:
    """Requests/s through B when every request is already in its cache."""
    async with httpx.AsyncClient(timeout=300) as client:
        await asyncio.gather(*(timed(client, b, body) for body in bodies))  # fills the cache
        started = time.perf_counter()
        for start in range(0, len(bodies), concurrency):
            await asyncio.gather(*(timed(client, b, body) for body in bodies[start:start + concurrency]))
        return len(bodies) / (time.perf_counter() - started)


def report(rows: list[tuple[int, float, float]], hits: float, args: argparse.Namespace) -> str:
    lines = [f"| {c} | {d * 1000:.0f} | {t * 1000:.0f} | {t / d:.2f} |" for c, d, t in rows]
    return f"""{SECTION}

Command: `OMP_NUM_THREADS=1 python bench/remote.py --requests {args.requests} --max-tokens {args.max_tokens}`
(A: `seesay serve` with the demo model, max_batch_size 16; B: `seesay serve` with `engine = "remote"` and
A as its one upstream, max_batch_size 16; greedy; cache off for the latencies; both servers and the clients
on the same {os.cpu_count()} CPUs, 1-minute load average {os.getloadavg()[0]:.1f} at the end).

| clients | A direct, median ms | through B, median ms | ratio B / A |
|---|---|---|---|
{chr(10).join(lines)}

- Through B with every request a cache hit (16 clients): **{hits:.0f} requests/s** (B never calls A).
- B's added latency is its own HTTP, intake (decoding, resizing, PNG re-encoding of the picture), safety
  and scheduler, plus one more HTTP hop; on a GPU upstream the model's time dominates and the ratio
  falls towards 1. A ratio below 1 is possible under load: B's intake (decoding and fitting every picture)
  runs in its own process, here on the other core, and A then receives each picture already fitted to its
  budget (128×128 here, instead of the client's 256×256 original).
  B streams every row of a batch at once and keeps up to `remote_concurrent_batches` (8) batches in flight.
"""


async def measure(args: argparse.Namespace, folder: Path) -> str:
    common = {"max_batch_size": 16, "max_wait_ms": 5, "safety_image_detector": "off", "cpu_threads": 1}
    with running_server(model_dir(), folder / "a.log", **common) as a, \
            running_server(model_dir(), folder / "b.log", engine="remote", remote_upstreams=a.base_url,
                           **{**common, **DEMO_PIXELS}) as b:
        bodies = requests_for(a, args.requests, args.max_tokens, cache=False)
        await latencies(a, b, bodies[:4], 1)  # warm-up
        rows = []
        for concurrency in (1, 16):
            direct, through = await latencies(a, b, bodies, concurrency)
            rows.append((concurrency, statistics.median(direct), statistics.median(through)))
            print(f"concurrency {concurrency}: A {rows[-1][1] * 1000:.0f} ms, B {rows[-1][2] * 1000:.0f} ms, "
                  f"ratio {rows[-1][2] / rows[-1][1]:.2f}", flush=True)
        hits = await hit_throughput(b, requests_for(b, args.requests, args.max_tokens, cache=True), 16)
        print(f"cache hits through B: {hits:.0f} requests/s", flush=True)
    return report(rows, hits, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64, help="requests per concurrency level")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        text = asyncio.run(measure(args, Path(folder)))
    print(text)
    if not args.no_write:
        write_section(text, SECTION, REPORT)


if __name__ == "__main__":
    main()
