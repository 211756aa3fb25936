"""Options of ``seesay finetune``, as a plain dataclass (no torch import).

The attribute docstrings are the command's help. Defaults follow the product brief and the
field: LoRA r=8, lora_alpha=32, dropout 0.1 on the language model's q_proj and v_proj
(vLLM serves language-model LoRA for Qwen3-VL; the vision tower and merger stay frozen),
learning rate 1e-4 with cosine decay after a short warm-up.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

LANGUAGE_MODEL_QV = r".*language_model.*\.(q_proj|v_proj)"


@dataclass(frozen=True)
class FinetuneConfig:
    """What ``seesay finetune`` trains, on what, and how."""

    base: str
    """Base model: hub id or local folder."""
    data: tuple[Path, ...]
    """Training data, one or more: ms-swift .jsonl, LLaMA-Factory .json, or a dataset_info.json (or its folder)."""
    out: Path
    """Output folder: the adapter, the training report and checkpoints."""
    dataset: str | None = None
    """Entries of dataset_info.json to train on, comma-separated."""
    eval_data: Path | None = None
    """Evaluation data, in the same formats (its loss is reported every epoch)."""
    eval_dataset: str | None = None
    """Entry of the evaluation dataset_info.json."""
    rank: int = 8
    """LoRA rank r."""
    alpha: int = 32
    """LoRA alpha (the update is scaled by alpha / r)."""
    dropout: float = 0.1
    """LoRA dropout."""
    target_modules: str = LANGUAGE_MODEL_QV
    """Modules to adapt: a regular expression over module names, or comma-separated name endings."""
    lr: float = 1e-4
    """Peak learning rate of AdamW."""
    epochs: float = 3.0
    """Passes over the training data."""
    steps: int | None = None
    """Optimiser steps; overrides epochs."""
    batch_size: int = 4
    """Sequences per micro-batch."""
    grad_accumulation: int = 2
    """Micro-batches per optimiser step."""
    schedule: str = "cosine"
    """Learning-rate schedule after warm-up: cosine, linear, constant_with_warmup, polynomial."""
    warmup_ratio: float = 0.05
    """Share of the steps spent warming up linearly."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient norm clipping."""
    min_pixels: int | None = None
    """Smaller pictures are upsampled to about this many pixels (default: the model's)."""
    max_pixels: int | None = None
    """Larger pictures are downsampled to at most this many pixels (default: the model's)."""
    max_length: int = 2048
    """Longest sequence in tokens (visual tokens included); longer records are refused, not cut."""
    eval_every: int | None = None
    """Evaluate every this many steps (default: once per epoch)."""
    checkpoint_every: int = 500
    """Checkpoint every this many steps (and at the end, and on Ctrl-C)."""
    keep_checkpoints: int = 2
    """Complete checkpoints kept."""
    seed: int = 0
    """Seeds the adapter's initialisation, dropout and the data order."""
    threads: int | None = None
    """torch CPU threads (default: torch's)."""

    def __post_init__(self) -> None:
        if self.rank < 1 or self.alpha <= 0:
            raise ValueError("LoRA rank must be at least 1 and alpha positive")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if self.lr <= 0 or self.epochs <= 0:
            raise ValueError("learning rate and epochs must be positive")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warm-up ratio must be in [0, 1), got {self.warmup_ratio}")

    def total_steps(self, sequences: int) -> int:
        """Optimiser steps for ``sequences`` training sequences (``steps``, else from ``epochs``)."""
        if self.steps is not None:
            return self.steps
        return max(1, math.ceil(self.epochs * sequences / (self.batch_size * self.grad_accumulation)))

    def target(self) -> str | list[str]:
        """``target_modules`` as peft takes it: a regular expression, or a list of name endings."""
        if "," in self.target_modules or self.target_modules.isidentifier():
            return [name.strip() for name in self.target_modules.split(",") if name.strip()]
        return self.target_modules

    def run_settings(self) -> dict[str, Any]:
        """What fixes a run (compared when resuming): every option but where output goes and threads."""
        settings = {key: _plain(value) for key, value in asdict(self).items()}
        for key in ("out", "threads", "checkpoint_every", "keep_checkpoints"):
            settings.pop(key)
        return settings


def _plain(value: Any) -> Any:
    """``value`` as JSON keeps it: paths as strings, tuples as lists."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value
