"""``seesay finetune``: a LoRA adapter trained on a dataset, with its training report.

Contract: :func:`finetune` checks and encodes the whole dataset (and the evaluation set)
before the model is loaded, so a bad record fails in seconds; wraps the base model with a
PEFT LoRA of the configured rank, alpha, dropout and target modules (everything else
frozen); trains it with the shared loop (:mod:`seesay.training.loop`), evaluating the loss on
the evaluation set every epoch (or ``eval_every`` steps) and checkpointing into
``OUT/checkpoints``; and writes a standard PEFT adapter folder (``adapter_config.json``,
``adapter_model.safetensors``: ``PeftModel.from_pretrained`` loads it) plus
``training_report.json`` and ``training_loss.png`` (:mod:`seesay.finetune.report`).
"""

from __future__ import annotations

import functools
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from seesay.engine.device import plan_device
from seesay.engine.processor import load_processor, processor_pixel_budget
from seesay.engine.transformers import load_model
from seesay.finetune.datasets import load_dataset, load_datasets
from seesay.finetune.encoding import ConversationEncoder
from seesay.finetune.options import FinetuneConfig
from seesay.finetune.report import TrainingReport, peak_memory_mb
from seesay.training.batches import TrainingSet
from seesay.training.checkpoints import CheckpointDir
from seesay.training.loop import (
    Checkpointing,
    History,
    LoopSettings,
    Progress,
    evaluation_loss,
    torch_threads,
    train,
)
from seesay.training.progress import ProgressBar, Report

CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class FinetuneResult:
    """What :func:`finetune` wrote: the adapter folder and its training report."""

    adapter: Path
    report: TrainingReport


def _stderr(message: str) -> None:
    print(f"[seesay finetune] {message}", file=sys.stderr, flush=True)


def finetune(config: FinetuneConfig, *, resume: bool = False, progress: Progress | None = None,
             report: Report = _stderr) -> FinetuneResult:
    """Train a LoRA adapter (see the module docstring).

    Args:
        config: What to train, on what, and how.
        resume: Continue from the newest complete checkpoint in ``config.out``.
        progress: Receives the steps (default: a progress bar on stderr).
        report: Receives one-line notes (data, parameters, where things were written).

    Raises:
        DatasetError: A record of either dataset cannot be used (each one is named).
        TrainingInterrupted: Ctrl-C, after a checkpoint was saved.
    """
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]), torch_threads(config.threads):
        torch.manual_seed(config.seed)
        processor: Any = load_processor(config.base)
        encoder = ConversationEncoder(processor, processor_pixel_budget(processor, config.min_pixels,
                                                                        config.max_pixels), config.max_length)
        data = encoder.encode_all(load_datasets(config.data, config.dataset), config.data[0])
        held_out = (encoder.encode_all(load_dataset(config.eval_data, config.eval_dataset), config.eval_data)
                    if config.eval_data else None)
        report(f"{len(data.sequences)} training sequences, {len(data.pictures)} pictures"
               + (f"; {len(held_out.sequences)} evaluation sequences" if held_out else ""))
        model = get_peft_model(load_model(config.base, plan_device(), False, {}), lora_config(config))
        trainable, total = model.get_nb_trainable_parameters()
        report(f"LoRA r={config.rank} alpha={config.alpha} on {config.target_modules}: "
               f"{trainable:,} of {total:,} parameters trained ({100 * trainable / total:.3f} %)")
        history = _train(model, data, held_out, config, resume, progress or ProgressBar("finetune"),
                         _pad_id(processor.tokenizer))
    config.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(config.out))
    result = TrainingReport.of(config, history, trainable=trainable, total=total, sequences=len(data.sequences),
                               peak_memory_mb=peak_memory_mb(), seconds=time.perf_counter() - started)
    result.write(config.out)
    report(f"adapter and training report written to {config.out}")
    return FinetuneResult(config.out, result)


def lora_config(config: FinetuneConfig) -> LoraConfig:
    """The PEFT LoRA configuration of ``config`` (a causal-LM task: the adapter serves generation)."""
    return LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=config.target(), task_type="CAUSAL_LM")


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pad)


def _train(model: PeftModel, data: TrainingSet, held_out: TrainingSet | None, config: FinetuneConfig,
           resume: bool, progress: Progress, pad_id: int) -> History:
    steps = config.total_steps(len(data.sequences))
    settings = LoopSettings(steps=steps, batch_size=config.batch_size, lr=config.lr,
                            warmup_steps=round(config.warmup_ratio * steps), schedule=config.schedule,
                            grad_accumulation=config.grad_accumulation, weight_decay=config.weight_decay,
                            max_grad_norm=config.max_grad_norm, seed=config.seed)
    steps_per_epoch = max(1, round(len(data.sequences) / settings.sequences_per_step))
    evaluate = (functools.partial(evaluation_loss, model, held_out, config.batch_size, pad_id)
                if held_out else None)
    checkpointing = Checkpointing(CheckpointDir(config.out / CHECKPOINTS, config.keep_checkpoints),
                                  config.checkpoint_every, config.run_settings())
    return train(model, data, settings, pad_id=pad_id, progress=progress, checkpointing=checkpointing,
                 evaluate=evaluate, eval_every=config.eval_every or steps_per_epoch, resume=resume)
