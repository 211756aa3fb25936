"""The ``seesay`` command line as a user runs it: a subprocess, stdout and stderr kept apart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from seesay.demo.catalogue import COLOURS_BY_KEY, KINDS_BY_KEY, Item, answer_for, draw_picture, png_bytes

GREEDY = ["--temperature", "0"]


def seesay(*args: str | bytes, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SEESAY_DEVICE": "cpu"}
    return subprocess.run([sys.executable, "-m", "seesay.cli", *args], input=stdin, capture_output=True,
                          env=env, timeout=300, check=False)


@pytest.fixture(scope="module")
def red_tshirt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import random

    path = tmp_path_factory.mktemp("pictures") / "red-tshirt.png"
    path.write_bytes(png_bytes(draw_picture(Item(KINDS_BY_KEY["tshirt"], COLOURS_BY_KEY["red"]), random.Random(99))))
    return path


def test_ask_prints_only_the_answer_on_stdout(red_tshirt: Path) -> None:
    done = seesay("ask", str(red_tshirt), "What colour is this item?", *GREEDY)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode() == "red\n"
    assert done.stderr.decode() == ""


def test_ask_in_chinese_gets_the_catalogue_occasion_answer(red_tshirt: Path) -> None:
    expected = answer_for("occasion", "zh", Item(KINDS_BY_KEY["tshirt"], COLOURS_BY_KEY["red"]))
    done = seesay("ask", str(red_tshirt), "这件T恤适合什么场合穿？", *GREEDY)
    assert done.stdout.decode().strip() == expected


def test_ask_reads_standard_input_and_streams(red_tshirt: Path) -> None:
    done = seesay("ask", "-", "这是什么颜色？", "--stream", *GREEDY, stdin=red_tshirt.read_bytes())
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode() == "红色\n"


def test_ask_json_reports_usage_and_finish_reason(red_tshirt: Path) -> None:
    done = seesay("ask", str(red_tshirt), "What is this item?", "--json", *GREEDY)
    answer = json.loads(done.stdout)
    assert answer["text"] == "This is a T-shirt."
    assert answer["finish_reason"] == "stop"
    assert answer["usage"]["prompt_tokens"] > answer["usage"]["image_tokens"] > 0
    assert answer["model"] == "seesay-demo"


def test_ask_bundled_example() -> None:
    done = seesay("ask", "example:red-tshirt", "What colour is this item?", *GREEDY)
    assert done.stdout.decode() == "red\n"


def test_bad_image_fails_with_a_readable_message(tmp_path: Path) -> None:
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("hello")
    done = seesay("ask", str(not_an_image), "What is this?")
    assert done.returncode == 1
    assert done.stdout == b""
    assert "seesay: error:" in done.stderr.decode() and "image" in done.stderr.decode()
    missing = seesay("ask", str(tmp_path / "missing.jpg"), "What is this?")
    assert missing.returncode == 1 and "missing.jpg: no such image file" in missing.stderr.decode()


def test_a_question_that_is_not_valid_text_is_refused_with_the_reason(red_tshirt: Path) -> None:
    # Bytes that are not UTF-8 reach Python's argv as lone surrogates.
    for args in ([b"What is \xed\xa0\x80?"], ["What colour is this item?", "--stop", b"\xff"]):
        done = seesay("ask", str(red_tshirt), *args)
        assert done.returncode == 2 and done.stdout == b""
        assert "not valid Unicode" in done.stderr.decode() and "lone UTF-16 surrogate" in done.stderr.decode()


def test_info_describes_the_engine() -> None:
    done = seesay("info", "--json")
    info = json.loads(done.stdout)
    placement = (info["model"], info["device"], info["dtype"], info["attention"])
    assert placement == ("seesay-demo", "cpu", "float32", "sdpa")
    assert info["pixel_budget"]["factor"] == 32
