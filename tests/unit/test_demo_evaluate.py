"""Exact-match evaluation: scores overall, by question type, by language and by both, with a scripted engine.

The README promises a figure for every question type in each language; these tests check that
:func:`seesay.demo.evaluate.evaluate` puts each answer in its own cell and only there.
"""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import Any

from seesay.demo.catalogue import LANGUAGES, QUESTION_TYPES, draw_samples
from seesay.demo.evaluate import evaluate
from seesay.images import PixelBudget

N, SEED = 30, 7


class ScriptedEngine:
    """Answers the catalogue's samples of (N, SEED) in order: right, except those listed as wrong."""

    def __init__(self, wrong: set[int]) -> None:
        self.samples = draw_samples(N, SEED)
        self.wrong = wrong
        self.asked = 0
        self.batches: list[int] = []

    def info(self) -> Any:
        return SimpleNamespace(pixel_budget=PixelBudget())

    def prepare(self, request: Any) -> Any:
        return request

    def generate(self, prepared: list[Any]) -> list[Any]:
        self.batches.append(len(prepared))
        answers = []
        for request in prepared:
            sample = self.samples[self.asked]
            assert request.messages[0].text == sample.question  # asked in the catalogue's order
            right = self.asked not in self.wrong
            answers.append(SimpleNamespace(text=f" {sample.answer}\n" if right else "something else"))
            self.asked += 1
        return answers


def cell(sample: Any) -> str:
    return f"{sample.question_type}/{sample.language}"


def test_each_wrong_answer_counts_in_its_own_type_and_language_only() -> None:
    samples = draw_samples(N, SEED)
    wrong = {0, 5, 17}
    engine = ScriptedEngine(wrong)
    report = evaluate(engine, N, SEED, batch_size=8)  # type: ignore[arg-type]
    assert engine.batches == [8, 8, 8, 6]

    totals = Counter(cell(s) for s in samples)
    misses = Counter(cell(samples[i]) for i in wrong)
    assert set(report.by_type_language) == {f"{t}/{lang}" for t in QUESTION_TYPES for lang in LANGUAGES}
    for key, score in report.by_type_language.items():
        assert (score.correct, score.total) == (totals[key] - misses[key], totals[key]), key
    for question_type, score in report.by_type.items():
        total = sum(n for key, n in totals.items() if key.startswith(f"{question_type}/"))
        missed = sum(n for key, n in misses.items() if key.startswith(f"{question_type}/"))
        assert (score.correct, score.total) == (total - missed, total)
    for language, score in report.by_language.items():
        total = sum(n for key, n in totals.items() if key.endswith(f"/{language}"))
        missed = sum(n for key, n in misses.items() if key.endswith(f"/{language}"))
        assert (score.correct, score.total) == (total - missed, total)
    assert (report.overall.correct, report.overall.total) == (N - len(wrong), N)
    assert [f.question for f in report.failures] == [samples[i].question for i in sorted(wrong)]
    assert all(f.got == "something else" for f in report.failures)


def test_the_table_and_json_show_every_cell() -> None:
    report = evaluate(ScriptedEngine({1}), N, SEED)  # type: ignore[arg-type]
    data = report.to_dict()
    assert data["by_type_language"] == {key: {"correct": s.correct, "total": s.total, "accuracy": round(s.accuracy, 4)}
                                        for key, s in report.by_type_language.items()}
    rows = {line.split()[0]: line for line in report.table().splitlines()[3:7]}
    for question_type in QUESTION_TYPES:
        for language in LANGUAGES:
            score = report.by_type_language[f"{question_type}/{language}"]
            assert f"({score.correct:>3}/{score.total:<3})" in rows[question_type]
