"""Configuration of the local transformers engine (plain data; no torch import)."""

from __future__ import annotations

from dataclasses import dataclass
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
