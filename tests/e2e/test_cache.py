"""The response cache over HTTP: two ``seesay serve`` replicas sharing a private redis-server.

Replica A computes, replica B answers the same question from Redis; pictures re-encoded or
resized still hit (both replicas run with ``cache_near_duplicates``: a resized JPEG has other
pixels and hits only through near-duplicate matching, a lossless re-encoding hits on its exact
content hash), another colour misses; 20 identical concurrent requests run the model once;
``seesay cache stats|clear`` reach both replicas and Redis; and Redis stalled, killed and
restarted mid-test never fails a request. The tests share the replicas and run in file order;
the Redis failure test comes last.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from PIL import Image
from server_process import ServerProcess, running_server
from test_serve import MAX_TOKENS, PICTURES, SAMPLES, metric, user

from redis_server import RedisServer
from seesay.demo.catalogue import COLOURS_BY_KEY, KINDS_BY_KEY, Item, draw_picture, png_bytes

HEADER = "x-seesay-cache"
COOLDOWN_S = 1.0
# Without its time-box a call to a stalled Redis would wait for the socket timeout (10 s);
# with it each call gives up after redis_timeout_ms (50 ms). This bound tells the two apart
# on a loaded machine; the figures themselves are in BENCHMARKS.md, from bench/cache.py.
STALLED_BOUND_S = 5.0


@pytest.fixture(scope="module")
def replicas(model_path: Path, redis: RedisServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    folder = tmp_path_factory.mktemp("replicas")
    shared = {"redis_url": redis.url, "redis_cooldown_s": COOLDOWN_S, "redis_failure_threshold": 2,
              "cache_near_duplicates": "true"}
    with running_server(model_path, folder / "a.log", **shared) as a, \
            running_server(model_path, folder / "b.log", **shared) as b:
        yield a, b


def body(server: ServerProcess, *pictures: bytes, text: str, **fields: Any) -> dict[str, Any]:
    return {"model": server.model_name, "messages": [user(*pictures, text=text)], "temperature": 0,
            "max_tokens": MAX_TOKENS, **fields}


def ask(server: ServerProcess, request: dict[str, Any]) -> httpx.Response:
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json=request, timeout=120)
    assert response.status_code == 200, response.text
    return response


def answer_of(response: httpx.Response) -> str:
    return str(response.json()["choices"][0]["message"]["content"])


def encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_replica_b_answers_from_redis_what_replica_a_computed(replicas: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = replicas
    request = body(a, PICTURES[0], text=SAMPLES[0].question)
    batches_b = metric(b.metrics(), "seesay_batch_size_count")
    computed = ask(a, request)
    shared = ask(b, request)
    local = ask(b, request)
    assert (computed.headers[HEADER], shared.headers[HEADER], local.headers[HEADER]) == (
        "miss", "hit-redis", "hit-memory")
    assert answer_of(computed) == answer_of(shared) == answer_of(local)
    assert metric(b.metrics(), "seesay_batch_size_count") == batches_b  # B never ran the model
    page = b.metrics()
    assert metric(page, 'seesay_cache_hits_total{tier="redis"}') >= 1
    assert metric(page, 'seesay_cache_hits_total{tier="memory"}') >= 1


def test_re_encoded_and_resized_pictures_hit_and_another_colour_misses(
    replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    a, _ = replicas
    jacket = draw_picture(Item(KINDS_BY_KEY["jacket"], COLOURS_BY_KEY["red"]), random.Random(41))
    blue = draw_picture(Item(KINDS_BY_KEY["jacket"], COLOURS_BY_KEY["blue"]), random.Random(41))
    resized = jacket.resize((jacket.width * 3 // 4, jacket.height * 3 // 4), Image.Resampling.LANCZOS)
    variants = [png_bytes(jacket), encoded(jacket, "PNG", compress_level=9), encoded(resized, "JPEG", quality=90),
                png_bytes(blue)]
    headers = [ask(a, body(a, picture, text="What colour is this jacket?")).headers[HEADER] for picture in variants]
    assert headers == ["miss", "hit-memory", "hit-memory", "miss"]


async def test_twenty_identical_concurrent_requests_run_the_model_once(
    replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    a, _ = replicas
    request = body(a, PICTURES[1], text=SAMPLES[1].question, seed=20)
    before = metric(a.metrics(), "seesay_batch_size_sum")
    async with httpx.AsyncClient(base_url=a.base_url, timeout=120, limits=httpx.Limits(max_connections=32)) as client:
        responses = await asyncio.gather(*(client.post("/v1/chat/completions", json=request) for _ in range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    assert len({answer_of(r) for r in responses}) == 1
    assert metric(a.metrics(), "seesay_batch_size_sum") - before == 1  # one request's worth of generation
    assert {r.headers[HEADER] for r in responses} <= {"miss", "hit-memory"}


def test_a_cached_answer_replays_as_a_stream_through_the_sdk(replicas: tuple[ServerProcess, ServerProcess]) -> None:
    a, _ = replicas
    request = body(a, PICTURES[2], text=SAMPLES[2].question)
    whole = answer_of(ask(a, request))
    client = openai.OpenAI(base_url=f"{a.base_url}/v1", api_key="unused")
    raw = client.chat.completions.with_raw_response.create(**request, stream=True)
    chunks = list(raw.parse())
    assert raw.headers[HEADER] == "hit-memory"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def seesay_cache(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEESAY_")}
    return subprocess.run([sys.executable, "-m", "seesay.cli", "cache", *args], capture_output=True, text=True,
                          env=env, timeout=60, check=False)


def test_cache_commands_report_and_clear_both_replicas_and_redis(
    replicas: tuple[ServerProcess, ServerProcess], redis: RedisServer,
) -> None:
    a, b = replicas
    request = body(a, PICTURES[3], text=SAMPLES[3].question)
    ask(a, request)
    targets = ["--server", a.base_url, "--server", b.base_url, "--redis-url", redis.url]
    stats = seesay_cache("stats", *targets, "--json")
    assert stats.returncode == 0, stats.stderr
    report = json.loads(stats.stdout)
    assert report[f"server {a.base_url}"]["memory"]["entries"] >= 1
    assert report[f"server {b.base_url}"]["policy"] == "deterministic"
    assert report[f"redis {redis.url} (namespace seesay)"]["entries"] >= 1
    cleared = seesay_cache("clear", *targets)
    assert cleared.returncode == 0, cleared.stderr
    assert f"server {a.base_url}: cleared" in cleared.stdout
    # B computes again (Redis was emptied); A, its memory emptied too, now finds B's answer in Redis.
    assert [ask(server, request).headers[HEADER] for server in (b, a)] == ["miss", "hit-redis"]
    gone = seesay_cache("stats", "--server", "http://127.0.0.1:9", "--json")
    assert gone.returncode == 1 and "cannot be reached" in gone.stderr


def timed_ask(server: ServerProcess, request: dict[str, Any]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = ask(server, request)
    return response, time.monotonic() - started


def test_redis_stalled_killed_and_restarted_never_fails_a_request(
    replicas: tuple[ServerProcess, ServerProcess], redis: RedisServer,
) -> None:
    a, b = replicas
    questions = iter(sample.question for sample in SAMPLES)
    redis.pause()  # connections hang: only the time-box protects the request path
    for server in (a, b):
        response, seconds = timed_ask(server, body(server, PICTURES[4], text=next(questions)))
        assert response.headers[HEADER] == "miss" and seconds < STALLED_BOUND_S
    redis.kill()  # connections are refused
    for _ in range(3):
        response, seconds = timed_ask(a, body(a, PICTURES[5], text=next(questions)))
        assert seconds < STALLED_BOUND_S
    page = a.metrics()
    assert metric(page, 'seesay_cache_errors_total{tier="redis"}') >= 2
    assert metric(page, 'seesay_cache_breaker_state{state="open",tier="redis"}') == 1
    redis.start()  # the same port, empty
    time.sleep(COOLDOWN_S * 1.5)  # let both breakers cool down and probe again
    request = body(a, PICTURES[0], text="What is this?")
    assert ask(a, request).headers[HEADER] == "miss"
    assert ask(b, request).headers[HEADER] == "hit-redis"  # L2 is used again
    assert metric(a.metrics(), 'seesay_cache_breaker_state{state="closed",tier="redis"}') == 1
