"""Cacheability: modes, determinism, and the per-request opt-outs."""

from __future__ import annotations

import pytest

from seesay.cache.policy import CacheDecision, CacheMode, CacheOptOut, CachePolicy, parse_cache_control
from seesay.types import ChatMessage, GenerationRequest, SamplingParams

USE = CacheDecision(read=True, write=True)
BYPASS = CacheDecision(read=False, write=False)


def request(**sampling: object) -> GenerationRequest:
    return GenerationRequest((ChatMessage.user("what is this?"),), SamplingParams(**sampling))  # type: ignore[arg-type]


@pytest.mark.parametrize("sampling, expected", [
    ({"temperature": 0}, USE),
    ({"temperature": 0.0, "top_p": 0.5}, USE),
    ({"temperature": 0.7, "seed": 3}, USE),
    ({"seed": 0}, USE),
    ({"temperature": 0.7}, BYPASS),
    ({}, BYPASS),  # unset temperature, default unknown: counts as sampling
])
def test_deterministic_mode_caches_only_reproducible_requests(sampling: dict[str, object],
                                                              expected: CacheDecision) -> None:
    assert CachePolicy().decide(request(**sampling)) == expected


def test_unset_temperature_follows_the_engine_default() -> None:
    assert CachePolicy(default_temperature=0.0).decide(request()) == USE
    assert CachePolicy(default_temperature=0.7).decide(request()) == BYPASS
    assert CachePolicy(default_temperature=0.0).decide(request(temperature=0.5)) == BYPASS


def test_off_and_all_modes() -> None:
    assert CachePolicy(CacheMode.OFF).decide(request(temperature=0)) == BYPASS
    assert CachePolicy(CacheMode.ALL).decide(request(temperature=1.2)) == USE
    assert CacheMode("deterministic") is CacheMode.DETERMINISTIC


def test_opt_outs() -> None:
    policy = CachePolicy(CacheMode.ALL)
    assert policy.decide(request(), CacheOptOut(no_cache=True)) == CacheDecision(read=False, write=True)
    assert policy.decide(request(), CacheOptOut(no_store=True)) == BYPASS
    assert not policy.decide(request(), CacheOptOut(no_store=True)).uses_cache


@pytest.mark.parametrize("header, field, expected", [
    (None, None, CacheOptOut()),
    ("no-cache", None, CacheOptOut(no_cache=True)),
    ("No-Cache, max-age=0", None, CacheOptOut(no_cache=True)),
    ("max-age=0, no-store", None, CacheOptOut(no_store=True)),
    ("private", None, CacheOptOut()),
    (None, False, CacheOptOut(no_store=True)),
    (None, True, CacheOptOut()),
])
def test_parse_cache_control(header: str | None, field: bool | None, expected: CacheOptOut) -> None:
    assert parse_cache_control(header, cache_field=field) == expected
