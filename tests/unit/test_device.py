"""Device, dtype and attention choice."""

from __future__ import annotations

import pytest
import torch

from seesay.engine import device as device_module
from seesay.engine.device import plan_device
from seesay.errors import ModelLoadError


def test_cpu_gets_fp32_and_sdpa(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    plan = plan_device("cpu")
    assert (plan.device, plan.dtype, plan.attention, plan.device_map) == ("cpu", torch.float32, "sdpa", None)


@pytest.mark.parametrize(("bf16", "expected"), [(True, torch.bfloat16), (False, torch.float16)])
def test_gpu_dtype_follows_bf16_support(monkeypatch: pytest.MonkeyPatch, bf16: bool, expected: torch.dtype) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(device_module, "flash_attention_installed", lambda: False)
    plan = plan_device()
    assert (plan.device, plan.dtype, plan.attention, plan.device_map) == ("cuda:0", expected, "sdpa", None)


def test_several_gpus_shard_with_flash_attention_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(device_module, "flash_attention_installed", lambda: True)
    plan = plan_device()
    assert (plan.device_map, plan.attention, plan.dtype_name) == ("auto", "flash_attention_2", "bfloat16")
    assert plan_device("cuda:1").device_map is None, "an explicit GPU is never sharded"


def test_impossible_choices_say_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelLoadError, match="device=cpu"):
        plan_device("cuda")
    with pytest.raises(ModelLoadError, match="attention=sdpa"):
        plan_device("cpu", attention="flash_attention_2")


def test_explicit_dtype_wins_on_cpu() -> None:
    assert plan_device("cpu", dtype="bfloat16").dtype == torch.bfloat16
