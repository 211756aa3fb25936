"""RedisGuard: calls to shared state fall back instead of failing, and an outage is logged once."""

from __future__ import annotations

import asyncio
import logging

import pytest

from fakes import FakeClock
from seesay.cache.breaker import BreakerConfig, BreakerState
from seesay.cache.guard import RedisGuard


class Redis:
    """Stands for a Redis that is up or down."""

    def __init__(self) -> None:
        self.up = True
        self.calls = 0

    async def read(self) -> str:
        self.calls += 1
        if not self.up:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")
        return "value"


def guard(clock: FakeClock, timeout_s: float = 5.0) -> RedisGuard:
    return RedisGuard("rate limit", "counting requests per replica", "redis://127.0.0.1:6390/0",
                      timeout_s=timeout_s, breaker=BreakerConfig(failure_threshold=2, cooldown_s=5.0), clock=clock)


async def test_an_outage_falls_back_logs_one_warning_and_one_recovery(caplog: pytest.LogCaptureFixture) -> None:
    clock, redis = FakeClock(), Redis()
    shared = guard(clock)
    assert await shared.call(redis.read) == (True, "value")
    redis.up = False
    with caplog.at_level(logging.INFO, logger="seesay.cache.guard"):
        results = [await shared.call(redis.read) for _ in range(5)]
        assert results == [(False, None)] * 5 and shared.outage
        assert redis.calls == 1 + 2  # the breaker opened after two failures: the rest never reached Redis
        assert shared.breaker.state is BreakerState.OPEN
        clock.advance(5.0)
        assert await shared.call(redis.read) == (False, None)  # the probe fails: still one warning
        redis.up = True
        clock.advance(5.0)
        assert await shared.call(redis.read) == (True, "value")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "unavailable for the rate limit" in warnings[0] and "counting requests per replica" in warnings[0]
    assert "Connection refused" in warnings[0] and "check that Redis is running" in warnings[0]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
        "redis at redis://127.0.0.1:6390/0 answers again: the rate limit is shared by every replica again"]
    assert not shared.outage
    assert shared.counts() == {"shared": 2, "fallback": 6, "failures": 3}


async def test_a_call_over_the_time_box_falls_back() -> None:
    shared = guard(FakeClock(), timeout_s=0.001)
    never = asyncio.Event()
    assert await shared.call(never.wait) == (False, None)
    assert shared.outage and shared.counts()["failures"] == 1


async def test_a_cancelled_caller_leaves_no_verdict() -> None:
    shared = guard(FakeClock())
    started, never = asyncio.Event(), asyncio.Event()

    async def hang() -> None:
        started.set()
        await never.wait()

    task = asyncio.ensure_future(shared.call(hang))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not shared.outage and shared.breaker.consecutive_failures == 0


def test_the_time_box_must_be_positive() -> None:
    with pytest.raises(ValueError, match="time-box must be positive"):
        guard(FakeClock(), timeout_s=0)
