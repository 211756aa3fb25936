"""The training report of a fine-tuning run: ``training_report.json`` and ``training_loss.png``.

Contract: the JSON holds the run's settings, the trainable parameter count and share, the
training loss and learning rate of every step, the evaluation loss of every evaluation (with
its step and epoch), the wall time, training throughput and the process's peak memory. The
PNG plots the training loss per step (raw and smoothed) and the evaluation loss over the
same steps; it needs matplotlib (the ``finetune`` extra), without which only the JSON is written.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from seesay.finetune.options import FinetuneConfig
from seesay.training.loop import History

log = logging.getLogger(__name__)

REPORT_JSON = "training_report.json"
LOSS_PNG = "training_loss.png"


def peak_memory_mb() -> dict[str, float]:
    """Peak resident memory of this process, and peak CUDA memory allocated if a GPU was used."""
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 1024**2  # ru_maxrss: KiB on Linux, bytes on macOS
    peak = {"process_rss": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, 1)}
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        peak["cuda_allocated"] = round(torch.cuda.max_memory_allocated() / 1024**2, 1)
    return peak


@dataclass(frozen=True)
class TrainingReport:
    """What a fine-tuning run did (see the module docstring)."""

    settings: dict[str, Any]
    trainable_parameters: int
    total_parameters: int
    trainable_share: float
    sequences: int
    steps: int
    losses: list[float]
    learning_rates: list[float]
    evaluations: list[dict[str, float]]
    seconds: float
    training_seconds: float
    sequences_per_second: float
    peak_memory_mb: dict[str, float]

    @classmethod
    def of(cls, config: FinetuneConfig, history: History, *, trainable: int, total: int, sequences: int,
           peak_memory_mb: dict[str, float], seconds: float) -> TrainingReport:
        """The report of a finished run."""
        steps = len(history.losses)
        seen = steps * config.batch_size * config.grad_accumulation
        return cls(config.run_settings(), trainable, total, trainable / total, sequences, steps,
                   [round(loss, 6) for loss in history.losses], history.learning_rates, history.evaluations,
                   round(seconds, 2), round(history.seconds, 2),
                   round(seen / history.seconds, 3) if history.seconds else 0.0, peak_memory_mb)

    def write(self, folder: Path) -> list[Path]:
        """Write the JSON (and the PNG when matplotlib is installed) into ``folder``; returns the paths."""
        written = [folder / REPORT_JSON]
        written[0].write_text(json.dumps(asdict(self), indent=2, ensure_ascii=False), encoding="utf-8")
        try:
            written.append(self.plot(folder / LOSS_PNG))
        except ImportError:
            log.warning("matplotlib is not installed (pip install 'seesay[finetune]'): no %s", LOSS_PNG)
        return written

    def plot(self, path: Path) -> Path:
        """The loss curves as a PNG at ``path``."""
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot

        figure, axes = pyplot.subplots(figsize=(8, 4.5), dpi=100)
        steps = list(range(1, len(self.losses) + 1))
        axes.plot(steps, self.losses, color="#9ab", linewidth=0.8, label="training loss")
        axes.plot(steps, _smoothed(self.losses), color="#036", linewidth=1.6, label="training loss (smoothed)")
        if self.evaluations:
            axes.plot([e["step"] for e in self.evaluations], [e["eval_loss"] for e in self.evaluations],
                      "o-", color="#c40", label="evaluation loss")
        axes.set_xlabel("optimiser step")
        axes.set_ylabel("loss per answer token")
        axes.set_title(f"LoRA r={self.settings['rank']} on {self.settings['base']}", fontsize=10)
        axes.grid(alpha=0.3)
        axes.legend()
        figure.tight_layout()
        figure.savefig(path)
        pyplot.close(figure)
        return path


def _smoothed(values: list[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average, as training dashboards draw it."""
    out: list[float] = []
    for value in values:
        out.append(value if not out else weight * out[-1] + (1 - weight) * value)
    return out
