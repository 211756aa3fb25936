"""Configuration of the local transformers engine (plain data; no torch import)."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "bfloat16", "float16", "float32")
ATTENTIONS = ("auto", "flash_attention_2", "sdpa", "eager")


def demo_model_dir() -> Path:
    """The built-in demo model shipped inside the package."""
    return Path(str(resources.files("seesay.demo") / "model"))


@dataclass(frozen=True)
class TransformersEngineConfig:
    """How to load and run a Qwen-VL checkpoint with transformers.

    Attributes:
        model: Hub id (``Qwen/Qwen3-VL-8B-Instruct``) or local folder; ``None`` means the
            built-in demo model.
        revision: Hub revision (branch, tag or commit) to pin.
        device: ``auto`` picks CUDA, then MPS, then CPU; ``cuda:N`` selects one GPU.
        dtype: ``auto`` is bf16 on GPUs that support it, else fp16 on GPU, fp32 on CPU.
        attention: ``auto`` is FlashAttention-2 when installed on CUDA, else SDPA.
        trust_remote_code: Run Python code shipped with the checkpoint; off unless asked.
        min_pixels: Lower end of the pixel budget; ``None`` keeps the processor's.
        max_pixels: Upper end of the pixel budget; ``None`` keeps the processor's. Requests
            may ask for less, never for more.
        max_model_len: Prompt plus output tokens allowed per request; bounds the KV cache.
        default_max_new_tokens: Output bound when a request sets none (clipped to the
            context left).
        cpu_threads: torch intra-op threads for CPU inference; ``None`` keeps torch's default
            (one per core). Fewer threads help when other processes share the cores.
    """

    model: str | None = None
    revision: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    attention: str = "auto"
    trust_remote_code: bool = False
    min_pixels: int | None = None
    max_pixels: int | None = None
    max_model_len: int = 8192
    default_max_new_tokens: int = 512
    cpu_threads: int | None = None

    def __post_init__(self) -> None:
        _check_choice("device", self.device.split(":")[0], DEVICES)
        _check_choice("dtype", self.dtype, DTYPES)
        _check_choice("attention", self.attention, ATTENTIONS)
        if self.max_model_len < 16:
            raise ValueError(f"max_model_len must be at least 16 tokens, got {self.max_model_len}")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ValueError(f"cpu_threads must be at least 1, got {self.cpu_threads}")
        if not 0 < self.default_max_new_tokens <= self.max_model_len:
            raise ValueError(
                f"default_max_new_tokens must be in 1..max_model_len ({self.max_model_len}), "
                f"got {self.default_max_new_tokens}"
            )

    @property
    def model_source(self) -> str:
        """What ``from_pretrained`` receives."""
        return self.model or str(demo_model_dir())

    @property
    def model_name(self) -> str:
        """The name clients use for this model (``seesay-demo`` for the built-in one)."""
        return self.model or "seesay-demo"


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got '{value}'")


@dataclass(frozen=True)
class RemoteEngineConfig:
    """How to reach OpenAI-compatible upstreams (vLLM, SGLang, LMDeploy, another seesay).

    Attributes:
        upstreams: Base URLs, each serving ``/v1/chat/completions`` and ``/v1/models``
            (``http://vllm-0:8000``; a trailing ``/v1`` is accepted).
        model: The name seesay serves this model under (``None``: ``seesay-demo``).
        upstream_model: The model name the upstreams serve (``None``: ``model``'s name).
        api_key: Sent as ``Authorization: Bearer`` to every upstream.
        min_pixels: Lower end of seesay's pixel budget (``None``: 65,536).
        max_pixels: Upper end of seesay's pixel budget (``None``: 1,048,576); set the upstream's
            own resize limits to the same budget (README, "Remote engines").
        pixel_factor: Side lengths are multiples of this: 32 for Qwen3-VL, 28 for Qwen2.5-VL.
        max_model_len: Prompt plus output tokens per request, as the upstream is started with.
        default_max_new_tokens: ``max_tokens`` sent when a request sets none.
        connect_timeout_s: Opening a connection to an upstream.
        first_token_timeout_s: From sending a request to its first answer text.
        idle_timeout_s: Longest silence between two chunks of a streamed answer.
        max_attempts: Upstreams tried for one request before its first text (1: no retry).
        retry_backoff_s: Wait before the second attempt; doubled before each further one.
        failure_threshold: Consecutive failures that open an upstream's circuit breaker.
        cooldown_s: Seconds an open breaker waits before one probe request goes through.
        health_interval_s: Seconds between ``/v1/models`` probes of every upstream.
        max_connections: Keep-alive connections per upstream.
        concurrent_batches: Batches seesay's scheduler may have in flight at once: a new batch
            starts while earlier ones still stream, so one slow answer holds up no other.
    """

    upstreams: tuple[str, ...]
    model: str | None = None
    upstream_model: str | None = None
    api_key: str | None = field(default=None, repr=False)
    min_pixels: int | None = None
    max_pixels: int | None = None
    pixel_factor: int = 32
    max_model_len: int = 8192
    default_max_new_tokens: int = 512
    connect_timeout_s: float = 5.0
    first_token_timeout_s: float = 120.0
    idle_timeout_s: float = 30.0
    max_attempts: int = 3
    retry_backoff_s: float = 0.05
    failure_threshold: int = 3
    cooldown_s: float = 10.0
    health_interval_s: float = 10.0
    max_connections: int = 256
    concurrent_batches: int = 8

    def __post_init__(self) -> None:
        if not self.upstreams:
            raise ValueError("the remote engine needs at least one upstream: set remote_upstreams, "
                             "e.g. SEESAY_REMOTE_UPSTREAMS=http://vllm-0:8000,http://vllm-1:8000")
        for url in self.upstreams:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"remote upstream '{url}' must be an http:// or https:// base URL")
        if len(set(self.upstreams)) != len(self.upstreams):
            raise ValueError(f"remote_upstreams lists an upstream twice: {', '.join(self.upstreams)}")
        positive = {name: getattr(self, name) for name in (
            "connect_timeout_s", "first_token_timeout_s", "idle_timeout_s", "health_interval_s")}
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"remote {name} must be above 0, got {value}")
        if min(self.max_attempts, self.failure_threshold, self.max_connections, self.concurrent_batches) < 1:
            raise ValueError("remote max_attempts, failure_threshold, max_connections and concurrent_batches must "
                             "be at least 1")
        if self.retry_backoff_s < 0 or self.cooldown_s < 0:
            raise ValueError("remote retry_backoff_s and cooldown_s must not be negative")
        if not 0 < self.default_max_new_tokens <= self.max_model_len:
            raise ValueError(f"default_max_new_tokens must be in 1..max_model_len ({self.max_model_len}), "
                             f"got {self.default_max_new_tokens}")

    @property
    def model_name(self) -> str:
        """The name clients use for this model."""
        return self.model or "seesay-demo"

    @property
    def served_upstream_model(self) -> str:
        """The model name sent to the upstreams."""
        return self.upstream_model or self.model_name
