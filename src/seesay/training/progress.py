"""Two ways to watch a run: periodic log lines, or a progress bar with loss, speed and time left."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

Report = Callable[[str], None]


class LogLines:
    """Reports the mean loss every ``every`` steps and at the last step, as one line each.

    Args:
        report: Receives each line.
        every: Steps per line.
    """

    def __init__(self, report: Report, every: int) -> None:
        self.report = report
        self.every = every
        self._losses: list[float] = []
        self._total = 0
        self._started = time.perf_counter()

    def started(self, step: int, total: int) -> None:
        self._total = total
        self._started = time.perf_counter()

    def stepped(self, step: int, loss: float, lr: float, samples_per_second: float) -> None:
        self._losses.append(loss)
        if step % self.every == 0 or step == self._total:
            self.report(f"step {step}/{self._total} loss {sum(self._losses) / len(self._losses):.4f} "
                        f"lr {lr:.2e} {samples_per_second:.1f} samples/s "
                        f"({time.perf_counter() - self._started:.0f} s)")
            self._losses.clear()

    def note(self, message: str) -> None:
        self.report(message)

    def finished(self) -> None:
        """Nothing to close."""


class ProgressBar:
    """A tqdm bar over the optimiser steps: loss (smoothed), samples/s, elapsed and time left.

    Args:
        description: The bar's label.
        **tqdm_options: Passed to ``tqdm`` (``file``, ``disable``, ``mininterval`` …).
    """

    def __init__(self, description: str = "training", **tqdm_options: Any) -> None:
        self.description = description
        self.options = tqdm_options
        self._bar: Any = None
        self._smoothed: float | None = None

    def started(self, step: int, total: int) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, initial=step, desc=self.description, unit="step", **self.options)

    def stepped(self, step: int, loss: float, lr: float, samples_per_second: float) -> None:
        self._smoothed = loss if self._smoothed is None else 0.9 * self._smoothed + 0.1 * loss
        self._bar.set_postfix(loss=f"{self._smoothed:.4f}", lr=f"{lr:.1e}",
                              samples_s=f"{samples_per_second:.1f}", refresh=False)
        self._bar.update(1)

    def note(self, message: str) -> None:
        if self._bar is not None:
            self._bar.write(message)

    def finished(self) -> None:
        if self._bar is not None:
            self._bar.close()
