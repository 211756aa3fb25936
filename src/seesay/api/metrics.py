"""Prometheus metrics, in a registry owned by one app (never the process-global one).

``seesay_requests_total{route,status}``, ``seesay_request_duration_seconds{route}``,
``seesay_time_to_first_token_seconds``, ``seesay_queue_depth``, ``seesay_running_requests``,
``seesay_batch_size``, ``seesay_cancelled_requests_total{stage}`` (clients that went away while
their request was ``queued`` or ``running``), ``seesay_prompt_tokens_total`` and
``seesay_generated_tokens_total`` (what the engine generated: answers replayed from the cache or
from an identical request are not counted).

The response cache, read from its own counters at each scrape: ``seesay_cache_hits_total{tier}``,
``seesay_cache_misses_total``, ``seesay_cache_stores_total{tier}``, ``seesay_cache_errors_total{tier}``
and ``seesay_cache_breaker_state{tier,state}`` (1 for the current state). Content safety:
``seesay_safety_blocks_total{where,rule}`` and ``seesay_safety_check_seconds{where}``.
Routes are labelled by their path template; unknown paths share the label ``unmatched`` so
a scanner cannot blow up the label set.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from seesay.cache import BreakerState, ResponseCache
from seesay.safety import BlockEvent, Where
from seesay.service import AnswerService
from seesay.types import Usage

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_CHECK_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class CacheCollector(Collector):
    """The response cache's counters, read from ``ResponseCache.stats()`` at each scrape.

    The cache counts its events in one place; this only exposes them, so ``/metrics`` and
    ``/admin/cache`` can never disagree.
    """

    def __init__(self) -> None:
        self.cache: ResponseCache | None = None

    def collect(self) -> Iterator[Metric]:
        if self.cache is None:
            return
        stats = self.cache.stats()
        tiers = [self.cache.memory.name, *([self.cache.shared.name] if self.cache.shared is not None else [])]
        yield _per_tier(CounterMetricFamily("seesay_cache_hits", "Answers served from the response cache, by tier.",
                                            labels=["tier"]), tiers, stats.hits)
        yield CounterMetricFamily("seesay_cache_misses", "Cacheable requests not found in the cache (computed, or "
                                  "joined to an identical request being computed).", value=stats.misses)
        yield _per_tier(CounterMetricFamily("seesay_cache_stores", "Answers written to the cache, by tier.",
                                            labels=["tier"]), tiers, stats.stores)
        yield _per_tier(CounterMetricFamily("seesay_cache_errors", "Failed or timed-out cache calls, by tier.",
                                            labels=["tier"]), tiers[1:], stats.errors)
        breaker = GaugeMetricFamily("seesay_cache_breaker_state", "Circuit breaker of a shared tier: 1 for its state.",
                                    labels=["tier", "state"])
        if stats.redis is not None:
            for state in BreakerState:
                breaker.add_metric([tiers[1], state.value], 1 if state.value == stats.redis.state else 0)
        yield breaker


def _per_tier(family: CounterMetricFamily, tiers: list[str], counts: Mapping[str, int]) -> CounterMetricFamily:
    for tier in tiers:
        family.add_metric([tier], counts.get(tier, 0))
    return family


class SafetyMetrics:
    """The safety gate's observer: blocks and screening time as Prometheus metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.blocks = Counter("seesay_safety_blocks", "Blocked images, prompts and answers, by rule or label.",
                              ["where", "rule"], registry=registry)
        self.check_seconds = Histogram("seesay_safety_check_seconds", "Time one screen took.", ["where"],
                                       buckets=_CHECK_BUCKETS, registry=registry)

    def on_check(self, where: Where, seconds: float) -> None:
        self.check_seconds.labels(where=where).observe(seconds)

    def on_block(self, event: BlockEvent) -> None:
        self.blocks.labels(where=event.where, rule=event.rule).inc()


class Metrics:
    """The service's metrics; see the module docstring."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("seesay_requests", "HTTP requests by route and status.", ["route", "status"],
                                registry=r)
        self.latency = Histogram("seesay_request_duration_seconds", "Time from request to last byte.", ["route"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.first_token = Histogram("seesay_time_to_first_token_seconds", "Time from request to first answer text.",
                                     buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("seesay_queue_depth", "Requests admitted and waiting to be generated.", registry=r)
        self.running = Gauge("seesay_running_requests", "Requests in the batch being generated.", registry=r)
        self.batch_size = Histogram("seesay_batch_size", "Requests per engine batch.", buckets=_BATCH_BUCKETS,
                                    registry=r)
        self.cancelled = Counter("seesay_cancelled_requests", "Requests whose client went away, by stage.",
                                 ["stage"], registry=r)
        self.prompt_tokens = Counter("seesay_prompt_tokens", "Prompt tokens processed (image tokens included).",
                                     registry=r)
        self.generated_tokens = Counter("seesay_generated_tokens", "Answer tokens generated.", registry=r)
        self.cache = CacheCollector()
        r.register(self.cache)
        self.safety = SafetyMetrics(r)

    def watch(self, service: AnswerService) -> None:
        """Read queue depth, running requests and the response cache's counters from ``service`` at every scrape."""
        self.queue_depth.set_function(lambda: service.queue_depth)
        self.running.set_function(lambda: service.running)
        self.cache.cache = service.cache

    def observe_batch(self, size: int) -> None:
        self.batch_size.observe(size)

    def observe_cancel(self, stage: str) -> None:
        self.cancelled.labels(stage=stage).inc()

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def observe_answer(self, usage: Usage, first_token_s: float | None, *, cached: bool = False) -> None:
        """One answer sent; a ``cached`` one (replayed, not generated for this request) cost no tokens."""
        if not cached:
            self.prompt_tokens.inc(usage.prompt_tokens)
            self.generated_tokens.inc(usage.completion_tokens)
        if first_token_s is not None:
            self.first_token.observe(first_token_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
