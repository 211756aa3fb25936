"""HTTP service benchmark: requests/s and p95 latency at concurrency 1, 4 and 16, batching on and off.

One engine is loaded once and served by two in-process apps (uvicorn on a free local port):
batching on (``max_batch_size`` 16) and off (``max_batch_size`` 1), measured in the same run
with the same greedy requests (a demo catalogue picture as a base64 data URL plus a question),
sent by clients in a process of their own (:class:`LoadGenerator`).
The HTTP-plus-scheduler overhead compares concurrency-1 latency through the server with the
same requests answered by the engine directly (image decoding included on both sides): by
mean latency, the goal's figure, and also by median and by the median per-request difference
(short and long answers make two clusters of latencies, between which a median can land).
The engine's own gain from batching (``--batch-size`` requests as one batch against one by one,
no server) is measured in the same run too: it bounds what batching can gain over HTTP.
Prints the figures, saves a chart (bench/results/serve.png) and rewrites the "HTTP service"
section of BENCHMARKS.md.

Every measurement is repeated (``--repeats``) with the modes interleaved, so load from other
processes on a shared machine falls on both alike; throughput is the median of the repeats,
latency percentiles pool every request.

Usage: python bench/serve.py [--model DIR] [--requests N] [--repeats N] [--max-tokens N]
       [--batch-size N] [--max-wait-ms MS] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing
import os
import re
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn

from seesay.api.app import build_app
from seesay.config import Settings
from seesay.demo.catalogue import draw_samples, png_bytes
from seesay.engine.base import Engine
from seesay.engine.config import TransformersEngineConfig
from seesay.engine.registry import create_engine
from seesay.images import PixelBudget, load_image
from seesay.types import ChatMessage, GenerationRequest, SamplingParams
from timing import median_seconds

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "BENCHMARKS.md"
SECTION = "## HTTP service and dynamic batching (bench/serve.py)"
CONCURRENCY = (1, 4, 16)
T = TypeVar("T")


@dataclass(frozen=True)
class Level:
    """One measured load level."""

    mode: str
    concurrency: int
    seconds: float
    latencies: tuple[float, ...]
    mean_batch: float = 1.0

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.latencies)

    @property
    def p95(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def workload(count: int) -> list[tuple[bytes, str]]:
    """``count`` (PNG, question) pairs from the demo catalogue."""
    return [(png_bytes(s.image), s.question) for s in draw_samples(count, seed=11)]


def chat_body(model: str, png: bytes, question: str, max_tokens: int) -> dict[str, Any]:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(png).decode()}}
    content = [image, {"type": "text", "text": question}]
    return {"model": model, "messages": [{"role": "user", "content": content}], "temperature": 0,
            "max_tokens": max_tokens}


def in_worker(run: Callable[[], T]) -> T:
    """``run()`` in a worker thread, as the server's generation runs.

    torch's intra-op threading behaves differently on the main thread (on a busy 2-core
    machine, 20x slower there), so every engine-only measurement goes through this.
    """
    with ThreadPoolExecutor(1) as worker:
        return worker.submit(run).result()


def greedy_request(budget: PixelBudget, png: bytes, question: str, max_tokens: int) -> GenerationRequest:
    """One benchmark request: the picture decoded to ``budget``, the question, greedy decoding."""
    sampling = SamplingParams(max_new_tokens=max_tokens, temperature=0.0)
    return GenerationRequest((ChatMessage.user(load_image(png, budget), question),), sampling)


def direct_latencies(engine: Engine, work: list[tuple[bytes, str]], max_tokens: int) -> list[float]:
    """Each request answered by the engine itself, one at a time (decode + prepare + generate)."""

    def answer_each() -> list[float]:
        budget = engine.info().pixel_budget
        latencies = []
        for png, question in work:
            started = time.perf_counter()
            engine.generate([engine.prepare(greedy_request(budget, png, question, max_tokens))])
            latencies.append(time.perf_counter() - started)
        return latencies

    return in_worker(answer_each)


def engine_batch_gain(engine: Engine, work: list[tuple[bytes, str]], max_tokens: int, repeats: int) -> float:
    """How many times faster the engine alone answers ``work`` as one batch than one request at a time.

    The same prepared requests both ways (medians of ``repeats``): the most that batching can
    gain for this many clients before any serving cost.
    """

    def ratio() -> float:
        budget = engine.info().pixel_budget
        batch = [engine.prepare(greedy_request(budget, png, question, max_tokens)) for png, question in work]
        one_by_one = median_seconds(lambda: [engine.generate([prepared]) for prepared in batch], repeats)
        return one_by_one / median_seconds(lambda: engine.generate(batch), repeats)

    return in_worker(ratio)


class InProcessServer:
    """``build_app(settings, engine)`` under uvicorn in a background thread.

    ``settings`` override the benchmark's defaults: a queue of 256 and no response cache, since
    the same greedy requests are sent again and again and must reach the engine each time.
    """

    def __init__(self, engine: Engine, **settings: Any) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        values = {"port": port, "max_queue": 256, "log_level": "warning", "cache_policy": "off", **settings}
        config = uvicorn.Config(build_app(Settings(**values), engine), host="127.0.0.1", port=port, log_level="warning",
                                access_log=False)
        self.server = uvicorn.Server(config)
        self.base_url = f"http://127.0.0.1:{port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> InProcessServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the benchmark server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(60)


def batch_totals(base_url: str) -> tuple[float, float]:
    """(requests, batches) the server has generated so far, from its /metrics."""
    page = httpx.get(f"{base_url}/metrics").text
    found = dict(re.findall(r"^seesay_batch_size_(sum|count) (\S+)$", page, re.MULTILINE))
    return float(found.get("sum", 0)), float(found.get("count", 0))


class LoadGenerator:
    """The benchmark's clients, in a process of their own, as real clients would be.

    In the server's process, the clients' JSON encoding and HTTP parsing would compete with
    the server for its interpreter lock and be counted as serving overhead. Every client
    sends its next request when its previous one is answered, over its own keep-alive
    connection.

    Args:
        bodies: The chat-completion bodies that :meth:`run` sends (a prefix of them).
    """

    def __init__(self, bodies: list[dict[str, Any]]) -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_serve_load, args=(child, bodies), name="bench-clients", daemon=True)

    def __enter__(self) -> LoadGenerator:
        self._process.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._connection.send(None)
        self._process.join(60)

    def run(self, base_url: str, count: int, concurrency: int) -> tuple[float, list[float]]:
        """Send the first ``count`` bodies with ``concurrency`` clients: (seconds in all, latencies)."""
        self._connection.send((base_url, count, concurrency))
        outcome = self._connection.recv()
        if isinstance(outcome, str):
            raise RuntimeError(f"the benchmark clients failed: {outcome}")
        return outcome


def _serve_load(connection: Connection, bodies: list[dict[str, Any]]) -> None:
    """The load generator's process: run each job it is sent, until it is sent ``None``."""
    while (job := connection.recv()) is not None:
        base_url, count, concurrency = job
        try:
            connection.send(asyncio.run(_send_all(base_url, bodies[:count], concurrency)))
        except Exception as exc:  # reported to the parent, which raises it
            connection.send(f"{type(exc).__name__}: {exc}")


async def _send_all(base_url: str, bodies: list[dict[str, Any]], concurrency: int) -> tuple[float, list[float]]:
    pending = list(reversed(bodies))
    latencies: list[float] = []

    async def client_loop(client: httpx.AsyncClient) -> None:
        while pending:
            body = pending.pop()
            started = time.perf_counter()
            response = await client.post("/v1/chat/completions", json=body)
            response.raise_for_status()
            latencies.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=600, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        return time.perf_counter() - started, latencies


def run_level(load: LoadGenerator, base_url: str, count: int, mode: str, concurrency: int) -> Level:
    """One load level: ``count`` requests from ``concurrency`` clients, and the server's mean batch size."""
    before = batch_totals(base_url)
    seconds, latencies = load.run(base_url, count, concurrency)
    after = batch_totals(base_url)
    mean_batch = (after[0] - before[0]) / max(after[1] - before[1], 1)
    return Level(mode, concurrency, seconds, tuple(latencies), mean_batch)


def merge(runs: list[Level]) -> Level:
    """Repeats of one level: median throughput, pooled latencies, mean batch size."""
    latencies = tuple(t for run in runs for t in run.latencies)
    rps = statistics.median(run.rps for run in runs)
    mean_batch = statistics.fmean(run.mean_batch for run in runs)
    return Level(runs[0].mode, runs[0].concurrency, len(latencies) / rps, latencies, mean_batch)


def measure(servers: dict[str, InProcessServer], load: LoadGenerator, requests: int, repeats: int,
            direct: Callable[[], list[float]]) -> tuple[list[Level], list[float]]:
    """Every mode at every level, ``repeats`` times, interleaved so machine noise hits all alike.

    The order of the modes (and, at one client, of the direct baseline) turns every repeat,
    so no mode always runs first after a heavy level.
    """
    runs: dict[tuple[str, int], list[Level]] = {}
    direct_all: list[float] = []
    for repeat in range(repeats):
        for concurrency in CONCURRENCY:
            count = max(requests // 2, 4) if concurrency == 1 else requests
            turns: list[str | None] = [*servers, None] if concurrency == 1 else list(servers)
            for mode in turns[repeat % len(turns):] + turns[: repeat % len(turns)]:
                if mode is None:
                    direct_all += direct()
                    continue
                level = run_level(load, servers[mode].base_url, count, mode, concurrency)
                runs.setdefault((mode, concurrency), []).append(level)
                print(f"[{repeat + 1}/{repeats}] {mode:13} c={concurrency:<3} {level.rps:7.2f} req/s  "
                      f"p50 {level.p50 * 1000:7.1f} ms  p95 {level.p95 * 1000:7.1f} ms  "
                      f"mean batch {level.mean_batch:4.1f}", flush=True)
    levels = [merge(runs[(mode, c)]) for mode in servers for c in CONCURRENCY]
    return levels, direct_all


def random_weights_model(folder: Path) -> str:
    """The demo architecture with untrained weights, saved in ``folder``.

    An untrained model almost never emits end-of-sequence, so every answer runs to
    ``max_tokens``: a stand-in for a model whose answers are long.
    """
    import torch
    from transformers import AutoModelForImageTextToText

    from seesay.demo.model import build_processor, demo_config, save_demo_model
    from seesay.demo.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(demo_config(tokenizer))
    return str(save_demo_model(model, build_processor(tokenizer), folder))


def draw_chart(levels: list[Level], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(10, 4))
    for mode in dict.fromkeys(level.mode for level in levels):
        mine = [level for level in levels if level.mode == mode]
        xs = [level.concurrency for level in mine]
        throughput.plot(xs, [level.rps for level in mine], marker="o", label=mode)
        latency.plot(xs, [level.p95 * 1000 for level in mine], marker="o", label=mode)
    for axis, label in ((throughput, "requests/s"), (latency, "p95 latency (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xticks(list(CONCURRENCY), [str(c) for c in CONCURRENCY])
        axis.set_xlabel("concurrent clients")
        axis.set_ylabel(label)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def report(levels: list[Level], direct: list[float], engine_gain: float, command: str, model: str, heading: str,
           chart: str) -> str:
    """The BENCHMARKS.md section (figures from this run)."""
    by = {(level.mode, level.concurrency): level for level in levels}
    on16, off16, on1 = by[("batching on", 16)], by[("batching off", 16)], by[("batching on", 1)]
    direct_mean, direct_p50 = statistics.fmean(direct), statistics.median(direct)
    mean_ms, p50_ms = (on1.mean - direct_mean) * 1000, (on1.p50 - direct_p50) * 1000
    mean_pct, p50_pct = (on1.mean / direct_mean - 1) * 100, (on1.p50 / direct_p50 - 1) * 100
    rows = "\n".join(
        f"| {v.mode} | {v.concurrency} | {v.rps:.2f} | {v.p50 * 1000:.0f} | {v.p95 * 1000:.0f} | {v.mean_batch:.1f} |"
        for v in levels
    )
    load = os.getloadavg()[0]
    return f"""{heading}

Command: `{command}` (model: {model}; greedy; each request a demo catalogue picture as a base64
data URL plus a question; uvicorn on 127.0.0.1 in the benchmark's process, the clients in another
process; one engine shared by both modes;
throughput is the median of the repeats, latency percentiles pool all requests; {os.cpu_count()} CPUs,
1-minute load average {load:.1f} at the end of the run, other jobs included).

| mode | clients | requests/s | p50 ms | p95 ms | mean batch |
|---|---|---|---|---|---|
{rows}

- Batching at 16 clients: {on16.rps / off16.rps:.1f}x the throughput of batching off (goal: >= 4x);
  {on16.rps / on1.rps:.1f}x its own 1-client throughput. The engine alone, on 16 of these requests:
  one batch is {engine_gain:.1f}x as fast as one by one (the most batching can give here).
- HTTP + scheduler overhead at 1 client, against the engine called directly on the same
  requests (image decoding included): mean latency {mean_ms:+.1f} ms,
  **{mean_pct:+.1f} %** on {direct_mean * 1000:.1f} ms (goal: <= 10 %); median latency
  {p50_ms:+.1f} ms, {p50_pct:+.1f} % on {direct_p50 * 1000:.1f} ms; median of the
  per-request differences {paired_overhead(on1.latencies, direct) * 1000:+.1f} ms.

![throughput and p95 latency against concurrency]({chart})
"""


def paired_overhead(served: Sequence[float], direct: Sequence[float]) -> float:
    """The median of the per-request differences, served minus direct.

    Both lists hold the same requests in the same order: one client sends them in turn and
    the direct baseline answers them in turn, repeat after repeat (see :func:`measure`).
    """
    if len(served) != len(direct):
        raise ValueError(f"{len(served)} served latencies against {len(direct)} direct ones")
    return statistics.median(s - d for s, d in zip(served, direct, strict=True))


def write_section(text: str, heading: str, path: Path) -> None:
    """Replace the section under ``heading`` in BENCHMARKS.md (up to the next ``## ``), or append it."""
    current = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    updated, count = pattern.subn(lambda _: text + "\n", current)
    path.write_text(updated if count else current.rstrip("\n") + "\n\n" + text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder or hub id (default: the demo model)")
    parser.add_argument("--random-weights", action="store_true",
                        help="serve the demo architecture with untrained weights: every answer runs to --max-tokens")
    parser.add_argument("--requests", type=int, default=48, help="requests per load level and repeat")
    parser.add_argument("--repeats", type=int, default=4, help="interleaved repeats of every measurement")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16, help="max_batch_size with batching on")
    parser.add_argument("--max-wait-ms", type=float, default=20.0, help="max_wait_ms with batching on")
    parser.add_argument("--name", default="serve", help="chart bench/results/NAME.png and its BENCHMARKS.md section")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md and the chart")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        model = random_weights_model(Path(scratch)) if args.random_weights else args.model
        engine = create_engine("transformers", TransformersEngineConfig(model=model))
        levels, direct = run(engine, args)
        engine_gain = engine_batch_gain(engine, workload(args.batch_size), args.max_tokens, args.repeats * 2)
        name = "demo architecture, random weights" if args.random_weights else engine.info().model
        engine.close()
    heading = SECTION if args.name == "serve" else f"{SECTION[:-1]}, {args.name})"
    chart = f"bench/results/{args.name}.png"
    command = " ".join(["python bench/serve.py", *sys.argv[1:]])
    if os.environ.get("OMP_NUM_THREADS"):
        command = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} {command}"
    text = report(levels, direct, engine_gain, command, name, heading, chart)
    print("\n" + text)
    if not args.no_write:
        draw_chart(levels, ROOT / chart, f"seesay serve ({name}): dynamic batching on vs off")
        write_section(text, heading, REPORT)


def run(engine: Engine, args: argparse.Namespace) -> tuple[list[Level], list[float]]:
    """Warm up, then measure both modes and the direct baseline (see :func:`measure`)."""
    name = engine.info().model
    work = workload(args.requests)
    bodies = [chat_body(name, png, question, args.max_tokens) for png, question in work]
    direct_latencies(engine, work[:4], args.max_tokens)  # warm-up
    # Screening has its own benchmark (bench/safety.py); here it would hide the serving overhead.
    with InProcessServer(engine, max_batch_size=args.batch_size, max_wait_ms=args.max_wait_ms, safety=False) as on, \
            InProcessServer(engine, max_batch_size=1, max_wait_ms=0, safety=False) as off, \
            LoadGenerator(bodies) as load:
        servers = {"batching on": on, "batching off": off}
        for server in servers.values():
            run_level(load, server.base_url, 8, "warm-up", 4)
        baseline = work[: max(args.requests // 2, 4)]
        return measure(servers, load, args.requests, args.repeats,
                       lambda: direct_latencies(engine, baseline, args.max_tokens))


if __name__ == "__main__":
    main()
