"""Stop strings over growing answer text, shared by every engine (no heavy imports).

Contract: :func:`stop_index` finds where the answer ends (the first stop string, searched only
where new text could complete one); :func:`pending_stop_prefix` says how much of the text's
tail must be held back because it might still become a stop string. :class:`StopText` applies
both to text that arrives in pieces, so its deltas concatenate to exactly the final answer
and never contain any part of a stop string.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def stop_index(text: str, stop: Sequence[str], emitted: int = 0) -> int | None:
    """Where the first stop string in ``text`` begins, looking only past ``emitted`` final characters."""
    hits = [i for i in (text.find(s, max(0, emitted - len(s))) for s in stop) if i >= 0]
    return min(hits) if hits else None


def pending_stop_prefix(text: str, stop: Sequence[str]) -> int:
    """Length of the longest tail of ``text`` that is a proper prefix of a stop string."""
    longest = 0
    for s in stop:
        for n in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:n]):
                longest = n
                break
    return longest


@dataclass
class StopText:
    """An answer arriving as text pieces, cut at its first stop string (see module docstring)."""

    stop: tuple[str, ...] = ()
    received: str = ""
    emitted: int = 0
    stopped: bool = False

    def add(self, piece: str) -> str:
        """Record a piece of upstream text; return the text that became final."""
        self.received += piece
        cut = stop_index(self.received, self.stop, self.emitted)
        if cut is not None:
            self.stopped = True
            return self._emit(cut)
        return self._emit(len(self.received) - pending_stop_prefix(self.received, self.stop))

    def finish(self) -> str:
        """The rest of the answer once no more text will come."""
        return self._emit(len(self.text))

    @property
    def text(self) -> str:
        cut = stop_index(self.received, self.stop)
        return self.received if cut is None else self.received[:cut]

    def _emit(self, final: int) -> str:
        delta = self.received[self.emitted:final] if final > self.emitted else ""
        self.emitted = max(self.emitted, final)
        return delta
