"""The response cache behind the HTTP API, with a FakeEngine: hits, single flight, replays, opt-outs, admin.

Requests here are greedy (``temperature: 0``) unless a test is about sampled ones: under the
default ``cache_policy = "deterministic"`` only greedy or seeded requests are cacheable. Image
screening is off (see ``fake_settings``); the text policy is on.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import threading
from typing import Any

import httpx
from fastapi import FastAPI
from PIL import Image

from fakes import (
    FAIL_PREPARE,
    FakeEngine,
    app_client,
    data_url,
    fake_settings,
    metric,
    png_bytes,
    raw_request,
    wait_until,
)
from seesay.api.app import build_app
from seesay.demo.catalogue import COLOURS_BY_KEY, KINDS_BY_KEY, Item, draw_picture

HEADER = "x-seesay-cache"


def chat(text: str = "what is this?", *, image: str | None = None, **fields: Any) -> dict[str, Any]:
    content: Any = text
    if image is not None:
        content = [{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": text}]
    return {"model": "fake-vl", "messages": [{"role": "user", "content": content}], "temperature": 0, **fields}


def answer_of(response: httpx.Response) -> str:
    return str(response.json()["choices"][0]["message"]["content"])


def sse_text(response: httpx.Response) -> tuple[str, list[str | None]]:
    """The streamed text and every chunk's finish_reason."""
    chunks = [json.loads(line[6:]) for line in response.text.split("\n\n")
              if line.startswith("data: ") and line != "data: [DONE]"]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    return text, [c["choices"][0].get("finish_reason") for c in chunks if c["choices"]]


async def post(client: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> httpx.Response:
    response = await client.post("/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response


# --- hits --------------------------------------------------------------------------------------


async def test_a_repeated_greedy_question_is_answered_from_memory(client: httpx.AsyncClient,
                                                                  engine: FakeEngine) -> None:
    first = await post(client, chat(image=data_url(png_bytes())))
    second = await post(client, chat(image=data_url(png_bytes())))
    assert (first.headers[HEADER], second.headers[HEADER]) == ("miss", "hit-memory")
    assert answer_of(first) == answer_of(second) == "1 image(s): what is this?"
    assert second.json()["usage"] == first.json()["usage"]
    assert second.json()["id"] != first.json()["id"]  # the replay is addressed to its own request
    assert len(engine.batches) == 1
    page = (await client.get("/metrics")).text
    assert metric(page, 'seesay_cache_hits_total{tier="memory"}') == 1
    assert metric(page, "seesay_cache_misses_total") == 1
    assert metric(page, 'seesay_cache_stores_total{tier="memory"}') == 1
    generated = first.json()["usage"]["completion_tokens"]
    assert metric(page, "seesay_generated_tokens_total") == generated  # the hit cost no tokens


async def test_a_cached_answer_replays_as_server_sent_events(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    whole = await post(client, chat("tell me about it"))
    streamed = await post(client, chat("tell me about it", stream=True))
    assert streamed.headers[HEADER] == "hit-memory"
    assert streamed.headers["content-type"].startswith("text/event-stream")
    text, reasons = sse_text(streamed)
    assert text == answer_of(whole) and reasons[-1] == "stop"
    assert streamed.text.endswith("data: [DONE]\n\n")
    assert len(engine.batches) == 1


async def test_a_streamed_answer_is_stored_for_later_requests(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    streamed = await post(client, chat("stream it first", stream=True))
    assert streamed.headers[HEADER] == "miss"
    again = await post(client, chat("stream it first"))
    assert again.headers[HEADER] == "hit-memory" and answer_of(again) == sse_text(streamed)[0]
    assert len(engine.batches) == 1


async def test_the_vqa_route_uses_the_cache_too(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    form = {"question": "What colour?", "temperature": "0"}
    files = {"image": ("item.png", png_bytes(), "image/png")}
    first = await client.post("/v1/vqa", files=files, data=form)
    second = await client.post("/v1/vqa", files=files, data=form)
    assert (first.headers[HEADER], second.headers[HEADER]) == ("miss", "hit-memory")
    assert first.json()["answer"] == second.json()["answer"] and len(engine.batches) == 1


# --- what is cacheable ---------------------------------------------------------------------------


def reencoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


async def test_the_same_picture_in_another_container_hits_and_another_colour_misses() -> None:
    engine = FakeEngine()
    jacket = draw_picture(Item(KINDS_BY_KEY["jacket"], COLOURS_BY_KEY["red"]), random.Random(3))
    blue = draw_picture(Item(KINDS_BY_KEY["jacket"], COLOURS_BY_KEY["blue"]), random.Random(3))
    resized = reencoded(jacket.resize((jacket.width * 9 // 10, jacket.height * 9 // 10)), "JPEG", quality=90)
    async with app_client(build_app(fake_settings(), engine)) as client:
        headers = [(await post(client, chat(image=data_url(data, mime)))).headers[HEADER] for data, mime in (
            (reencoded(jacket, "PNG"), "image/png"),
            (reencoded(jacket, "PNG", compress_level=1), "image/png"),  # other bytes, same pixels
            (reencoded(jacket, "WEBP", lossless=True), "image/webp"),
            (resized, "image/jpeg"),  # other pixels: only near-duplicate matching can hit
            (reencoded(blue, "PNG"), "image/png"),
        )]
    assert headers == ["miss", "hit-memory", "hit-memory", "miss", "miss"]


async def test_near_duplicate_matching_lets_a_resized_jpeg_hit_but_not_another_colour() -> None:
    jacket = draw_picture(Item(KINDS_BY_KEY["jacket"], COLOURS_BY_KEY["red"]), random.Random(3))
    blue = draw_picture(Item(KINDS_BY_KEY["jacket"], COLOURS_BY_KEY["blue"]), random.Random(3))
    resized = reencoded(jacket.resize((jacket.width * 9 // 10, jacket.height * 9 // 10)), "JPEG", quality=90)
    engine = FakeEngine()
    async with app_client(build_app(fake_settings(cache_near_duplicates=True), engine)) as client:
        headers = [(await post(client, chat(image=data_url(data)))).headers[HEADER]
                   for data in (reencoded(jacket, "PNG"), resized, reencoded(blue, "PNG"))]
    assert headers == ["miss", "hit-memory", "miss"]


async def test_sampled_requests_are_cached_only_when_the_policy_says_all(engine: FakeEngine) -> None:
    sampled = chat("a sampled answer", temperature=0.7)
    async with app_client(build_app(fake_settings(), engine)) as client:
        assert [(await post(client, sampled)).headers[HEADER] for _ in range(2)] == ["miss", "miss"]
        seeded = chat("a seeded answer", temperature=0.7, seed=7)
        assert [(await post(client, seeded)).headers[HEADER] for _ in range(2)] == ["miss", "hit-memory"]
    async with app_client(build_app(fake_settings(cache_policy="all"), engine)) as client:
        assert [(await post(client, sampled)).headers[HEADER] for _ in range(2)] == ["miss", "hit-memory"]
    async with app_client(build_app(fake_settings(cache_policy="off"), engine)) as client:
        assert [(await post(client, chat("greedy"))).headers[HEADER] for _ in range(2)] == ["miss", "miss"]
        assert (await client.get("/admin/cache")).json()["policy"] == "off"
    assert len(engine.batches) == 2 + 1 + 1 + 2


async def test_callers_opt_out_per_request(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    body = chat("opt out")
    assert (await post(client, body, **{"Cache-Control": "no-store"})).headers[HEADER] == "miss"
    assert (await post(client, {**body, "seesay": {"cache": False}})).headers[HEADER] == "miss"
    assert len(engine.batches) == 2
    # Neither stored anything; no-cache computes afresh and stores.
    assert (await post(client, body, **{"Cache-Control": "no-cache"})).headers[HEADER] == "miss"
    assert (await post(client, body)).headers[HEADER] == "hit-memory"
    assert (await post(client, body, **{"Cache-Control": "no-cache"})).headers[HEADER] == "miss"
    assert len(engine.batches) == 4


async def test_the_cache_field_is_validated(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json={**chat(), "seesay": {"cache": "maybe"}})
    assert response.status_code == 400 and response.json()["error"]["param"] == "seesay.cache"


# --- single flight -----------------------------------------------------------------------------


class JoinCounter:
    """Counts requests that wait for an identical request's answer (a spy on ``ResponseCache.join``)."""

    def __init__(self, app: FastAPI) -> None:
        cache = app.state.runtime.service.cache
        self.count = 0
        join = cache.join

        async def counting_join(key: Any) -> Any:
            self.count += 1
            return await join(key)

        cache.join = counting_join


async def test_twenty_identical_concurrent_requests_run_the_engine_once() -> None:
    engine = FakeEngine()
    engine.gate.clear()  # hold the first generation until every request has arrived
    app = build_app(fake_settings(max_queue=64), engine)
    async with app_client(app) as client:
        joins = JoinCounter(app)
        body = chat("the same question", image=data_url(png_bytes()))
        tasks = [asyncio.create_task(client.post("/v1/chat/completions", json=body)) for _ in range(20)]
        await wait_until(lambda: joins.count == 19)
        engine.gate.set()
        responses = await asyncio.gather(*tasks)
        page = (await client.get("/metrics")).text
    assert [r.status_code for r in responses] == [200] * 20
    assert {answer_of(r) for r in responses} == {"1 image(s): the same question"}
    assert [len(batch) for batch in engine.batches] == [1] and len(engine.requests) == 1
    assert metric(page, "seesay_batch_size_count") == 1 and metric(page, "seesay_batch_size_sum") == 1
    assert [r.headers[HEADER] for r in responses] == ["miss"] * 20  # joined answers are misses, not hits
    assert metric(page, "seesay_cache_misses_total") == 20
    assert metric(page, "seesay_generated_tokens_total") == responses[0].json()["usage"]["completion_tokens"]


async def test_twenty_identical_concurrent_streams_run_the_engine_once() -> None:
    engine = FakeEngine()
    engine.gate.clear()
    app = build_app(fake_settings(max_queue=64), engine)
    async with app_client(app) as client:
        joins = JoinCounter(app)
        tasks = [asyncio.create_task(client.post("/v1/chat/completions", json=chat("streamed", stream=True)))
                 for _ in range(20)]
        await wait_until(lambda: joins.count == 19)
        engine.gate.set()
        responses = await asyncio.gather(*tasks)
    assert {sse_text(r)[0] for r in responses} == {"0 image(s): streamed"}
    assert len(engine.requests) == 1


async def test_waiting_for_an_identical_answer_takes_no_queue_place() -> None:
    engine = FakeEngine()
    engine.gate.clear()
    app = build_app(fake_settings(max_queue=2), engine)
    async with app_client(app) as client:
        joins = JoinCounter(app)
        leader = asyncio.create_task(client.post("/v1/chat/completions", json=chat("shared")))
        await wait_until(lambda: bool(engine.batches))
        followers = []
        for number in range(1, 6):  # more than max_queue, one after the other
            followers.append(asyncio.create_task(client.post("/v1/chat/completions", json=chat("shared"))))
            await wait_until(lambda number=number: joins.count == number)  # type: ignore[misc]
        other = asyncio.create_task(client.post("/v1/chat/completions", json=chat("another question")))
        await wait_until(lambda: len(engine.requests) == 2)  # admitted although five requests wait
        engine.gate.set()
        responses = await asyncio.gather(leader, *followers, other)
    assert [r.status_code for r in responses] == [200] * 7
    assert len(engine.requests) == 2


async def test_a_stream_that_is_dropped_lets_its_followers_compute_their_own_answer() -> None:
    engine = FakeEngine()
    engine.pace = threading.Semaphore(3)  # the leader's first three words, then it waits
    app = build_app(fake_settings(), engine)
    words = " ".join(["word"] * 60)
    async with app_client(app) as client:
        joins = JoinCounter(app)
        gone = asyncio.Event()
        streaming = asyncio.create_task(raw_request(app, chat(words, stream=True), gone))
        await wait_until(lambda: bool(engine.batches))
        follower = asyncio.create_task(client.post("/v1/chat/completions", json=chat(words)))
        await wait_until(lambda: joins.count == 1)  # the follower waits for the leader's answer
        gone.set()  # the leader's client goes away mid-stream
        await asyncio.wait_for(streaming, 5)
        engine.unpace()
        response = await asyncio.wait_for(follower, 10)
        again = await post(client, chat(words))
    assert engine.results[0].finish_reason == "cancelled"
    assert response.status_code == 200 and answer_of(response) == "0 image(s): " + words
    assert len(engine.batches) == 2  # the follower computed after the leader was cancelled
    assert again.headers[HEADER] == "hit-memory"  # the follower's complete answer was stored


async def test_a_leader_that_fails_before_the_engine_leaves_each_follower_its_own_answer() -> None:
    engine = FakeEngine(prepare_delay_s=0.05)
    app = build_app(fake_settings(), engine)
    async with app_client(app) as client:
        responses = await asyncio.gather(*(client.post("/v1/chat/completions", json=chat(f"{FAIL_PREPARE} please"))
                                           for _ in range(5)))
        healthy = await post(client, chat("and now?"))
    assert [r.status_code for r in responses] == [400] * 5  # nobody waits forever for the failed answer
    assert {r.json()["error"]["message"] for r in responses} == {"the fake engine refuses this prompt"}
    assert answer_of(healthy) == "0 image(s): and now?"


# --- operators -----------------------------------------------------------------------------------


async def test_admin_endpoints_report_and_clear_the_cache(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    await post(client, chat("to be cleared"))
    await post(client, chat("to be cleared"))
    stats = (await client.get("/admin/cache")).json()
    assert stats["policy"] == "deterministic" and stats["hits"] == {"memory": 1} and stats["misses"] == 1
    assert stats["memory"]["entries"] == 1 and stats["redis"] is None
    cleared = (await client.post("/admin/cache/clear")).json()
    assert cleared == {"memory": 1, "redis": None}
    assert (await post(client, chat("to be cleared"))).headers[HEADER] == "miss"
    assert len(engine.batches) == 2


async def test_admin_endpoints_need_an_api_key_when_keys_are_configured(engine: FakeEngine) -> None:
    async with app_client(build_app(fake_settings(api_keys="sk-admin"), engine)) as client:
        assert (await client.get("/admin/cache")).status_code == 401
        assert (await client.post("/admin/cache/clear")).status_code == 401
        allowed = await client.get("/admin/cache", headers={"Authorization": "Bearer sk-admin"})
    assert allowed.status_code == 200 and allowed.json()["policy"] == "deterministic"


async def test_an_unreachable_redis_degrades_to_memory_and_is_reported(engine: FakeEngine) -> None:
    settings = fake_settings(redis_url="redis://127.0.0.1:1/0", redis_failure_threshold=1, redis_cooldown_s=60)
    async with app_client(build_app(settings, engine)) as client:
        first = await post(client, chat("no redis"))
        second = await post(client, chat("no redis"))
        page = (await client.get("/metrics")).text
        stats = (await client.get("/admin/cache")).json()
        cleared = await client.post("/admin/cache/clear")
    assert (first.headers[HEADER], second.headers[HEADER]) == ("miss", "hit-memory")
    assert metric(page, 'seesay_cache_errors_total{tier="redis"}') >= 1
    assert metric(page, 'seesay_cache_breaker_state{state="open",tier="redis"}') == 1
    assert stats["redis"]["state"] == "open" and "check that Redis is running" in stats["redis_error"]
    assert cleared.status_code == 503 and cleared.json()["error"]["code"] == "cache_unavailable"


async def test_metrics_and_admin_stats_are_the_same_counters(engine: FakeEngine) -> None:
    """One count of cache events: what /metrics exposes is what /admin/cache reports."""
    settings = fake_settings(redis_url="redis://127.0.0.1:1/0", redis_failure_threshold=2, redis_cooldown_s=60)
    engine.gate.clear()
    app = build_app(settings, engine)
    async with app_client(app) as client:
        joins = JoinCounter(app)
        first = asyncio.create_task(client.post("/v1/chat/completions", json=chat("counted")))
        joined = asyncio.create_task(client.post("/v1/chat/completions", json=chat("counted")))
        await wait_until(lambda: joins.count == 1)
        engine.gate.set()
        await asyncio.gather(first, joined)
        for question in ("counted", "counted", "another"):
            await post(client, chat(question))
        page = (await client.get("/metrics")).text
        stats = (await client.get("/admin/cache")).json()
    assert stats["hits"] == {"memory": 2} and stats["misses"] == 3 and stats["coalesced"] == 1
    for tier in ("memory", "redis"):
        assert metric(page, f'seesay_cache_hits_total{{tier="{tier}"}}') == stats["hits"].get(tier, 0)
        assert metric(page, f'seesay_cache_stores_total{{tier="{tier}"}}') == stats["stores"].get(tier, 0)
    assert metric(page, "seesay_cache_misses_total") == stats["misses"]
    assert metric(page, 'seesay_cache_errors_total{tier="redis"}') == stats["errors"]["redis"] >= 2
    assert metric(page, f'seesay_cache_breaker_state{{state="{stats["redis"]["state"]}",tier="redis"}}') == 1
