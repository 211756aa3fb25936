"""A circuit breaker: stop calling a failing dependency, probe for its return.

Contract, for one dependency (the shared Redis tier):

* ``closed``: every call is allowed; ``failure_threshold`` consecutive failures open it.
* ``open``: no call is allowed until ``cooldown_s`` have passed since it opened; then the
  next :meth:`CircuitBreaker.allow` moves it to ``half_open`` and lets that one call through.
* ``half_open``: only that probe is in flight, every other call is refused; the probe's
  success closes the breaker, its failure opens it again for another cool-down.

The breaker makes no calls itself: the caller asks :meth:`~CircuitBreaker.allow` before a
call and reports :meth:`~CircuitBreaker.record_success` or
:meth:`~CircuitBreaker.record_failure` after it. State changes go to an optional listener
(metrics). The clock is injectable so tests never sleep. Not thread-safe: use it from one
event loop.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerConfig:
    """When the breaker opens and how long it waits before probing.

    Attributes:
        failure_threshold: Consecutive failures that open a closed breaker.
        cooldown_s: Seconds an open breaker refuses calls before it lets a probe through.
    """

    failure_threshold: int = 3
    cooldown_s: float = 5.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.cooldown_s < 0:
            raise ValueError(
                f"breaker needs failure_threshold >= 1 and cooldown_s >= 0, got "
                f"{self.failure_threshold} and {self.cooldown_s}"
            )


class CircuitBreaker:
    """See the module docstring.

    Args:
        config: Threshold and cool-down.
        clock: Monotonic seconds.
        on_change: Called with the new state after every transition.
    """

    def __init__(
        self,
        config: BreakerConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        self.config = config or BreakerConfig()
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def allow(self) -> bool:
        """Whether a call may go ahead now; may move ``open`` to ``half_open`` (see above)."""
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN:
            if self._clock() - self._opened_at < self.config.cooldown_s:
                return False
            self._set(BreakerState.HALF_OPEN)
        if self._probing:
            return False
        self._probing = True
        return True

    def record_success(self) -> None:
        """The allowed call succeeded."""
        self._failures = 0
        self._probing = False
        if self._state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        """The allowed call failed or timed out."""
        self._failures += 1
        self._probing = False
        if self._state is BreakerState.HALF_OPEN or self._failures >= self.config.failure_threshold:
            self._opened_at = self._clock()
            if self._state is not BreakerState.OPEN:
                self._set(BreakerState.OPEN)

    def record_abandoned(self) -> None:
        """The allowed call ended without a verdict (its caller was cancelled): free the probe slot."""
        self._probing = False

    def _set(self, state: BreakerState) -> None:
        self._state = state
        if self._on_change is not None:
            self._on_change(state)
