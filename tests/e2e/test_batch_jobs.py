"""``seesay batch`` as operators run it: subprocesses with the demo model and a private redis-server.

A prepared job over demo catalogue pictures warms the shared cache, and a ``seesay serve``
started afterwards on the same Redis answers every question from it with the batch's text; a
job killed with SIGKILL halfway and rerun answers every ``custom_id`` exactly once; error lines
and usage errors give the documented exit codes.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from openai.types.chat import ChatCompletion
from server_process import running_server

from redis_server import RedisServer
from seesay.demo.catalogue import write_demo_images

QUESTIONS = ["What colour is this item?", '{"question": "这件T恤适合什么场合穿？"}', "What kind of item is this?"]


def seesay(*args: str | Path, cwd: Path | None = None, **env: str) -> subprocess.Popen[bytes]:
    """``seesay`` in a subprocess, configured by ``env`` alone (no SEESAY_* of the caller's)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SEESAY_")}
    environment.update({"HF_HUB_OFFLINE": "1", **env})
    return subprocess.Popen([sys.executable, "-m", "seesay.cli", *map(str, args)], env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)


def finished(process: subprocess.Popen[bytes], timeout: float = 300) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=timeout)
    return process.returncode, stderr.decode(errors="replace")


def prepare(folder: Path, pictures: int, questions: list[str]) -> Path:
    write_demo_images(pictures, 7, folder / "pictures")
    (folder / "questions.txt").write_text("\n".join(questions) + "\n", encoding="utf-8")
    job = folder / "job.jsonl"
    rc, err = finished(seesay("batch", "prepare", "--images", folder / "pictures", "--questions",
                              folder / "questions.txt", "--output", job, "--max-tokens", "24"))
    assert rc == 0, err
    return job


def read_output(path: Path) -> dict[str, dict[str, Any]]:
    data = path.read_bytes()
    assert data.endswith(b"\n"), "a partial line was left"
    lines = [json.loads(text) for text in data.decode().splitlines()]
    by_id = {line["custom_id"]: line for line in lines}
    assert len(by_id) == len(lines), "a custom_id was answered more than once"
    return by_id


def test_a_warmed_cache_answers_a_server_started_afterwards(tmp_path: Path, model_path: Path,
                                                             redis: RedisServer) -> None:
    job = prepare(tmp_path, 4, QUESTIONS)
    output = tmp_path / "answers.jsonl"
    rc, err = finished(seesay("batch", job, "--output", output, "--warm-cache", "--redis-url", redis.url,
                              "--concurrency", "8"))
    assert rc == 0, err
    assert "answered 12, errors 0" in err
    answers = read_output(output)
    assert len(answers) == 12
    for line in answers.values():
        assert list(line) == ["id", "custom_id", "response", "error"]
        assert list(line["response"]) == ["status_code", "request_id", "body"]
        ChatCompletion.model_validate(line["response"]["body"])
    with running_server(model_path, tmp_path / "serve.log", redis_url=redis.url) as server:
        for source in (json.loads(text) for text in job.read_text().splitlines()):
            body = source["body"]
            image = body["messages"][0]["content"][0]["image_url"]
            picture = (job.parent / image["url"]).read_bytes()
            image["url"] = "data:image/png;base64," + base64.b64encode(picture).decode()
            reply = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=60)
            assert reply.status_code == 200, reply.text
            assert reply.headers["x-seesay-cache"] == "hit-redis", source["custom_id"]
            expected = answers[source["custom_id"]]["response"]["body"]["choices"][0]["message"]["content"]
            assert reply.json()["choices"][0]["message"]["content"] == expected


def test_a_job_killed_halfway_resumes_without_losing_or_repeating_a_line(tmp_path: Path, model_path: Path) -> None:
    job = prepare(tmp_path, 20, [f"Question {n}: what colour is this item?" for n in range(10)])
    output = tmp_path / "answers.jsonl"
    process = seesay("batch", job, "--output", output, "--concurrency", "2", "--no-progress")
    deadline = time.monotonic() + 120
    while not (output.exists() and output.read_bytes().count(b"\n") >= 10):
        assert process.poll() is None and time.monotonic() < deadline, "the job ended before it could be killed"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = output.read_bytes().count(b"\n")
    assert 10 <= killed_at < 200
    rc, err = finished(seesay("batch", job, "--output", output, "--no-progress"))
    assert rc == 0, err
    assert f"skipped {killed_at} already in the output" in err
    answers = read_output(output)
    assert len(answers) == 200
    assert all(line["error"] is None for line in answers.values())


def test_error_lines_exit_zero_unless_asked_and_usage_errors_exit_two(tmp_path: Path, model_path: Path) -> None:
    job = prepare(tmp_path, 1, QUESTIONS[:1])
    with job.open("a") as lines:
        lines.write("not json\n")
        lines.write(json.dumps({"custom_id": "gone", "method": "POST", "url": "/v1/chat/completions", "body": {
            "model": "seesay-demo", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "pictures/gone.png"}}, {"type": "text", "text": "hi"}]}]}}))
    rc, err = finished(seesay("batch", job, "--output", tmp_path / "a.jsonl"))
    assert rc == 0 and "answered 1, errors 2 (invalid_image 1, invalid_request 1)" in err, err
    rc, err = finished(seesay("batch", job, "--output", tmp_path / "b.jsonl", "--fail-on-error"))
    assert rc == 1, err
    assert read_output(tmp_path / "b.jsonl")["gone"]["response"]["body"]["error"]["code"] == "invalid_image"
    rc, err = finished(seesay("batch", job, "--output", tmp_path / "c.jsonl", "--warm-cache"))
    assert rc == 2 and "--warm-cache needs --redis-url" in err
    rc, err = finished(seesay("batch", tmp_path / "none.jsonl", "--output", tmp_path / "c.jsonl"))
    assert rc == 2 and "no such input file" in err



def test_the_readme_batch_commands_run_as_written(tmp_path: Path, model_path: Path, redis: RedisServer) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    commands = [shlex.split(line.removeprefix("$ .venv/bin/seesay ")) for line in readme.splitlines()
                if line.startswith("$ .venv/bin/seesay batch")]
    assert [command[:2] for command in commands] == [["batch", "prepare"], ["batch", "job.jsonl"]]
    write_demo_images(2, 3, tmp_path / "catalogue")
    (tmp_path / "questions.txt").write_text(QUESTIONS[0] + "\n", encoding="utf-8")
    for command in commands:
        argv = [redis.url if arg.startswith("redis://") else arg for arg in command]
        rc, err = finished(seesay(*argv, cwd=tmp_path))
        assert rc == 0, err
    pictures = sorted((tmp_path / "catalogue").glob("*.png"))
    assert sorted(read_output(tmp_path / "answers.jsonl")) == [f"{picture.stem}#1" for picture in pictures]
