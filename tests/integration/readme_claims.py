"""What the README promises about the demo model, read from the README itself so tests and README cannot drift.

The README's demo section shows ``seesay demo eval --n N --seed S`` and says that on N fresh
pictures the model answers LOW–HIGH % exactly right, every question type in each language at
least FLOOR %.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).parents[2] / "README.md"


@dataclass(frozen=True)
class AccuracyClaim:
    """The demo model's promised exact-match accuracy (fractions, not percentages)."""

    eval_argv: tuple[str, ...]  # the README's `seesay demo eval` command, after `seesay`
    n: int
    seed: int
    overall_low: float
    overall_high: float
    per_type_and_language: float


def accuracy_claim() -> AccuracyClaim:
    text = README.read_text(encoding="utf-8")
    command = re.search(r"^\$ \.venv/bin/seesay (demo eval --n (\d+) --seed (\d+))\s", text, flags=re.M)
    assert command, "the README shows `$ .venv/bin/seesay demo eval --n N --seed S`"
    prose = " ".join(text.split())
    claim = re.search(r"on (\d+) fresh pictures of a seed never used in training it answers ([\d.]+)–([\d.]+) % "
                      r"exactly right \(every question type in each language ≥ ([\d.]+) %\)", prose)
    assert claim, "the README states the demo model's accuracy on N fresh pictures, per question type and language"
    assert int(claim.group(1)) == int(command.group(2)), "the README's claim and its eval command use the same N"
    return AccuracyClaim(
        eval_argv=tuple(command.group(1).split()), n=int(command.group(2)), seed=int(command.group(3)),
        overall_low=float(claim.group(2)) / 100, overall_high=float(claim.group(3)) / 100,
        per_type_and_language=float(claim.group(4)) / 100,
    )
