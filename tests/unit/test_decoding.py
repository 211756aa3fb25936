"""AnswerText and BatchStopper: streaming text that never leaks a stop string or half a character."""

from __future__ import annotations

import torch

from seesay.engine.decoding import AnswerText, BatchStopper, RowState


# A byte-level toy vocabulary: each token id is one byte.
def decode(ids: list[int]) -> str:
    return bytes(ids).decode("utf-8", errors="replace")


def feed(answer: AnswerText, text: str) -> list[str]:
    return [answer.add(b) for b in text.encode()] + [answer.finish()]


def test_deltas_concatenate_to_the_text_and_hold_back_partial_characters() -> None:
    answer = AnswerText(decode)
    deltas = feed(answer, "适合 jeans")
    assert "".join(deltas) == answer.text == "适合 jeans"
    assert all("\ufffd" not in d for d in deltas)


def test_stop_string_is_never_emitted_even_in_part() -> None:
    answer = AnswerText(decode, stop=("STOP",))
    deltas = feed(answer, "red STOP blue")
    assert answer.stopped
    assert "".join(deltas) == answer.text == "red "
    assert not any("S" in d for d in deltas)


def test_text_resembling_a_stop_prefix_is_released_once_it_diverges() -> None:
    answer = AnswerText(decode, stop=("STOP",))
    deltas = feed(answer, "STAR")
    assert not answer.stopped
    assert "".join(deltas) == "STAR"


class Observer:
    def __init__(self, cancel_after: int | None = None) -> None:
        self.texts: dict[int, str] = {}
        self.calls = 0
        self.cancel_after = cancel_after

    def on_text(self, row: int, delta: str) -> None:
        self.texts[row] = self.texts.get(row, "") + delta

    def is_cancelled(self, row: int) -> bool:
        self.calls += 1
        return self.cancel_after is not None and row == 1 and self.calls > self.cancel_after


def test_batch_stopper_finishes_rows_independently() -> None:
    rows = [RowState(AnswerText(decode), max_new_tokens=2), RowState(AnswerText(decode), max_new_tokens=5)]
    observer = Observer()
    stopper = BatchStopper(rows, eos_token_ids={0}, observer=observer)
    steps = [[ord("a"), ord("x")], [ord("b"), 0], [0, 0]]
    done = []
    ids = torch.zeros((2, 1), dtype=torch.long)
    for step in steps:
        ids = torch.cat([ids, torch.tensor(step).unsqueeze(1)], dim=1)
        done.append(stopper(ids, None).tolist())
    assert done == [[False, False], [True, True], [True, True]]
    assert [r.finish_reason for r in rows] == ["length", "stop"]
    assert [r.completion_tokens for r in rows] == [2, 2]
    assert observer.texts == {0: "ab", 1: "x"}


def test_batch_stopper_cancels_a_row() -> None:
    rows = [RowState(AnswerText(decode), 10), RowState(AnswerText(decode), 10)]
    stopper = BatchStopper(rows, eos_token_ids={0}, observer=Observer(cancel_after=0))
    done = stopper(torch.tensor([[5, ord("a")], [5, ord("b")]]), None).tolist()
    assert done == [False, True]
    assert rows[1].finish_reason == "cancelled"
