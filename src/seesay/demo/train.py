"""Training the demo model from scratch, deterministically, on the drawn catalogue.

Contract: :func:`build_demo_model` trains a tokenizer (:mod:`seesay.demo.tokenizer`) and a
tiny Qwen3-VL (:mod:`seesay.demo.model`) and saves both where the engine loads them. The
same :class:`TrainConfig` on the same machine and thread count gives byte-identical weights.

Training sees exactly what the engine sees at serving time: each picture goes through
PNG bytes and :func:`seesay.images.load_image` at the model's pixel budget, the prompt is
rendered by the processor's chat template with the generation prompt, and the processor
expands the image and computes pixel values without resizing again. The answer and
``<|im_end|>`` are appended as token ids, the only positions with labels. Everything is
drawn and preprocessed once, before the first step, not per batch; pixel values are kept as
the exact uint8 values they came from, one of the two identical temporal frames, 8× smaller
than the processor's float32.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoModelForImageTextToText,
    ProcessorMixin,
    Qwen3VLForConditionalGeneration,
    get_cosine_schedule_with_warmup,
)

from seesay.demo.catalogue import QASample, iter_picture_groups, png_bytes
from seesay.demo.model import PIXELS, TEMPORAL_PATCH_SIZE, build_processor, demo_config, save_demo_model
from seesay.demo.options import TrainConfig
from seesay.demo.tokenizer import EOS_TOKEN, build_tokenizer
from seesay.engine.config import demo_model_dir
from seesay.images import PixelBudget, load_image

IGNORE_INDEX = -100
Report = Callable[[str], None]


@dataclass(frozen=True)
class EncodedQuestion:
    """One training sequence: prompt and answer ids, labels on the answer only.

    Attributes:
        input_ids: Prompt ids (image expanded) followed by the answer's and ``<|im_end|>``.
        labels: ``-100`` over the prompt, the answer ids after it.
        mm_token_type_ids: The processor's modality of each prompt token (1: image), 0 after.
        picture: Index of the picture in :attr:`TrainingSet.patches`.
    """

    input_ids: list[int]
    labels: list[int]
    mm_token_type_ids: list[int]
    picture: int


@dataclass(frozen=True)
class TrainingSet:
    """Preprocessed training data, ready to batch.

    Attributes:
        patches: uint8 pixel values of every picture, one temporal frame:
            (pictures, patches per picture, channels, patch area).
        grid_thw: The processor's image grid, the same for every (square) picture.
        sequences: One entry per question.
    """

    patches: torch.Tensor
    grid_thw: torch.Tensor
    sequences: list[EncodedQuestion]


def to_uint8_patches(pixel_values: np.ndarray, temporal: int, channels: int = 3) -> np.ndarray:
    """The processor's pixel values ((x/255 - 0.5)/0.5 of uint8 x, repeated in time) back to x."""
    frames = pixel_values.reshape(pixel_values.shape[0], channels, temporal, -1)[:, :, 0]
    return np.clip(np.rint((frames * 0.5 + 0.5) * 255), 0, 255).astype(np.uint8)


def from_uint8_patches(patches: torch.Tensor, temporal: int) -> torch.Tensor:
    """Inverse of :func:`to_uint8_patches`: the processor's float32 pixel values."""
    frames = (patches.to(torch.float32) / 255 - 0.5) / 0.5
    return frames.unsqueeze(2).expand(-1, -1, temporal, -1).reshape(patches.shape[0], -1)


def _prompt(processor: ProcessorMixin, question: str) -> str:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
    ]
    return str(processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))


def encode_group(processor: ProcessorMixin, group: Sequence[QASample], budget: PixelBudget,
                 picture_index: int) -> tuple[np.ndarray, torch.Tensor, list[EncodedQuestion]]:
    """Preprocess one picture and its questions as the engine would; label only the answers.

    Returns:
        The picture's uint8 patches, its grid, and one :class:`EncodedQuestion` per sample.
    """
    picture = load_image(png_bytes(group[0].image), budget).image
    prompts = [_prompt(processor, sample.question) for sample in group]
    encoded = processor(text=prompts, images=[picture] * len(group), do_resize=False)  # type: ignore[operator]
    tokenizer = processor.tokenizer  # type: ignore[attr-defined]
    grid = torch.as_tensor(encoded["image_grid_thw"])[:1]
    patches = to_uint8_patches(np.asarray(encoded["pixel_values"])[: int(grid.prod())], TEMPORAL_PATCH_SIZE)
    rows = []
    for prompt, types, sample in zip(encoded["input_ids"], encoded["mm_token_type_ids"], group, strict=True):
        answer = tokenizer.encode(sample.answer + EOS_TOKEN, add_special_tokens=False)
        rows.append(EncodedQuestion(list(prompt) + answer, [IGNORE_INDEX] * len(prompt) + answer,
                                    list(types) + [0] * len(answer), picture_index))
    return patches, grid, rows


def build_training_set(processor: ProcessorMixin, pictures: int, seed: int, report: Report) -> TrainingSet:
    """Draw and preprocess ``pictures`` pictures of the stream of ``seed`` (see the module docstring)."""
    budget = PixelBudget(min_pixels=PIXELS, max_pixels=PIXELS)
    all_patches: list[np.ndarray] = []
    sequences: list[EncodedQuestion] = []
    grid = torch.zeros(1, 3, dtype=torch.long)
    started = time.perf_counter()
    for index, group in enumerate(itertools.islice(iter_picture_groups(seed), pictures)):
        patches, grid, rows = encode_group(processor, group, budget, index)
        all_patches.append(patches)
        sequences += rows
        if (index + 1) % 1000 == 0:
            report(f"preprocessed {index + 1}/{pictures} pictures ({time.perf_counter() - started:.0f} s)")
    return TrainingSet(torch.from_numpy(np.stack(all_patches)), grid, sequences)


def collate(data: TrainingSet, indices: Sequence[int], pad_id: int, temporal: int) -> dict[str, torch.Tensor]:
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
    patches = data.patches[torch.tensor([row.picture for row in rows])]
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "mm_token_type_ids": mm_token_type_ids,
        "labels": labels,
        "pixel_values": from_uint8_patches(patches.reshape(-1, *patches.shape[2:]), temporal),
        "image_grid_thw": data.grid_thw.repeat(len(rows), 1),
    }


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Use ``threads`` CPU threads inside the block (``None``: leave as is), then restore."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _batches(n: int, batch_size: int, seed: int) -> itertools.chain[int]:
    """Endless shuffled epochs over ``n`` sequence indices."""
    generator = torch.Generator().manual_seed(seed)
    epochs = (torch.randperm(n, generator=generator).tolist() for _ in itertools.count())
    return itertools.chain.from_iterable(epochs)


def _stderr(message: str) -> None:
    print(f"[seesay demo build] {message}", file=sys.stderr, flush=True)


def build_demo_model(config: TrainConfig | None = None, out_dir: str | Path | None = None,
                     report: Report = _stderr) -> Path:
    """Train the demo model from scratch and save it (see the module docstring).

    Args:
        config: Build options; defaults to :class:`TrainConfig`'s.
        out_dir: Where to save; defaults to the package's ``seesay/demo/model``.
        report: Receives progress lines (stderr by default).

    Returns:
        The folder written.
    """
    config = config or TrainConfig()
    started = time.perf_counter()
    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer)
    data = build_training_set(processor, config.pictures, config.seed, report)
    report(f"{len(data.sequences)} sequences from {config.pictures} pictures ready "
           f"({time.perf_counter() - started:.0f} s)")
    with torch.random.fork_rng(devices=[]), _torch_threads(config.threads):
        torch.manual_seed(config.seed)
        model = AutoModelForImageTextToText.from_config(demo_config(tokenizer, config.size))
        report(f"model: {sum(p.numel() for p in model.parameters()):,} parameters")
        with linear_patch_embedding(model):
            _optimise(model, data, config, tokenizer.pad_token_id, report)
    out = save_demo_model(model, processor, out_dir or demo_model_dir())
    report(f"saved to {out} after {time.perf_counter() - started:.0f} s")
    return out


@contextlib.contextmanager
def linear_patch_embedding(model: Qwen3VLForConditionalGeneration) -> Iterator[None]:
    """Run the vision patch embedding as one matrix product while training.

    Qwen3-VL embeds patches with a Conv3d whose stride equals its kernel, applied to inputs
    exactly one kernel in size: the same function as a linear layer over the flattened patch,
    but its CPU backward pass is several times slower. The weights are not touched.
    """
    embed = model.model.visual.patch_embed
    weight, bias = embed.proj.weight, embed.proj.bias

    def forward(hidden_states: torch.Tensor) -> torch.Tensor:
        flat = hidden_states.reshape(-1, weight[0].numel()).to(weight.dtype)
        return torch.nn.functional.linear(flat, weight.reshape(weight.shape[0], -1), bias)

    embed.forward = forward
    try:
        yield
    finally:
        del embed.forward


def _optimise(model: Qwen3VLForConditionalGeneration, data: TrainingSet, config: TrainConfig, pad_id: int,
              report: Report) -> None:
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = get_cosine_schedule_with_warmup(optimiser, config.warmup_steps, config.steps)
    order = _batches(len(data.sequences), config.batch_size, config.seed)
    model.train()
    losses: list[float] = []
    started = time.perf_counter()
    for step in range(1, config.steps + 1):
        batch = collate(data, list(itertools.islice(order, config.batch_size)), pad_id, TEMPORAL_PATCH_SIZE)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        optimiser.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % config.log_every == 0 or step == config.steps:
            report(f"step {step}/{config.steps} loss {sum(losses) / len(losses):.4f} "
                   f"lr {schedule.get_last_lr()[0]:.2e} ({time.perf_counter() - started:.0f} s)")
            losses.clear()
    model.eval()
