"""The README's HTTP API examples (the OpenAI SDK snippet and the curl line) run against a real server."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
from server_process import ServerProcess

from seesay.demo.catalogue import COLOURS_BY_KEY, KINDS_BY_KEY, Item, answer_for
from seesay.demo.examples import example_path

README = Path(__file__).parents[2] / "README.md"
JACKET = Item(KINDS_BY_KEY["jacket"], COLOURS_BY_KEY["blue"])


def api_section() -> str:
    text = README.read_text(encoding="utf-8")
    return text[text.index("## The HTTP API"):text.index("### Settings")]


def test_sdk_snippet_answers_like_a_shop_assistant(server: ServerProcess, capsys: pytest.CaptureFixture[str]) -> None:
    snippet = re.search(r"```python\n(.*?)```", api_section(), flags=re.S)
    assert snippet is not None, "the README's HTTP API section shows an SDK example"
    code = snippet.group(1).replace("http://127.0.0.1:8000", server.base_url)
    code = code.replace('open("jacket.jpg", "rb")', f'open({str(example_path("blue-jacket"))!r}, "rb")')
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert printed.startswith(answer_for("occasion", "zh", JACKET) + " ")
    assert "prompt_tokens=" in printed


def test_curl_line_answers_the_colour(server: ServerProcess) -> None:
    line = next(text for text in api_section().splitlines() if text.startswith("$ curl"))
    argv = shlex.split(line.removeprefix("$ "))
    argv = [a.replace("http://127.0.0.1:8000", server.base_url) for a in argv]
    argv = [a.replace("image=@jacket.jpg", f"image=@{example_path('blue-jacket')}") for a in argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    assert '"answer":"blue"' in done.stdout.replace(" ", "")

