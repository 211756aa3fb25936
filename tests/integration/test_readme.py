"""The README's `seesay ask` examples run as written and print what the README says."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parents[2] / "README.md"


def readme_examples() -> list[tuple[list[str], str]]:
    """(argv after `seesay`, expected stdout) for each `seesay ask example:…` line with shown output."""
    examples = []
    for block in re.findall(r"```console\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S):
        lines = block.splitlines()
        for index, line in enumerate(lines):
            if not line.startswith("$ .venv/bin/seesay ask example:"):
                continue
            output = []
            for following in lines[index + 1:]:
                if following.startswith("$"):
                    break
                output.append(following)
            examples.append((shlex.split(line.removeprefix("$ .venv/bin/seesay ")), "\n".join(output)))
    return examples


EXAMPLES = readme_examples()


def test_readme_has_runnable_examples() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize(("argv", "expected"), EXAMPLES, ids=[" ".join(a) for a, _ in EXAMPLES])
def test_readme_example_prints_what_the_readme_shows(argv: list[str], expected: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SEESAY_DEVICE": "cpu"}
    done = subprocess.run([sys.executable, "-m", "seesay.cli", *argv], capture_output=True, env=env,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == expected.strip()
