"""The batcher: a plain function that gathers the next batch from a queue.

Contract: :func:`collect_batch` takes up to ``max_batch_size`` live items that share a batch
key, waiting at most ``max_wait_s`` after the first one joined, or up to ``hold_s`` longer
while the caller says more items are on their way; when the caller says, as the first item
joins, that waiting is not worth it (a lone request on an idle server), it takes only what
is already queued. Cancelled or expired items come back as ``dropped`` for the caller to
answer; items with another key (or for which there is no room) come back as ``deferred``
and are offered first next time, so nothing is lost and order is kept. It knows nothing
about engines, threads or asyncio: time is its ``clock`` and waiting is the queue's ``get``, so
tests drive it with a scripted queue on a fake clock. :class:`seesay.scheduler.Scheduler` runs
it over a ``queue.Queue`` in its generation thread.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar


class Queued(Protocol):
    """What :func:`collect_batch` needs from a queued item."""

    @property
    def batch_key(self) -> Hashable: ...

    def is_live(self, now: float) -> bool:
        """False once the item was cancelled or its queue deadline has passed."""


Q = TypeVar("Q", bound=Queued)
Q_co = TypeVar("Q_co", covariant=True)


class ItemSource(Protocol[Q_co]):
    """Where :func:`collect_batch` takes items from: a ``queue.Queue`` in the scheduler."""

    def get(self, block: bool = True, timeout: float | None = None) -> Q_co:
        """The next item, waiting up to ``timeout`` seconds; ``queue.Empty`` if none came."""

    def get_nowait(self) -> Q_co:
        """The next item if one is there; ``queue.Empty`` otherwise."""

_HOLD_STEP_S = 0.002  # how often more_coming() is asked again while holding


@dataclass
class BatchDraw(Generic[Q]):
    """One result of :func:`collect_batch`.

    Attributes:
        batch: Live items with one batch key, oldest first, at most ``max_batch_size``.
        dropped: Items found cancelled or expired; the caller tells their owners.
        deferred: Live items left for a later draw (another batch key, or no room); pass
            them back as ``deferred`` next time.
    """

    batch: list[Q] = field(default_factory=list)
    dropped: list[Q] = field(default_factory=list)
    deferred: list[Q] = field(default_factory=list)


def collect_batch(
    source: ItemSource[Q | None],
    deferred: Iterable[Q] = (),
    *,
    max_batch_size: int,
    max_wait_s: float,
    poll_s: float = 0.1,
    hold_s: float = 0.0,
    more_coming: Callable[[], bool] = lambda: False,
    worth_waiting: Callable[[], bool] = lambda: True,
    clock: Callable[[], float] = time.monotonic,
) -> BatchDraw[Q]:
    """Gather the next batch from ``deferred`` (first) and ``source``.

    Blocks up to ``poll_s`` for a first live item (an empty draw if none comes), then takes
    more until the batch has ``max_batch_size`` items or ``max_wait_s`` has passed since the
    first one joined. Past ``max_wait_s`` it keeps waiting, for at most ``hold_s`` more,
    while ``more_coming()`` says items are on their way (admitted, still being prepared).
    ``worth_waiting()`` is asked once, when the first item joins: ``False`` sets both waits
    to zero for this draw. ``None`` in the queue ends the call early (used on shutdown).
    """
    draw: BatchDraw[Q] = BatchDraw()
    for item in deferred:
        _place(item, draw, max_batch_size, clock())
    first_at: float | None = None
    while len(draw.batch) < max_batch_size:
        if first_at is None and draw.batch:  # the first item has just joined
            first_at, (max_wait_s, hold_s) = clock(), _window(worth_waiting, max_wait_s, hold_s)
        now = clock()
        timeout = poll_s if first_at is None else _wait_for_more(first_at, now, max_wait_s, hold_s, more_coming)
        try:
            received = source.get(True, timeout) if timeout > 0 else source.get_nowait()
        except queue.Empty:
            if timeout > 0 and first_at is not None:
                continue  # the window or a hold step is over: decide again
            break
        if received is None:
            break
        _place(received, draw, max_batch_size, clock())
    return draw


def _window(worth_waiting: Callable[[], bool], max_wait_s: float, hold_s: float) -> tuple[float, float]:
    """This draw's (wait, hold) once its first item has joined."""
    return (max_wait_s, hold_s) if worth_waiting() else (0.0, 0.0)


def _wait_for_more(
    first_at: float, now: float, max_wait_s: float, hold_s: float, more_coming: Callable[[], bool]
) -> float:
    """Seconds to block for the next item; 0 means take only what is already queued."""
    remaining = first_at + max_wait_s - now
    if remaining > 0:
        return remaining
    if now < first_at + max_wait_s + hold_s and more_coming():
        return _HOLD_STEP_S
    return 0.0


def _place(item: Q, draw: BatchDraw[Q], max_batch_size: int, now: float) -> None:
    if not item.is_live(now):
        draw.dropped.append(item)
    elif len(draw.batch) < max_batch_size and (not draw.batch or item.batch_key == draw.batch[0].batch_key):
        draw.batch.append(item)
    else:
        draw.deferred.append(item)
