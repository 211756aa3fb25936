"""Qwen3-VL-8B-Instruct's published architecture: the shapes the GPU test builds and docs/capacity.md sizes.

Shared by ``tests/integration/test_gpu.py`` (a random-weight model of these shapes on a GPU) and
``tests/unit/test_capacity_doc.py`` (the guide's arithmetic). The published checkpoint does not tie
its input and output embeddings.
"""

from __future__ import annotations

TEXT_8B = {
    "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936, "rms_norm_eps": 1e-6,
    "max_position_embeddings": 262144, "rope_theta": 5_000_000,
    "rope_scaling": {"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True},
}
VISION_8B = {
    "depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16, "patch_size": 16,
    "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 4096, "num_position_embeddings": 2304,
    "deepstack_visual_indexes": [8, 16, 24], "hidden_act": "gelu_pytorch_tanh",
}
