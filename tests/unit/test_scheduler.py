"""The batcher (a plain function, driven here by a scripted queue on a fake clock) and the scheduler around it.

Events are ordered by events: the fake engine's gate and pace, and waits on observable state,
never by sleeping.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Hashable
from dataclasses import dataclass

import pytest

from fakes import FAIL_GENERATE, FAIL_PREPARE, FakeClock, FakeEngine, fake_answer, make_request, wait_until
from seesay.batching import collect_batch
from seesay.errors import (
    EngineFailedError,
    InvalidRequestError,
    QueueFullError,
    QueueTimeoutError,
    RequestCancelledError,
    ShuttingDownError,
)
from seesay.scheduler import Scheduler, SchedulerLimits, Submission
from seesay.types import GenerationRequest, GenerationResult

# --- collect_batch over a scripted queue on a fake clock ---------------------------------------


@dataclass
class Item:
    name: str
    batch_key: Hashable = None
    live: bool = True

    def is_live(self, now: float) -> bool:
        return self.live


class ScriptedQueue:
    """Items that arrive at set times of a :class:`FakeClock`; waiting on it moves the clock, never sleeps.

    ``get(timeout=t)`` returns the next item if it arrives within ``t`` (the clock moves to its
    arrival), else moves the clock by ``t`` and raises ``queue.Empty``, as a real queue would.
    """

    def __init__(self, clock: FakeClock, *arrivals: tuple[float, Item | None]) -> None:
        self.clock = clock
        self.pending = sorted(arrivals, key=lambda arrival: arrival[0])

    def get(self, block: bool = True, timeout: float | None = None) -> Item | None:
        wait = timeout if block and timeout is not None else 0.0
        if self.pending and self.pending[0][0] <= self.clock.now + wait:
            arrived_at, item = self.pending.pop(0)
            self.clock.now = max(self.clock.now, arrived_at)
            return item
        self.clock.advance(wait)
        raise queue.Empty

    def get_nowait(self) -> Item | None:
        return self.get(block=False)

    def left(self) -> list[str]:
        return [item.name for _, item in self.pending if item is not None]


def at_start(clock: FakeClock, *items: Item | None) -> ScriptedQueue:
    return ScriptedQueue(clock, *((0.0, item) for item in items))


def names(items: list[Item]) -> list[str]:
    return [item.name for item in items]


def test_batch_is_capped_at_max_batch_size_and_the_rest_stays_queued() -> None:
    clock = FakeClock()
    q = at_start(clock, *(Item(str(i)) for i in range(5)))
    draw = collect_batch(q, max_batch_size=3, max_wait_s=0, clock=clock)
    assert names(draw.batch) == ["0", "1", "2"]
    assert q.left() == ["3", "4"] and not draw.dropped and not draw.deferred


def test_batcher_waits_up_to_max_wait_for_more_requests() -> None:
    clock = FakeClock()
    q = ScriptedQueue(clock, (0.0, Item("a")), (0.02, Item("b")), (0.6, Item("too late")))
    draw = collect_batch(q, max_batch_size=4, max_wait_s=0.5, clock=clock)
    assert names(draw.batch) == ["a", "b"]
    assert clock.now == 0.5 and q.left() == ["too late"]  # the window closed 0.5 s after the first joined


def test_batcher_returns_a_full_batch_without_waiting_out_the_window() -> None:
    clock = FakeClock()
    q = ScriptedQueue(clock, (0.0, Item("a")), (0.02, Item("b")))
    draw = collect_batch(q, max_batch_size=2, max_wait_s=5.0, clock=clock)
    assert names(draw.batch) == ["a", "b"] and clock.now == 0.02


def test_cancelled_and_expired_items_are_dropped_not_batched() -> None:
    clock = FakeClock()
    q = at_start(clock, Item("dead", live=False), Item("a"), Item("late", live=False), Item("b"))
    draw = collect_batch(q, max_batch_size=4, max_wait_s=0, clock=clock)
    assert names(draw.batch) == ["a", "b"]
    assert names(draw.dropped) == ["dead", "late"]


def test_incompatible_items_are_deferred_and_come_first_next_time() -> None:
    clock = FakeClock()
    q = at_start(clock, Item("a1", "lora-a"), Item("b1", "lora-b"), Item("a2", "lora-a"))
    draw = collect_batch(q, max_batch_size=4, max_wait_s=0, clock=clock)
    assert names(draw.batch) == ["a1", "a2"] and names(draw.deferred) == ["b1"]
    q.pending.append((clock.now, Item("b2", "lora-b")))
    again = collect_batch(q, draw.deferred, max_batch_size=4, max_wait_s=0, clock=clock)
    assert names(again.batch) == ["b1", "b2"] and not again.deferred


def test_an_empty_queue_gives_an_empty_draw_after_the_poll_interval() -> None:
    clock = FakeClock()
    draw = collect_batch(at_start(clock), max_batch_size=4, max_wait_s=1.0, poll_s=0.01, clock=clock)
    assert draw.batch == [] and draw.dropped == [] and draw.deferred == []
    assert clock.now == 0.01


def test_the_batcher_holds_past_max_wait_while_more_are_coming() -> None:
    clock = FakeClock()
    q = ScriptedQueue(clock, (0.0, Item("a")), (0.05, Item("b")))
    being_prepared = lambda: clock.now < 0.05  # noqa: E731 - "b" is admitted and queued at 0.05
    draw = collect_batch(q, max_batch_size=4, max_wait_s=0.01, hold_s=2.0, more_coming=being_prepared,
                         clock=clock)
    assert names(draw.batch) == ["a", "b"]
    assert clock.now == pytest.approx(0.05)  # nothing more was coming once "b" had joined


def test_holding_stops_when_nothing_more_is_coming() -> None:
    clock = FakeClock()
    draw = collect_batch(at_start(clock, Item("a")), max_batch_size=4, max_wait_s=0.01, hold_s=5.0,
                         more_coming=lambda: False, clock=clock)
    assert names(draw.batch) == ["a"] and clock.now == pytest.approx(0.01)


def test_holding_stops_when_the_hold_is_over() -> None:
    clock = FakeClock()
    draw = collect_batch(at_start(clock, Item("a")), max_batch_size=4, max_wait_s=0.01, hold_s=0.05,
                         more_coming=lambda: True, clock=clock)
    assert names(draw.batch) == ["a"]
    assert 0.06 <= clock.now < 0.06 + 0.005  # the window, the hold, and at most one hold step


def test_whether_to_wait_is_decided_when_the_first_item_joins() -> None:
    """A draw that began while company was expected does not make a later lone item wait."""
    clock = FakeClock()
    q = ScriptedQueue(clock, (0.05, Item("a")), (0.35, Item("late")))
    asked: list[float] = []

    def worth_waiting() -> bool:
        asked.append(clock.now)
        return clock.now < 0.05  # company was expected until "a" arrived alone

    draw = collect_batch(q, max_batch_size=4, max_wait_s=5.0, poll_s=2.0, worth_waiting=worth_waiting, clock=clock)
    assert names(draw.batch) == ["a"] and asked == [0.05]
    assert clock.now == 0.05 and q.left() == ["late"]  # left for the next draw


def test_an_item_expecting_company_waits_for_it() -> None:
    clock = FakeClock()
    q = ScriptedQueue(clock, (0.0, Item("a")), (0.05, Item("b")))
    draw = collect_batch(q, max_batch_size=2, max_wait_s=5.0, worth_waiting=lambda: True, clock=clock)
    assert names(draw.batch) == ["a", "b"]


def test_none_wakes_the_batcher_up_at_once() -> None:
    clock = FakeClock()
    draw = collect_batch(at_start(clock, Item("a"), None), max_batch_size=4, max_wait_s=5.0, clock=clock)
    assert names(draw.batch) == ["a"] and clock.now == 0.0


# --- the asyncio scheduler -------------------------------------------------------------------


class Recorder:
    """A scheduler observer that remembers what it was told."""

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []
        self.cancels: list[str] = []

    def observe_batch(self, size: int) -> None:
        self.batch_sizes.append(size)

    def observe_cancel(self, stage: str) -> None:
        self.cancels.append(stage)


def scheduler(engine: FakeEngine, recorder: Recorder | None = None, **limits: float) -> Scheduler:
    return Scheduler(engine, SchedulerLimits(**{"max_wait_s": 0.0, **limits}), observer=recorder)  # type: ignore[arg-type]


async def submit(sched: Scheduler, request: GenerationRequest, *, stream: bool = True) -> Submission:
    """What the service does: take a place, prepare off the event loop, enqueue in the place."""
    async with sched.reserve() as place:
        prepared = await asyncio.to_thread(sched.engine.prepare, request)
        return place.enqueue(prepared, stream=stream)


async def test_answers_and_streams_deltas_that_add_up_to_the_result() -> None:
    engine = FakeEngine()
    sched = scheduler(engine)
    await sched.start()
    request = make_request("a red shirt", images=2)
    submission = await submit(sched, request)
    events = [event async for event in submission.events()]
    await sched.stop()
    *deltas, result = events
    assert isinstance(result, GenerationResult)
    assert "".join(deltas) == result.text == fake_answer(request) == "2 image(s): a red shirt"
    assert result.usage.image_tokens == 32 and result.finish_reason == "stop"
    assert submission.first_text_at is not None and submission.started_at is not None


async def test_without_stream_only_the_result_is_delivered() -> None:
    engine = FakeEngine()
    sched = scheduler(engine)
    await sched.start()
    submission = await submit(sched, make_request("quiet please"), stream=False)
    events = [event async for event in submission.events()]
    await sched.stop()
    assert len(events) == 1 and isinstance(events[0], GenerationResult)
    assert events[0].text == "0 image(s): quiet please" and submission.first_text_at is not None


async def test_an_engine_that_takes_concurrent_batches_gets_a_new_one_while_one_is_held() -> None:
    engine = FakeEngine()
    engine.concurrent_batches = 2
    engine.gate.clear()
    sched = scheduler(engine, max_batch_size=1)
    await sched.start()
    first = await submit(sched, make_request("first"))
    second = await submit(sched, make_request("second"))
    await wait_until(lambda: len(engine.batches) == 2)  # both held at the gate at once
    third = await submit(sched, make_request("third"))
    assert sched.running == 2 and sched.queue_depth == 1  # no third slot: it waits its turn
    engine.gate.set()
    results = [await s.result() for s in (first, second, third)]
    await sched.stop()
    assert [r.text for r in results] == ["0 image(s): first", "0 image(s): second", "0 image(s): third"]
    assert sched.running == 0 and sched.queue_depth == 0


async def test_requests_arriving_while_the_engine_is_busy_share_the_next_batch() -> None:
    engine = FakeEngine()
    engine.gate.clear()
    recorder = Recorder()
    sched = scheduler(engine, recorder, max_batch_size=4)
    await sched.start()
    first = await submit(sched, make_request("first"))
    await wait_until(lambda: engine.batches)
    rest = [await submit(sched, make_request(f"q{i}")) for i in range(6)]
    assert sched.queue_depth == 6 and sched.running == 1
    engine.gate.set()
    results = [await s.result() for s in [first, *rest]]
    await sched.stop()
    assert [r.text for r in results] == ["0 image(s): first", *(f"0 image(s): q{i}" for i in range(6))]
    assert recorder.batch_sizes == [1, 4, 2]
    assert sched.queue_depth == 0


async def test_a_request_that_joins_alone_starts_without_waiting_for_company() -> None:
    """A place taken and given back (its client left) must not make the next lone request wait
    out the batching window: with a window of an hour, the answer only comes if it does not."""
    engine = FakeEngine()
    sched = scheduler(engine, max_wait_s=3600.0)
    await sched.start()
    sched.reserve().release()
    submission = await submit(sched, make_request("alone"))
    result = await asyncio.wait_for(submission.result(), 60)  # a guard against a hang, not a speed bound
    await sched.stop()
    assert result.text == "0 image(s): alone"


async def test_requests_batch_only_with_their_engine_batch_group() -> None:
    engine = FakeEngine(mixed_adapters=False)  # the group is the adapter
    engine.gate.clear()
    sched = scheduler(engine, max_batch_size=8)
    await sched.start()
    blocker = await submit(sched, make_request("block"))
    await wait_until(lambda: engine.batches)
    subs = [await submit(sched, make_request(str(i), adapter=a)) for i, a in enumerate(["x", None, "x", None])]
    engine.gate.set()
    for s in [blocker, *subs]:
        await s.result()
    await sched.stop()
    ids = {s.request_id: s.prepared.request.adapter for s in subs}
    later = [{ids[r] for r in batch} for batch in engine.batches[1:]]
    assert later == [{"x"}, {None}]


async def test_an_engine_that_mixes_adapters_answers_them_in_one_batch() -> None:
    engine = FakeEngine(mixed_adapters=True)
    engine.gate.clear()
    sched = scheduler(engine, max_batch_size=8)
    await sched.start()
    blocker = await submit(sched, make_request("block"))
    await wait_until(lambda: engine.batches)
    subs = [await submit(sched, make_request(str(i), adapter=a)) for i, a in enumerate(["x", None, "y", None])]
    engine.gate.set()
    texts = [(await s.result()).text for s in subs]
    await blocker.result()
    await sched.stop()
    assert engine.batches[1:] == [[s.request_id for s in subs]]
    assert texts == ["x: 0 image(s): 0", "0 image(s): 1", "y: 0 image(s): 2", "0 image(s): 3"]


async def test_when_done_runs_once_a_request_is_answered_or_cancelled() -> None:
    engine = FakeEngine()
    engine.gate.clear()
    sched = scheduler(engine, max_batch_size=1)
    await sched.start()
    running, waiting = await submit(sched, make_request("one")), None
    await wait_until(lambda: engine.batches)
    waiting = await submit(sched, make_request("two"))
    done: list[str] = []
    running.when_done(lambda: done.append("running"))
    waiting.when_done(lambda: done.append("waiting"))
    waiting.cancel()
    assert done == ["waiting"]  # left the queue: done at once
    engine.gate.set()
    await running.result()
    await sched.stop()
    assert done == ["waiting", "running"]
    running.when_done(lambda: done.append("late"))  # already done: called at once
    assert done == ["waiting", "running", "late"]


async def test_a_request_that_prepare_refuses_fails_alone_and_gives_its_place_back() -> None:
    engine = FakeEngine()
    sched = scheduler(engine, max_batch_size=4)
    await sched.start()

    async def ask(text: str) -> str:
        return (await (await submit(sched, make_request(text))).result()).text

    outcomes = await asyncio.gather(ask("good one"), ask(f"bad {FAIL_PREPARE}"), ask("good two"),
                                    return_exceptions=True)
    await sched.stop()
    assert outcomes[0] == "0 image(s): good one" and outcomes[2] == "0 image(s): good two"
    assert isinstance(outcomes[1], InvalidRequestError)
    assert sched.queue_depth == 0
    assert all(FAIL_PREPARE not in result.text for result in engine.results)  # it never reached generate


async def test_an_engine_failure_fails_its_batch_and_the_scheduler_keeps_serving() -> None:
    engine = FakeEngine()
    sched = scheduler(engine)
    await sched.start()
    broken = await submit(sched, make_request(FAIL_GENERATE))
    with pytest.raises(EngineFailedError, match="fake engine crashed"):
        await broken.result()
    fine = await submit(sched, make_request("still here"))
    assert (await fine.result()).text == "0 image(s): still here"
    await sched.stop()


async def test_a_full_queue_refuses_with_retry_after_and_admitted_requests_complete() -> None:
    engine = FakeEngine()
    engine.gate.clear()
    sched = scheduler(engine, max_batch_size=2, max_queue=3)
    await sched.start()
    running = await submit(sched, make_request("running"))
    await wait_until(lambda: engine.batches)
    queued = [await submit(sched, make_request(f"queued {i}")) for i in range(3)]
    with pytest.raises(QueueFullError) as refused:
        sched.reserve()
    assert refused.value.status == 429 and refused.value.retry_after >= 1
    assert sched.queue_depth == 3
    engine.gate.set()
    texts = [(await s.result()).text for s in [running, *queued]]
    await sched.stop()
    assert texts == ["0 image(s): running", *(f"0 image(s): queued {i}" for i in range(3))]


async def test_a_request_waiting_past_the_queue_timeout_gets_503() -> None:
    engine = FakeEngine()
    engine.gate.clear()
    sched = scheduler(engine, queue_timeout_s=0.1)
    await sched.start()
    running = await submit(sched, make_request("running"))
    await wait_until(lambda: engine.batches)
    waiting = await submit(sched, make_request("waiting"))
    with pytest.raises(QueueTimeoutError) as timed_out:
        await waiting.result()  # the engine is held at its gate until after this
    assert timed_out.value.status == 503 and sched.queue_depth == 0
    engine.gate.set()
    await running.result()
    await sched.stop()
    assert all(waiting.request_id not in batch for batch in engine.batches)


async def test_cancelling_a_waiting_request_frees_its_place_at_once() -> None:
    engine = FakeEngine()
    engine.gate.clear()
    recorder = Recorder()
    sched = scheduler(engine, recorder, max_queue=1)
    await sched.start()
    running = await submit(sched, make_request("running"))
    await wait_until(lambda: engine.batches)
    dropped = await submit(sched, make_request("dropped"))
    assert sched.queue_depth == 1
    dropped.cancel()
    dropped.cancel()  # idempotent
    assert sched.queue_depth == 0 and recorder.cancels == ["queued"]
    with pytest.raises(RequestCancelledError):
        await dropped.result()
    replacement = await submit(sched, make_request("replacement"))  # the place is free again
    engine.gate.set()
    assert (await replacement.result()).text == "0 image(s): replacement"
    await running.result()
    await sched.stop()
    assert all(dropped.request_id not in batch for batch in engine.batches)


async def test_cancelling_a_running_stream_stops_its_generation_at_the_next_step() -> None:
    engine = FakeEngine()
    engine.pace = threading.Semaphore(0)
    recorder = Recorder()
    sched = scheduler(engine, recorder)
    await sched.start()
    submission = await submit(sched, make_request(" ".join(["word"] * 50)))
    engine.pace.release(3)  # three steps, three words
    deltas: list[str] = []
    result = None
    async for event in submission.events():
        if isinstance(event, GenerationResult):
            result = event
        else:
            deltas.append(event)
            if len(deltas) == 3:
                submission.cancel()
                engine.pace.release(100)  # let it run: it must stop at once
    await sched.stop()
    assert result is not None and result.finish_reason == "cancelled"
    assert result.usage.completion_tokens == 3 and result.text == "".join(deltas)
    submission.cancel()  # after the end: nothing more is counted
    assert recorder.cancels == ["running"]


async def test_a_reservation_holds_a_place_until_used_or_released() -> None:
    engine = FakeEngine()
    sched = scheduler(engine, max_queue=2)
    await sched.start()
    first, second = sched.reserve(), sched.reserve()
    assert sched.queue_depth == 2
    with pytest.raises(QueueFullError):
        sched.reserve()
    async with second:
        pass  # left unused: given back
    assert sched.queue_depth == 1
    prepared = engine.prepare(make_request("reserved"))
    submission = first.enqueue(prepared, stream=False)
    with pytest.raises(RuntimeError, match="already used"):
        first.enqueue(prepared)
    assert (await submission.result()).text == "0 image(s): reserved"
    first.release()  # no effect once used
    await sched.stop()
    assert sched.queue_depth == 0 and engine.batches == [[submission.request_id]]


async def test_stop_drains_admitted_requests_then_refuses_new_ones() -> None:
    engine = FakeEngine(token_delay_s=0.005)
    sched = scheduler(engine, max_batch_size=2)
    await sched.start()
    subs = [await submit(sched, make_request(f"drain {i}")) for i in range(4)]
    results = asyncio.gather(*(s.result() for s in subs))
    await sched.stop(drain_timeout_s=30)
    assert [r.text for r in await results] == [f"0 image(s): drain {i}" for i in range(4)]
    assert not sched.is_running
    with pytest.raises(ShuttingDownError):
        sched.reserve()


async def test_stop_cancels_generation_when_the_drain_time_is_up() -> None:
    engine = FakeEngine()
    engine.pace = threading.Semaphore(0)  # generation makes no step until the test says
    sched = scheduler(engine)
    await sched.start()
    slow = await submit(sched, make_request(" ".join(["word"] * 60), max_new_tokens=60))
    await wait_until(lambda: sched.running)
    stopping = asyncio.create_task(sched.stop(drain_timeout_s=0.05))
    await wait_until(lambda: slow.cancelled)  # the drain time is up: the running request is cancelled
    engine.pace.release(100)
    await stopping
    with pytest.raises(ShuttingDownError):
        await slow.result()
    assert engine.batches == [[slow.request_id]]
