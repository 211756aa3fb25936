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
import itertools
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
# How long the replicas may take to find a restarted Redis again (one cool-down, then a probe
# each); the poll usually succeeds on its first or second round.
RECOVERY_DEADLINE_S = 60.0


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


def redis_counters(server: ServerProcess) -> dict[str, Any]:
    """The replica's own Redis-tier counters (``GET /admin/cache``: attempts, skipped, timeouts …)."""
    response = httpx.get(f"{server.base_url}/admin/cache", timeout=60)
    assert response.status_code == 200, response.text
    return dict(response.json()["redis"])


def test_redis_stalled_killed_and_restarted_never_fails_a_request(
    replicas: tuple[ServerProcess, ServerProcess], redis: RedisServer,
) -> None:
    a, b = replicas
    questions = iter(sample.question for sample in SAMPLES)
    before = {server.port: redis_counters(server) for server in (a, b)}
    redis.pause()  # connections hang: only the time-box protects the request path
    for server in (a, b):
        assert ask(server, body(server, PICTURES[4], text=next(questions))).headers[HEADER] == "miss"
    redis.kill()  # connections are refused
    for server in (a, b):
        # The stalled calls were cut off by the time-box (redis_timeout_ms), not by a socket timeout.
        counters = redis_counters(server)
        assert counters["timeouts"] > before[server.port]["timeouts"], counters

    # A dead Redis: requests are still answered, and the open breaker stops calling it. One
    # request may be the breaker's probe (after its cool-down), so ask until a call is skipped.
    skipped = redis_counters(a)["skipped"]
    for attempt in range(20):
        request = body(a, PICTURES[5], text=f"{SAMPLES[5].question} ({attempt})")
        assert ask(a, request).headers[HEADER] == "miss"
        if redis_counters(a)["skipped"] > skipped:
            break
    else:
        pytest.fail(f"the breaker never stopped calling the dead Redis: {redis_counters(a)}")
    page = a.metrics()
    assert metric(page, 'seesay_cache_errors_total{tier="redis"}') >= 2
    assert metric(page, 'seesay_cache_breaker_state{state="open",tier="redis"}') == 1

    redis.start()  # the same port, empty
    # Once its cool-down has passed each breaker lets a probe through: poll until B reads from
    # Redis what A has just stored there, with a fresh question each round (never an L1 hit).
    deadline = time.monotonic() + RECOVERY_DEADLINE_S
    for attempt in itertools.count():
        request = body(a, PICTURES[0], text=f"What is this? ({attempt})")
        assert ask(a, request).headers[HEADER] == "miss"
        if ask(b, request).headers[HEADER] == "hit-redis":  # L2 is used again, by both
            break
        if time.monotonic() > deadline:
            pytest.fail(f"Redis was not used again within {RECOVERY_DEADLINE_S:.0f} s of its restart: "
                        f"A {redis_counters(a)}, B {redis_counters(b)}")
    for server in (a, b):
        assert metric(server.metrics(), 'seesay_cache_breaker_state{state="closed",tier="redis"}') == 1
