"""Exact-match evaluation of an engine on fresh catalogue samples.

Contract: :func:`evaluate` asks ``n`` samples of the catalogue stream of ``seed`` through the
public :class:`~seesay.engine.base.Engine` API, exactly as a client would (PNG bytes →
:func:`seesay.images.load_image` at the engine's pixel budget → one user message with the
picture and the question → greedy decoding with the engine's default penalties), and
compares each answer, stripped of surrounding whitespace, with the catalogue's canonical
answer. Use a seed the model was not trained on (training uses seed 0's stream).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from seesay.demo.catalogue import LANGUAGES, QUESTION_TYPES, QASample, draw_samples, png_bytes
from seesay.engine.base import Engine
from seesay.finetune.scoring import Score
from seesay.images import load_image
from seesay.types import ChatMessage, GenerationRequest, SamplingParams

MAX_NEW_TOKENS = 48
MAX_FAILURES_KEPT = 20


@dataclass(frozen=True)
class Failure:
    """One wrong answer."""

    question: str
    expected: str
    got: str
    item: str


@dataclass(frozen=True)
class EvalReport:
    """Exact-match accuracy overall and by question type, language, and both.

    Attributes:
        n: Questions asked.
        seed: The catalogue stream they came from.
        overall: All questions.
        by_type: Keyed by question type (``item``, ``colour``, ``occasion``).
        by_language: Keyed by language (``en``, ``zh``).
        by_type_language: Keyed by ``"type/language"`` (``colour/zh``).
        failures: The first wrong answers (at most 20).
        seconds: Wall time of the evaluation.
    """

    n: int
    seed: int
    overall: Score
    by_type: dict[str, Score]
    by_language: dict[str, Score]
    by_type_language: dict[str, Score]
    failures: tuple[Failure, ...]
    seconds: float

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dictionary (accuracies as fractions)."""

        def scores(group: dict[str, Score]) -> dict[str, dict[str, float]]:
            return {key: score.to_dict() for key, score in group.items()}

        return {
            "n": self.n, "seed": self.seed, "overall": self.overall.to_dict(),
            "by_type": scores(self.by_type), "by_language": scores(self.by_language),
            "by_type_language": scores(self.by_type_language),
            "failures": [vars(failure) for failure in self.failures], "seconds": round(self.seconds, 2),
        }

    def table(self) -> str:
        """A readable table: accuracy per question type (rows) and language (columns)."""
        lines = [f"exact match on {self.n} samples of seed {self.seed} ({self.seconds:.0f} s)", "",
                 f"{'':10}" + "".join(f"{language:>16}" for language in LANGUAGES) + f"{'all':>16}"]
        for question_type in QUESTION_TYPES:
            cells = [self.by_type_language[f"{question_type}/{language}"] for language in LANGUAGES]
            row = (*cells, self.by_type[question_type])
            lines.append(f"{question_type:10}" + "".join(s.cell() for s in row))
        cells = [self.by_language[language] for language in LANGUAGES]
        lines.append(f"{'all':10}" + "".join(s.cell() for s in (*cells, self.overall)))
        for failure in self.failures:
            lines.append(f"  wrong: {failure.item}: {failure.question!r} -> {failure.got!r} "
                         f"(expected {failure.expected!r})")
        return "\n".join(lines)


def _score(pairs: Iterable[tuple[QASample, bool]], question_type: str | None = None,
           language: str | None = None) -> Score:
    """Exact matches among the samples of ``question_type`` and ``language`` (``None``: any)."""
    hits = [ok for sample, ok in pairs
            if question_type in (None, sample.question_type) and language in (None, sample.language)]
    return Score(sum(hits), len(hits))


def ask(engine: Engine, samples: list[QASample]) -> list[str]:
    """The engine's greedy answers to ``samples``, asked as one batch."""
    budget = engine.info().pixel_budget
    sampling = SamplingParams(temperature=0.0, max_new_tokens=MAX_NEW_TOKENS)
    messages = [ChatMessage.user(load_image(png_bytes(s.image), budget), s.question) for s in samples]
    prepared = [engine.prepare(GenerationRequest((message,), sampling)) for message in messages]
    return [result.text for result in engine.generate(prepared)]


def evaluate(engine: Engine, n: int, seed: int, batch_size: int = 16) -> EvalReport:
    """Ask ``n`` fresh samples of ``seed`` and score exact matches (see the module docstring)."""
    started = time.perf_counter()
    samples = draw_samples(n, seed)
    answers: list[str] = []
    for start in range(0, n, batch_size):
        answers += ask(engine, samples[start:start + batch_size])
    pairs = [(s, a.strip() == s.answer) for s, a in zip(samples, answers, strict=True)]
    failures = tuple(Failure(s.question, s.answer, a.strip(), s.item.name)
                     for (s, ok), a in zip(pairs, answers, strict=True) if not ok)
    return EvalReport(
        n=n, seed=seed,
        overall=_score(pairs),
        by_type={t: _score(pairs, question_type=t) for t in QUESTION_TYPES},
        by_language={lang: _score(pairs, language=lang) for lang in LANGUAGES},
        by_type_language={f"{t}/{lang}": _score(pairs, t, lang)
                          for t in QUESTION_TYPES for lang in LANGUAGES},
        failures=failures[:MAX_FAILURES_KEPT],
        seconds=time.perf_counter() - started,
    )
