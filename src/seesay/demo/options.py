"""Options of a demo model build, as plain dataclasses (no torch import).

Their attribute docstrings are the help of ``seesay demo build``'s options; see
:mod:`seesay.demo.train` for what they control.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DemoModelSize:
    """Layer sizes of the demo model (the defaults give about 2.1 M parameters)."""

    vision_depth: int = 3
    """Vision transformer blocks."""
    vision_hidden: int = 128
    """Vision hidden size."""
    vision_heads: int = 2
    """Vision attention heads."""
    text_layers: int = 2
    """Decoder layers of the language model."""
    text_hidden: int = 128
    """Language model hidden size."""
    text_heads: int = 4
    """Query heads (head size 32)."""
    text_kv_heads: int = 2
    """Key/value heads (grouped-query attention)."""


@dataclass(frozen=True)
class TrainConfig:
    """Options of a demo model build."""

    steps: int = 3200
    """Optimiser steps."""
    batch_size: int = 32
    """Question-answer sequences per step."""
    lr: float = 2e-3
    """Peak learning rate of AdamW (cosine decay after a linear warm-up)."""
    warmup_steps: int = 100
    """Steps of linear learning-rate warm-up."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    pictures: int = 6000
    """Distinct training pictures; each is asked six questions (3 types × 2 languages)."""
    seed: int = 0
    """Seeds the picture stream, the weight initialisation and the batch order."""
    threads: int | None = 1
    """torch CPU threads (unset: torch's default). One thread makes the weights the same on every machine
    and keeps a shared CPU usable; more threads are faster only on otherwise idle cores."""
    log_every: int = 100
    """Report the mean loss every this many steps."""
    size: DemoModelSize = field(default_factory=DemoModelSize)
    """Layer sizes of the model."""
