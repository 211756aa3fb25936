"""Training the demo model from scratch, deterministically, on the drawn catalogue.

Contract: :func:`build_demo_model` trains a tokenizer (:mod:`seesay.demo.tokenizer`) and a
tiny Qwen3-VL (:mod:`seesay.demo.model`) with the shared loop of :mod:`seesay.training.loop`
and saves both where the engine loads them. The same :class:`TrainConfig` on the same
machine and thread count gives byte-identical weights.

Training sees exactly what the engine sees at serving time: each picture goes through
PNG bytes and :func:`seesay.images.load_image` at the model's pixel budget, the prompt is
rendered by the processor's chat template with the generation prompt, and the processor
expands the image and computes pixel values without resizing again. The answer and
``<|im_end|>`` are appended as token ids, the only positions with labels. Everything is
drawn and preprocessed once, before the first step, not per batch, into a
:class:`~seesay.training.batches.PictureStore`.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForImageTextToText, ProcessorMixin

from seesay.demo.catalogue import QASample, iter_picture_groups, png_bytes
from seesay.demo.model import PIXELS, build_processor, demo_config, save_demo_model
from seesay.demo.options import TrainConfig
from seesay.demo.tokenizer import EOS_TOKEN, build_tokenizer
from seesay.engine.config import demo_model_dir
from seesay.engine.patch_embedding import linearise_patch_embeddings
from seesay.images import PixelBudget, load_image
from seesay.training.batches import IGNORE_INDEX, EncodedSequence, PictureStore, PixelCodec, TrainingSet
from seesay.training.loop import LoopSettings, torch_threads, train
from seesay.training.progress import LogLines, Report


def _prompt(processor: ProcessorMixin, question: str) -> str:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
    ]
    return str(processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))


def encode_group(processor: ProcessorMixin, group: Sequence[QASample], budget: PixelBudget,
                 pictures: PictureStore) -> list[EncodedSequence]:
    """Preprocess one picture and its questions as the engine would; label only the answers.

    The picture goes into ``pictures`` once; every returned sequence (one per sample) shows it.
    """
    picture = load_image(png_bytes(group[0].image), budget).image
    prompts = [_prompt(processor, sample.question) for sample in group]
    encoded = processor(text=prompts, images=[picture] * len(group), do_resize=False)  # type: ignore[operator]
    tokenizer = processor.tokenizer  # type: ignore[attr-defined]
    grid = np.asarray(encoded["image_grid_thw"])[0]
    index = pictures.add(np.asarray(encoded["pixel_values"])[: int(grid.prod())], grid.tolist())
    rows = []
    for prompt, types, sample in zip(encoded["input_ids"], encoded["mm_token_type_ids"], group, strict=True):
        answer = tokenizer.encode(sample.answer + EOS_TOKEN, add_special_tokens=False)
        rows.append(EncodedSequence(list(prompt) + answer, [IGNORE_INDEX] * len(prompt) + answer,
                                    list(types) + [0] * len(answer), (index,)))
    return rows


def build_training_set(processor: ProcessorMixin, pictures: int, seed: int, report: Report) -> TrainingSet:
    """Draw and preprocess ``pictures`` pictures of the stream of ``seed`` (see the module docstring)."""
    budget = PixelBudget(min_pixels=PIXELS, max_pixels=PIXELS)
    data = TrainingSet(PictureStore(PixelCodec.of(processor.image_processor)), [])  # type: ignore[attr-defined]
    started = time.perf_counter()
    for index, group in enumerate(itertools.islice(iter_picture_groups(seed), pictures)):
        data.sequences += encode_group(processor, group, budget, data.pictures)
        if (index + 1) % 1000 == 0:
            report(f"preprocessed {index + 1}/{pictures} pictures ({time.perf_counter() - started:.0f} s)")
    return data


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
    with torch.random.fork_rng(devices=[]), torch_threads(config.threads):
        torch.manual_seed(config.seed)
        model = AutoModelForImageTextToText.from_config(demo_config(tokenizer, config.size))
        report(f"model: {sum(p.numel() for p in model.parameters()):,} parameters")
        linearise_patch_embeddings(model)
        train(model, data, loop_settings(config), pad_id=tokenizer.pad_token_id,
              progress=LogLines(report, config.log_every))
    out = save_demo_model(model, processor, out_dir or demo_model_dir())
    report(f"saved to {out} after {time.perf_counter() - started:.0f} s")
    return out


def loop_settings(config: TrainConfig) -> LoopSettings:
    """The shared loop's settings for a demo build: AdamW, cosine decay after warm-up, clipping at 1."""
    return LoopSettings(steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                        warmup_steps=config.warmup_steps, weight_decay=config.weight_decay, seed=config.seed)
