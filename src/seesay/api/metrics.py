"""Prometheus metrics, in a registry owned by one app (never the process-global one).

``seesay_requests_total{route,status}``, ``seesay_request_duration_seconds{route}``,
``seesay_time_to_first_token_seconds``, ``seesay_queue_depth``, ``seesay_running_requests``,
``seesay_batch_size``, ``seesay_cancelled_requests_total{stage}`` (clients that went away while
their request was ``queued`` or ``running``), ``seesay_prompt_tokens_total`` and
``seesay_generated_tokens_total``.
Routes are labelled by their path template; unknown paths share the label ``unmatched`` so
a scanner cannot blow up the label set.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from seesay.scheduler import Scheduler
from seesay.types import Usage

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


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

    def watch(self, scheduler: Scheduler) -> None:
        """Read queue depth and running requests from ``scheduler`` at every scrape."""
        self.queue_depth.set_function(lambda: scheduler.queue_depth)
        self.running.set_function(lambda: scheduler.running)

    def observe_batch(self, size: int) -> None:
        self.batch_size.observe(size)

    def observe_cancel(self, stage: str) -> None:
        self.cancelled.labels(stage=stage).inc()

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def observe_answer(self, usage: Usage, first_token_s: float | None) -> None:
        self.prompt_tokens.inc(usage.prompt_tokens)
        self.generated_tokens.inc(usage.completion_tokens)
        if first_token_s is not None:
            self.first_token.observe(first_token_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
