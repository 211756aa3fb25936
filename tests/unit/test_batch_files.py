"""Batch jobs with a fake engine: the output format, error lines as the API sends them, resuming."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from openai.types.chat import ChatCompletion

from fakes import FAIL_PREPARE, FakeEngine, app_client, data_url, fake_settings, png_bytes
from seesay.api.app import build_app
from seesay.api.batch_files import OutputFile, PictureFolder, input_lines
from seesay.api.batch_prepare import batch_lines, read_questions
from seesay.api.batch_run import BatchJob, BatchSummary, count_pending, run_batch
from seesay.safety import SafetyGate
from seesay.service import running_service

URL = "/v1/chat/completions"


class Bar:
    def __init__(self) -> None:
        self.n = 0

    def update(self, n: int = 1) -> None:
        self.n += n


def chat(text: str, image: str | None = None, **fields: Any) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    if image is not None:
        content.insert(0, {"type": "image_url", "image_url": {"url": image}})
    return {"model": "fake-vl", "messages": [{"role": "user", "content": content}], "temperature": 0, **fields}


def line(custom_id: str, body: Any, **fields: Any) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": URL, "body": body, **fields})


def write_input(folder: Path, lines: list[str]) -> Path:
    path = folder / "input.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def run(input_path: Path, output_path: Path, engine: FakeEngine | None = None, *, concurrency: int = 4,
              **settings: Any) -> BatchSummary:
    engine = engine or FakeEngine()
    config = fake_settings(**settings)
    output = OutputFile(output_path)
    job = BatchJob(PictureFolder(input_path.parent), concurrency)
    try:
        with closing(SafetyGate.from_config(config.safety_config())) as gate:
            async with running_service(engine, config, gate) as service:
                return await run_batch(service, input_lines(input_path), output, job, Bar())
    finally:
        output.close()


def outputs(path: Path) -> dict[str, dict[str, Any]]:
    lines = [json.loads(text) for text in path.read_text(encoding="utf-8").splitlines()]
    by_id = {item["custom_id"]: item for item in lines}
    assert len(by_id) == len(lines), "a custom_id was answered twice"
    return by_id


@pytest.fixture
def pictures(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "pictures").mkdir()
    (tmp_path / "pictures" / "red.png").write_bytes(png_bytes((200, 30, 30)))
    (tmp_path / "pictures" / "blue.png").write_bytes(png_bytes((30, 30, 200)))
    yield tmp_path


async def test_answers_are_batch_api_output_lines_that_the_openai_types_parse(pictures: Path) -> None:
    path = write_input(pictures, [line("a", chat("What colour?", "pictures/red.png")),
                                  line("b", chat("And this?", data_url(png_bytes((30, 30, 200)))))])
    summary = await run(path, pictures / "out.jsonl")
    assert (summary.answered, summary.failed) == (2, 0)
    for custom_id, item in outputs(pictures / "out.jsonl").items():
        assert list(item) == ["id", "custom_id", "response", "error"]
        assert list(item["response"]) == ["status_code", "request_id", "body"]
        assert item["id"].startswith("batch_req_") and item["error"] is None
        assert item["response"]["status_code"] == 200
        completion = ChatCompletion.model_validate(item["response"]["body"])
        question = "What colour?" if custom_id == "a" else "And this?"
        assert completion.choices[0].message.content == f"1 image(s): {question}"
        assert completion.id == "chatcmpl-" + item["response"]["request_id"].removeprefix("req-")


async def test_requests_in_flight_share_the_schedulers_batches(tmp_path: Path) -> None:
    engine = FakeEngine(token_delay_s=0.01)
    path = write_input(tmp_path, [line(f"q{n}", chat(f"question {n}")) for n in range(16)])
    summary = await run(path, tmp_path / "out.jsonl", engine, concurrency=8, max_batch_size=8)
    assert summary.answered == 16
    assert max(len(batch) for batch in engine.batches) > 1


BAD_LINES = {
    "not-json": ("{not json", 400, "invalid_request"),
    "no-id": (json.dumps({"method": "POST", "url": URL, "body": chat("hi")}), 400, "invalid_request"),
    "get": (line("get", chat("hi"), method="GET"), 405, "method_not_allowed"),
    "url": (line("url", chat("hi"), url="/v1/completions"), 404, "not_found"),
    "field": (line("field", {**chat("hi"), "tools": []}), 400, "invalid_request"),
    "stream": (line("stream", chat("hi", stream=True)), 400, "invalid_request"),
    "missing": (line("missing", chat("hi", "pictures/none.png")), 400, "invalid_image"),
    "outside": (line("outside", chat("hi", "../secret.png")), 400, "invalid_image_url"),
    "absolute": (line("absolute", chat("hi", "/etc/passwd")), 400, "invalid_image_url"),
    "model": (line("model", {**chat("hi"), "model": "gpt-4o"}), 404, "model_not_found"),
    "refused": (line("refused", chat(FAIL_PREPARE)), 400, "invalid_request"),
    "policy": (line("policy", chat("how do I break the law?")), 400, "content_policy_violation"),
}


async def test_each_bad_line_becomes_an_error_line_and_the_job_goes_on(pictures: Path) -> None:
    lines = [text for text, _, _ in BAD_LINES.values()]
    path = write_input(pictures, [*lines, line("good", chat("still answered", "pictures/blue.png"))])
    summary = await run(path, pictures / "out.jsonl")
    assert (summary.answered, summary.failed) == (1, len(BAD_LINES))
    by_id = outputs(pictures / "out.jsonl")
    assert by_id["good"]["response"]["status_code"] == 200
    ids = {"not-json": "line-1", "no-id": "line-2"}
    for name, (_, status, code) in BAD_LINES.items():
        item = by_id[ids.get(name, name)]
        assert item["response"]["status_code"] == status, name
        assert item["response"]["body"]["error"]["code"] == code, name
        assert item["error"] == {"code": code, "message": item["response"]["body"]["error"]["message"]}


@pytest.mark.parametrize("name", ["field", "model", "refused", "policy"])
async def test_error_objects_are_the_ones_the_api_returns(pictures: Path, name: str) -> None:
    text, status, _ = BAD_LINES[name]
    path = write_input(pictures, [text])
    await run(path, pictures / "out.jsonl")
    response = outputs(pictures / "out.jsonl")[name]["response"]
    async with app_client(build_app(fake_settings(), FakeEngine())) as client:
        live = await client.post(URL, json=json.loads(text)["body"])
    assert (response["status_code"], response["body"]) == (live.status_code, live.json()) == (status, live.json())


async def test_a_rerun_skips_answered_ids_and_cuts_a_partial_last_line(tmp_path: Path) -> None:
    path = write_input(tmp_path, [line(f"q{n}", chat(f"question {n}")) for n in range(6)])
    out = tmp_path / "out.jsonl"
    first = [json.dumps({"id": "batch_req_x", "custom_id": f"q{n}", "response": None, "error": None}) for n in (0, 1)]
    out.write_text("\n".join(first) + '\n{"id": "batch_req_y", "custom_id": "q2", "resp', encoding="utf-8")
    with closing(OutputFile(out)) as output:
        assert output.done == {"q0", "q1"}
        assert count_pending(input_lines(path), output) == 4
    summary = await run(path, out)
    assert (summary.answered, summary.skipped) == (4, 2)
    assert sorted(outputs(out)) == [f"q{n}" for n in range(6)]
    again = await run(path, out)
    assert (again.answered, again.skipped) == (0, 6)


async def test_a_repeated_custom_id_is_answered_once(tmp_path: Path) -> None:
    path = write_input(tmp_path, [line("same", chat("first")), line("same", chat("second"))])
    summary = await run(path, tmp_path / "out.jsonl")
    assert (summary.answered, summary.skipped) == (1, 1)
    assert len(outputs(tmp_path / "out.jsonl")) == 1


async def test_identical_greedy_lines_compute_once(tmp_path: Path) -> None:
    engine = FakeEngine()
    path = write_input(tmp_path, [line(f"q{n}", chat("same question")) for n in range(3)])
    summary = await run(path, tmp_path / "out.jsonl", engine, concurrency=1)
    assert summary.answered == 3 and sum(summary.cache_hits.values()) == 2
    assert len(engine.requests) == 1


def test_prepare_makes_one_line_per_picture_and_question_with_stable_ids(pictures: Path) -> None:
    questions = pictures / "questions.txt"
    questions.write_text('What colour?\n\n{"question": "这件适合什么场合？"}\n"Quoted?"\n', encoding="utf-8")
    asked = read_questions(questions)
    assert asked == ["What colour?", "这件适合什么场合？", "Quoted?"]
    files = sorted((pictures / "pictures").glob("*.png"))
    lines = list(batch_lines(files, asked, pictures, "fake-vl", max_tokens=8, temperature=0.0))
    assert [item["custom_id"] for item in lines] == [f"{stem}#{n}" for stem in ("blue", "red") for n in (1, 2, 3)]
    body = lines[0]["body"]
    assert body["messages"][0]["content"][0]["image_url"]["url"] == "pictures/blue.png"
    assert (body["max_tokens"], body["temperature"], lines[0]["url"]) == (8, 0.0, URL)
