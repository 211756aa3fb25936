"""Where and how a model runs: device, dtype, attention kernel and device map.

Contract: :func:`plan_device` turns the configured choices ("auto" or explicit) into a
:class:`DevicePlan` using only what is present on this machine: bf16 on GPUs that support
it, else fp16 on GPU; fp32 on CPU; FlashAttention-2 when installed on CUDA, else SDPA;
``device_map="auto"`` to shard across several GPUs.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch

from seesay.errors import ModelLoadError

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass(frozen=True)
class DevicePlan:
    """Resolved placement for one model.

    Attributes:
        device: Where inputs go (``cuda:0``, ``cpu`` …); with a device map, the first shard.
        dtype: Weight and activation dtype.
        attention: ``attn_implementation`` passed to transformers.
        device_map: ``"auto"`` to shard across GPUs, else ``None`` (one device).
    """

    device: str
    dtype: torch.dtype
    attention: str
    device_map: str | None = None

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


def plan_device(device: str = "auto", dtype: str = "auto", attention: str = "auto") -> DevicePlan:
    """Resolve configured choices into a :class:`DevicePlan` (see module docstring).

    Raises:
        ModelLoadError: an explicit choice that this machine cannot honour.
    """
    resolved_device = _resolve_device(device)
    kind = resolved_device.split(":")[0]
    resolved_dtype = _resolve_dtype(dtype, kind)
    resolved_attention = _resolve_attention(attention, kind, resolved_dtype)
    shard = kind == "cuda" and device in ("auto", "cuda") and torch.cuda.device_count() > 1
    return DevicePlan(resolved_device, resolved_dtype, resolved_attention, "auto" if shard else None)


def _resolve_device(device: str) -> str:
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda:0"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device '{device}' was asked for but no CUDA GPU is visible; use device=cpu")
    return "cuda:0" if device == "cuda" else device


def _resolve_dtype(dtype: str, kind: str) -> torch.dtype:
    if dtype != "auto":
        return _DTYPES[dtype]
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if kind == "mps":
        return torch.float16
    return torch.float32


def flash_attention_installed() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def _resolve_attention(attention: str, kind: str, dtype: torch.dtype) -> str:
    half = dtype in (torch.float16, torch.bfloat16)
    if attention == "auto":
        return "flash_attention_2" if kind == "cuda" and half and flash_attention_installed() else "sdpa"
    if attention == "flash_attention_2" and not (kind == "cuda" and half and flash_attention_installed()):
        raise ModelLoadError(
            "attention=flash_attention_2 needs a CUDA GPU, a half-precision dtype and the flash-attn "
            "package (pip install 'seesay[flash]'); use attention=sdpa instead"
        )
    return attention
