"""Dynamic batching with admission control, between the service and the engine.

Contract:

* :meth:`Scheduler.reserve` takes a place in a bounded queue as soon as a request arrives,
  before its images are decoded: when ``max_queue`` requests already hold places it raises
  :class:`~seesay.errors.QueueFullError` (HTTP 429 with Retry-After), so overload is refused
  before any work. :meth:`Reservation.enqueue` then queues the request, prepared by the
  caller with this scheduler's engine (a bad request fails alone, to its own caller, before
  it is queued).
* One dedicated thread draws batches with the batcher (:func:`seesay.batching.collect_batch`,
  a plain function over a ``queue.Queue``) and runs ``engine.generate_rows`` on them, one batch
  at a time (or up to the engine's ``concurrent_batches`` at once, from a thread pool), off the
  event loop; text deltas and results reach each caller's
  :class:`Submission` through ``loop.call_soon_threadsafe``.
* A request still waiting after ``queue_timeout_s`` fails with
  :class:`~seesay.errors.QueueTimeoutError` (503). :meth:`Submission.cancel` (the client went
  away) takes a waiting request out of the queue at once, or makes ``observer.is_cancelled``
  true so the engine stops generating it.
* :meth:`Scheduler.stop` drains: it stops admitting (:class:`~seesay.errors.ShuttingDownError`,
  503), lets waiting and running requests finish within a time limit, then cancels what is left.

Requests batch together when their :attr:`Submission.batch_key` is equal: the batch group the
engine gave each request when it prepared it (``None`` for all when the engine mixes LoRA
adapters and samples per row, so every request can share a batch).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from seesay.batching import collect_batch
from seesay.engine.base import Engine, PreparedRequest
from seesay.errors import (
    EngineFailedError,
    QueueFullError,
    QueueTimeoutError,
    RequestCancelledError,
    SeesayError,
    ShuttingDownError,
)
from seesay.types import GenerationResult

log = logging.getLogger(__name__)

# While admitted requests are still being decoded and prepared, the batcher waits for them up
# to this many times max_wait_s longer: they are certain to arrive, and a fuller batch pays.
HOLD_FACTOR = 4


@dataclass(frozen=True)
class SchedulerLimits:
    """Batching and admission limits (see :class:`seesay.config.Settings` for their meaning)."""

    max_batch_size: int = 8
    max_wait_s: float = 0.01
    max_queue: int = 64
    queue_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_queue < 1:
            raise ValueError("max_batch_size and max_queue must be at least 1")
        if self.max_wait_s < 0 or self.queue_timeout_s <= 0:
            raise ValueError("max_wait_s must be >= 0 and queue_timeout_s > 0")


class _State(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    DONE = "done"


Event = str | GenerationResult | BaseException


class Submission:
    """One admitted request: its text deltas and result, and a way to cancel it.

    Times are ``time.monotonic()`` seconds; ``started_at``/``first_text_at`` stay ``None``
    until the request joins a batch / produces text. Without ``stream``, :meth:`events`
    yields the result only: text deltas are not handed across threads one by one.
    """

    def __init__(
        self, scheduler: Scheduler, prepared: PreparedRequest, admitted_at: float, *, stream: bool = True
    ) -> None:
        self.prepared = prepared
        self.stream = stream
        self.admitted_at = admitted_at
        self.deadline = admitted_at + scheduler.limits.queue_timeout_s
        self.started_at: float | None = None
        self.first_text_at: float | None = None
        self.cancelled = False
        self.aborted = False  # cancelled by the scheduler's drain limit, not by the caller
        self._state = _State.WAITING
        self._scheduler = scheduler
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._on_done: list[Callable[[], None]] = []

    @property
    def request_id(self) -> str:
        return self.prepared.request.request_id

    @property
    def batch_key(self) -> Hashable:
        return self.prepared.batch_group

    def when_done(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once this request has left the scheduler: answered, failed, cancelled or
        expired (at once if it already has). It runs on whichever thread that happened on."""
        with self._scheduler._lock:
            finished = self._state not in (_State.WAITING, _State.RUNNING)
            if not finished:
                self._on_done.append(callback)
        if finished:
            callback()

    def _settle(self) -> None:
        """Run the ``when_done`` callbacks; called once the state is final."""
        with self._scheduler._lock:
            callbacks, self._on_done = self._on_done, []
        for callback in callbacks:
            callback()

    def is_live(self, now: float) -> bool:
        return self._state is _State.WAITING and now < self.deadline

    def cancel(self) -> None:
        """Give up on this request: out of the queue if waiting, else stop its generation.

        Does nothing once the request is finished, so it is safe to call on every way out.
        """
        if self.cancelled:
            return
        if self._scheduler._leave_waiting(self, _State.CANCELLED):
            self.cancelled = True
            self._events.put_nowait(RequestCancelledError("the request was cancelled before it ran"))
            self._scheduler._note_cancel("queued")
        elif self._state is _State.RUNNING:
            self.cancelled = True
            self._scheduler._note_cancel("running")

    async def events(self) -> AsyncIterator[str | GenerationResult]:
        """Text deltas as they are generated, then the final :class:`GenerationResult`.

        Raises:
            QueueTimeoutError: It waited longer than the queue timeout.
            SeesayError: The engine or the scheduler failed it.
        """
        while True:
            event = await self._next_event()
            if isinstance(event, BaseException):
                raise event
            if isinstance(event, GenerationResult) and self.aborted:
                raise ShuttingDownError("the server shut down while generating the answer; retry")
            yield event
            if isinstance(event, GenerationResult):
                return

    async def result(self) -> GenerationResult:
        """The final result (deltas are skipped)."""
        async for event in self.events():
            if isinstance(event, GenerationResult):
                return event
        raise EngineFailedError("the engine ended without a result")  # events() always ends in one

    async def _next_event(self) -> Event:
        while True:
            if self._state is not _State.WAITING:
                return await self._events.get()
            try:
                return await asyncio.wait_for(self._events.get(), self.deadline - time.monotonic())
            except TimeoutError:
                if self._scheduler._leave_waiting(self, _State.EXPIRED):
                    return self._scheduler.timeout_error()


class Reservation:
    """A queue place taken before a request is decoded (see :meth:`Scheduler.reserve`).

    Use it as an async context manager: a place not used by :meth:`enqueue` is given back on exit.
    """

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        self._open = True

    def enqueue(self, prepared: PreparedRequest, *, stream: bool = True) -> Submission:
        """Queue a request prepared by this scheduler's engine (``engine.prepare``), in this place.

        Args:
            prepared: The request, prepared off the event loop by the caller.
            stream: Deliver text deltas; ``False`` when only the result is wanted.

        Raises:
            RuntimeError: The place was already used or released.
        """
        if not self._open:
            raise RuntimeError("this reservation was already used or released")
        self._open = False
        return self._scheduler._enqueue(prepared, stream)

    def release(self) -> None:
        """Give the place back unless it was used."""
        if self._open:
            self._open = False
            self._scheduler._release_reservation(admitted=False)

    async def __aenter__(self) -> Reservation:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()


class SchedulerObserver(Protocol):
    """Receives what the scheduler does, for metrics."""

    def observe_batch(self, size: int) -> None:
        """A batch of ``size`` requests starts generating (called from the generation thread)."""

    def observe_cancel(self, stage: str) -> None:
        """A caller cancelled its request while it was ``"queued"`` or ``"running"``."""


class Scheduler:
    """Admission control and dynamic batching in front of one engine; see the module docstring.

    Args:
        engine: The engine; its ``generate`` runs in the scheduler's thread (callers ``prepare``).
        limits: Batch size, batching wait, queue size and queue timeout.
        observer: Told about batches and cancellations (for metrics).
    """

    def __init__(self, engine: Engine, limits: SchedulerLimits, *, observer: SchedulerObserver | None = None) -> None:
        self.engine = engine
        self.limits = limits
        self._observer = observer
        self._queue: queue.Queue[Submission | None] = queue.Queue()
        self._lock = threading.Lock()
        self._waiting = 0  # admitted, not started: reserved (being decoded or prepared) or queued
        self._reserved = 0
        self._current: list[Submission] = []  # in the batches being generated
        # An engine that takes several generate calls at once (the remote engine) gets them from a pool.
        self._slots = threading.Semaphore(engine.concurrent_batches)
        self._pool = ThreadPoolExecutor(engine.concurrent_batches, thread_name_prefix="seesay-batch") \
            if engine.concurrent_batches > 1 else None
        self._last_batch_size = 0
        self._batch_seconds = 1.0  # moving average, for Retry-After
        self._accepting = False
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def queue_depth(self) -> int:
        """Requests admitted and not yet generating (being decoded or prepared, or queued)."""
        return self._waiting

    @property
    def running(self) -> int:
        """Requests in the batches being generated now."""
        return len(self._current)

    @property
    def is_running(self) -> bool:
        return self._accepting and self._thread is not None and self._thread.is_alive()

    async def start(self) -> None:
        """Start the generation thread; call once, on the event loop that will submit."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._work, name="seesay-scheduler", daemon=True)
        self._thread.start()
        self._accepting = True

    def reserve(self) -> Reservation:
        """Take a queue place for a request that is about to be decoded and submitted.

        Raises:
            QueueFullError: ``max_queue`` requests already hold places.
            ShuttingDownError: The scheduler is not accepting requests.
        """
        self._reserve()
        return Reservation(self)

    async def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Stop admitting, let admitted requests finish for up to ``drain_timeout_s``, then stop."""
        self._accepting = False
        deadline = time.monotonic() + drain_timeout_s
        while (self._waiting or self._current) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self._stop.set()
        for submission in list(self._current):  # drain time is up: stop generating
            submission.aborted = submission.cancelled = True
        self._queue.put(None)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    def retry_after(self) -> int:
        """Seconds a refused client should wait: roughly the time to work off the queue."""
        batches = self._waiting / self.limits.max_batch_size + 1
        return max(1, math.ceil(self._batch_seconds * batches))

    def timeout_error(self) -> QueueTimeoutError:
        return QueueTimeoutError(
            f"the request waited {self.limits.queue_timeout_s:g} s in the queue without starting; "
            "the server is overloaded, retry later",
            retry_after=self.retry_after(),
        )

    # -- admission -------------------------------------------------------------------------

    def _reserve(self) -> None:
        with self._lock:
            if not self._accepting:
                raise ShuttingDownError("the server is shutting down; retry on another replica or later")
            if self._waiting >= self.limits.max_queue:
                raise QueueFullError(
                    f"the server is at capacity ({self.limits.max_queue} requests waiting); retry later",
                    retry_after=self.retry_after(),
                )
            self._waiting += 1
            self._reserved += 1

    def _release_reservation(self, *, admitted: bool) -> None:
        with self._lock:
            self._reserved -= 1
            if not admitted:
                self._waiting -= 1

    def _enqueue(self, prepared: PreparedRequest, stream: bool) -> Submission:
        submission = Submission(self, prepared, time.monotonic(), stream=stream)
        self._release_reservation(admitted=True)
        self._queue.put(submission)
        return submission

    def _note_cancel(self, stage: str) -> None:
        if self._observer is not None:
            self._observer.observe_cancel(stage)

    def _leave_waiting(self, submission: Submission, state: _State) -> bool:
        """Move a waiting submission to ``state``; False if it had already left."""
        with self._lock:
            if submission._state is not _State.WAITING:
                return False
            submission._state = state
            self._waiting -= 1
        if state is not _State.RUNNING:
            submission._settle()
        return True

    # -- the generation thread ---------------------------------------------------------------

    def _work(self) -> None:
        deferred: list[Submission] = []
        while not self._stop.is_set():
            draw = collect_batch(
                self._queue,
                deferred,
                max_batch_size=self.limits.max_batch_size,
                max_wait_s=self.limits.max_wait_s,
                hold_s=self.limits.max_wait_s * HOLD_FACTOR,
                more_coming=lambda: self._reserved > 0,
                worth_waiting=self._expect_company,
            )
            deferred = draw.deferred
            for submission in draw.dropped:
                if self._leave_waiting(submission, _State.EXPIRED):
                    self._post(submission, self.timeout_error())
            if self._stop.is_set():
                deferred.extend(draw.batch)
                break
            if draw.batch and self._pool is not None:
                self._slots.acquire()  # the batch leaves the queue only when it can run
            batch = [s for s in draw.batch if self._leave_waiting(s, _State.RUNNING)]
            if batch:
                self._start_batch(batch)
            elif draw.batch and self._pool is not None:
                self._slots.release()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._fail_leftovers(deferred)

    def _start_batch(self, batch: Sequence[Submission]) -> None:
        """Run ``batch`` here, or in the pool (holding the slot ``_work`` took for it)."""
        if self._pool is None:
            self._run_batch(batch)
            return

        def run() -> None:
            try:
                self._run_batch(batch)
            finally:
                self._slots.release()

        self._pool.submit(run)

    def _expect_company(self) -> bool:
        """Whether a request that just joined an empty batch may soon have company: others are
        admitted (being decoded or prepared), or the last batch was not alone. Asked when it
        joins, not when the draw began, which may have been long before it arrived."""
        return self._reserved > 0 or self._last_batch_size > 1

    def _run_batch(self, batch: Sequence[Submission]) -> None:
        started = time.monotonic()
        for submission in batch:
            submission.started_at = started
        with self._lock:
            self._current.extend(batch)
        self._last_batch_size = len(batch)
        if self._observer is not None:
            self._observer.observe_batch(len(batch))
        outcomes = self._generate(batch)
        self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * (time.monotonic() - started)
        with self._lock:  # done before anyone hears of it, so a late cancel() is a no-op
            for submission in batch:
                submission._state = _State.DONE
                self._current.remove(submission)
        for submission in batch:
            submission._settle()
        for submission, outcome in zip(batch, outcomes, strict=True):
            self._post(submission, outcome)

    def _generate(self, batch: Sequence[Submission]) -> Sequence[GenerationResult | SeesayError]:
        """One result or error per request (the engine's own), or the same error for all when the engine fails."""
        try:
            results = self.engine.generate_rows([s.prepared for s in batch], _BatchObserver(self, batch))
            if len(results) != len(batch):
                raise EngineFailedError(f"the engine returned {len(results)} results for {len(batch)} requests")
            return results
        except Exception as exc:
            log.exception("generation failed for a batch of %d", len(batch))
            error = exc if isinstance(exc, SeesayError) else EngineFailedError(f"generation failed: {exc}")
            return [error] * len(batch)

    def _fail_leftovers(self, deferred: list[Submission]) -> None:
        leftovers = list(deferred)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                leftovers.append(item)
        for submission in leftovers:
            if self._leave_waiting(submission, _State.CANCELLED):
                self._post(submission, ShuttingDownError("the server shut down before the request ran"))

    def _post(self, submission: Submission, event: Event) -> None:
        """Hand an event to the submission's consumer on the event loop (thread-safe)."""
        if isinstance(event, str):
            if submission.first_text_at is None:
                submission.first_text_at = time.monotonic()
            if not submission.stream:
                return
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(submission._events.put_nowait, event)
        except RuntimeError:  # the loop closed between the check and the call
            log.debug("dropped an event for %s: the event loop is closed", submission.request_id)


class _BatchObserver:
    """Routes one ``generate`` call's per-row progress to the rows' submissions."""

    def __init__(self, scheduler: Scheduler, batch: Sequence[Submission]) -> None:
        self._scheduler = scheduler
        self._batch = batch

    def on_text(self, row: int, delta: str) -> None:
        self._scheduler._post(self._batch[row], delta)

    def is_cancelled(self, row: int) -> bool:
        return self._batch[row].cancelled
