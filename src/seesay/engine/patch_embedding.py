"""Vision patch embeddings as one matrix multiply instead of a 3-D convolution.

Every Qwen-VL vision tower (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) embeds its patches with an
``nn.Conv3d`` whose kernel equals its stride, applied to inputs that are exactly one kernel
window each. Such a convolution is a linear map over the flattened window, and the general
convolution path is slower than the matrix multiply (BENCHMARKS.md has this project's figure;
on some GPU and cuDNN versions by orders of magnitude: transformers issue #45750, vLLM PR #27418).

:func:`linearise_patch_embeddings` swaps each such convolution for a :class:`PatchProjection`
that holds the *same* weight and bias parameters, so the state dict, saved checkpoints and
weight fingerprints are unchanged; only the arithmetic order differs (outputs agree to float
rounding). A LoRA adapter that targets the patch convolution itself (none of the usual
``q_proj``/``v_proj`` targets do) would need it applied before this replacement.
transformers' own opt-in ``fusion_config={"patch_embeddings": True}`` does the same by
patching the module classes process-wide, which would also change every other model loaded
in the process; this replacement is per model instance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchProjection(nn.Module):
    """A kernel-equals-stride ``Conv3d`` computed as ``F.linear`` when its input is one window.

    Inputs of any other shape take the convolution itself, so the module is a drop-in
    replacement: same parameters (``weight`` of shape ``[out, in, t, h, w]``, ``bias``), same
    output shape ``[n, out, 1, 1, 1]`` for ``n`` windows.
    """

    def __init__(self, conv: nn.Conv3d) -> None:
        super().__init__()
        self.weight = conv.weight
        self.bias = conv.bias
        self.kernel_size = tuple(conv.kernel_size)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        if windows.dim() != 5 or tuple(windows.shape[2:]) != self.kernel_size:
            return F.conv3d(windows, self.weight, self.bias, stride=self.kernel_size)
        out_channels = self.weight.shape[0]
        flat = F.linear(windows.reshape(windows.shape[0], -1), self.weight.reshape(out_channels, -1), self.bias)
        return flat.view(windows.shape[0], out_channels, 1, 1, 1)


def is_patch_convolution(module: nn.Module) -> bool:
    """Whether ``module`` is a ``Conv3d`` whose windows never overlap (kernel = stride, no padding)."""
    return (
        isinstance(module, nn.Conv3d)
        and tuple(module.stride) == tuple(module.kernel_size)
        and tuple(module.padding) == (0, 0, 0)
        and tuple(module.dilation) == (1, 1, 1)
        and module.groups == 1
        and module.padding_mode == "zeros"
    )


def linearise_patch_embeddings(model: nn.Module) -> int:
    """Replace every patch convolution under a ``patch_embed`` module by a :class:`PatchProjection`.

    Returns:
        How many convolutions were replaced (0 for a model without a Qwen-VL vision tower).
    """
    replaced = 0
    for name, module in list(model.named_modules()):
        if name.rsplit(".", 1)[-1] != "patch_embed":
            continue
        for child_name, child in list(module.named_children()):
            if is_patch_convolution(child):
                setattr(module, child_name, PatchProjection(child))  # type: ignore[arg-type]
                replaced += 1
    return replaced
