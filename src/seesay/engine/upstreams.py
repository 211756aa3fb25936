"""Which upstream answers a request: least outstanding requests, behind per-upstream circuit breakers.

Contract, for the remote engine's event loop (nothing here is thread-safe; one loop owns it):

* :meth:`UpstreamPool.choose` picks, among the upstreams not yet tried for this request whose
  breaker allows a call, the one with the fewest requests in flight (ties go round-robin, so
  equal upstreams share the load evenly). It returns ``None`` when no upstream may be called.
* The caller holds the chosen upstream with :meth:`Upstream.track` for the whole request and
  reports the outcome to its breaker (:class:`~seesay.cache.breaker.CircuitBreaker`, the same
  breaker the Redis tier uses): ``failure_threshold`` consecutive failures open it, and after
  ``cooldown_s`` one call (a request or a health probe) goes through half-open and closes it
  again on success.
* :meth:`UpstreamPool.describe` says, for errors and ``/ready``, where every upstream stands.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from seesay.cache.breaker import BreakerConfig, BreakerState, CircuitBreaker


@dataclass(eq=False)
class Upstream:
    """One OpenAI-compatible server: its keep-alive client, breaker and load.

    Attributes:
        url: Base URL without ``/v1``.
        client: The connection pool to it (closed by the engine).
        breaker: Its circuit breaker.
        outstanding: Requests in flight on it now.
        last_error: Why its last call failed ("" after a success).
        served: Requests sent to it since start-up.
    """

    url: str
    client: httpx.AsyncClient
    breaker: CircuitBreaker
    outstanding: int = 0
    last_error: str = ""
    served: int = 0

    @contextmanager
    def track(self) -> Iterator[None]:
        """Count one request in flight for the duration of the block."""
        self.outstanding += 1
        self.served += 1
        try:
            yield
        finally:
            self.outstanding -= 1

    def succeeded(self) -> None:
        self.last_error = ""
        self.breaker.record_success()

    def failed(self, reason: str) -> None:
        self.last_error = reason
        self.breaker.record_failure()

    def mark_down(self, reason: str) -> None:
        """Open the breaker now (the upstream was unreachable at start-up); it is probed after the cool-down."""
        while self.breaker.state is not BreakerState.OPEN:
            self.failed(reason)

    def describe(self) -> str:
        state = self.breaker.state
        if state is BreakerState.CLOSED:
            return f"{self.url} (up, {self.outstanding} in flight, {self.served} served)"
        return f"{self.url} ({'down' if state is BreakerState.OPEN else 'probing'}: {self.last_error or 'failing'})"


def base_url(url: str) -> str:
    """``url`` without a trailing slash or ``/v1`` (both forms are how operators write it)."""
    url = url.rstrip("/")
    return url.removesuffix("/v1")


class UpstreamPool:
    """The upstreams of one remote engine (see module docstring).

    Args:
        upstreams: In configured order.
    """

    def __init__(self, upstreams: Sequence[Upstream]) -> None:
        if not upstreams:
            raise ValueError("an upstream pool needs at least one upstream")
        self.upstreams = list(upstreams)
        self._turn = itertools.count()

    def choose(self, tried: Sequence[Upstream] = ()) -> Upstream | None:
        """The least loaded upstream not in ``tried`` whose breaker allows a call, or ``None``."""
        start = next(self._turn) % len(self.upstreams)
        rotated = self.upstreams[start:] + self.upstreams[:start]
        for upstream in sorted(rotated, key=lambda u: u.outstanding):  # stable: ties keep the rotation
            if upstream not in tried and upstream.breaker.allow():
                return upstream
        return None

    def any_available(self) -> bool:
        """Whether some upstream's breaker is closed (requests would be sent to it now)."""
        return any(u.breaker.state is BreakerState.CLOSED for u in self.upstreams)

    def describe(self) -> str:
        return "; ".join(upstream.describe() for upstream in self.upstreams)


def make_upstream(url: str, client: httpx.AsyncClient, breaker_config: BreakerConfig,
                  clock: Callable[[], float]) -> Upstream:
    """An upstream at ``url`` with a fresh, closed breaker on ``clock``."""
    return Upstream(base_url(url), client, CircuitBreaker(breaker_config, clock=clock))
