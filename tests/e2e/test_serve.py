"""``seesay serve`` with the demo model, driven by the official ``openai`` SDK and plain HTTP.

Greedy answers from the server must equal ``seesay ask`` and the engine called directly for
the same request; overload, dropped streams, auth, malformed requests and SIGTERM draining
are checked against the real process. Tests about batching, queues and streams from the model
keep their requests out of the response cache (``"seesay": {"cache": false}`` or
``Cache-Control``), since identical greedy requests would otherwise share one computation.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from server_process import ServerProcess, running_server

from seesay.demo.catalogue import draw_samples, png_bytes
from seesay.engine.base import Engine
from seesay.engine.config import TransformersEngineConfig, demo_model_dir
from seesay.engine.registry import create_engine
from seesay.images import load_image
from seesay.types import ChatMessage, GenerationRequest, ImagePart, SamplingParams, TextPart

MAX_TOKENS = 24
NO_CACHE = {"seesay": {"cache": False}}
BACKLOG = 40  # requests queued ahead of the stream that is dropped
SAMPLES = draw_samples(6, seed=2024)
PICTURES = [png_bytes(sample.image) for sample in SAMPLES]


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def image_part(png: bytes) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": data_url(png)}}


def user(*pictures: bytes, text: str) -> dict[str, Any]:
    return {"role": "user", "content": [*(image_part(p) for p in pictures), {"type": "text", "text": text}]}


def series(page: str, name: str) -> float | None:
    """The value of the series ``name`` (with its labels) on a /metrics page; ``None`` when it is not there."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", page, re.MULTILINE)
    return float(match.group(1)) if match else None


def metric(page: str, name: str) -> float:
    """The value of a series that must be on the page: a renamed or missing one fails, never reads as 0."""
    value = series(page, name)
    if value is None:
        family = name.split("{")[0].removesuffix("_total").removesuffix("_count").removesuffix("_sum")
        alike = sorted({line.split(" ")[0] for line in page.splitlines() if line.startswith(family)})
        raise AssertionError(f"/metrics has no series {name}; series of that family: {alike or 'none'}")
    return value


async def wait_for_metric(client: httpx.AsyncClient, condition: Callable[[str], bool], what: str,
                          timeout_s: float = 60.0) -> str:
    """Poll /metrics until ``condition(page)`` holds; fail saying ``what`` did not happen by the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        page = (await client.get("/metrics")).text
        if condition(page):
            return page
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s:.0f} s; /metrics:\n{page}")
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def engine(model_path: Path) -> Iterator[Engine]:
    """The engine called directly, in this process, for reference answers."""
    model = None if model_path == demo_model_dir() else str(model_path)
    loaded = create_engine("transformers", TransformersEngineConfig(model=model))
    yield loaded
    loaded.close()


def direct_answer(engine: Engine, messages: list[dict[str, Any]]) -> str:
    """What the engine answers for the same conversation, built the way the server builds it."""
    budget = engine.info().pixel_budget
    turns = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            turns.append(ChatMessage(message["role"], (TextPart(content),)))
            continue
        parts = [ImagePart(load_image(base64.b64decode(p["image_url"]["url"].split(",", 1)[1]), budget))
                 if p["type"] == "image_url" else TextPart(p["text"]) for p in content]
        turns.append(ChatMessage(message["role"], tuple(parts)))
    request = GenerationRequest(tuple(turns), SamplingParams(max_new_tokens=MAX_TOKENS, temperature=0.0))
    return engine.generate([engine.prepare(request)])[0].text


def sdk(server: ServerProcess, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=options.pop("api_key", "unused"), **options)


def async_sdk(server: ServerProcess) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="unused")


# --- answers ---------------------------------------------------------------------------------


def test_sync_sdk_with_a_base64_image_equals_seesay_ask(server: ServerProcess, model_path: Path,
                                                         tmp_path: Path) -> None:
    sample = SAMPLES[0]
    completion = sdk(server).chat.completions.create(
        model=server.model_name, messages=[user(PICTURES[0], text=sample.question)],  # type: ignore[list-item]
        temperature=0, max_tokens=MAX_TOKENS,
    )
    picture = tmp_path / "item.png"
    picture.write_bytes(PICTURES[0])
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if model_path != demo_model_dir():
        env["SEESAY_MODEL"] = str(model_path)
    ask = subprocess.run(
        [sys.executable, "-m", "seesay.cli", "ask", str(picture), sample.question, "--temperature", "0",
         "--max-new-tokens", str(MAX_TOKENS)], capture_output=True, text=True, env=env, timeout=300, check=True,
    )
    answer = completion.choices[0].message.content
    assert answer == ask.stdout.rstrip("\n")
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert completion.usage.prompt_tokens > 16  # the picture's tokens are counted


def test_sync_sdk_stream_gives_the_same_answer_with_usage(server: ServerProcess, engine: Engine) -> None:
    messages = [user(PICTURES[1], text=SAMPLES[1].question)]
    stream = sdk(server).chat.completions.create(
        model=server.model_name, messages=messages, temperature=0, max_tokens=MAX_TOKENS,  # type: ignore[arg-type]
        stream=True, stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == direct_answer(engine, messages)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


async def test_async_sdk_several_images_and_multi_turn_equal_the_engine(server: ServerProcess,
                                                                        engine: Engine) -> None:
    client = async_sdk(server)
    several = [user(PICTURES[2], PICTURES[3], PICTURES[4], text="What is in the picture?")]
    multi_turn = [
        {"role": "system", "content": "You are a shop assistant."},
        user(PICTURES[0], text=SAMPLES[0].question),
        {"role": "assistant", "content": SAMPLES[0].answer},
        {"role": "user", "content": SAMPLES[3].question},
    ]
    for messages in (several, multi_turn):
        whole = await client.chat.completions.create(
            model=server.model_name, messages=messages, temperature=0, max_tokens=MAX_TOKENS,  # type: ignore[arg-type]
        )
        stream = await client.chat.completions.create(
            model=server.model_name, messages=messages, temperature=0, max_tokens=MAX_TOKENS,  # type: ignore[arg-type]
            stream=True, extra_headers={"Cache-Control": "no-cache"},  # from the model, not a replay
        )
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        expected = direct_answer(engine, messages)
        assert whole.choices[0].message.content == streamed == expected
    await client.close()


async def test_concurrent_greedy_requests_are_batched_and_answered_as_alone(server: ServerProcess,
                                                                            engine: Engine) -> None:
    client = async_sdk(server)
    conversations = [[user(PICTURES[i], text=SAMPLES[i].question)] for i in range(6)]
    before = metric(server.metrics(), "seesay_batch_size_count")
    answers = await asyncio.gather(*(
        client.chat.completions.create(model=server.model_name, messages=m, temperature=0,  # type: ignore[arg-type]
                                       max_tokens=MAX_TOKENS, extra_body=NO_CACHE) for m in conversations))
    await client.close()
    assert [a.choices[0].message.content for a in answers] == [direct_answer(engine, m) for m in conversations]
    assert metric(server.metrics(), "seesay_batch_size_count") - before < 6  # some shared a batch


def test_vqa_multipart_upload_gives_the_chat_answer(server: ServerProcess, engine: Engine) -> None:
    response = httpx.post(f"{server.base_url}/v1/vqa", files={"image": ("item.png", PICTURES[5], "image/png")},
                          data={"question": SAMPLES[5].question, "temperature": "0", "max_tokens": str(MAX_TOKENS)},
                          timeout=60)
    assert response.status_code == 200
    assert response.json()["answer"] == direct_answer(engine, [user(PICTURES[5], text=SAMPLES[5].question)])


# --- malformed requests ----------------------------------------------------------------------


def test_malformed_requests_get_4xx_json_and_the_server_keeps_serving(server: ServerProcess) -> None:
    url = f"{server.base_url}/v1/chat/completions"
    model = server.model_name
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
        ({"json": {"model": model, "messages": [{"role": "tool", "content": "x"}]}}, 400, "messages[0].role"),
        ({"json": {"model": model, "messages": []}}, 400, "at least 1 item"),
        ({"json": {"model": model, "messages": [user(b"GIF89a but not really", text="what?")]}}, 400,
         "not a recognised image format"),
        ({"json": {"model": model, "messages": [user(*[PICTURES[0]] * 100, text="all?")]}}, 400, "100 images"),
        ({"content": b'{"model": "x", "pad": "' + b"A" * 25_000_000 + b'"}',
          "headers": {"content-type": "application/json"}}, 413, "over this server's limit"),
    ]
    with httpx.Client(timeout=60) as client:
        for request, status, message in cases:
            response = client.post(url, **request)
            assert response.status_code == status, response.text
            assert message in response.json()["error"]["message"]
        ok = client.post(url, json={"model": model, "messages": [user(PICTURES[0], text="What is this?")],
                                    "max_tokens": 4})
        assert ok.status_code == 200 and client.get(f"{server.base_url}/health").status_code == 200


# --- overload, dropped clients, auth ---------------------------------------------------------


@pytest.fixture(scope="module")
def small_server(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One request at a time and a short queue: easy to overload."""
    log = tmp_path_factory.mktemp("small") / "serve.log"
    with running_server(model_path, log, max_batch_size=1, max_queue=2, max_wait_ms=0) as process:
        yield process


async def test_overload_gets_429_with_retry_after_while_admitted_requests_complete(
    small_server: ServerProcess, engine: Engine
) -> None:
    messages = [user(PICTURES[0], text=SAMPLES[0].question)]
    body = {"model": small_server.model_name, "messages": messages, "temperature": 0, "max_tokens": MAX_TOKENS,
            **NO_CACHE}
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=small_server.base_url, timeout=120, limits=limits) as client:
        flood = [asyncio.create_task(client.post("/v1/chat/completions", json=body)) for _ in range(24)]
        health = await client.get("/health")
        responses = await asyncio.gather(*flood)
    statuses = [r.status_code for r in responses]
    assert health.status_code == 200
    assert set(statuses) <= {200, 429} and statuses.count(429) >= 1 and statuses.count(200) >= 2
    expected = direct_answer(engine, messages)
    assert all(r.json()["choices"][0]["message"]["content"] == expected for r in responses if r.status_code == 200)
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1 and refused.json()["error"]["code"] == "queue_full"


async def test_a_dropped_stream_leaves_the_queue(model_path: Path, tmp_path: Path) -> None:
    with running_server(model_path, tmp_path / "serve.log", max_batch_size=1, max_queue=64, max_wait_ms=0,
                        queue_timeout_s=600) as srv:
        body = {"model": srv.model_name, "messages": [user(PICTURES[0], text=SAMPLES[0].question)],
                "temperature": 0, "max_tokens": MAX_TOKENS, **NO_CACHE}
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=300,
                                     limits=httpx.Limits(max_connections=64)) as client:
            backlog = [asyncio.create_task(client.post("/v1/chat/completions", json=body)) for _ in range(BACKLOG)]
            # All admitted (waiting, or started: one batch each), so the stream below queues behind them.
            await wait_for_metric(client, lambda page: metric(page, "seesay_queue_depth")
                                  + metric(page, "seesay_batch_size_count") >= BACKLOG, "admitting the backlog")
            async with httpx.AsyncClient(base_url=srv.base_url, timeout=60) as dropper, dropper.stream(
                "POST", "/v1/chat/completions", json={**body, "stream": True}
            ) as stream:
                first = await anext(stream.aiter_lines())  # admitted: the role chunk has arrived
            assert first.startswith("data: ")
            queued_cancel = 'seesay_cancelled_requests_total{stage="queued"}'  # appears with the first one
            page = await wait_for_metric(client, lambda page: series(page, queued_cancel) is not None,
                                         "cancelling the dropped stream while it was queued")
            cancelled = metric(page, queued_cancel)
            responses = await asyncio.gather(*backlog)
        page = srv.metrics()
    assert cancelled == 1.0
    assert [r.status_code for r in responses] == [200] * BACKLOG
    # The dropped request never reached the engine: one batch per backlog request, none for it.
    assert metric(page, "seesay_queue_depth") == 0 and metric(page, "seesay_batch_size_count") == BACKLOG
    lines = [json.loads(line) for line in srv.log.splitlines() if line.startswith("{")]
    assert any(entry.get("error") == "client_closed_request" for entry in lines)


def test_api_keys_and_config_file(model_path: Path, tmp_path: Path) -> None:
    config = tmp_path / "seesay.toml"
    config.write_text('served_model_name = "shop-vl"\napi_keys = ["sk-e2e-123"]\n')
    with running_server(model_path, tmp_path / "serve.log", args=["--config", str(config)]) as srv:
        assert srv.model_name == "shop-vl"
        with pytest.raises(openai.AuthenticationError):
            sdk(srv, api_key="sk-wrong").models.list()
        models = sdk(srv, api_key="sk-e2e-123").models.list()
        assert [m.id for m in models.data] == ["shop-vl"]
        assert httpx.get(f"{srv.base_url}/health").status_code == 200
    assert "sk-e2e-123" not in srv.log


# --- shutdown --------------------------------------------------------------------------------


def test_sigterm_drains_in_flight_streams_then_exits_cleanly(model_path: Path, tmp_path: Path) -> None:
    with running_server(model_path, tmp_path / "serve.log", max_batch_size=2) as srv:
        body = {"model": srv.model_name, "messages": [user(PICTURES[1], text=SAMPLES[1].question)],
                "temperature": 0, "max_tokens": MAX_TOKENS, "stream": True, **NO_CACHE}
        with httpx.Client(base_url=srv.base_url, timeout=120) as client:
            streams = [client.stream("POST", "/v1/chat/completions", json=body) for _ in range(3)]
            opened = [s.__enter__() for s in streams]
            lines = [r.iter_lines() for r in opened]
            assert all(next(it).startswith("data: ") for it in lines)  # all admitted
            srv.process.send_signal(signal.SIGTERM)
            rests = [list(it) for it in lines]
            for stream in streams:
                stream.__exit__(None, None, None)
        code = srv.process.wait(60)
    assert code == 0
    for rest in rests:
        events = [line for line in rest if line]
        assert events[-1] == "data: [DONE]"
        assert any('"finish_reason":"' in event for event in events)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{srv.base_url}/health", timeout=2)
