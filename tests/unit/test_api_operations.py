"""Operating the service: overload (429/503), dropped clients, draining, readiness, metrics, logs."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

import httpx
import pytest

from fakes import FakeEngine, app_client, data_url, fake_settings, metric, png_bytes, raw_request, wait_until
from seesay.api.app import build_app
from seesay.engine.registry import register_engine

CHAT = {"model": "fake-vl", "messages": [{"role": "user", "content": "hello"}]}


def chat(text: str, **fields: Any) -> dict[str, Any]:
    return {"model": "fake-vl", "messages": [{"role": "user", "content": text}], **fields}


# --- overload --------------------------------------------------------------------------------


async def test_overload_refuses_the_surplus_with_429_and_completes_the_admitted() -> None:
    engine = FakeEngine()
    engine.gate.clear()
    app = build_app(fake_settings(max_batch_size=2, max_queue=2), engine)
    async with app_client(app) as client:
        first = asyncio.create_task(client.post("/v1/chat/completions", json=chat("first")))
        await wait_until(lambda: bool(engine.batches))
        others = [asyncio.create_task(client.post("/v1/chat/completions", json=chat(f"q{i}"))) for i in range(5)]
        await wait_until(lambda: sum(t.done() for t in others) == 3)
        refused = [t.result() for t in others if t.done()]
        assert all(r.status_code == 429 and int(r.headers["retry-after"]) >= 1 for r in refused)
        assert all(r.json()["error"]["code"] == "queue_full" for r in refused)
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/ready")).json()["queue_depth"] == 2
        engine.gate.set()
        admitted = [r for r in [await first, *await asyncio.gather(*others)] if r.status_code != 429]
        assert [r.status_code for r in admitted] == [200, 200, 200]
        texts = {r.json()["choices"][0]["message"]["content"] for r in admitted}
        assert len(texts) == 3 and "0 image(s): first" in texts
        assert len(engine.requests) == 3  # the refused ones were turned away before any work
        page = (await client.get("/metrics")).text
    assert metric(page, 'seesay_requests_total{route="/v1/chat/completions",status="429"}') == 3


async def test_a_request_left_waiting_too_long_gets_503_with_retry_after() -> None:
    engine = FakeEngine()
    engine.gate.clear()
    async with app_client(build_app(fake_settings(queue_timeout_s=0.1), engine)) as client:
        first = asyncio.create_task(client.post("/v1/chat/completions", json=chat("first")))
        await wait_until(lambda: bool(engine.batches))
        late = await client.post("/v1/chat/completions", json=chat("late"))
        engine.gate.set()
        assert (await first).status_code == 200
    assert late.status_code == 503 and late.headers["retry-after"]
    assert late.json()["error"]["code"] == "queue_timeout"


# --- clients that go away --------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
async def test_a_client_that_disconnects_while_queued_frees_its_place(stream: bool) -> None:
    engine = FakeEngine()
    engine.gate.clear()
    app = build_app(fake_settings(), engine)
    async with app_client(app) as client:
        first = asyncio.create_task(client.post("/v1/chat/completions", json=chat("first")))
        await wait_until(lambda: bool(engine.batches))
        gone = asyncio.Event()
        dropped = asyncio.create_task(raw_request(app, chat("dropped", stream=stream), gone))
        await wait_until(lambda: len(engine.requests) == 2)
        page = (await client.get("/metrics")).text
        assert metric(page, "seesay_queue_depth") == 1
        gone.set()
        await asyncio.wait_for(dropped, 5)
        page = (await client.get("/metrics")).text
        assert metric(page, "seesay_queue_depth") == 0
        engine.gate.set()
        assert (await first).status_code == 200
    assert len(engine.batches) == 1  # the dropped request never reached the engine


async def test_a_dropped_stream_stops_its_generation() -> None:
    engine = FakeEngine()
    engine.pace = threading.Semaphore(3)  # three words, then generation waits for the test
    app = build_app(fake_settings(), engine)
    async with app_client(app) as client:
        gone = asyncio.Event()
        words = " ".join(["word"] * 200)
        streaming = asyncio.create_task(raw_request(app, chat(words, stream=True, max_tokens=300), gone))
        await wait_until(lambda: bool(engine.batches))
        gone.set()
        sent = await asyncio.wait_for(streaming, 5)  # the app has seen the client go and cancelled the answer
        engine.unpace()
        await wait_until(lambda: bool(engine.results))
        page = (await client.get("/metrics")).text
    assert engine.results[0].finish_reason == "cancelled"
    assert engine.results[0].usage.completion_tokens <= 3  # not one step after the cancel
    assert sent[0]["status"] == 200
    assert metric(page, "seesay_running_requests") == 0


# --- lifecycle -------------------------------------------------------------------------------


async def test_shutdown_drains_in_flight_requests_and_refuses_new_ones() -> None:
    engine = FakeEngine(token_delay_s=0.01)
    app = build_app(fake_settings(drain_timeout_s=10), engine)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://seesay.test") as client:
        in_flight = asyncio.create_task(client.post("/v1/chat/completions", json=chat("one two three four five")))
        await wait_until(lambda: bool(engine.batches))
        shutdown = asyncio.create_task(lifespan.__aexit__(None, None, None))
        await wait_until(lambda: not app.state.runtime.service.readiness()[0])  # draining
        refused = await client.post("/v1/chat/completions", json=CHAT)
        ready = await client.get("/ready")
        response = await in_flight
        await shutdown
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "0 image(s): one two three four five"
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"
    assert ready.status_code == 503 and ready.json()["status"] == "not ready"
    assert not engine.closed  # an injected engine belongs to its caller


async def test_the_app_loads_the_engine_named_in_the_settings_and_closes_it() -> None:
    loaded: list[FakeEngine] = []

    @register_engine("fake-for-tests")
    def make(config: Any) -> FakeEngine:
        loaded.append(FakeEngine(default_max_new_tokens=config.default_max_new_tokens))
        return loaded[-1]

    async with app_client(build_app(fake_settings(engine="fake-for-tests", default_max_new_tokens=2))) as client:
        response = await client.post("/v1/chat/completions", json=chat("a b c d"))
        assert response.json()["choices"][0]["finish_reason"] == "length"
        assert not loaded[0].closed
    assert loaded[0].closed


async def test_ready_reports_an_unhealthy_engine() -> None:
    engine = FakeEngine()
    async with app_client(build_app(fake_settings(), engine)) as client:
        assert (await client.get("/ready")).json() == {"status": "ready", "detail": "ready", "model": "fake-vl",
                                                        "queue_depth": 0}
        engine.closed = True
        response = await client.get("/ready")
    assert response.status_code == 503 and response.json()["detail"] == "closed"


# --- metrics and logs ------------------------------------------------------------------------


async def test_metrics_count_requests_latency_first_tokens_batches_and_tokens() -> None:
    engine = FakeEngine()
    async with app_client(build_app(fake_settings(), engine)) as client:
        await client.post("/v1/chat/completions", json=chat("one two"))
        await client.post("/v1/chat/completions", json=chat("three", stream=True))
        await client.post("/v1/chat/completions", json={"model": "fake-vl"})
        await client.get("/no/such/page")
        page = (await client.get("/metrics")).text
    assert metric(page, 'seesay_requests_total{route="/v1/chat/completions",status="200"}') == 2
    assert metric(page, 'seesay_requests_total{route="/v1/chat/completions",status="400"}') == 1
    assert metric(page, 'seesay_requests_total{route="unmatched",status="404"}') == 1
    assert metric(page, 'seesay_request_duration_seconds_count{route="/v1/chat/completions"}') == 3
    assert metric(page, "seesay_time_to_first_token_seconds_count") == 2
    assert metric(page, "seesay_batch_size_count") == 2 and metric(page, "seesay_batch_size_sum") == 2
    assert metric(page, "seesay_generated_tokens_total") == 4 + 3
    assert metric(page, "seesay_prompt_tokens_total") == sum(r.usage.prompt_tokens for r in engine.results)


async def test_each_app_has_its_own_metrics_registry() -> None:
    async with app_client(build_app(fake_settings(), FakeEngine())) as one:
        await one.post("/v1/chat/completions", json=CHAT)
        async with app_client(build_app(fake_settings(), FakeEngine())) as two:
            page = (await two.get("/metrics")).text
    assert 'route="/v1/chat/completions"' not in page


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "seesay.access"]


async def test_one_json_log_line_per_request_without_prompts_or_images(caplog: pytest.LogCaptureFixture) -> None:
    image = data_url(png_bytes())
    body = {"model": "fake-vl", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": "secret question"}]}]}
    with caplog.at_level(logging.INFO, logger="seesay.access"):
        async with app_client(build_app(fake_settings(), FakeEngine())) as client:
            response = await client.post("/v1/chat/completions", json=body)
            await client.post("/v1/chat/completions", json={"model": "fake-vl"})
    ok, bad = access_lines(caplog)
    assert ok["request_id"] == response.headers["x-request-id"] and ok["status"] == 200
    assert ok["key_id"] == "anonymous" and ok["completion_tokens"] == 4 and ok["image_tokens"] == 16
    assert ok["latency_ms"] >= 0 and "ttft_ms" in ok and ok["finish_reason"] == "stop"
    assert bad["status"] == 400 and bad["error"] == "invalid_request"
    assert "secret question" not in caplog.text and image[30:60] not in caplog.text


async def test_debug_mode_logs_the_prompt(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="seesay.access"):
        async with app_client(build_app(fake_settings(debug=True), FakeEngine())) as client:
            await client.post("/v1/chat/completions", json=chat("debug me"))
    assert access_lines(caplog)[0]["prompt"] == "debug me"
