"""seesay in front of seesay: instance B (``engine = "remote"``) answers through instance A (the demo model).

B adds its cache, safety and API keys in front of A and must answer exactly as A does (greedy),
streamed or not, with A's usage. With two upstreams, one killed under load: requests that had
not streamed text are retried on the other, and once its breaker is open no request fails.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_process import ServerProcess, running_server
from test_serve import MAX_TOKENS, PICTURES, SAMPLES, metric, series, user

from fakes import wait_until

# The demo model's pixel budget: B fits pictures to it, so A receives them already at its own size.
DEMO_PIXELS = {"min_pixels": 16384, "max_pixels": 16384}
KEY = "sk-front-1"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def upstream(model_path: Path, lora_adapters: dict[str, Path],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("remote") / "a.log"
    with running_server(model_path, log, max_batch_size=8, max_wait_ms=5, cpu_threads=1,
                        safety_image_detector="off", cache_memory_entries=0,
                        lora_modules=f"shop-lora={lora_adapters['shop']}") as process:
        yield process


@pytest.fixture(scope="module")
def front(model_path: Path, upstream: ServerProcess, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("remote") / "b.log"
    with running_server(model_path, log, engine="remote", remote_upstreams=upstream.base_url, api_keys=KEY,
                        safety_image_detector="off", max_batch_size=16, lora_modules="shop=shop-lora",
                        **DEMO_PIXELS) as process:
        yield process


def body(server: ServerProcess, index: int, **fields: Any) -> dict[str, Any]:
    return {"model": server.model_name, "messages": [user(PICTURES[index], text=SAMPLES[index].question)],
            "temperature": 0, "max_tokens": MAX_TOKENS, **fields}


def post(server: ServerProcess, request: dict[str, Any], **options: Any) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1/chat/completions", json=request, timeout=120, **options)


def streamed(server: ServerProcess, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The concatenated text and the usage chunk of a streamed answer."""
    request = {**request, "stream": True, "stream_options": {"include_usage": True}}
    text, usage = "", {}
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=request, headers=AUTH,
                      timeout=120) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                text += "".join(c["delta"].get("content") or "" for c in chunk["choices"])
                usage = chunk.get("usage") or usage
    return text, usage


def test_greedy_answers_through_b_equal_as_with_as_usage(upstream: ServerProcess, front: ServerProcess) -> None:
    for index in range(len(SAMPLES)):
        direct = post(upstream, body(upstream, index, seesay={"cache": False}))
        through = post(front, body(front, index, seesay={"cache": False}), headers=AUTH)
        assert direct.status_code == through.status_code == 200, through.text
        assert through.json()["choices"][0]["message"] == direct.json()["choices"][0]["message"]
        assert through.json()["usage"] == direct.json()["usage"]
        text, usage = streamed(front, body(front, index, seesay={"cache": False}))
        assert text == direct.json()["choices"][0]["message"]["content"]
        assert usage == direct.json()["usage"]


def test_an_adapter_of_b_is_the_upstreams_lora_model(upstream: ServerProcess, front: ServerProcess) -> None:
    """B serves A's adapter ``shop-lora`` as its own model ``shop``, and answers as A does with it."""
    listed = httpx.get(f"{front.base_url}/v1/models", headers=AUTH).json()["data"]
    assert [card["id"] for card in listed] == [front.model_name, "shop"]
    direct = post(upstream, {**body(upstream, 0, seesay={"cache": False}), "model": "shop-lora"})
    through = post(front, {**body(front, 0, seesay={"cache": False}), "model": "shop"}, headers=AUTH)
    base = post(front, body(front, 0, seesay={"cache": False}), headers=AUTH)
    assert direct.status_code == through.status_code == base.status_code == 200, through.text
    answer = through.json()["choices"][0]["message"]["content"]
    assert answer == direct.json()["choices"][0]["message"]["content"]
    assert answer != base.json()["choices"][0]["message"]["content"]
    assert through.json()["model"] == "shop"


def test_b_answers_a_repeat_from_its_cache(upstream: ServerProcess, front: ServerProcess) -> None:
    request = body(front, 2, seed=7)
    served = metric(upstream.metrics(), "seesay_batch_size_sum")
    first, second = post(front, request, headers=AUTH), post(front, request, headers=AUTH)
    assert (first.headers["x-seesay-cache"], second.headers["x-seesay-cache"]) == ("miss", "hit-memory")
    assert first.json()["choices"] == second.json()["choices"]
    assert metric(upstream.metrics(), "seesay_batch_size_sum") == served + 1  # A answered once


def test_b_keeps_its_keys_and_its_policy_in_front_of_a(upstream: ServerProcess, front: ServerProcess) -> None:
    served = metric(upstream.metrics(), "seesay_batch_size_sum")
    assert post(front, body(front, 0)).status_code == 401
    blocked = post(front, {"model": front.model_name, "messages": [{"role": "user", "content": "怎么破解这个软件？"}]},
                   headers=AUTH)
    assert blocked.status_code == 400 and blocked.json()["error"]["code"] == "content_policy_violation"
    assert metric(upstream.metrics(), "seesay_batch_size_sum") == served  # neither reached A


def test_b_reports_its_upstreams(front: ServerProcess, upstream: ServerProcess) -> None:
    ready = httpx.get(f"{front.base_url}/ready", timeout=10).json()
    assert upstream.base_url in json.dumps(ready)


async def ask_many(server: ServerProcess, requests: list[dict[str, Any]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=120, headers=AUTH) as client:
        return list(await asyncio.gather(*(client.post(f"{server.base_url}/v1/chat/completions", json=r)
                                           for r in requests)))


async def test_an_upstream_killed_under_load(model_path: Path, tmp_path: Path) -> None:
    common = {"max_batch_size": 8, "max_wait_ms": 5, "cpu_threads": 1, "safety_image_detector": "off"}
    with running_server(model_path, tmp_path / "a1.log", **common) as one, \
            running_server(model_path, tmp_path / "a2.log", **common) as two, \
            running_server(model_path, tmp_path / "b.log", engine="remote", api_keys=KEY, max_batch_size=32,
                           remote_upstreams=f"{one.base_url},{two.base_url}", remote_failure_threshold=1,
                           remote_cooldown_s=600, safety_image_detector="off", **DEMO_PIXELS) as front:
        # Cache off: each request must reach an upstream (B's cache would answer repeats itself).
        load = asyncio.ensure_future(ask_many(front, [body(front, i % 6, seesay={"cache": False}) for i in range(24)]))
        # Killed once it has begun generating some of them (its batch histogram counts at batch start).
        await wait_until(lambda: (series(two.metrics(), "seesay_batch_size_count") or 0) > 0, timeout=120)
        two.process.kill()
        two.process.wait()
        for response in await load:
            if response.status_code != 200:  # only an answer that had begun on the killed upstream may fail
                assert response.status_code == 503 and "after the answer had begun" in response.text
        after = await ask_many(front, [body(front, i % 6, seesay={"cache": False}) for i in range(16)])
        assert [r.status_code for r in after] == [200] * 16
        ready = httpx.get(f"{front.base_url}/ready", timeout=10).text
        assert f"{two.base_url} (down" in ready
