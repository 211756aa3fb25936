"""``seesay batch`` and ``seesay batch prepare``: offline jobs in the OpenAI Batch API file format.

``seesay batch INPUT.jsonl --output OUTPUT.jsonl`` answers every line in process through the
same :class:`~seesay.service.AnswerService` as ``seesay serve`` (see :mod:`seesay.api.batch_run`
and :mod:`seesay.api.batch_files`). Exit status: 0 when the job ran through, error lines
included; 1 with ``--fail-on-error`` when any line failed, or when the job could not run (the
model or the screens did not load); 2 for a usage error. A progress bar goes to stderr, then a
summary line.

``seesay batch prepare`` writes an input file for every picture of a folder times every question
of a file (:mod:`seesay.api.batch_prepare`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from seesay.config import Settings


def add_batch_commands(commands: Any) -> None:
    """Register ``batch`` and ``batch-prepare`` (``seesay batch prepare`` is spelled to the latter)."""
    batch = commands.add_parser(
        "batch", help="answer a JSONL file of chat requests (OpenAI Batch API format) in process",
        description="Answer every line of INPUT (OpenAI Batch API format: custom_id, method, url, body) through "
        "the same service as `seesay serve`, appending one output line per request to --output. Rerun with the "
        "same output to resume. `seesay batch prepare --help` writes an input file from a folder of pictures.")
    batch.add_argument("input", type=Path, help="the input JSONL file")
    batch.add_argument("--output", "-o", type=Path, required=True, help="the output JSONL file (appended to)")
    batch.add_argument("--model", help="hub id or local folder to load (default: $SEESAY_MODEL, else the demo model)")
    batch.add_argument("--adapter", metavar="PATH_OR_NAME", help="answer every line with this LoRA adapter")
    batch.add_argument("--config", metavar="FILE", help="TOML or YAML settings file (default: $SEESAY_CONFIG)")
    batch.add_argument("--warm-cache", action="store_true", help="store every answer in the shared Redis cache "
                       "too, keyed as a live request, so `seesay serve` on that Redis answers from it")
    batch.add_argument("--redis-url", help="the shared cache for --warm-cache (default: $SEESAY_REDIS_URL)")
    batch.add_argument("--concurrency", type=int, help="requests in flight (default: twice max_batch_size; "
                       "at most max_queue)")
    batch.add_argument("--fail-on-error", action="store_true", help="exit 1 when any line got an error")
    batch.add_argument("--allow-absolute-paths", action="store_true",
                       help="read pictures named by absolute paths (relative ones resolve in INPUT's folder)")
    batch.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    batch.set_defaults(func=run_batch_command, batch_parser=batch)
    from seesay.api.batch_prepare import add_prepare_command

    add_prepare_command(commands)


def batch_settings(args: argparse.Namespace) -> Settings:
    """The job's settings: the server's, with Redis only when the cache is to be warmed.

    Raises:
        ValueError: ``--warm-cache`` without a Redis URL or with the cache off; a concurrency
            outside 1..max_queue.
    """
    from seesay.cache import CacheMode
    from seesay.config import load_settings

    settings = load_settings(args.config, model=args.model, redis_url=args.redis_url)
    if not args.warm_cache:
        settings = settings.model_copy(update={"redis_url": None})  # a job never fills Redis unasked
    elif settings.redis_url is None or settings.cache_policy is CacheMode.OFF:
        raise ValueError("--warm-cache needs --redis-url (or $SEESAY_REDIS_URL) and a cache_policy other than off")
    concurrency = args.concurrency or min(2 * settings.max_batch_size, settings.max_queue)
    if not 1 <= concurrency <= settings.max_queue:
        raise ValueError(f"--concurrency must be 1..{settings.max_queue} (max_queue), got {concurrency}")
    args.concurrency = concurrency
    return settings


def run_batch_command(args: argparse.Namespace) -> int:
    """Run the job; see the module docstring for the exit status."""
    from contextlib import closing

    from seesay.cli import engine_from_args, with_adapter
    from seesay.safety import SafetyGate

    try:
        settings = batch_settings(args)
    except ValueError as exc:
        args.batch_parser.error(str(exc))  # exits 2
    if not args.input.is_file():
        args.batch_parser.error(f"{args.input}: no such input file")
    settings, adapter = with_adapter(settings, args.adapter)
    with closing(SafetyGate.from_config(settings.safety_config())) as gate:  # before the model: fails closed
        engine = engine_from_args(args, settings)
        summary = asyncio.run(_job(engine, settings, gate, args, adapter))
    print(f"seesay batch: {summary.describe()}", file=sys.stderr)
    return 1 if args.fail_on_error and summary.failed else 0


async def _job(engine: Any, settings: Settings, gate: Any, args: argparse.Namespace, adapter: str | None) -> Any:
    from tqdm import tqdm

    from seesay.api.batch_files import OutputFile, PictureFolder, input_lines
    from seesay.api.batch_run import BatchJob, count_pending, run_batch
    from seesay.service import running_service

    output = OutputFile(args.output)
    job = BatchJob(PictureFolder(args.input.resolve().parent, args.allow_absolute_paths), args.concurrency, adapter)
    total = count_pending(input_lines(args.input), output)
    try:
        async with running_service(engine, settings, gate) as service:
            with tqdm(total=total, unit="req", file=sys.stderr, disable=args.no_progress,
                      dynamic_ncols=True) as bar:
                return await run_batch(service, input_lines(args.input), output, job, bar)
    finally:
        output.close()
