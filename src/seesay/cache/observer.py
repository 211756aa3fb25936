"""How the cache reports what it does, without knowing who listens.

Contract: the cache calls a :class:`CacheObserver` synchronously, on the event loop, for
every lookup outcome, store, tier error and circuit-breaker transition. Observer methods
must be cheap and must not raise; :class:`ObserverFanout` shields the cache from one that
does. The API layer binds an observer to Prometheus counters; this package never imports
prometheus. Tier names are ``"memory"`` and ``"redis"``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from typing import Protocol

log = logging.getLogger(__name__)


class CacheObserver(Protocol):
    """Receives cache events (see the module docstring)."""

    def on_hit(self, tier: str) -> None:
        """A lookup was answered by ``tier``."""

    def on_miss(self) -> None:
        """A lookup found nothing; the answer is computed (or joined while being computed)."""

    def on_store(self, tier: str) -> None:
        """An answer was written to ``tier`` (a promotion from L2 to L1 included)."""

    def on_error(self, tier: str) -> None:
        """A call to ``tier`` failed or timed out; the request carried on without it."""

    def on_breaker_state(self, tier: str, state: str) -> None:
        """``tier``'s circuit breaker moved to ``state`` (``closed``, ``open``, ``half_open``)."""


class NullObserver:
    """Ignores every event; subclass it to listen to a few."""

    def on_hit(self, tier: str) -> None:
        pass

    def on_miss(self) -> None:
        pass

    def on_store(self, tier: str) -> None:
        pass

    def on_error(self, tier: str) -> None:
        pass

    def on_breaker_state(self, tier: str, state: str) -> None:
        pass


class CountingObserver(NullObserver):
    """Counts events in memory; what ``ResponseCache.stats()`` reports."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.misses = 0
        self.stores: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.breaker_states: dict[str, str] = {}

    def on_hit(self, tier: str) -> None:
        self.hits[tier] += 1

    def on_miss(self) -> None:
        self.misses += 1

    def on_store(self, tier: str) -> None:
        self.stores[tier] += 1

    def on_error(self, tier: str) -> None:
        self.errors[tier] += 1

    def on_breaker_state(self, tier: str, state: str) -> None:
        self.breaker_states[tier] = state


class ObserverFanout:
    """Passes every event to several observers; one that raises is logged and skipped."""

    def __init__(self, observers: Iterable[CacheObserver]) -> None:
        self.observers = tuple(observers)

    def _each(self, method: str, *args: str) -> None:
        for observer in self.observers:
            try:
                getattr(observer, method)(*args)
            except Exception:  # an observer bug must never fail a request
                log.exception("cache observer %r failed in %s", observer, method)

    def on_hit(self, tier: str) -> None:
        self._each("on_hit", tier)

    def on_miss(self) -> None:
        self._each("on_miss")

    def on_store(self, tier: str) -> None:
        self._each("on_store", tier)

    def on_error(self, tier: str) -> None:
        self._each("on_error", tier)

    def on_breaker_state(self, tier: str, state: str) -> None:
        self._each("on_breaker_state", tier, state)
