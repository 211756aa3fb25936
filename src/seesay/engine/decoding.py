"""Turning generated token ids into answer text, row by row, while ``generate`` runs.

Contract: :class:`AnswerText` receives one row's new token ids and yields text deltas that
concatenate to exactly the final answer: new tokens only, special tokens skipped, cut
before the first stop string. A delta never contains half of a multi-byte character, nor
any text that might still turn out to begin a stop string. :class:`BatchStopper` runs these
for every row as a transformers ``StoppingCriteria`` and decides per row when it is done.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import StoppingCriteria

from seesay.engine.base import GenerationObserver
from seesay.engine.stops import pending_stop_prefix, stop_index
from seesay.types import FinishReason

_INCOMPLETE = "\ufffd"  # what byte-level BPE decodes half a UTF-8 character to


@dataclass
class AnswerText:
    """Incremental detokenizer for one row (see module docstring)."""

    decode: Callable[[list[int]], str]
    stop: tuple[str, ...] = ()
    token_ids: list[int] = field(default_factory=list)
    emitted: int = 0
    stopped: bool = False

    def add(self, token_id: int) -> str:
        """Record one new token; return the text that became final."""
        self.token_ids.append(token_id)
        text = self.decode(self.token_ids)
        cut = self._stop_index(text)
        if cut is not None:
            self.stopped = True
            return self._emit(text[:cut])
        stable = len(text.rstrip(_INCOMPLETE)) if text.endswith(_INCOMPLETE) else len(text)
        stable -= self._pending_stop_prefix(text[:stable])
        return self._emit(text[:stable])

    def finish(self) -> str:
        """The rest of the text once the row is done."""
        text = self.decode(self.token_ids)
        cut = self._stop_index(text)
        return self._emit(text if cut is None else text[:cut])

    @property
    def text(self) -> str:
        text = self.decode(self.token_ids)
        cut = self._stop_index(text)
        return text if cut is None else text[:cut]

    def _emit(self, final: str) -> str:
        delta = final[self.emitted:] if len(final) > self.emitted else ""
        self.emitted = max(self.emitted, len(final))
        return delta

    def _stop_index(self, text: str) -> int | None:
        return stop_index(text, self.stop, self.emitted)

    def _pending_stop_prefix(self, text: str) -> int:
        return pending_stop_prefix(text, self.stop)


@dataclass
class RowState:
    """Progress of one batch row."""

    answer: AnswerText
    max_new_tokens: int
    finish_reason: FinishReason | None = None
    completion_tokens: int = 0
    first_token_at: float | None = None


class BatchStopper(StoppingCriteria):
    """Per-row stopping and streaming for one ``generate`` call.

    A row ends on an end-of-sequence token ("stop"), a stop string ("stop"), its own
    ``max_new_tokens`` ("length") or cancellation by the observer ("cancelled").
    """

    def __init__(self, rows: Sequence[RowState], eos_token_ids: set[int],
                 observer: GenerationObserver | None) -> None:
        self.rows = list(rows)
        self.eos_token_ids = eos_token_ids
        self.observer = observer

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        newest = input_ids[:, -1].tolist()
        done = [self._step(row, state, token) for row, (state, token) in enumerate(zip(self.rows, newest, strict=True))]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]

    def _step(self, row: int, state: RowState, token: int) -> bool:
        if state.finish_reason is not None:
            return True
        state.completion_tokens += 1
        if state.first_token_at is None:
            state.first_token_at = time.perf_counter()
        if token in self.eos_token_ids:
            state.finish_reason = "stop"
        else:
            self._emit(row, state.answer.add(token))
            if state.answer.stopped:
                state.finish_reason = "stop"
            elif state.completion_tokens >= state.max_new_tokens:
                state.finish_reason = "length"
        if state.finish_reason is None and self.observer is not None and self.observer.is_cancelled(row):
            state.finish_reason = "cancelled"
        if state.finish_reason is not None:
            self._emit(row, state.answer.finish())
        return state.finish_reason is not None

    def _emit(self, row: int, delta: str) -> None:
        if delta and self.observer is not None:
            self.observer.on_text(row, delta)
