"""Encoded training sequences, their pictures, and the batches made of them.

Contract: an :class:`EncodedSequence` is one conversation as the model reads it at serving
time (chat template rendered, every image placeholder expanded to its visual tokens) with
labels on the tokens the model must learn to produce and :data:`IGNORE_INDEX` elsewhere. Its
pictures live in a :class:`PictureStore` as the processor's pixel values turned back into the
exact uint8 values they came from, one of the identical temporal frames: 8× smaller than the
processor's float32, and :meth:`PictureStore.pixel_values` gives the float32 values back.
:func:`collate` left-pads sequences into one batch, pictures in row order, as the engine does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

IGNORE_INDEX = -100


@dataclass(frozen=True)
class EncodedSequence:
    """One training sequence.

    Attributes:
        input_ids: Token ids, image placeholders expanded.
        labels: The id where the model is taught to produce it, :data:`IGNORE_INDEX` elsewhere.
        mm_token_type_ids: The processor's modality of each token (1: image, 0: text).
        pictures: Indices into the :class:`PictureStore`, in the order the sequence shows them.
    """

    input_ids: list[int]
    labels: list[int]
    mm_token_type_ids: list[int]
    pictures: tuple[int, ...] = ()

    @property
    def trained_tokens(self) -> int:
        """How many positions carry a label."""
        return sum(label != IGNORE_INDEX for label in self.labels)


@dataclass(frozen=True)
class PixelCodec:
    """The image processor's normalisation ``(x * scale - mean) / std`` of uint8 ``x``, and its inverse.

    Attributes:
        mean: Per-channel mean.
        std: Per-channel standard deviation.
        temporal: Identical frames per picture (Qwen-VL's temporal patch size).
    """

    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    temporal: int = 2

    @classmethod
    def of(cls, image_processor: Any) -> PixelCodec:
        """The codec of a Qwen-VL image processor (its mean, std and temporal patch size)."""
        return cls(tuple(image_processor.image_mean), tuple(image_processor.image_std),
                   int(image_processor.temporal_patch_size))

    def _channel(self, values: tuple[float, ...]) -> np.ndarray:
        return np.asarray(values, dtype=np.float32).reshape(-1, 1)

    def to_uint8(self, pixel_values: np.ndarray) -> np.ndarray:
        """The processor's pixel values (patches × (channels · temporal · area)) back to uint8, one frame."""
        channels = len(self.mean)
        frames = pixel_values.reshape(pixel_values.shape[0], channels, self.temporal, -1)[:, :, 0]
        restored = (frames * self._channel(self.std) + self._channel(self.mean)) * 255
        return np.clip(np.rint(restored), 0, 255).astype(np.uint8)

    def to_float(self, patches: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_uint8`: the processor's float32 pixel values."""
        mean = torch.from_numpy(self._channel(self.mean))
        std = torch.from_numpy(self._channel(self.std))
        frames = (patches.to(torch.float32) / 255 - mean) / std
        return frames.unsqueeze(2).expand(-1, -1, self.temporal, -1).reshape(patches.shape[0], -1)


@dataclass
class PictureStore:
    """Every picture of a training set as uint8 patches, with its grid (see the module docstring)."""

    codec: PixelCodec = field(default_factory=PixelCodec)
    patches: list[torch.Tensor] = field(default_factory=list)
    grids: list[torch.Tensor] = field(default_factory=list)

    def add(self, pixel_values: np.ndarray, grid_thw: Sequence[int]) -> int:
        """Store one picture's processor output; returns its index.

        Raises:
            ValueError: The uint8 values do not give the processor's values back (an image
                processor whose normalisation this store does not describe).
        """
        patches = self.codec.to_uint8(pixel_values)
        if not np.allclose(self.codec.to_float(torch.from_numpy(patches)).numpy(), pixel_values, atol=1e-5):
            raise ValueError("the image processor's pixel values are not uint8 pixels normalised by its own "
                             f"mean {self.codec.mean} and std {self.codec.std}; seesay cannot store them")
        self.patches.append(torch.from_numpy(patches))
        self.grids.append(torch.as_tensor(grid_thw, dtype=torch.long).reshape(3))
        return len(self.patches) - 1

    def __len__(self) -> int:
        return len(self.patches)

    def pixel_values(self, indices: Sequence[int]) -> torch.Tensor:
        """The processor's float32 pixel values of these pictures, concatenated in order."""
        return self.codec.to_float(torch.cat([self.patches[i] for i in indices]))

    def grid_thw(self, indices: Sequence[int]) -> torch.Tensor:
        """The grids of these pictures, one row each."""
        return torch.stack([self.grids[i] for i in indices])


@dataclass
class TrainingSet:
    """Sequences and the pictures they show, ready to batch."""

    pictures: PictureStore
    sequences: list[EncodedSequence]


def collate(data: TrainingSet, indices: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-pad the chosen sequences into one batch, with their pictures' pixel values in row order."""
    rows = [data.sequences[i] for i in indices]
    width = max(len(row.input_ids) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mm_token_type_ids = torch.zeros((len(rows), width), dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        start = width - len(row.input_ids)
        input_ids[i, start:] = torch.tensor(row.input_ids)
        labels[i, start:] = torch.tensor(row.labels)
        mm_token_type_ids[i, start:] = torch.tensor(row.mm_token_type_ids)
        attention_mask[i, start:] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask,
             "mm_token_type_ids": mm_token_type_ids, "labels": labels}
    pictures = [picture for row in rows for picture in row.pictures]
    if pictures:
        batch["pixel_values"] = data.pictures.pixel_values(pictures)
        batch["image_grid_thw"] = data.pictures.grid_thw(pictures)
    return batch
