"""The circuit breaker's state machine, driven by an injected clock."""

from __future__ import annotations

import pytest

from fakes import FakeClock
from seesay.cache.breaker import BreakerConfig, BreakerState, CircuitBreaker


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def transitions() -> list[BreakerState]:
    return []


@pytest.fixture
def breaker(clock: FakeClock, transitions: list[BreakerState]) -> CircuitBreaker:
    return CircuitBreaker(BreakerConfig(failure_threshold=3, cooldown_s=5.0), clock=clock,
                          on_change=transitions.append)


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()


def test_opens_after_consecutive_failures_only(breaker: CircuitBreaker) -> None:
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # resets the count
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN


def test_open_refuses_until_the_cooldown_then_lets_one_probe_through(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow()  # the probe is in flight: nobody else goes


def test_a_successful_probe_closes(breaker: CircuitBreaker, clock: FakeClock, transitions: list[BreakerState]) -> None:
    trip(breaker)
    clock.now += 5
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow() and breaker.allow()
    assert transitions == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


def test_a_failed_probe_reopens_for_another_cooldown(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.now += 5
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()


def test_an_abandoned_probe_frees_the_slot(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.now += 5
    assert breaker.allow()
    breaker.record_abandoned()
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()


def test_invalid_config() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        BreakerConfig(failure_threshold=0)
