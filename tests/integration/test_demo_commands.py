"""`seesay demo …` as a user runs it (in process, through the real argument parser)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seesay.cli import main
from seesay.demo.commands import BUILD_OPTIONS, field_docs


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
        assert field_docs()[name] in text


def test_eval_prints_json_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "eval", "--n", "12", "--seed", "99", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 12 and report["overall"]["total"] == 12
    assert set(report["by_type"]) == {"item", "colour", "occasion"}
    assert set(report["by_language"]) == {"en", "zh"}
    assert 0.0 <= report["overall"]["accuracy"] <= 1.0


def test_eval_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "eval", "--n", "6", "--seed", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("exact match on 6 samples of seed 5")
    assert [line.split()[0] for line in lines[3:7]] == ["item", "colour", "occasion", "all"]


def test_demo_without_a_command_shows_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 2
    assert "images" in capsys.readouterr().err
