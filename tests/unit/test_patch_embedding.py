"""Patch convolutions computed as matrix multiplies: same parameters, same outputs."""

from __future__ import annotations

import torch
from torch import nn

from seesay.engine.patch_embedding import PatchProjection, is_patch_convolution, linearise_patch_embeddings


def _conv(bias: bool = True) -> nn.Conv3d:
    torch.manual_seed(0)
    return nn.Conv3d(3, 8, kernel_size=(2, 4, 4), stride=(2, 4, 4), bias=bias)


def test_one_window_per_input_matches_the_convolution() -> None:
    for bias in (True, False):
        conv = _conv(bias)
        windows = torch.randn(10, 3, 2, 4, 4)
        expected = conv(windows)
        got = PatchProjection(conv)(windows)
        assert got.shape == expected.shape == (10, 8, 1, 1, 1)
        assert torch.allclose(got, expected, atol=1e-5)


def test_larger_inputs_still_convolve() -> None:
    conv = _conv()
    frames = torch.randn(2, 3, 4, 8, 8)  # 2 x 2 x 2 windows each
    assert torch.allclose(PatchProjection(conv)(frames), conv(frames), atol=1e-5)


def test_only_non_overlapping_convolutions_qualify() -> None:
    assert is_patch_convolution(_conv())
    assert not is_patch_convolution(nn.Conv3d(3, 8, kernel_size=3, stride=1))
    assert not is_patch_convolution(nn.Conv3d(3, 8, kernel_size=2, stride=2, padding=1))
    assert not is_patch_convolution(nn.Conv2d(3, 8, kernel_size=2, stride=2))


class _Tower(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = _conv()
        self.head = nn.Conv3d(8, 8, kernel_size=1)  # kernel = stride too, but not a patch embedding


def test_linearising_keeps_the_state_dict_and_the_outputs() -> None:
    tower = _Tower()
    before = {name: tensor.clone() for name, tensor in tower.state_dict().items()}
    windows = torch.randn(6, 3, 2, 4, 4)
    expected = tower.patch_embed.proj(windows)
    assert linearise_patch_embeddings(tower) == 1
    assert isinstance(tower.patch_embed.proj, PatchProjection)
    assert isinstance(tower.head, nn.Conv3d)
    after = tower.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[name], before[name]) for name in before)
    assert torch.allclose(tower.patch_embed.proj(windows), expected, atol=1e-5)
    assert linearise_patch_embeddings(tower) == 0  # idempotent
