"""``seesay eval``: how well a model (with or without an adapter) answers a dataset.

Contract: :func:`evaluate_dataset` asks each record's conversation up to its last assistant
turn through the public :class:`~seesay.engine.base.Engine` API, as a client would (pictures
through :func:`seesay.images.load_image` at the engine's pixel budget, greedy decoding with
the engine's default penalties, ``adapter`` naming the LoRA adapter), in batches, and
compares each answer with the record's last assistant turn, exactly and normalised
(:mod:`seesay.finetune.scoring`). Scores are broken down by the values of ``group_by``
(default ``question_type``) when records carry that field.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from seesay.engine.base import Engine
from seesay.finetune.datasets import Conversation
from seesay.finetune.scoring import Score, exact_match, normalised_match
from seesay.images import load_image_file
from seesay.types import GenerationRequest, SamplingParams

MAX_NEW_TOKENS = 64
MAX_FAILURES_KEPT = 20


@dataclass(frozen=True)
class Graded:
    """One record's answer and how it scored."""

    conversation: Conversation
    answer: str
    exact: bool
    normalised: bool


@dataclass(frozen=True)
class DatasetReport:
    """Exact and normalised accuracy, overall and per group.

    Attributes:
        model: The model asked.
        adapter: The adapter it answered with (``None``: the base model).
        group_by: The record field the groups are the values of.
        exact: Exact matches overall.
        normalised: Normalised matches overall.
        groups: Per value of ``group_by``: ``(exact, normalised)``.
        failures: The first wrong answers: where, expected, got.
        seconds: Wall time.
    """

    model: str
    adapter: str | None
    group_by: str
    exact: Score
    normalised: Score
    groups: dict[str, tuple[Score, Score]]
    failures: tuple[dict[str, str], ...]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return {"model": self.model, "adapter": self.adapter, "group_by": self.group_by,
                "exact_match": self.exact.to_dict(), "normalised_match": self.normalised.to_dict(),
                "groups": {name: {"exact_match": exact.to_dict(), "normalised_match": normalised.to_dict()}
                           for name, (exact, normalised) in self.groups.items()},
                "failures": list(self.failures), "seconds": round(self.seconds, 2)}

    def table(self) -> str:
        """A readable table, one row per group and one for all."""
        who = self.model + (f" + adapter {self.adapter}" if self.adapter else "")
        lines = [f"{who}: {self.exact.total} questions ({self.seconds:.0f} s)", "",
                 f"{self.group_by:16}{'exact':>16}{'normalised':>16}"]
        rows = [*self.groups.items(), ("all", (self.exact, self.normalised))]
        lines += [f"{name[:16]:16}{exact.cell()}{normalised.cell()}" for name, (exact, normalised) in rows]
        lines += [f"  wrong: {f['where']}: expected {f['expected']!r}, got {f['got']!r}" for f in self.failures]
        return "\n".join(lines)


def ask(engine: Engine, conversations: Sequence[Conversation], adapter: str | None) -> list[str]:
    """The engine's greedy answers to ``conversations``, asked as one batch."""
    budget = engine.info().pixel_budget
    sampling = SamplingParams(temperature=0.0, max_new_tokens=MAX_NEW_TOKENS)
    prepared = []
    for conversation in conversations:
        messages = conversation.chat_messages(lambda path: load_image_file(path, budget), prompt_only=True)
        prepared.append(engine.prepare(GenerationRequest(tuple(messages), sampling, adapter=adapter)))
    return [result.text for result in engine.generate(prepared)]


def evaluate_dataset(engine: Engine, conversations: Sequence[Conversation], *, adapter: str | None = None,
                     batch_size: int = 16, group_by: str = "question_type",
                     on_batch: Callable[[int], None] | None = None) -> DatasetReport:
    """Ask every conversation and score the answers (see the module docstring).

    Args:
        engine: The engine to ask.
        conversations: The records; each must end with the expected answer.
        adapter: The name of a LoRA adapter loaded in ``engine`` to answer with (``None``: the base model).
        batch_size: Questions per ``generate`` call.
        group_by: The record field to break scores down by.
        on_batch: Called with the number of questions of each finished batch (a progress bar).
    """
    started = time.perf_counter()
    graded: list[Graded] = []
    for start in range(0, len(conversations), batch_size):
        batch = conversations[start:start + batch_size]
        for conversation, answer in zip(batch, ask(engine, batch, adapter), strict=True):
            expected = conversation.answer
            graded.append(Graded(conversation, answer, exact_match(answer, expected),
                                 normalised_match(answer, expected)))
        if on_batch:
            on_batch(len(batch))
    groups = sorted({str(g.conversation.fields[group_by]) for g in graded if group_by in g.conversation.fields})
    failures = tuple({"where": g.conversation.where, "expected": g.conversation.answer, "got": g.answer.strip()}
                     for g in graded if not g.exact)[:MAX_FAILURES_KEPT]
    return DatasetReport(
        model=engine.info().model, adapter=adapter, group_by=group_by,
        exact=_score(graded, "exact"), normalised=_score(graded, "normalised"),
        groups={name: (_score(members, "exact"), _score(members, "normalised"))
                for name in groups
                for members in [[g for g in graded if str(g.conversation.fields.get(group_by)) == name]]},
        failures=failures, seconds=time.perf_counter() - started)


def _score(graded: Sequence[Graded], kind: str) -> Score:
    return Score(sum(getattr(g, kind) for g in graded), len(graded))
