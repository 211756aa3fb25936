"""Training checkpoints: written atomically, found again after a crash or Ctrl-C.

Contract: :meth:`CheckpointDir.save` writes everything a run needs to continue (the trained
parameters, optimiser and schedule state, the step, the loss history, the RNG state and the
settings that fix the data order) into a temporary folder and renames it to
``step-NNNNNNN`` only when complete, so a folder under that name is always whole; older
checkpoints beyond ``keep`` are removed after the rename. :meth:`CheckpointDir.latest` is the
newest complete one; leftovers of an interrupted write are ignored (and cleared by the next save).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

_NAME = re.compile(r"^step-(\d{7})$")
PARAMETERS = "trained_parameters.safetensors"
STATE = "training_state.pt"
SETTINGS = "settings.json"


@dataclass(frozen=True)
class Checkpoint:
    """One complete checkpoint folder."""

    path: Path
    step: int

    def parameters(self) -> dict[str, torch.Tensor]:
        """The trained parameters by name."""
        return load_file(self.path / PARAMETERS)

    def state(self) -> dict[str, Any]:
        """Optimiser, schedule, RNG state, step and history, as :meth:`CheckpointDir.save` stored them."""
        state: dict[str, Any] = torch.load(self.path / STATE, weights_only=True)
        return state

    def settings(self) -> dict[str, Any]:
        """The settings the run was started with."""
        settings: dict[str, Any] = json.loads((self.path / SETTINGS).read_text(encoding="utf-8"))
        return settings


class CheckpointDir:
    """The checkpoints of one training run, in one folder (see the module docstring).

    Args:
        root: The folder; created on the first save.
        keep: How many complete checkpoints to keep (the newest).
    """

    def __init__(self, root: Path, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError("keep at least one checkpoint")
        self.root = root
        self.keep = keep

    def complete(self) -> list[Checkpoint]:
        """Every complete checkpoint, oldest first."""
        if not self.root.is_dir():
            return []
        found = [(_NAME.match(path.name), path) for path in self.root.iterdir() if path.is_dir()]
        return sorted((Checkpoint(path, int(match.group(1))) for match, path in found if match),
                      key=lambda checkpoint: checkpoint.step)

    def latest(self) -> Checkpoint | None:
        """The newest complete checkpoint, if any."""
        found = self.complete()
        return found[-1] if found else None

    def save(self, step: int, parameters: Mapping[str, torch.Tensor], state: dict[str, Any],
             settings: dict[str, Any]) -> Checkpoint:
        """Write a checkpoint of ``step`` atomically and drop the oldest beyond ``keep``."""
        self.root.mkdir(parents=True, exist_ok=True)
        for leftover in self.root.glob(".writing-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=".writing-", dir=self.root))
        save_file({name: tensor.detach().cpu().contiguous() for name, tensor in parameters.items()},
                  staging / PARAMETERS)
        torch.save(state, staging / STATE)
        (staging / SETTINGS).write_text(json.dumps(settings, indent=2, sort_keys=True), encoding="utf-8")
        final = self.root / f"step-{step:07d}"
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        for old in self.complete()[:-self.keep]:
            shutil.rmtree(old.path, ignore_errors=True)
        return Checkpoint(final, step)
