"""The remote engine's settings: environment, defaults, secrets and errors that say how to fix them."""

from __future__ import annotations

import os

import pytest

from seesay.config import ConfigError, load_settings
from seesay.engine.config import RemoteEngineConfig


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SEESAY_"):
            monkeypatch.delenv(name)


def test_the_environment_configures_the_remote_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEESAY_ENGINE", "remote")
    monkeypatch.setenv("SEESAY_MODEL", "Qwen/Qwen3-VL-8B-Instruct")
    monkeypatch.setenv("SEESAY_REMOTE_UPSTREAMS", "http://gpu-0:8001, http://gpu-1:8001/v1")
    monkeypatch.setenv("SEESAY_REMOTE_API_KEY", "sk-upstream")
    monkeypatch.setenv("SEESAY_MAX_PIXELS", "200704")
    settings = load_settings()
    config = settings.engine_config()
    assert isinstance(config, RemoteEngineConfig)
    assert config.upstreams == ("http://gpu-0:8001", "http://gpu-1:8001/v1")
    assert config.served_upstream_model == "Qwen/Qwen3-VL-8B-Instruct" and config.max_pixels == 200704
    assert config.api_key == "sk-upstream"
    assert "sk-upstream" not in repr(settings) and "sk-upstream" not in repr(config)


def test_the_upstream_model_name_may_differ_from_the_served_one() -> None:
    settings = load_settings(engine="remote", remote_upstreams="http://vllm:8000", remote_model="qwen3-vl")
    config = settings.engine_config()
    assert isinstance(config, RemoteEngineConfig)
    assert (config.model_name, config.served_upstream_model) == ("seesay-demo", "qwen3-vl")


@pytest.mark.parametrize(("overrides", "message"), [
    ({}, "needs at least one upstream: set remote_upstreams"),
    ({"remote_upstreams": "vllm:8000"}, "must be an http:// or https:// base URL"),
    ({"remote_upstreams": "http://a:1,http://a:1"}, "lists an upstream twice"),
])
def test_remote_settings_that_cannot_work_are_refused(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(engine="remote", **overrides)
