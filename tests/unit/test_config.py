"""Settings: defaults, environment, TOML/YAML files, priorities and readable errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from seesay.config import ConfigError, Settings, load_settings
from seesay.engine.adapters import AdapterSource
from seesay.engine.config import TransformersEngineConfig


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SEESAY_"):
            monkeypatch.delenv(name)


def test_defaults_serve_the_demo_model_locally() -> None:
    settings = load_settings()
    assert settings.engine == "transformers" and settings.model is None
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert not settings.allow_url_images and settings.all_api_keys() == ()
    assert settings.engine_config() == TransformersEngineConfig()


def test_environment_variables_with_the_prefix_set_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEESAY_MAX_BATCH_SIZE", "16")
    monkeypatch.setenv("SEESAY_API_KEYS", "sk-one, sk-two")
    monkeypatch.setenv("SEESAY_MODEL", "Qwen/Qwen3-VL-8B-Instruct")
    monkeypatch.setenv("SEESAY_MAX_PIXELS", "200704")
    settings = load_settings()
    assert settings.max_batch_size == 16 and settings.api_keys == ("sk-one", "sk-two")
    config = settings.engine_config()
    assert config.model == "Qwen/Qwen3-VL-8B-Instruct" and config.max_pixels == 200704


@pytest.mark.parametrize(
    ("name", "text"),
    [("seesay.toml", 'port = 9001\nmax_queue = 5\nurl_allowlist = ["a.example.com"]\n'),
     ("seesay.yaml", "port: 9001\nmax_queue: 5\nurl_allowlist: [a.example.com]\n")],
)
def test_a_toml_or_yaml_file_sets_fields(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    settings = load_settings(path)
    assert (settings.port, settings.max_queue, settings.url_allowlist) == (9001, 5, ("a.example.com",))


def test_priority_is_flags_then_environment_then_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "seesay.toml"
    path.write_text("port = 9001\nmax_queue = 5\nmax_batch_size = 3\n")
    monkeypatch.setenv("SEESAY_CONFIG", str(path))
    monkeypatch.setenv("SEESAY_MAX_QUEUE", "7")
    monkeypatch.setenv("SEESAY_PORT", "9002")
    settings = load_settings(port=9003, host=None)
    assert (settings.port, settings.max_queue, settings.max_batch_size, settings.host) == (9003, 7, 3, "127.0.0.1")
    assert Settings().max_queue == 7  # the file is found through SEESAY_CONFIG without load_settings too


def test_an_unknown_key_in_the_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "seesay.toml"
    path.write_text("max_bach_size = 4\n")
    with pytest.raises(ConfigError, match=r"unknown setting 'max_bach_size'.*valid settings are: .*max_batch_size"):
        load_settings(path)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [("missing.toml", None, "does not exist"), ("bad.toml", "port = [", "cannot parse"),
     ("bad.yaml", "port: [9000\n", "cannot parse"), ("seesay.ini", "port=1", "must end in .toml, .yaml or .yml"),
     ("list.yaml", "- port\n", "table of settings")],
)
def test_unreadable_files_are_errors_that_say_what_to_do(
    tmp_path: Path, name: str, text: str | None, message: str
) -> None:
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"max_batch_size": 0}, r"max_batch_size \(SEESAY_MAX_BATCH_SIZE\): Input should be greater than or equal to 1"),
     ({"dtype": "float8"}, "engine settings: dtype must be one of auto, bfloat16, float16, float32"),
     ({"allow_url_images": True}, "SEESAY_URL_ALLOWLIST"),
     ({"api_keys_file": "/nonexistent/keys.txt"}, "does not exist"),
     ({"port": 70000}, "port")],
)
def test_invalid_values_are_refused_early_with_a_fix(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(**overrides)


def test_an_invalid_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEESAY_MAX_QUEUE", "many")
    with pytest.raises(ConfigError, match=r"max_queue \(SEESAY_MAX_QUEUE\).*\(got \"many\"\)"):
        load_settings()


def test_keys_come_from_the_list_and_the_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# team A\nsk-a\n\n  sk-b  \n")
    assert load_settings(api_keys="sk-env", api_keys_file=keys).all_api_keys() == ("sk-env", "sk-a", "sk-b")


def test_cache_and_safety_defaults_screen_everything_and_cache_deterministic_answers() -> None:
    settings = load_settings()
    assert settings.cache_policy == "deterministic" and settings.redis_cache_config() is None
    assert settings.near_duplicate_rule() is None
    memory = settings.memory_cache_config()
    assert (memory.max_entries, memory.ttl_s, memory.max_bytes) == (1000, 3600.0, 64 * 1024 * 1024)
    safety = settings.safety_config()
    assert (safety.image_detector, safety.text_policy, safety.on_block) == ("nudenet", True, "error")


def test_cache_and_safety_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEESAY_REDIS_URL", "redis://cache.internal:6380/2")
    monkeypatch.setenv("SEESAY_REDIS_TIMEOUT_MS", "20")
    monkeypatch.setenv("SEESAY_REDIS_FAILURE_THRESHOLD", "5")
    monkeypatch.setenv("SEESAY_CACHE_NEAR_DUPLICATES", "true")
    monkeypatch.setenv("SEESAY_SAFETY_IMAGE_DETECTOR", "hf-classifier")
    monkeypatch.setenv("SEESAY_SAFETY_IMAGE_OPTIONS", '{"model": "/models/nsfw", "threshold": 0.8}')
    monkeypatch.setenv("SEESAY_SAFETY_ON_BLOCK", "refuse")
    settings = load_settings()
    redis = settings.redis_cache_config()
    assert redis is not None and redis.url == "redis://cache.internal:6380/2"
    assert (redis.timeout_s, redis.breaker.failure_threshold, redis.namespace) == (0.02, 5, "seesay")
    assert settings.near_duplicate_rule() is not None
    safety = settings.safety_config()
    assert safety.image_detector == "hf-classifier" and safety.on_block == "refuse"
    assert dict(safety.image_options) == {"model": "/models/nsfw", "threshold": 0.8}


@pytest.mark.parametrize("value", ["off", "none", "OFF", ""])
def test_image_screening_is_turned_off_by_name(value: str) -> None:
    assert load_settings(safety_image_detector=value).safety_config().image_detector is None


def test_the_master_switch_turns_every_screen_off() -> None:
    safety = load_settings(safety=False).safety_config()
    assert safety.image_detector is None and safety.text_policy is False


def test_redis_url_flag_of_serve_reaches_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEESAY_REDIS_URL", "redis://from-env:6379/0")
    assert load_settings(redis_url="redis://from-flag:6379/0").redis_url == "redis://from-flag:6379/0"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"redis_url": "http://cache:6379"}, r"redis_url \(SEESAY_REDIS_URL\): the URL must start with one of "
      r"redis://, rediss://, unix://"),
     ({"redis_namespace": "my app"}, r"redis_namespace \(SEESAY_REDIS_NAMESPACE\)"),
     ({"cache_policy": "sometimes"}, r"cache_policy \(SEESAY_CACHE_POLICY\): Input should be 'off', "
      r"'deterministic' or 'all'"),
     ({"safety_on_block": "ignore"}, r"safety_on_block \(SEESAY_SAFETY_ON_BLOCK\): Input should be 'error' or "
      r"'refuse'"),
     ({"redis_timeout_ms": 0}, r"redis_timeout_ms"),
     ({"cache_phash_max_hamming": 65}, r"cache_phash_max_hamming")],
)
def test_invalid_cache_and_safety_values_are_refused_with_a_fix(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(**overrides)


def test_cpu_threads_reach_the_engine_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEESAY_CPU_THREADS", "1")
    assert load_settings().engine_config().cpu_threads == 1
    monkeypatch.setenv("SEESAY_CPU_THREADS", "0")
    with pytest.raises(ConfigError, match="cpu_threads"):
        load_settings()


# --- LoRA adapters ---------------------------------------------------------------------------

SHOP, KIDS = AdapterSource("shop", "/adapters/shop"), AdapterSource("kids", "/adapters/kids", "seesay-demo")


@pytest.mark.parametrize("value", [
    "shop=/adapters/shop,kids=/adapters/kids",
    "shop=/adapters/shop kids=/adapters/kids",
    '[{"name": "shop", "path": "/adapters/shop"}, "kids=/adapters/kids"]',
])
def test_lora_modules_come_from_the_environment_in_vllm_forms(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SEESAY_LORA_MODULES", value)
    assert [(s.name, s.path) for s in load_settings().lora_modules] == [("shop", "/adapters/shop"),
                                                                        ("kids", "/adapters/kids")]


def test_lora_modules_come_from_a_file_as_tables_or_strings(tmp_path: Path) -> None:
    path = tmp_path / "seesay.toml"
    path.write_text('max_loras = 2\nlora_modules = ["shop=/adapters/shop", '
                    '{name = "kids", path = "/adapters/kids", base_model_name = "seesay-demo"}]\n')
    settings = load_settings(path)
    assert settings.lora_modules == (SHOP, KIDS) and settings.max_loras == 2


def test_serve_flags_take_lora_modules_as_vllm_does(monkeypatch: pytest.MonkeyPatch) -> None:
    from seesay.api import commands

    seen: dict[str, object] = {}
    monkeypatch.setattr(commands, "_serve", lambda app, settings: seen.setdefault("settings", settings) and 0)
    monkeypatch.setattr("seesay.safety.SafetyGate.from_config", lambda config: FakeGate())
    from seesay.cli import main

    main(["serve", "--lora-modules", "shop=/adapters/shop",
          '{"name": "kids", "path": "/adapters/kids", "base_model_name": "seesay-demo"}', "--max-loras", "3"])
    settings = seen["settings"]
    assert isinstance(settings, Settings)
    assert settings.lora_modules == (SHOP, KIDS) and settings.max_loras == 3


class FakeGate:
    def close(self) -> None:
        pass


@pytest.mark.parametrize(("overrides", "message"), [
    ({"lora_modules": ["shop"]}, "must be name=path"),
    ({"lora_modules": ['{"name": "shop"}']}, "cannot read LoRA module"),
    ({"lora_modules": ["shop=/a", "shop=/b"]}, "names each adapter once"),
    ({"lora_modules": ["a=/a", "b=/b", "c=/c"], "max_loras": 2}, "raise max_loras or serve fewer adapters"),
    ({"lora_modules": ["__base__=/a"]}, "reserved for the base model"),
    ({"max_loras": 0}, "max_loras"),
])
def test_invalid_lora_settings_are_refused_with_a_fix(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(**overrides)
