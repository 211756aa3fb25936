"""Running a batch job: every pending input line through :meth:`AnswerService.answer`, N at a time.

The job answers in process, on the same service path as ``seesay serve`` (admission, intake and
pixel budget, safety screens, response cache, scheduler), with ``concurrency`` requests in flight
so the scheduler fills its batches. Each line's output is appended as soon as it is known
(:class:`~seesay.api.batch_files.OutputFile`), in completion order; lines whose ``custom_id`` the
output already holds are skipped, and so is a repeated ``custom_id`` within the input. A failing
line becomes an error line and the job goes on; only a failure to write the output stops it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from seesay.answer_streams import MISS
from seesay.api.batch_files import (
    BatchRequest,
    LineFailure,
    OutputFile,
    PictureFolder,
    answer_line,
    failure_line,
    line_custom_id,
    parse_line,
)
from seesay.cache import parse_cache_control
from seesay.errors import SeesayError
from seesay.service import AnswerService

log = logging.getLogger(__name__)


class Progress(Protocol):
    """What the job reports progress to (a ``tqdm`` bar)."""

    def update(self, n: int = 1) -> Any: ...


@dataclass
class BatchSummary:
    """What a job did: lines answered, errors by code, cache hits by tier, lines skipped."""

    answered: int = 0
    skipped: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    cache_hits: Counter[str] = field(default_factory=Counter)

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def describe(self) -> str:
        """One readable paragraph for stderr."""
        errors = ", ".join(f"{code} {count}" for code, count in sorted(self.errors.items())) or "none"
        hits = ", ".join(f"{tier} {count}" for tier, count in sorted(self.cache_hits.items())) or "none"
        return (f"answered {self.answered}, errors {self.failed} ({errors}), cache hits: {hits}; "
                f"skipped {self.skipped} already in the output")


@dataclass(frozen=True)
class BatchJob:
    """How to answer the lines of one input file.

    Attributes:
        pictures: Where local picture paths resolve.
        concurrency: Requests in flight at once (at most the scheduler's queue).
        model: Answer every line with this model (an adapter's name) instead of the line's.
    """

    pictures: PictureFolder
    concurrency: int
    model: str | None = None


async def run_batch(service: AnswerService, lines: Iterable[tuple[int, str]], output: OutputFile, job: BatchJob,
                    progress: Progress) -> BatchSummary:
    """Answer every line of ``lines`` (number, text) not yet in ``output``; see the module docstring."""
    summary = BatchSummary()
    pending = _pending(lines, output, summary)

    async def worker() -> None:
        for number, text, custom_id in pending:  # one shared iterator: each line goes to one worker
            line = await _answer(service, parse_line(text, number, job.pictures), custom_id, job.model, summary)
            output.append(line)
            progress.update()

    await asyncio.gather(*(worker() for _ in range(job.concurrency)))
    return summary


def count_pending(lines: Iterable[tuple[int, str]], output: OutputFile) -> int:
    """How many of ``lines`` a job on ``output`` would answer (for the progress bar's total)."""
    return sum(1 for _ in _pending(lines, output, BatchSummary()))


def _pending(lines: Iterable[tuple[int, str]], output: OutputFile,
             summary: BatchSummary) -> Iterator[tuple[int, str, str]]:
    """The lines still to answer, with their ``custom_id``; counts the skipped ones."""
    seen = set(output.done)
    for number, text in lines:
        custom_id = line_custom_id(text, number)
        if custom_id in seen:
            summary.skipped += 1
            continue
        seen.add(custom_id)
        yield number, text, custom_id


async def _answer(service: AnswerService, parsed: BatchRequest | LineFailure, custom_id: str,
                  model: str | None, summary: BatchSummary) -> dict[str, Any]:
    """The output line for one parsed input line, noted in ``summary``."""
    if isinstance(parsed, LineFailure):
        summary.errors[parsed.error.code or "error"] += 1
        return failure_line(custom_id, parsed)
    question = parsed.question if model is None else replace(parsed.question, model=model)
    try:
        stream = await service.answer(question, opt_out=parse_cache_control(None, cache_field=parsed.cache_field))
        result = await stream.result()
    except SeesayError as exc:
        summary.errors[exc.code] += 1
        return failure_line(custom_id, LineFailure.of(exc), question.request_id)
    except Exception:  # a bug fails its line, as the API's 500 handler does, and the job goes on
        log.exception("line %s failed unexpectedly", custom_id)
        summary.errors["internal_error"] += 1
        return failure_line(custom_id, LineFailure.of(SeesayError("internal error; it has been logged")),
                            question.request_id)
    summary.answered += 1
    if stream.cache_status != MISS:
        summary.cache_hits[stream.cache_status] += 1
    return answer_line(custom_id, result, question.model or service.adapters.parent)
