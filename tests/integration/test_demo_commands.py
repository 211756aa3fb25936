"""`seesay demo …` as a user runs it (in process, through the real argument parser)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from readme_claims import accuracy_claim

from seesay.cli import main
from seesay.demo.catalogue import LANGUAGES, QUESTION_TYPES
from seesay.demo.commands import BUILD_OPTIONS
from seesay.demo.evaluate import evaluate
from seesay.demo.options import TrainConfig
from seesay.engine.transformers import TransformersEngine
from seesay.option_docs import field_docs


def test_images_writes_pictures_and_answers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "images", "--n", "6", "--seed", "3", "--out", str(tmp_path)]) == 0
    lines = (tmp_path / "answers.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 6 and all((tmp_path / r["image"]).is_file() for r in records)
    assert "answers.jsonl" in capsys.readouterr().err


def test_build_help_documents_options_and_time(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["demo", "build", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "2 shared CPU cores" in text and "minutes" in text
    for name in BUILD_OPTIONS:
        assert f"--{name.replace('_', '-')}" in text
        assert field_docs(TrainConfig)[name] in text


def test_eval_json_reports_the_model_s_exact_match_accuracy(engine: TransformersEngine,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The README's eval command, on fewer samples: it prints the model's own scores, cell by cell.

    That those scores keep the README's promise on the README's 500 samples is
    test_demo_build.py::test_shipped_model_keeps_the_readme_s_accuracy_promise.
    """
    argv = list(accuracy_claim().eval_argv)
    argv[argv.index("--n") + 1], argv[argv.index("--seed") + 1] = "12", "99"
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    expected = evaluate(engine, n=12, seed=99).to_dict()
    assert {k: v for k, v in report.items() if k != "seconds"} == {k: v for k, v in expected.items() if k != "seconds"}
    assert report["n"] == 12 and report["overall"]["total"] == 12
    cells = report["by_type_language"]
    assert set(cells) == {f"{t}/{lang}" for t in QUESTION_TYPES for lang in LANGUAGES}
    assert sum(cell["correct"] for cell in cells.values()) == report["overall"]["correct"]
    assert sum(cell["total"] for cell in cells.values()) == 12
    for cell in (*cells.values(), *report["by_type"].values(), *report["by_language"].values(), report["overall"]):
        assert cell["accuracy"] == (round(cell["correct"] / cell["total"], 4) if cell["total"] else 0.0)
    assert len(report["failures"]) == 12 - report["overall"]["correct"]


def test_eval_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "eval", "--n", "6", "--seed", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("exact match on 6 samples of seed 5")
    assert [line.split()[0] for line in lines[3:7]] == ["item", "colour", "occasion", "all"]


def test_demo_without_a_command_shows_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 2
    assert "images" in capsys.readouterr().err
