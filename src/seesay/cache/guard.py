"""Calls to shared Redis state that fall back instead of failing: a time-box, a breaker, one log per outage.

Contract, for one user of Redis (the rate limit, the shared near-duplicate index):

* :meth:`RedisGuard.call` runs one call under ``asyncio.wait_for`` (``timeout_s``) and a
  :class:`~seesay.cache.breaker.CircuitBreaker`. It returns ``(True, value)`` when Redis
  answered and ``(False, None)`` when it did not (error, timeout, open breaker); the caller
  then uses its per-replica fallback. It never raises a client error; a cancelled caller's
  cancellation propagates and leaves the breaker's verdict open.
* An outage is logged once: one warning at the first failed call (naming what the caller
  falls back to), one info line at the first success after it, whatever happens in between.
* :attr:`RedisGuard.outage` says whether the last call found Redis unavailable;
  :meth:`RedisGuard.counts` how many calls went to Redis, fell back, or failed.

The breaker's clock is injectable so tests never sleep.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from seesay.cache.breaker import BreakerConfig, CircuitBreaker

log = logging.getLogger(__name__)
T = TypeVar("T")


class RedisGuard:
    """See the module docstring.

    Args:
        what: What the calls are for, in log lines ("rate limit").
        fallback: What the service does meanwhile, in the outage warning ("counting per replica").
        where: The Redis address, password redacted.
        timeout_s: Time-box of one call.
        breaker: When to stop calling Redis and when to probe again.
        clock: Monotonic seconds for the breaker.
    """

    def __init__(self, what: str, fallback: str, where: str, *, timeout_s: float,
                 breaker: BreakerConfig | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if timeout_s <= 0:
            raise ValueError(f"the {what} Redis time-box must be positive, got {timeout_s}")
        self.what = what
        self.fallback = fallback
        self.where = where
        self.timeout_s = timeout_s
        self.breaker = CircuitBreaker(breaker, clock=clock)
        self.outage = False
        self._counts = dict.fromkeys(("shared", "fallback", "failures"), 0)

    async def call(self, operation: Callable[[], Awaitable[T]]) -> tuple[bool, T | None]:
        """Run ``operation`` if the breaker allows it: ``(answered, value)``; see the module docstring."""
        if not self.breaker.allow():
            self._counts["fallback"] += 1
            return False, None
        try:
            value = await asyncio.wait_for(operation(), self.timeout_s)
        except asyncio.CancelledError:
            self.breaker.record_abandoned()
            raise
        except Exception as exc:  # any client error or timeout means "use the fallback", never a failed request
            self._failed(exc)
            return False, None
        self.breaker.record_success()
        self._counts["shared"] += 1
        if self.outage:
            self.outage = False
            log.info("redis at %s answers again: the %s is shared by every replica again", self.where, self.what)
        return True, value

    def counts(self) -> dict[str, int]:
        """Calls answered by Redis (``shared``), served by the fallback (``fallback``), failed (``failures``)."""
        return dict(self._counts)

    def _failed(self, exc: Exception) -> None:
        self.breaker.record_failure()
        self._counts["failures"] += 1
        self._counts["fallback"] += 1
        reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        if not self.outage:
            self.outage = True
            log.warning("redis at %s is unavailable for the %s (%s); %s until it answers again, probing every "
                        "%.0f s; check that Redis is running and reachable", self.where, self.what, reason,
                        self.fallback, self.breaker.config.cooldown_s)
        else:
            log.debug("redis call for the %s failed again: %s", self.what, reason)
