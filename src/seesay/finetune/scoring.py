"""Scoring answers against expected ones: exact match, normalised match, and groups of both.

Contract: an answer matches *exactly* when it equals the expected answer after stripping
surrounding whitespace; it matches *normalised* when both are equal after Unicode NFKC
(full-width letters, digits and punctuation become their ASCII forms), case folding, removing
punctuation and collapsing whitespace. No torch, no engine: plain functions over strings.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass


@dataclass(frozen=True)
class Score:
    """Matches out of a number of questions."""

    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        """Fraction correct (0 when there were no questions)."""
        return self.correct / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, float]:
        """``correct``, ``total`` and ``accuracy`` (rounded to 4 places)."""
        return {"correct": self.correct, "total": self.total, "accuracy": round(self.accuracy, 4)}

    def cell(self) -> str:
        """``" 97.5% (39/40 )"``: a fixed-width table cell."""
        return f"{100 * self.accuracy:7.1f}% ({self.correct:>3}/{self.total:<3})"


def normalise(text: str) -> str:
    """``text`` for a normalised match (see the module docstring)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(" " if unicodedata.category(char).startswith("P") else char for char in folded)
    return " ".join(kept.split())


def exact_match(answer: str, expected: str) -> bool:
    """Equal after stripping surrounding whitespace."""
    return answer.strip() == expected.strip()


def normalised_match(answer: str, expected: str) -> bool:
    """Equal after :func:`normalise`."""
    return normalise(answer) == normalise(expected)
