"""docs/capacity.md's arithmetic, recomputed from the Qwen3-VL-8B shapes, seesay's resize and deploy/.

Each number the guide's sizing rests on is computed here and must appear in the guide as written
(thousands separated by commas), so a changed shape, pixel budget or vLLM flag fails this test
until the guide is redone. The GPU figures that are assumptions (memory left for activations)
are the guide's own, repeated here; the rest is derived.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deploy_files import vllm_command_lines
from qwen3vl_8b import TEXT_8B, VISION_8B
from seesay.images import PixelBudget

ROOT = Path(__file__).parents[2]
GUIDE = ROOT / "docs" / "capacity.md"
GiB, MiB = 2**30, 2**20
BF16 = 2
TYPICAL_REQUEST_TOKENS = 1_100  # one 12 MP photo, 56 text tokens, a 70-token answer


def linear(inputs: int, outputs: int, bias: bool) -> int:
    return inputs * outputs + (outputs if bias else 0)


def language_model_parameters(t: dict[str, Any]) -> int:
    """Qwen3 decoder: attention without biases, q/k norms, gated MLP, untied embeddings."""
    hidden, head_dim = t["hidden_size"], t["head_dim"]
    q, kv = t["num_attention_heads"] * head_dim, t["num_key_value_heads"] * head_dim
    layer = (linear(hidden, q, False) + 2 * linear(hidden, kv, False) + linear(q, hidden, False)
             + 2 * head_dim + 2 * hidden + 3 * hidden * t["intermediate_size"])
    return int(t["num_hidden_layers"] * layer + hidden + 2 * t["vocab_size"] * hidden)


def vision_parameters(v: dict[str, Any]) -> int:
    """Qwen3-VL vision tower: patch embedding, learned positions, blocks, merger and deepstack mergers."""
    hidden, mlp = v["hidden_size"], v["intermediate_size"]
    merged = hidden * v["spatial_merge_size"] ** 2
    block = 2 * 2 * hidden + linear(hidden, 3 * hidden, True) + linear(hidden, hidden, True) \
        + linear(hidden, mlp, True) + linear(mlp, hidden, True)

    def merger(norm_width: int) -> int:
        return 2 * norm_width + linear(merged, merged, True) + linear(merged, v["out_hidden_size"], True)

    patch_embedding = 3 * v["temporal_patch_size"] * v["patch_size"] ** 2 * hidden + hidden
    return int(patch_embedding + v["num_position_embeddings"] * hidden + v["depth"] * block + merger(hidden)
               + len(v["deepstack_visual_indexes"]) * merger(merged))


def kv_bytes_per_token(t: dict[str, Any]) -> int:
    return int(2 * t["num_hidden_layers"] * t["num_key_value_heads"] * t["head_dim"] * BF16)


def kv_tokens(reported_mib: int, utilisation: float, overhead_gib: float, tensor_parallel: int = 1) -> int:
    """KV cache tokens: the card's share for vLLM, less its part of the weights and the overhead."""
    weights = BF16 * (language_model_parameters(TEXT_8B) + vision_parameters(VISION_8B))
    per_gpu = reported_mib * MiB * utilisation - weights / tensor_parallel - overhead_gib * GiB
    return int(tensor_parallel * per_gpu / kv_bytes_per_token(TEXT_8B))


@pytest.fixture(scope="module")
def guide() -> str:
    return GUIDE.read_text(encoding="utf-8")


def test_weights_and_kv_cache_per_token(guide: str) -> None:
    language, vision = language_model_parameters(TEXT_8B), vision_parameters(VISION_8B)
    total = language + vision
    assert 8.7e9 < total < 8.8e9  # the published "about 8.8 B parameters"
    for number in (language, vision, total, BF16 * total):
        assert f"{number:,}" in guide
    assert f"{BF16 * total / 1e9:.2f} GB = {BF16 * total / GiB:.2f} GiB" in guide
    per_token = kv_bytes_per_token(TEXT_8B)
    assert per_token == 147_456
    assert f"**{per_token:,} bytes = {per_token // 1024} KiB per token**" in guide
    assert f"{8192 * per_token / GiB:.3f} GiB" in guide


def test_image_tokens_follow_seesay_s_own_resize(guide: str) -> None:
    tile = VISION_8B["patch_size"] * VISION_8B["spatial_merge_size"]
    assert f"{1e6 / tile**2:.1f} ≈ {round(1e6 / tile**2)} tokens" in guide
    configured = json.loads(vllm_command_lines()["k8s"]["--mm-processor-kwargs"])["size"]
    budget = PixelBudget(min_pixels=configured["shortest_edge"], max_pixels=configured["longest_edge"], factor=tile)
    assert f"`max_pixels` = {budget.max_pixels:,}" in guide
    width, height = budget.target_size(4000, 3000)
    tokens = budget.image_tokens(4000, 3000)
    assert f"{width} × {height} = {width // tile} × {height // tile} tiles = **{tokens} tokens**" in guide
    assert f"at most {budget.max_pixels // tile**2:,} tokens" in guide


def test_kv_capacity_on_24_and_80_gb_and_with_tensor_parallelism(guide: str) -> None:
    flags = vllm_command_lines()["k8s"]
    utilisation, max_seqs = float(flags["--gpu-memory-utilization"]), int(flags["--max-num-seqs"])
    small = kv_tokens(23_028, utilisation, 1.5)
    assert f"**{small:,} tokens**" in guide
    assert f"--gpu-memory-utilization {flags['--gpu-memory-utilization']} --max-num-seqs {max_seqs}" in guide
    assert f"--max-model-len {flags['--max-model-len']}" in guide
    # deploy/'s concurrency fits the cache with typical requests, and one full-length request fits.
    assert max_seqs <= small // TYPICAL_REQUEST_TOKENS
    assert int(flags["--max-model-len"]) <= small
    assert f"**{kv_tokens(81_559, 0.90, 3.0):,} tokens**" in guide
    assert f"**{kv_tokens(23_028, utilisation, 1.5, tensor_parallel=2):,} tokens**" in guide
    assert f"two have {2 * small:,}" in guide


def test_prefill_and_decode_arithmetic(guide: str) -> None:
    language, vision = language_model_parameters(TEXT_8B), vision_parameters(VISION_8B)
    patches = 972 * VISION_8B["spatial_merge_size"] ** 2
    language_flops, vision_flops = 2 * language * 1_030, 2 * vision * patches
    assert f"{language_flops / 1e12:.2f} TFLOP" in guide and f"{vision_flops / 1e12:.2f} TFLOP" in guide
    total = language_flops + vision_flops
    assert f"{total / 1e12:.2f} TFLOP, **{round(total / (0.5 * 125e12) * 1e3)} ms**" in guide
    step = (BF16 * (language + vision) + 16 * TYPICAL_REQUEST_TOKENS * kv_bytes_per_token(TEXT_8B)) / 600e9
    assert f"**{step * 1e3:.1f} ms per step**" in guide
