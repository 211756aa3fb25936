"""``seesay batch --adapter`` answers every line with the adapter, exactly as ``seesay ask --adapter`` does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seesay.cli import main
from seesay.demo.examples import example_path

QUESTION = "What colour is this item?"


def test_a_batch_job_answers_with_the_adapter_it_names(lora_adapters: dict[str, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEESAY_DEVICE", "cpu")
    monkeypatch.setenv("SEESAY_SAFETY_IMAGE_DETECTOR", "off")
    picture = tmp_path / "red-tshirt.png"
    picture.write_bytes(example_path("red-tshirt").read_bytes())
    content = [{"type": "image_url", "image_url": {"url": picture.name}}, {"type": "text", "text": QUESTION}]
    request = {"custom_id": "shirt#1", "method": "POST", "url": "/v1/chat/completions",
               "body": {"model": "seesay-demo", "messages": [{"role": "user", "content": content}],
                        "temperature": 0, "max_tokens": 12}}
    (tmp_path / "job.jsonl").write_text(json.dumps(request) + "\n", encoding="utf-8")

    def answer(output: str, *options: str) -> str:
        assert main(["batch", str(tmp_path / "job.jsonl"), "--output", str(tmp_path / output), "--no-progress",
                     *options]) == 0
        (line,) = (tmp_path / output).read_text(encoding="utf-8").splitlines()
        return str(json.loads(line)["response"]["body"]["choices"][0]["message"]["content"])

    base = answer("base.jsonl")
    adapted = answer("shop.jsonl", "--adapter", str(lora_adapters["shop"]))
    capsys.readouterr()
    assert main(["ask", str(picture), QUESTION, "--temperature", "0", "--max-new-tokens", "12",
                 "--adapter", str(lora_adapters["shop"])]) == 0
    assert adapted == capsys.readouterr().out.strip() != base
