"""Timing helpers shared by the bench scripts (they run as scripts, so bench/ is on sys.path)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable


def median_seconds(run: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``repeats`` calls of ``run``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def timed(n: int, step: Callable[[int], Awaitable[object]]) -> list[float]:
    """Milliseconds of each of ``n`` awaited calls ``step(0)`` … ``step(n - 1)``, one after another."""
    samples = []
    for i in range(n):
        start = time.perf_counter()
        await step(i)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def show(name: str, samples: list[float], width: int = 48) -> None:
    """Print the median and 99th percentile of ``samples`` (milliseconds) on one line."""
    p99 = statistics.quantiles(samples, n=100)[98]
    print(f"{name:<{width}} p50 {statistics.median(samples):8.3f} ms   p99 {p99:8.3f} ms   (n={len(samples)})")
