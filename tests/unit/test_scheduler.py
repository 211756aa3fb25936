"""The batcher (a plain function over a plain queue) and the asyncio scheduler around it."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass

import pytest

from fakes import FAIL_GENERATE, FAIL_PREPARE, FakeEngine, fake_answer, make_request
from seesay.batching import collect_batch
from seesay.errors import InvalidRequestError
from seesay.scheduler import (
    EngineFailedError,
    QueueFullError,
    QueueTimeoutError,
    RequestCancelledError,
    Scheduler,
    SchedulerLimits,
    ShuttingDownError,
)
from seesay.types import GenerationResult

# --- collect_batch with a plain queue --------------------------------------------------------


@dataclass
class Item:
    name: str
    batch_key: Hashable = None
    live: bool = True

    def is_live(self, now: float) -> bool:
        return self.live


def filled(*items: Item | None) -> queue.Queue[Item | None]:
    q: queue.Queue[Item | None] = queue.Queue()
    for item in items:
        q.put(item)
    return q


def names(items: list[Item]) -> list[str]:
    return [item.name for item in items]


def test_batch_is_capped_at_max_batch_size_and_the_rest_stays_queued() -> None:
    q = filled(*(Item(str(i)) for i in range(5)))
    draw = collect_batch(q, max_batch_size=3, max_wait_s=0)
    assert names(draw.batch) == ["0", "1", "2"]
    assert q.qsize() == 2 and not draw.dropped and not draw.deferred


def test_batcher_waits_up_to_max_wait_for_more_requests() -> None:
    q = filled(Item("a"))
    threading.Timer(0.02, q.put, args=(Item("b"),)).start()
    draw = collect_batch(q, max_batch_size=4, max_wait_s=0.5)
    assert names(draw.batch) == ["a", "b"]


def test_batcher_returns_a_partial_batch_when_the_wait_is_over() -> None:
    q = filled(Item("a"))
    started = time.monotonic()
    draw = collect_batch(q, max_batch_size=4, max_wait_s=0.05)
    assert names(draw.batch) == ["a"]
    assert 0.04 <= time.monotonic() - started < 1.0


def test_cancelled_and_expired_items_are_dropped_not_batched() -> None:
    q = filled(Item("dead", live=False), Item("a"), Item("late", live=False), Item("b"))
    draw = collect_batch(q, max_batch_size=4, max_wait_s=0)
    assert names(draw.batch) == ["a", "b"]
    assert names(draw.dropped) == ["dead", "late"]


def test_incompatible_items_are_deferred_and_come_first_next_time() -> None:
    q = filled(Item("a1", "lora-a"), Item("b1", "lora-b"), Item("a2", "lora-a"))
    draw = collect_batch(q, max_batch_size=4, max_wait_s=0)
    assert names(draw.batch) == ["a1", "a2"] and names(draw.deferred) == ["b1"]
    q.put(Item("b2", "lora-b"))
    again = collect_batch(q, draw.deferred, max_batch_size=4, max_wait_s=0)
    assert names(again.batch) == ["b1", "b2"] and not again.deferred


def test_an_empty_queue_gives_an_empty_draw_after_the_poll_interval() -> None:
    draw = collect_batch(filled(), max_batch_size=4, max_wait_s=1.0, poll_s=0.01)
    assert draw.batch == [] and draw.dropped == [] and draw.deferred == []


def test_the_batcher_holds_past_max_wait_while_more_are_coming() -> None:
    q = filled(Item("a"))
    coming = threading.Event()
    coming.set()

    def arrive() -> None:
        q.put(Item("b"))
        coming.clear()

    threading.Timer(0.05, arrive).start()
    draw = collect_batch(q, max_batch_size=4, max_wait_s=0.01, hold_s=2.0, more_coming=coming.is_set)
    assert names(draw.batch) == ["a", "b"]


def test_holding_stops_when_nothing_more_is_coming_or_the_hold_is_over() -> None:
    started = time.monotonic()
    draw = collect_batch(filled(Item("a")), max_batch_size=4, max_wait_s=0.01, hold_s=5.0, more_coming=lambda: False)
    assert names(draw.batch) == ["a"] and time.monotonic() - started < 1.0
    started = time.monotonic()
    draw = collect_batch(filled(Item("a")), max_batch_size=4, max_wait_s=0.01, hold_s=0.05, more_coming=lambda: True)
    assert names(draw.batch) == ["a"] and 0.05 <= time.monotonic() - started < 1.0


def test_whether_to_wait_is_decided_when_the_first_item_joins() -> None:
    """A draw that began while company was expected does not make a later lone item wait."""
    q: queue.Queue[Item | None] = queue.Queue()
    company = threading.Event()
    company.set()  # what the batcher would have seen, had it decided when the draw began
    asked: list[bool] = []

    def worth_waiting() -> bool:
        asked.append(company.is_set())
        return asked[-1]

    def arrive_alone() -> None:
        company.clear()
        q.put(Item("a"))
        threading.Timer(0.3, q.put, (Item("late"),)).start()

    threading.Timer(0.05, arrive_alone).start()
    draw = collect_batch(q, max_batch_size=4, max_wait_s=5.0, poll_s=2.0, worth_waiting=worth_waiting)
    assert names(draw.batch) == ["a"] and asked == [False]
    assert names([q.get(timeout=5)]) == ["late"]  # left for the next draw


def test_an_item_expecting_company_waits_for_it() -> None:
    q = filled(Item("a"))
    threading.Timer(0.05, q.put, (Item("b"),)).start()
    draw = collect_batch(q, max_batch_size=2, max_wait_s=5.0, worth_waiting=lambda: True)
    assert names(draw.batch) == ["a", "b"]


def test_none_wakes_the_batcher_up_at_once() -> None:
    started = time.monotonic()
    draw = collect_batch(filled(Item("a"), None), max_batch_size=4, max_wait_s=5.0)
    assert names(draw.batch) == ["a"]
    assert time.monotonic() - started < 1.0


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


async def wait_until(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def test_answers_and_streams_deltas_that_add_up_to_the_result() -> None:
    engine = FakeEngine()
    sched = scheduler(engine)
    await sched.start()
    request = make_request("a red shirt", images=2)
    submission = await sched.submit(request)
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
    submission = await sched.submit(make_request("quiet please"), stream=False)
    events = [event async for event in submission.events()]
    await sched.stop()
    assert len(events) == 1 and isinstance(events[0], GenerationResult)
    assert events[0].text == "0 image(s): quiet please" and submission.first_text_at is not None


async def test_requests_arriving_while_the_engine_is_busy_share_the_next_batch() -> None:
    engine = FakeEngine()
    engine.gate.clear()
    recorder = Recorder()
    sched = scheduler(engine, recorder, max_batch_size=4)
    await sched.start()
    first = await sched.submit(make_request("first"))
    await wait_until(lambda: engine.batches)
    rest = [await sched.submit(make_request(f"q{i}")) for i in range(6)]
    assert sched.queue_depth == 6 and sched.running == 1
    engine.gate.set()
    results = [await s.result() for s in [first, *rest]]
    await sched.stop()
    assert [r.text for r in results] == ["0 image(s): first", *(f"0 image(s): q{i}" for i in range(6))]
    assert recorder.batch_sizes == [1, 4, 2]
    assert sched.queue_depth == 0


async def test_a_request_that_joins_alone_starts_at_once_though_company_was_expected_before() -> None:
    engine = FakeEngine()
    sched = scheduler(engine, max_wait_s=30.0)
    await sched.start()
    place = sched.reserve()  # an admitted request, still being decoded...
    await asyncio.sleep(0.25)  # ...while the batcher begins new draws (it polls every 0.1 s)...
    place.release()  # ...then given up: its client left
    submission = await sched.submit(make_request("alone"))
    result = await asyncio.wait_for(submission.result(), 5.0)  # not after max_wait_s
    await sched.stop()
    assert result.text == "0 image(s): alone"


async def test_requests_with_different_adapters_are_never_batched_together() -> None:
    engine = FakeEngine()
    engine.gate.clear()
    sched = scheduler(engine, max_batch_size=8)
    await sched.start()
    blocker = await sched.submit(make_request("block"))
    await wait_until(lambda: engine.batches)
    subs = [await sched.submit(make_request(str(i), adapter=a)) for i, a in enumerate(["x", None, "x", None])]
    engine.gate.set()
    for s in [blocker, *subs]:
        await s.result()
    await sched.stop()
    ids = {s.request_id: s.prepared.request.adapter for s in subs}
    later = [{ids[r] for r in batch} for batch in engine.batches[1:]]
    assert later == [{"x"}, {None}]


async def test_a_request_that_prepare_refuses_fails_alone() -> None:
    engine = FakeEngine()
    sched = scheduler(engine, max_batch_size=4)
    await sched.start()

    async def ask(text: str) -> str:
        return (await (await sched.submit(make_request(text))).result()).text

    outcomes = await asyncio.gather(ask("good one"), ask(f"bad {FAIL_PREPARE}"), ask("good two"),
                                    return_exceptions=True)
    await sched.stop()
    assert outcomes[0] == "0 image(s): good one" and outcomes[2] == "0 image(s): good two"
    assert isinstance(outcomes[1], InvalidRequestError)
    assert sched.queue_depth == 0


async def test_an_engine_failure_fails_its_batch_and_the_scheduler_keeps_serving() -> None:
    engine = FakeEngine()
    sched = scheduler(engine)
    await sched.start()
    broken = await sched.submit(make_request(FAIL_GENERATE))
    with pytest.raises(EngineFailedError, match="fake engine crashed"):
        await broken.result()
    fine = await sched.submit(make_request("still here"))
    assert (await fine.result()).text == "0 image(s): still here"
    await sched.stop()


async def test_a_full_queue_refuses_with_retry_after_and_admitted_requests_complete() -> None:
    engine = FakeEngine()
    engine.gate.clear()
    sched = scheduler(engine, max_batch_size=2, max_queue=3)
    await sched.start()
    running = await sched.submit(make_request("running"))
    await wait_until(lambda: engine.batches)
    queued = [await sched.submit(make_request(f"queued {i}")) for i in range(3)]
    with pytest.raises(QueueFullError) as refused:
        await sched.submit(make_request("one too many"))
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
    running = await sched.submit(make_request("running"))
    await wait_until(lambda: engine.batches)
    waiting = await sched.submit(make_request("waiting"))
    with pytest.raises(QueueTimeoutError) as timed_out:
        await waiting.result()
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
    running = await sched.submit(make_request("running"))
    await wait_until(lambda: engine.batches)
    dropped = await sched.submit(make_request("dropped"))
    assert sched.queue_depth == 1
    dropped.cancel()
    dropped.cancel()  # idempotent
    assert sched.queue_depth == 0 and recorder.cancels == ["queued"]
    with pytest.raises(RequestCancelledError):
        await dropped.result()
    replacement = await sched.submit(make_request("replacement"))  # the place is free again
    engine.gate.set()
    assert (await replacement.result()).text == "0 image(s): replacement"
    await running.result()
    await sched.stop()
    assert all(dropped.request_id not in batch for batch in engine.batches)


async def test_cancelling_a_running_stream_stops_its_generation() -> None:
    engine = FakeEngine(token_delay_s=0.01)
    recorder = Recorder()
    sched = scheduler(engine, recorder)
    await sched.start()
    submission = await sched.submit(make_request(" ".join(["word"] * 50)))
    deltas: list[str] = []
    result = None
    async for event in submission.events():
        if isinstance(event, GenerationResult):
            result = event
        else:
            deltas.append(event)
            if len(deltas) == 3:
                submission.cancel()
    await sched.stop()
    assert result is not None and result.finish_reason == "cancelled"
    assert 3 <= result.usage.completion_tokens < 20
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
    submission = await first.submit(make_request("reserved"), stream=False)
    with pytest.raises(RuntimeError, match="already used"):
        await first.submit(make_request("again"))
    assert (await submission.result()).text == "0 image(s): reserved"
    first.release()  # no effect once used
    await sched.stop()
    assert sched.queue_depth == 0 and len(engine.requests) == 1


async def test_a_request_prepared_by_the_caller_is_enqueued_in_its_place() -> None:
    engine = FakeEngine()
    sched = scheduler(engine)
    await sched.start()
    async with sched.reserve() as place:
        prepared = await asyncio.to_thread(engine.prepare, make_request("prepared elsewhere"))
        submission = place.enqueue(prepared, stream=False)
        with pytest.raises(RuntimeError, match="already used"):
            place.enqueue(prepared)
    assert sched.queue_depth in (0, 1)  # queued or running: the place was not given back twice
    assert (await submission.result()).text == "0 image(s): prepared elsewhere"
    await sched.stop()
    assert sched.queue_depth == 0 and len(engine.requests) == 1


async def test_stop_drains_admitted_requests_then_refuses_new_ones() -> None:
    engine = FakeEngine(token_delay_s=0.005)
    sched = scheduler(engine, max_batch_size=2)
    await sched.start()
    subs = [await sched.submit(make_request(f"drain {i}")) for i in range(4)]
    results = asyncio.gather(*(s.result() for s in subs))
    await sched.stop(drain_timeout_s=5)
    assert [r.text for r in await results] == [f"0 image(s): drain {i}" for i in range(4)]
    assert not sched.is_running
    with pytest.raises(ShuttingDownError):
        await sched.submit(make_request("too late"))


async def test_stop_cancels_generation_when_the_drain_time_is_up() -> None:
    engine = FakeEngine(token_delay_s=0.01)
    sched = scheduler(engine)
    await sched.start()
    slow = await sched.submit(make_request(" ".join(["word"] * 60), max_new_tokens=60))
    await wait_until(lambda: sched.running)
    await sched.stop(drain_timeout_s=0.05)
    with pytest.raises(ShuttingDownError):
        await slow.result()
    assert engine.batches == [[slow.request_id]]
