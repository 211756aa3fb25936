"""Screening a streamed answer: release only text that cannot be the start of a blocked phrase.

Contract: a :class:`StreamGuard` receives the answer's text deltas in order (:meth:`feed`) and
returns, each time, the text that may go to the client now. It holds back the shortest tail
that could still grow into a blocked match in normalised form (a phrase's beginning, with
its inserted separators), a phrase whose word may still continue, a match an allow-list
phrase may still excuse, and, when the policy has regular expressions, their declared
window. So no part of a blocked phrase ever reaches the client, not even its first
character, split across chunks however it is. Once a match is decided the guard blocks:
it releases nothing more, :attr:`verdict` says why, and the caller ends the stream with the
refusal. :meth:`finish` releases what is left. The decision procedure is
:meth:`TextPolicy.scan`, the same one a whole text goes through, and the guard keeps the
policy it started with even if the file is reloaded meanwhile.

:class:`HoldStats` measures what screening costs the client: how many characters arrived
before the first one could be released (the added time-to-first-token, in characters) and
the most characters held back at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from seesay.safety.normalize import NormalizedText
from seesay.safety.text import TextPolicy, TextVerdict


@dataclass(frozen=True)
class HoldStats:
    """What holding back cost one stream.

    Attributes:
        received: Characters received so far.
        released: Characters released so far.
        first_release_after: Characters that had arrived when the first character was released
            (``None`` before that); minus one, it is the delay of the first token in characters.
        max_held: The most characters held back after any delta.
    """

    received: int
    released: int
    first_release_after: int | None
    max_held: int

    @property
    def held(self) -> int:
        return self.received - self.released


class StreamGuard:
    """Screens one streamed answer against one policy (see the module docstring).

    Args:
        policy: The policy in force when the stream started.
        on_block: Called once with the verdict when the stream is blocked (for audit and metrics).
    """

    def __init__(self, policy: TextPolicy, *, on_block: Callable[[TextVerdict], Any] | None = None) -> None:
        self.policy = policy
        self.verdict: TextVerdict | None = None
        self._on_block = on_block
        self._norm = NormalizedText()
        self._pending = ""
        self._released = 0
        self._first_release_after: int | None = None
        self._max_held = 0

    @property
    def blocked(self) -> bool:
        return self.verdict is not None

    @property
    def stats(self) -> HoldStats:
        return HoldStats(self._norm.length, self._released, self._first_release_after, self._max_held)

    def feed(self, delta: str) -> str:
        """Take the next piece of the answer; return what may be sent now (``""`` when blocked)."""
        if self.verdict is not None or not delta:
            return ""
        self._pending += delta
        self._norm.append(delta)
        return self._advance(finished=False)

    def finish(self) -> str:
        """The answer is complete: return the rest if it is clean, ``""`` if it is blocked."""
        if self.verdict is not None:
            return ""
        return self._advance(finished=True)

    def _advance(self, *, finished: bool) -> str:
        scan = self.policy.scan(self._norm, finished=finished, since=self._released)
        if scan.verdict.blocked:
            self.verdict = scan.verdict
            self._pending = ""
            if self._on_block is not None:
                self._on_block(scan.verdict)
            return ""
        count = scan.safe_end - self._released
        out, self._pending = self._pending[:count], self._pending[count:]
        self._released = scan.safe_end
        if out and self._first_release_after is None:
            self._first_release_after = self._norm.length
        self._max_held = max(self._max_held, self._norm.length - self._released)
        return out
