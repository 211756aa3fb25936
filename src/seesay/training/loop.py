"""The training loop shared by ``seesay demo build`` and ``seesay finetune``.

Contract: :func:`train` runs ``settings.steps`` optimiser steps of AdamW over the parameters
that require gradients, each over ``grad_accumulation`` micro-batches of ``batch_size``
sequences (the loss of each micro-batch scaled by ``1 / grad_accumulation``), clipping the
gradient norm and following a transformers learning-rate schedule with linear warm-up. The
data order is a fixed function of the seed: endless epochs, each a fresh permutation, so a
resumed run reads exactly the sequences the uninterrupted run would have read. With a
:class:`~seesay.training.checkpoints.CheckpointDir` it checkpoints every ``checkpoint_every``
steps, at the end, and on Ctrl-C (then raises :class:`TrainingInterrupted`); ``resume=True``
continues from the newest complete checkpoint, which must have been written with the same
settings, and gives the same weights as a run that was never interrupted. The same settings,
seed and thread count give byte-identical weights.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
from transformers import get_scheduler

from seesay.training.batches import TrainingSet, collate
from seesay.training.checkpoints import Checkpoint, CheckpointDir

SCHEDULES = ("cosine", "linear", "constant_with_warmup", "cosine_with_restarts", "polynomial")


@dataclass(frozen=True)
class LoopSettings:
    """What fixes the optimisation and the data order of a run (a resumed run must match)."""

    steps: int
    """Optimiser steps."""
    batch_size: int
    """Sequences per micro-batch."""
    lr: float
    """Peak learning rate of AdamW."""
    warmup_steps: int = 0
    """Steps of linear warm-up to the peak learning rate."""
    schedule: str = "cosine"
    """Learning-rate decay after warm-up (a transformers scheduler name)."""
    grad_accumulation: int = 1
    """Micro-batches per optimiser step."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient norm clipping."""
    seed: int = 0
    """Seeds the data order (and dropout, through torch's RNG)."""

    def __post_init__(self) -> None:
        if min(self.steps, self.batch_size, self.grad_accumulation) < 1:
            raise ValueError("steps, batch size and gradient accumulation must each be at least 1")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule '{self.schedule}'; choose one of {', '.join(SCHEDULES)}")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"warm-up steps must be between 0 and the {self.steps} training steps")

    @property
    def sequences_per_step(self) -> int:
        """Sequences behind one optimiser step."""
        return self.batch_size * self.grad_accumulation


@dataclass
class History:
    """What a run did, step by step (kept in checkpoints, written into training reports).

    Attributes:
        losses: Mean training loss of each optimiser step.
        learning_rates: The learning rate each step used.
        evaluations: ``{"step", "epoch", "eval_loss"}`` of each evaluation.
        seconds: Training time, resumed runs included (evaluation and checkpoints too).
    """

    losses: list[float] = field(default_factory=list)
    learning_rates: list[float] = field(default_factory=list)
    evaluations: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


class Progress(Protocol):
    """Receives a run's progress (a log, a progress bar)."""

    def started(self, step: int, total: int) -> None:
        """The run starts at ``step`` (0, or where a checkpoint left off) of ``total``."""

    def stepped(self, step: int, loss: float, lr: float, samples_per_second: float) -> None:
        """Optimiser step ``step`` is done."""

    def note(self, message: str) -> None:
        """Something worth telling: an evaluation, a checkpoint."""

    def finished(self) -> None:
        """The run ended (completed or not)."""


class TrainingInterrupted(Exception):
    """Ctrl-C stopped the run; ``checkpoint`` is where it was saved (``None``: no checkpoint folder)."""

    def __init__(self, step: int, checkpoint: Checkpoint | None) -> None:
        where = f", saved in {checkpoint.path}; continue with --resume" if checkpoint else ""
        super().__init__(f"training interrupted at step {step}{where}")
        self.step = step
        self.checkpoint = checkpoint


Evaluation = Callable[[], float]


@dataclass(frozen=True)
class Checkpointing:
    """Where and how often a run checkpoints.

    Attributes:
        folder: The run's checkpoint folder.
        every: Steps between checkpoints (``None``: only at the end and on Ctrl-C).
        settings: Everything that fixes the run (stored, and compared on resume).
    """

    folder: CheckpointDir
    every: int | None
    settings: Mapping[str, Any]


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Use ``threads`` CPU threads inside the block (``None``: leave as is), then restore."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def on_model(batch: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``batch`` on the model's device, floating-point inputs in its dtype (a no-op for fp32 on CPU)."""
    first = next(model.parameters())
    return {name: tensor.to(first.device, first.dtype) if tensor.is_floating_point() else tensor.to(first.device)
            for name, tensor in batch.items()}


def data_order(n: int, seed: int) -> Iterator[int]:
    """Endless epochs over ``n`` sequence indices, each a fresh permutation drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    epochs = (torch.randperm(n, generator=generator).tolist() for _ in itertools.count())
    return itertools.chain.from_iterable(epochs)


class _Run:
    """The state of one run: model, optimiser, schedule, data order and history."""

    def __init__(self, model: torch.nn.Module, data: TrainingSet, settings: LoopSettings, pad_id: int) -> None:
        self.model = model
        self.data = data
        self.settings = settings
        self.pad_id = pad_id
        self.trained = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        if not self.trained:
            raise ValueError("the model has no parameters to train")
        self.optimiser = torch.optim.AdamW([p for _, p in self.trained], lr=settings.lr,
                                           weight_decay=settings.weight_decay)
        self.schedule = get_scheduler(settings.schedule, self.optimiser, num_warmup_steps=settings.warmup_steps,
                                      num_training_steps=settings.steps)
        self.order = data_order(len(data.sequences), settings.seed)
        self.history = History()
        self.step = 0

    def one_step(self) -> float:
        """One optimiser step over ``grad_accumulation`` micro-batches; returns its mean loss."""
        settings = self.settings
        total = 0.0
        for _ in range(settings.grad_accumulation):
            indices = list(itertools.islice(self.order, settings.batch_size))
            batch = on_model(collate(self.data, indices, self.pad_id), self.model)
            loss = self.model(**batch).loss / settings.grad_accumulation
            loss.backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_([p for _, p in self.trained], settings.max_grad_norm)
        self.history.learning_rates.append(self.schedule.get_last_lr()[0])
        self.optimiser.step()
        self.schedule.step()
        self.optimiser.zero_grad(set_to_none=True)
        self.step += 1
        self.history.losses.append(total)
        return total

    def state(self) -> dict[str, Any]:
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
        return {"step": self.step, "optimiser": self.optimiser.state_dict(),
                "schedule": self.schedule.state_dict(), "rng": torch.get_rng_state(), "cuda_rng": cuda_rng,
                "history": asdict(self.history)}

    def save(self, checkpointing: Checkpointing) -> Checkpoint:
        parameters = {name: p for name, p in self.trained}
        return checkpointing.folder.save(self.step, parameters, self.state(), dict(checkpointing.settings))

    def restore(self, checkpoint: Checkpoint, settings: Mapping[str, Any]) -> None:
        """Continue from ``checkpoint``, which must come from a run with the same ``settings``."""
        stored = checkpoint.settings()
        changed = sorted(key for key in set(stored) | set(settings) if stored.get(key) != settings.get(key))
        if changed:
            raise ValueError(f"{checkpoint.path} was written by a run with other settings ({', '.join(changed)}); "
                             "resume with the same options, or train into a new output folder")
        parameters = checkpoint.parameters()
        with torch.no_grad():
            for name, p in self.trained:
                p.copy_(parameters[name])
        state = checkpoint.state()
        self.optimiser.load_state_dict(state["optimiser"])
        self.schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["rng"])
        if state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.history = History(**state["history"])
        self.step = int(state["step"])
        consumed = self.step * self.settings.sequences_per_step
        next(itertools.islice(self.order, consumed, consumed), None)  # skip what was already read


def train(model: torch.nn.Module, data: TrainingSet, settings: LoopSettings, *, pad_id: int,
          progress: Progress, checkpointing: Checkpointing | None = None, evaluate: Evaluation | None = None,
          eval_every: int | None = None, resume: bool = False) -> History:
    """Train ``model`` on ``data`` (see the module docstring); leaves it in eval mode.

    Args:
        model: The model; only parameters that require gradients are trained.
        data: Sequences and pictures.
        settings: Optimisation and data order.
        pad_id: The tokenizer's padding id.
        progress: Receives steps, evaluations and checkpoints.
        checkpointing: Where to checkpoint (``None``: never, and Ctrl-C just stops).
        evaluate: Gives the evaluation loss; called every ``eval_every`` steps and at the end.
        eval_every: Steps between evaluations (``None``: only at the end).
        resume: Continue from the newest complete checkpoint, if there is one.

    Raises:
        TrainingInterrupted: On Ctrl-C, after saving a checkpoint.
        ValueError: ``resume`` with a checkpoint of other settings.
    """
    run = _Run(model, data, settings, pad_id)
    latest = checkpointing.folder.latest() if checkpointing and resume else None
    if checkpointing and latest:
        run.restore(latest, checkpointing.settings)
        progress.note(f"resumed from {latest.path} (step {latest.step})")
    progress.started(run.step, settings.steps)
    model.train()
    started, elapsed_before = time.perf_counter(), run.history.seconds
    try:
        _steps(run, progress, checkpointing, evaluate, eval_every, started)
    except KeyboardInterrupt:
        run.history.seconds = elapsed_before + time.perf_counter() - started
        saved = run.save(checkpointing) if checkpointing and run.step else None
        raise TrainingInterrupted(run.step, saved) from None
    finally:
        model.eval()
        progress.finished()
    run.history.seconds = elapsed_before + time.perf_counter() - started
    if checkpointing:
        run.save(checkpointing)
    return run.history


def _steps(run: _Run, progress: Progress, checkpointing: Checkpointing | None, evaluate: Evaluation | None,
           eval_every: int | None, started: float) -> None:
    settings, first = run.settings, run.step
    while run.step < settings.steps:
        loss = run.one_step()
        rate = (run.step - first) * settings.sequences_per_step / max(time.perf_counter() - started, 1e-9)
        progress.stepped(run.step, loss, run.history.learning_rates[-1], rate)
        if evaluate and (run.step == settings.steps or _due(run.step, eval_every)):
            _evaluate(run, evaluate, progress)
        if checkpointing and run.step < settings.steps and _due(run.step, checkpointing.every):
            progress.note(f"checkpoint {run.save(checkpointing).path}")


def _due(step: int, every: int | None) -> bool:
    """Whether something done every ``every`` steps (``None``: never) is due after ``step``."""
    return every is not None and every > 0 and step % every == 0


def _evaluate(run: _Run, evaluate: Evaluation, progress: Progress) -> None:
    run.model.eval()
    with torch.no_grad():
        eval_loss = evaluate()
    run.model.train()
    epoch = run.step * run.settings.sequences_per_step / len(run.data.sequences)
    run.history.evaluations.append({"step": run.step, "epoch": round(epoch, 3), "eval_loss": eval_loss})
    progress.note(f"step {run.step}: eval loss {eval_loss:.4f} (epoch {epoch:.2f})")


def evaluation_loss(model: torch.nn.Module, data: TrainingSet, batch_size: int, pad_id: int) -> float:
    """The mean loss per labelled token of ``model`` over every sequence of ``data``."""
    total, tokens = 0.0, 0
    for start in range(0, len(data.sequences), batch_size):
        indices = list(range(start, min(start + batch_size, len(data.sequences))))
        labelled = sum(data.sequences[i].trained_tokens for i in indices)
        total += float(model(**on_model(collate(data, indices, pad_id), model)).loss) * labelled
        tokens += labelled
    return total / max(tokens, 1)
