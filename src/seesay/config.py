"""Service settings: one pydantic-settings object built once in ``main()`` / ``build_app()``.

Sources, highest priority first: explicit keyword arguments (command-line flags), ``SEESAY_*``
environment variables, then an optional TOML or YAML file named by ``--config FILE`` or
``SEESAY_CONFIG``. Keys in the file are the field names below (``max_batch_size = 8``); a key
the service does not know is an error naming the key, so a typo never passes silently.
List settings (``api_keys``, ``url_allowlist``) take comma-separated strings in the
environment and lists in the file; ``lora_modules`` takes vLLM's ``name=path`` entries
(separated by commas or spaces in the environment) or its JSON objects
(``{"name": ..., "path": ..., "base_model_name": ...}``, a JSON array in the environment,
tables in the file); ``safety_image_options`` takes a JSON object in the
environment (``SEESAY_SAFETY_IMAGE_OPTIONS='{"threshold": 0.6}'``) and a table in the file.
Every error says how to fix the value.

Screening is on by default and off only when a setting says so: ``safety = false`` turns
every screen off, ``safety_image_detector = "off"`` the image screen alone,
``safety_text_policy = false`` the text policy alone.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from seesay.cache import SHARED_TIERS, BreakerConfig, CacheMode, MemoryCacheConfig, NearDuplicateRule, RedisCacheConfig
from seesay.engine.adapters import AdapterSource, parse_lora_module
from seesay.engine.config import RemoteEngineConfig, TransformersEngineConfig
from seesay.safety import SafetyConfig
from seesay.scheduler import SchedulerLimits

MiB = 1024 * 1024
CONFIG_ENV = "SEESAY_CONFIG"


class ConfigError(ValueError):
    """The settings are invalid; the message names the setting and how to fix it."""


class Settings(BaseSettings):
    """Everything ``seesay serve`` can be told; see the module docstring for the sources."""

    model_config = SettingsConfigDict(env_prefix="SEESAY_", extra="forbid", frozen=True)

    config: Path | None = Field(None, description="TOML or YAML settings file (SEESAY_CONFIG).")

    # The engine.
    engine: str = Field("transformers", description="Engine name (see seesay.engine.registry).")
    model: str | None = Field(None, description="Hub id or local folder; unset: the built-in demo model.")
    revision: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    attention: str = "auto"
    trust_remote_code: bool = False
    min_pixels: int | None = Field(None, ge=1)
    max_pixels: int | None = Field(None, ge=1)
    max_model_len: int = 8192
    default_max_new_tokens: int = 512
    cpu_threads: int | None = Field(None, ge=1, description="torch threads on CPU; unset: one per core.")
    web_page: bool = Field(True, description="Serve the web page at / (false: an API-only server, 404 at /).")

    # The remote engine (engine = "remote"; see seesay.engine.remote).
    remote_upstreams: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Base URLs of OpenAI-compatible servers (vLLM, SGLang, seesay), comma-separated.")
    remote_model: str | None = Field(None, description="The model name the upstreams serve; unset: model's.")
    remote_api_key: SecretStr | None = Field(None, description="Bearer key sent to the upstreams.")
    remote_pixel_factor: int = Field(32, ge=1, description="Picture sides are multiples of this: 32 for "
                                     "Qwen3-VL, 28 for Qwen2.5-VL.")
    remote_connect_timeout_s: float = Field(5.0, gt=0)
    remote_first_token_timeout_s: float = Field(120.0, gt=0, description="From sending a request to its first "
                                                "answer text.")
    remote_idle_timeout_s: float = Field(30.0, gt=0, description="Longest silence between two streamed chunks.")
    remote_max_attempts: int = Field(3, ge=1, description="Upstreams tried for a request before its first text.")
    remote_retry_backoff_s: float = Field(0.05, ge=0, description="Wait before a retry; doubled for each next one.")
    remote_failure_threshold: int = Field(3, ge=1, description="Consecutive failures that stop calls to an "
                                          "upstream.")
    remote_cooldown_s: float = Field(10.0, ge=0, description="Seconds before a stopped upstream is probed again.")
    remote_health_interval_s: float = Field(10.0, gt=0, description="Seconds between GET /v1/models probes.")
    remote_max_connections: int = Field(256, ge=1, description="Keep-alive connections per upstream.")
    remote_concurrent_batches: int = Field(8, ge=1, description="Batches streaming from the upstreams at once.")

    # LoRA adapters (see seesay.adapter_catalogue).
    lora_modules: Annotated[tuple[AdapterSource, ...], NoDecode] = Field(
        (), description="LoRA adapters served from the start, each a model id: name=path, as vLLM's --lora-modules.")
    max_loras: int = Field(4, ge=1, description="LoRA adapters loaded at once; loading one more unloads the least "
                           "recently used idle one.")
    allow_runtime_lora_updating: bool = Field(
        False, description="Serve POST /v1/load_lora_adapter and /v1/unload_lora_adapter. Off by default, as in "
        "vLLM (VLLM_ALLOW_RUNTIME_LORA_UPDATING): they make the server read a folder or hub id the caller names.")

    # The HTTP server.
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    served_model_name: str | None = Field(None, description="Model name clients send; unset: the model's.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    debug: bool = Field(False, description="Log prompts and tracebacks; never in production.")

    # Batching and admission control.
    max_batch_size: int = Field(8, ge=1, le=256)
    max_wait_ms: float = Field(
        10.0, ge=0, le=10_000,
        description="How long a batch waits for more requests after its first; up to 4x longer while admitted "
        "requests are still being decoded and preprocessed. Nothing waits when only one client is active.",
    )
    max_queue: int = Field(64, ge=1)
    queue_timeout_s: float = Field(30.0, gt=0)
    drain_timeout_s: float = Field(30.0, ge=0)

    # Request limits.
    max_request_bytes: int = Field(20 * MiB, ge=1024)
    max_images_per_request: int = Field(8, ge=0)
    max_image_bytes: int = Field(10 * MiB, ge=1024)
    max_image_source_pixels: int = Field(50_000_000, ge=1)

    # Authentication and rate limiting.
    api_keys: Annotated[tuple[str, ...], NoDecode] = ()
    api_keys_file: Path | None = None
    rate_limit_per_minute: int = Field(0, ge=0, description="Requests per minute per API key, counted by every "
                                       "replica together in redis_url when set (per replica while Redis is down); "
                                       "0: off.")

    # Images by http(s) URL.
    allow_url_images: bool = False
    url_allowlist: Annotated[tuple[str, ...], NoDecode] = ()
    url_timeout_s: float = Field(10.0, gt=0, le=120)
    url_max_redirects: int = Field(3, ge=0, le=10)

    # The response cache (see seesay.cache).
    cache_policy: CacheMode = Field(
        CacheMode.DETERMINISTIC,
        description="Which answers are cached: off, deterministic (greedy or seeded requests) or all.",
    )
    cache_memory_entries: int = Field(1000, ge=0, description="Answers kept in process (L1); 0: no L1.")
    cache_memory_ttl_s: float = Field(3600.0, gt=0)
    cache_memory_bytes: int = Field(64 * MiB, ge=0)
    redis_url: str | None = Field(None, description="Shared L2 cache, rate limit and near-duplicate index: "
                                  "redis://host:port/db (rediss://, unix://).")
    redis_namespace: str = Field("seesay", pattern=r"^[A-Za-z0-9_.-]+$")
    redis_ttl_s: float = Field(86_400.0, gt=0)
    redis_timeout_ms: float = Field(50.0, gt=0, le=60_000, description="Time-box of every request-path call.")
    redis_max_value_bytes: int = Field(MiB, ge=1)
    redis_failure_threshold: int = Field(3, ge=1, description="Consecutive failures that stop calls to Redis.")
    redis_cooldown_s: float = Field(5.0, ge=0, description="Seconds before Redis is probed again.")
    cache_near_duplicates: bool = Field(False, description="Let near-identical photos (resized, recompressed) "
                                        "share cached answers, by perceptual hash; replicas agree through redis_url.")
    cache_phash_max_hamming: int = Field(6, ge=0, le=64)
    cache_phash_colour_delta: int = Field(12, ge=0, le=255)

    # Content safety (see seesay.safety).
    safety: bool = Field(True, description="Master switch; false turns every screen off.")
    safety_image_detector: str | None = Field("nudenet", description="nudenet, hf-classifier or flag; off: none.")
    safety_image_options: dict[str, Any] = Field(default_factory=dict)
    safety_image_cache_size: int = Field(4096, ge=0)
    safety_text_policy: bool = True
    safety_policy_file: Path | None = None
    safety_policy_check_interval_s: float = Field(1.0, ge=0)
    safety_on_block: Literal["error", "refuse"] = Field(
        "error", description="A blocked image or prompt: error (HTTP 400) or refuse (the refusal text).")
    safety_audit_log: Path | None = None

    @field_validator("safety_image_detector", mode="before")
    @classmethod
    def _detector_off(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("", "off", "none"):
            return None
        return value

    @field_validator("redis_url")
    @classmethod
    def _shared_cache_scheme(cls, value: str | None) -> str | None:
        if value is not None and value.partition("://")[0].lower() not in SHARED_TIERS:
            schemes = ", ".join(f"{name}://" for name in sorted(SHARED_TIERS))
            raise ValueError(f"the URL must start with one of {schemes}, e.g. redis://127.0.0.1:6379/0")
        return value

    @field_validator("api_keys", "url_allowlist", "remote_upstreams", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("lora_modules", mode="before")
    @classmethod
    def _lora_modules(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith(("[", "{")) else text.replace(",", " ").split()
        if isinstance(value, dict):
            value = [value]
        if isinstance(value, list | tuple):
            return tuple(_adapter_source(item) for item in value)
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if self.allow_url_images and not self.url_allowlist:
            raise ValueError(
                "allow_url_images is on but url_allowlist is empty: list the image hosts to trust, "
                "e.g. SEESAY_URL_ALLOWLIST=images.example.com,cdn.example.com"
            )
        names = [source.name for source in self.lora_modules]
        if len(set(names)) != len(names):
            raise ValueError(f"lora_modules names each adapter once; got {', '.join(names)}")
        if len(names) > self.max_loras:
            raise ValueError(f"lora_modules lists {len(names)} adapters but max_loras is {self.max_loras}; "
                             "raise max_loras or serve fewer adapters")
        if self.api_keys_file is not None and not self.api_keys_file.is_file():
            raise ValueError(f"api_keys_file {self.api_keys_file} does not exist; create it (one key a line)")
        try:
            self.engine_config()
        except ValueError as exc:
            raise ValueError(f"engine settings: {exc}") from exc
        return self

    def engine_config(self) -> TransformersEngineConfig | RemoteEngineConfig:
        """The engine part of these settings: the config of the engine ``engine`` names."""
        if self.engine == "remote":
            return self.remote_engine_config()
        return self.transformers_engine_config()

    def remote_engine_config(self) -> RemoteEngineConfig:
        return RemoteEngineConfig(
            upstreams=self.remote_upstreams,
            model=self.model,
            upstream_model=self.remote_model,
            api_key=self.remote_api_key.get_secret_value() if self.remote_api_key else None,
            min_pixels=self.min_pixels,
            max_pixels=self.max_pixels,
            pixel_factor=self.remote_pixel_factor,
            max_model_len=self.max_model_len,
            default_max_new_tokens=self.default_max_new_tokens,
            connect_timeout_s=self.remote_connect_timeout_s,
            first_token_timeout_s=self.remote_first_token_timeout_s,
            idle_timeout_s=self.remote_idle_timeout_s,
            max_attempts=self.remote_max_attempts,
            retry_backoff_s=self.remote_retry_backoff_s,
            failure_threshold=self.remote_failure_threshold,
            cooldown_s=self.remote_cooldown_s,
            health_interval_s=self.remote_health_interval_s,
            max_connections=self.remote_max_connections,
            concurrent_batches=self.remote_concurrent_batches,
        )

    def transformers_engine_config(self) -> TransformersEngineConfig:
        return TransformersEngineConfig(
            model=self.model,
            revision=self.revision,
            device=self.device,
            dtype=self.dtype,
            attention=self.attention,
            trust_remote_code=self.trust_remote_code,
            min_pixels=self.min_pixels,
            max_pixels=self.max_pixels,
            max_model_len=self.max_model_len,
            default_max_new_tokens=self.default_max_new_tokens,
            cpu_threads=self.cpu_threads,
        )

    def scheduler_limits(self) -> SchedulerLimits:
        """The batching and admission part of these settings."""
        return SchedulerLimits(max_batch_size=self.max_batch_size, max_wait_s=self.max_wait_ms / 1000,
                               max_queue=self.max_queue, queue_timeout_s=self.queue_timeout_s)

    def safety_config(self) -> SafetyConfig:
        """The screens these settings ask for (every one off when ``safety`` is false)."""
        return SafetyConfig(
            image_detector=self.safety_image_detector if self.safety else None,
            image_options=dict(self.safety_image_options),
            image_cache_size=self.safety_image_cache_size,
            text_policy=self.safety and self.safety_text_policy,
            policy_file=self.safety_policy_file,
            policy_check_interval_s=self.safety_policy_check_interval_s,
            on_block=self.safety_on_block,
            audit_log=self.safety_audit_log,
        )

    def memory_cache_config(self) -> MemoryCacheConfig:
        return MemoryCacheConfig(max_entries=self.cache_memory_entries, ttl_s=self.cache_memory_ttl_s,
                                 max_bytes=self.cache_memory_bytes)

    def redis_cache_config(self) -> RedisCacheConfig | None:
        """The shared L2 tier, or ``None`` without ``redis_url``."""
        if self.redis_url is None:
            return None
        return RedisCacheConfig(
            url=self.redis_url, ttl_s=self.redis_ttl_s, timeout_s=self.redis_timeout_ms / 1000,
            max_value_bytes=self.redis_max_value_bytes, namespace=self.redis_namespace,
            breaker=BreakerConfig(self.redis_failure_threshold, self.redis_cooldown_s),
        )

    def near_duplicate_rule(self) -> NearDuplicateRule | None:
        """When near-identical photos share answers, and ``None`` when they never do."""
        if not self.cache_near_duplicates:
            return None
        return NearDuplicateRule(self.cache_phash_max_hamming, self.cache_phash_colour_delta)

    def all_api_keys(self) -> tuple[str, ...]:
        """Keys from ``api_keys`` and ``api_keys_file`` (one a line; blank lines and ``#`` comments skipped)."""
        keys = list(self.api_keys)
        if self.api_keys_file is not None:
            for line in self.api_keys_file.read_text(encoding="utf-8").splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    keys.append(line.strip())
        return tuple(keys)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = getattr(init_settings, "init_kwargs", {}).get("config") or os.environ.get(CONFIG_ENV)
        return init_settings, env_settings, _ConfigFileSource(settings_cls, path)


def _adapter_source(item: Any) -> Any:
    """One ``lora_modules`` entry: ``name=path``, or a table / JSON object with name, path, base_model_name."""
    if isinstance(item, str):
        return parse_lora_module(item)
    if isinstance(item, dict):
        try:
            return AdapterSource(**item)
        except TypeError:
            raise ValueError(f"a LoRA module takes name, path and base_model_name; got {sorted(item)}") from None
    return item


class _ConfigFileSource(PydanticBaseSettingsSource):
    """The settings file, below the environment in priority."""

    def __init__(self, settings_cls: type[BaseSettings], path: str | Path | None) -> None:
        super().__init__(settings_cls)
        self.path = Path(path) if path else None

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ reads the whole file at once

    def __call__(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        return read_config_file(self.path, set(self.settings_cls.model_fields) - {"config"})


def read_config_file(path: Path, known: set[str]) -> dict[str, Any]:
    """Settings from a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file; unknown keys are errors."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing file to --config")
    values = _parse(path)
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a table of settings at the top level")
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown setting '{unknown[0]}' in {path}; valid settings are: {', '.join(sorted(known))}"
        )
    return values


def _parse(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"cannot parse config file {path}: {exc}") from exc
    if suffix in (".yaml", ".yml"):
        try:
            import yaml  # only YAML files need it
        except ImportError as exc:
            raise ConfigError("YAML config files need PyYAML: pip install 'seesay[serve]'") from exc
        try:
            return yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"cannot parse config file {path}: {exc}") from exc
    raise ConfigError(f"config file {path} must end in .toml, .yaml or .yml")


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings; ``overrides`` (e.g. command-line flags) win over everything else.

    Args:
        config_file: Settings file; ``None`` falls back to ``SEESAY_CONFIG``.
        overrides: Field values; ``None`` values are ignored, so unset flags do not override.

    Raises:
        ConfigError: a value is invalid or the file cannot be read; the message says how to fix it.
    """
    values = {k: v for k, v in overrides.items() if v is not None}
    if config_file is not None:
        values["config"] = Path(config_file)
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        name = ".".join(str(part) for part in error["loc"])
        if not name:
            lines.append(message)
        elif error["type"] == "extra_forbidden":
            lines.append(f"unknown setting '{name}'")
        else:
            given = json.dumps(error["input"], default=str)
            lines.append(f"{name} (SEESAY_{name.upper()}): {message} (got {given})")
    return "invalid settings: " + "; ".join(lines)
