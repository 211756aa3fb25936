"""Exact and normalised matching of answers."""

from __future__ import annotations

from seesay.finetune.scoring import Score, exact_match, normalise, normalised_match


def test_exact_match_ignores_only_surrounding_whitespace() -> None:
    assert exact_match(" It is red.\n", "It is red.")
    assert not exact_match("it is red.", "It is red.")


def test_normalised_match_folds_case_punctuation_full_width_and_spaces() -> None:
    assert normalise("ＲＥＤ，  Jacket！") == "red jacket"
    assert normalised_match("it is RED", "It is red.")
    assert normalised_match("红色。", "红色")
    assert normalised_match("ＡＢＣ１２３", "abc123")
    assert not normalised_match("It is blue.", "It is red.")


def test_score_accuracy_and_cells() -> None:
    assert Score(3, 4).accuracy == 0.75 and Score(0, 0).accuracy == 0.0
    assert Score(3, 4).to_dict() == {"correct": 3, "total": 4, "accuracy": 0.75}
    assert "75.0%" in Score(3, 4).cell()
