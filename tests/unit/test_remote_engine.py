"""The remote engine's balancing, circuit breakers, retries and start-up checks, against in-process upstreams.

Upstreams are :class:`openai_upstreams.FakeUpstream` behind ``httpx.MockTransport``; breakers run
on a :class:`fakes.FakeClock`; the retry back-off waits nothing. Nothing sleeps.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from fakes import FakeClock, make_request, wait_until
from openai_upstreams import VLLM_MODEL, FakeUpstream, FakeUpstreams
from seesay.cache.breaker import BreakerConfig, BreakerState
from seesay.engine.adapters import AdapterSource
from seesay.engine.config import RemoteEngineConfig
from seesay.engine.remote import RemoteEngine
from seesay.engine.upstreams import UpstreamPool, make_upstream
from seesay.errors import (
    AdapterLoadError,
    ModelLoadError,
    ModelNotFoundError,
    ServerBusyError,
    UpstreamUnavailableError,
)
from seesay.scheduler import Scheduler, SchedulerLimits, Submission
from seesay.types import GenerationResult


async def no_wait(seconds: float) -> None:
    return None


@contextmanager
def remote(*upstreams: FakeUpstream, clock: FakeClock | None = None, **options: object) -> Iterator[RemoteEngine]:
    config = RemoteEngineConfig(tuple(u.url for u in upstreams), upstream_model=VLLM_MODEL, failure_threshold=2,
                                cooldown_s=10, health_interval_s=3600, **options)  # type: ignore[arg-type]
    engine = RemoteEngine(config, transport=FakeUpstreams(*upstreams).transport, clock=clock or FakeClock(),
                          sleep=no_wait)
    try:
        yield engine
    finally:
        engine.close()


def ask(engine: RemoteEngine, n: int = 1) -> list[GenerationResult | Exception]:
    return list(engine.generate_rows([engine.prepare(make_request(temperature=0)) for _ in range(n)]))


# --- least outstanding requests --------------------------------------------------------------


def pool(n: int) -> UpstreamPool:
    client = httpx.AsyncClient()
    return UpstreamPool([make_upstream(f"http://u{i}:8000", client, BreakerConfig(), FakeClock()) for i in range(n)])


def test_the_upstream_with_fewest_requests_in_flight_is_chosen() -> None:
    upstreams = pool(3)
    a, b, c = upstreams.upstreams
    a.outstanding, b.outstanding, c.outstanding = 2, 0, 1
    assert upstreams.choose() is b
    assert upstreams.choose(tried=[b]) is c


def test_equal_upstreams_share_evenly() -> None:
    upstreams = pool(2)
    picks = [upstreams.choose() for _ in range(10)]
    assert picks.count(upstreams.upstreams[0]) == picks.count(upstreams.upstreams[1]) == 5


def test_a_slow_upstream_gets_fewer_requests() -> None:
    """One request arrives per tick; the fast upstream answers in 1 tick, the slow one in 4."""
    upstreams = pool(2)
    fast, slow = upstreams.upstreams
    duration = {fast.url: 1, slow.url: 4}
    in_flight: list[tuple[int, object]] = []  # (tick it ends, the upstream's track() context)
    for tick in range(200):
        for ends, held in [item for item in in_flight if item[0] <= tick]:
            held.__exit__(None, None, None)  # type: ignore[attr-defined]
            in_flight.remove((ends, held))
        chosen = upstreams.choose()
        assert chosen is not None
        held = chosen.track()
        held.__enter__()
        in_flight.append((tick + duration[chosen.url], held))
    assert slow.served < fast.served / 2


def test_rows_of_a_batch_spread_over_the_upstreams() -> None:
    one, two = FakeUpstream("one"), FakeUpstream("two")
    with remote(one, two) as engine:
        results = ask(engine, 8)
        assert all(isinstance(r, GenerationResult) and r.text == "a red shirt" for r in results)
        assert len(one.bodies) == len(two.bodies) == 4


async def test_through_the_scheduler_a_held_upstream_gets_no_more_while_the_other_answers() -> None:
    """An answer the slow upstream holds neither holds up the others (concurrent batches) nor draws more
    requests to it (least outstanding): every later request goes to the fast one."""
    slow, fast = FakeUpstream("slow", hold=threading.Event()), FakeUpstream("fast")
    with remote(slow, fast, concurrent_batches=4) as engine:
        sched = Scheduler(engine, SchedulerLimits(max_batch_size=1, max_wait_s=0))
        await sched.start()
        first = await submit(sched)  # the first tie goes to the first upstream listed
        await wait_until(lambda: len(slow.bodies) == 1)
        later = [await (await submit(sched)).result() for _ in range(6)]
        assert [r.text for r in later] == ["a red shirt"] * 6 and len(slow.bodies) == 1
        assert slow.hold is not None
        slow.hold.set()
        assert (await first.result()).text == "a red shirt"
        await sched.stop()


async def submit(sched: Scheduler) -> Submission:
    async with sched.reserve() as place:
        prepared = await asyncio.to_thread(sched.engine.prepare, make_request(temperature=0))
        return place.enqueue(prepared)


# --- retries only before the first text ---------------------------------------------------------


def test_a_failure_before_the_first_text_is_retried_on_another_upstream() -> None:
    broken, good = FakeUpstream("broken", mode="error", status=500), FakeUpstream("good")
    with remote(broken, good) as engine:
        results = ask(engine, 4)
        assert all(isinstance(r, GenerationResult) and r.text == "a red shirt" for r in results)
        assert len(good.bodies) == 4 and 1 <= len(broken.bodies) <= 2  # its breaker opened after 2 failures


def test_a_failure_after_text_was_delivered_is_not_retried() -> None:
    breaking, good = FakeUpstream("breaking", mode="break"), FakeUpstream("good")
    with remote(breaking, good) as engine:
        delivered: list[str] = []

        class Observer:
            def on_text(self, row: int, delta: str) -> None:
                delivered.append(delta)

            def is_cancelled(self, row: int) -> bool:
                return False

        good.mode = "down"  # make sure the row goes to 'breaking' first: the other refuses connections
        [outcome] = engine.generate_rows([engine.prepare(make_request())], Observer())
        assert isinstance(outcome, UpstreamUnavailableError)
        assert "after the answer had begun" in outcome.message and breaking.url in outcome.message
        assert delivered == ["a"]
        assert len(good.bodies) == 0


def test_a_busy_upstream_is_tried_elsewhere_without_opening_its_breaker() -> None:
    busy, good = FakeUpstream("busy", mode="error", status=429), FakeUpstream("good")
    with remote(busy, good) as engine:
        assert all(isinstance(r, GenerationResult) for r in ask(engine, 6))
        assert engine._pool.upstreams[0].breaker.state is BreakerState.CLOSED


def test_when_every_upstream_is_busy_the_caller_is_told_to_retry() -> None:
    with remote(FakeUpstream("a", mode="error", status=429), FakeUpstream("b", mode="error", status=503)) as engine:
        [outcome] = ask(engine)
        assert isinstance(outcome, ServerBusyError) and outcome.status == 503 and "busy" in outcome.message


# --- circuit breakers, all down, recovery --------------------------------------------------------


def test_breaker_opens_skips_the_upstream_then_a_half_open_probe_closes_it() -> None:
    clock = FakeClock()
    flaky, good = FakeUpstream("flaky", mode="error", status=502), FakeUpstream("good")
    with remote(flaky, good, clock=clock) as engine:
        ask(engine, 4)
        breaker = engine._pool.upstreams[0].breaker
        assert breaker.state is BreakerState.OPEN
        calls = len(flaky.bodies)
        assert all(isinstance(r, GenerationResult) for r in ask(engine, 4))
        assert len(flaky.bodies) == calls  # open: nothing is sent to it
        flaky.mode = "ok"
        clock.advance(10)
        assert all(isinstance(r, GenerationResult) for r in ask(engine, 4))
        assert breaker.state is BreakerState.CLOSED and len(flaky.bodies) > calls


def test_a_failed_half_open_probe_opens_the_breaker_again() -> None:
    clock = FakeClock()
    flaky, good = FakeUpstream("flaky", mode="down"), FakeUpstream("good")
    with remote(flaky, good, clock=clock) as engine:
        breaker = engine._pool.upstreams[0].breaker
        assert breaker.state is BreakerState.OPEN  # unreachable at start-up
        clock.advance(10)
        engine.check_upstreams()  # the half-open probe fails
        assert breaker.state is BreakerState.OPEN
        clock.advance(9)
        engine.check_upstreams()
        assert flaky.model_probes == 0 and breaker.state is BreakerState.OPEN


def test_all_upstreams_down_is_a_503_that_says_so_and_recovery_follows() -> None:
    clock = FakeClock()
    a, b = FakeUpstream("a"), FakeUpstream("b")
    with remote(a, b, clock=clock) as engine:
        a.mode = b.mode = "down"
        first = ask(engine, 2)
        assert all(isinstance(r, UpstreamUnavailableError) and r.status == 503 for r in first)
        assert not engine.health().ok
        [outcome] = ask(engine)
        assert isinstance(outcome, UpstreamUnavailableError)
        assert "no upstream can take the request" in outcome.message
        assert a.url in outcome.message and b.url in outcome.message and "down" in outcome.message
        b.mode = "ok"
        clock.advance(10)
        engine.check_upstreams()
        assert engine.health().ok and b.url in engine.health().detail
        assert [r.text for r in ask(engine, 2)] == ["a red shirt"] * 2  # type: ignore[union-attr]


# --- start-up ----------------------------------------------------------------------------------


def test_start_up_fails_when_an_upstream_serves_another_model() -> None:
    context = remote(FakeUpstream("a"), FakeUpstream("b", models=("other",)))
    with pytest.raises(ModelLoadError, match=r"does not serve the model 'Qwen/Qwen3-VL-8B-Instruct'.*remote_model"):
        context.__enter__()


def test_start_up_fails_when_no_upstream_can_be_reached() -> None:
    context = remote(FakeUpstream("a", mode="down"))
    with pytest.raises(ModelLoadError, match=r"no remote upstream can be reached.*http://a:8000"):
        context.__enter__()


# --- streaming contract ------------------------------------------------------------------------


class Recorder:
    def __init__(self, cancel_after: int | None = None) -> None:
        self.deltas: list[str] = []
        self.cancel_after = cancel_after

    def on_text(self, row: int, delta: str) -> None:
        self.deltas.append(delta)

    def is_cancelled(self, row: int) -> bool:
        return self.cancel_after is not None and len(self.deltas) >= self.cancel_after


def test_stop_strings_hold_even_when_the_upstream_ignores_them() -> None:
    with remote(FakeUpstream("a", answer="a red shirt and blue jeans")) as engine:
        recorder = Recorder()
        [result] = engine.generate([engine.prepare(make_request(stop=("shirt",)))], recorder)
        assert result.text == "a red " == "".join(recorder.deltas) and result.finish_reason == "stop"


def test_a_cancelled_row_stops_reading() -> None:
    with remote(FakeUpstream("a", answer="one two three four")) as engine:
        recorder = Recorder(cancel_after=1)
        [result] = engine.generate([engine.prepare(make_request())], recorder)
        assert result.finish_reason == "cancelled" and recorder.deltas == ["one"]


def test_no_first_text_within_the_time_limit_is_an_upstream_failure() -> None:
    with remote(FakeUpstream("a", mode="stall"), first_token_timeout_s=0.05, max_attempts=1) as engine:
        [outcome] = ask(engine)
        assert isinstance(outcome, UpstreamUnavailableError)
        assert "sent no answer text within 0.05 s (first_token_timeout_s)" in outcome.message
        assert engine._pool.upstreams[0].breaker.consecutive_failures == 1


def test_a_stream_that_goes_silent_fails_after_its_idle_limit() -> None:
    with remote(FakeUpstream("a", mode="stall-later"), idle_timeout_s=0.05) as engine:
        recorder = Recorder()
        [outcome] = engine.generate_rows([engine.prepare(make_request())], recorder)
        assert isinstance(outcome, UpstreamUnavailableError) and recorder.deltas == ["a"]
        assert "went silent for 0.05 s (idle_timeout_s)" in outcome.message


def test_a_caller_that_leaves_before_the_first_text_closes_the_stream() -> None:
    with remote(FakeUpstream("a", mode="stall")) as engine:  # first_token_timeout_s: 120 s
        [result] = engine.generate([engine.prepare(make_request())], Recorder(cancel_after=0))
        assert result.finish_reason == "cancelled" and result.text == ""
        assert engine._pool.upstreams[0].breaker.state is BreakerState.CLOSED


def test_the_remote_engine_needs_no_torch() -> None:
    code = ("import sys, seesay.cli, seesay.api.app, seesay.engine.remote, seesay.config; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- LoRA adapters served by the upstreams ----------------------------------------------------


def test_an_adapter_is_the_upstreams_lora_model_and_requests_name_it() -> None:
    first = FakeUpstream("u0", models=(VLLM_MODEL, "shop-lora"))
    second = FakeUpstream("u1", models=(VLLM_MODEL, "shop-lora"))
    with remote(first, second) as engine:
        loaded = engine.load_adapter(AdapterSource("shop", "shop-lora"))
        rows = [engine.prepare(make_request(temperature=0, adapter=adapter)) for adapter in ("shop", None)]
        assert all(isinstance(r, GenerationResult) for r in engine.generate_rows(rows))
        sent = sorted(body["model"] for body in first.bodies + second.bodies)
        assert sent == sorted(["shop-lora", VLLM_MODEL])
        with pytest.raises(AdapterLoadError, match="already loaded"):
            engine.load_adapter(AdapterSource("shop", "shop-lora"))
        engine.unload_adapter("shop")
        with pytest.raises(ModelNotFoundError, match="'shop' is not loaded"):
            engine.prepare(make_request(adapter="shop"))
        with pytest.raises(ModelNotFoundError, match="cannot be found"):
            engine.unload_adapter("shop")
    assert loaded.path == "shop-lora" and len(loaded.fingerprint) == 64


def test_an_adapter_some_upstream_does_not_serve_is_refused_naming_it() -> None:
    refused = pytest.raises(AdapterLoadError, match=r"http://u1:8000 do not serve the LoRA adapter 'shop-lora'")
    with remote(FakeUpstream("u0", models=(VLLM_MODEL, "shop-lora")), FakeUpstream("u1")) as engine, refused:
        engine.load_adapter(AdapterSource("shop", "shop-lora"))


def test_the_fingerprint_follows_where_the_upstream_serves_the_adapter_from() -> None:
    fingerprints = []
    for models in ((VLLM_MODEL, "shop-lora"), (VLLM_MODEL, "shop-lora", "other")):
        with remote(FakeUpstream("u0", models=models)) as engine:
            fingerprints.append(engine.load_adapter(AdapterSource("shop", "shop-lora")).fingerprint)
    assert fingerprints[0] == fingerprints[1]  # the same card, whatever else the upstream serves
    moved = FakeUpstream("u0", models=(VLLM_MODEL, "shop-lora"))
    moved.roots = {"shop-lora": "/adapters/shop-v2"}
    with remote(moved) as engine:
        assert engine.load_adapter(AdapterSource("shop", "shop-lora")).fingerprint != fingerprints[0]
