"""API keys (Bearer, constant-time, OpenAI 401) and per-key rate limits (429 with Retry-After)."""

from __future__ import annotations

import hmac
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import limits.aio.storage.memory as limits_memory
import pytest

from fakes import FakeClock, FakeEngine, app_client, fake_settings
from seesay.api import auth as auth_module
from seesay.api.app import build_app, build_rate_limit
from seesay.api.auth import ANONYMOUS, ApiKeyAuth, key_id
from seesay.api.rate_limit import RateLimit
from seesay.errors import AuthenticationError, RateLimitedError

KEYS = ("sk-alpha-0123456789", "sk-beta-9876543210")
CHAT = {"model": "fake-vl", "messages": [{"role": "user", "content": "hello"}]}


def test_without_keys_everyone_is_the_anonymous_caller() -> None:
    auth = ApiKeyAuth(())
    assert not auth.enabled and auth.authenticate(None) == ANONYMOUS


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic c2stYWxwaGE=", "sk-alpha-0123456789"])
def test_a_missing_or_malformed_header_is_refused(header: str | None) -> None:
    with pytest.raises(AuthenticationError, match="no API key provided"):
        ApiKeyAuth(KEYS).authenticate(header)


def test_a_wrong_key_is_refused_and_a_right_key_gives_its_key_id() -> None:
    auth = ApiKeyAuth(KEYS)
    with pytest.raises(AuthenticationError, match="incorrect API key"):
        auth.authenticate("Bearer sk-alpha-012345678")
    assert auth.authenticate("Bearer sk-beta-9876543210") == key_id(KEYS[1])
    assert auth.authenticate("bearer  sk-alpha-0123456789 ") == key_id(KEYS[0])


def test_the_key_id_is_a_short_hash_that_does_not_reveal_the_key() -> None:
    kid = key_id(KEYS[0])
    assert kid.startswith("key-") and len(kid) == 14 and "alpha" not in kid
    assert kid == key_id(KEYS[0]) != key_id(KEYS[1])


def test_every_key_is_compared_in_constant_time_even_after_a_match(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", counting)
    ApiKeyAuth(KEYS).authenticate(f"Bearer {KEYS[0]}")
    assert len(calls) == len(KEYS)


async def test_the_rate_limit_refuses_the_request_over_the_limit_until_the_window_moves(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(1_000_000.0)
    monkeypatch.setattr(limits_memory, "time", SimpleNamespace(time=clock))  # the library's own time source
    auth = ApiKeyAuth(KEYS, RateLimit(3, wall_clock=clock))
    for _ in range(3):
        await auth.check_rate("key-a")
        clock.advance(10)
    with pytest.raises(RateLimitedError) as limited:
        await auth.check_rate("key-a")
    # the first request (t=0) is in the window up to t=60 inclusive: admitted again 31 s from t=30
    assert limited.value.status == 429 and limited.value.retry_after == 31
    await auth.check_rate("key-b")  # other keys have their own count
    clock.advance(30)
    with pytest.raises(RateLimitedError):
        await auth.check_rate("key-a")
    clock.advance(1)
    await auth.check_rate("key-a")
    with pytest.raises(RateLimitedError) as again:
        await auth.check_rate("key-a")
    assert again.value.retry_after == 10


async def test_a_zero_rate_limit_means_no_limit() -> None:
    assert build_rate_limit(fake_settings(rate_limit_per_minute=0)) is None
    auth = ApiKeyAuth(KEYS, None)
    for _ in range(1000):
        await auth.check_rate("key-a")


# --- through HTTP ----------------------------------------------------------------------------


async def test_http_requests_need_a_valid_bearer_key(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("# operators\nsk-from-file-555\n\n")
    settings = fake_settings(api_keys=KEYS, api_keys_file=keys_file)
    async with app_client(build_app(settings, FakeEngine())) as client:
        missing = await client.post("/v1/chat/completions", json=CHAT)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert missing.json()["error"]["code"] == "invalid_api_key"
        assert missing.json()["error"]["type"] == "invalid_request_error"
        wrong = await client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "incorrect API key" in wrong.json()["error"]["message"]
        for key in (*KEYS, "sk-from-file-555"):
            ok = await client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"})
            assert ok.status_code == 200
        assert (await client.get("/v1/models")).status_code == 401
        vqa = await client.post("/v1/vqa", data={"question": "x"})
        assert vqa.status_code == 401
        for open_path in ("/health", "/ready", "/metrics"):
            assert (await client.get(open_path)).status_code == 200


async def test_http_rate_limit_answers_429_with_retry_after(caplog: pytest.LogCaptureFixture) -> None:
    settings = fake_settings(api_keys=KEYS, rate_limit_per_minute=2)
    headers = {"Authorization": f"Bearer {KEYS[0]}"}
    async with app_client(build_app(settings, FakeEngine())) as client:
        assert [(await client.post("/v1/chat/completions", json=CHAT, headers=headers)).status_code
                for _ in range(2)] == [200, 200]
        with caplog.at_level(logging.INFO, logger="seesay.access"):
            limited = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert limited.json()["error"]["code"] == "rate_limit_exceeded"
        other = await client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {KEYS[1]}"})
        assert other.status_code == 200
    lines: list[dict[str, Any]] = [json.loads(r.getMessage()) for r in caplog.records if r.name == "seesay.access"]
    refused = [line for line in lines if line["status"] == 429]
    assert len(refused) == 1
    assert refused[0]["key_id"] == key_id(KEYS[0]) and refused[0]["error"] == "rate_limit_exceeded"
    assert KEYS[0] not in caplog.text
