"""The ``seesay`` command line.

``ask`` prints the answer alone on stdout and everything else on stderr, so it composes in
shell pipelines; errors print one readable line on stderr and exit non-zero. It answers
through the same :class:`~seesay.service.AnswerService` as ``seesay serve`` (safety screens,
response cache, scheduler), configured by the same settings, so both behave alike: a picture
or question blocked by the content policy exits 1 with the server's 400 message, or, with
``safety_on_block = "refuse"``, prints the refusal and exits 0; a blocked answer is replaced by
the refusal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from seesay import __version__
from seesay.errors import SeesayError

if TYPE_CHECKING:
    from seesay.types import ImageInput

log = logging.getLogger("seesay")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``seesay`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(_spelled_out(sys.argv[1:] if argv is None else list(argv)))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    _quiet_libraries(args.verbose)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except (SeesayError, ValueError, FileNotFoundError) as exc:
        print(f"seesay: error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _spelled_out(argv: list[str]) -> list[str]:
    """``seesay batch prepare ...`` is the command ``batch-prepare`` (``batch`` itself takes a file)."""
    for index in range(len(argv) - 1):
        if argv[index] == "batch" and argv[index + 1] == "prepare":
            return [*argv[:index], "batch-prepare", *argv[index + 2:]]
        if not argv[index].startswith("-"):
            break
    return argv


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seesay",
        description="seesay: visual question answering with Qwen3-VL models. Ask about a picture "
        "(`seesay ask photo.jpg \"What colour is this?\"`), serve an OpenAI-compatible API "
        "(`seesay serve`), or build and evaluate the built-in demo model (`seesay demo`).",
    )
    parser.add_argument("--version", action="version", version=f"seesay {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log diagnostics to stderr")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_ask(commands)
    _add_info(commands)
    _add_optional_commands(commands)
    return parser


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", help="hub id or local folder (default: $SEESAY_MODEL, else the built-in "
                       "demo model)")
    group.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    group.add_argument("--dtype", help="auto, bfloat16, float16 or float32 (default: auto)")
    group.add_argument("--max-pixels", type=int, help="pixel budget per image (default: the model's)")
    group.add_argument("--min-pixels", type=int, help="smaller images are upsampled to this many pixels")


def _add_ask(commands: Any) -> None:
    ask = commands.add_parser("ask", help="answer a question about a picture",
                              description="Answer a question about a picture; the answer alone goes to stdout.")
    ask.add_argument("image", help="image file, '-' for standard input, or example:NAME for a bundled "
                     "picture (example:red-tshirt)")
    ask.add_argument("question", type=_text, help="the question, e.g. 'What colour is this item?'")
    _add_model_options(ask)
    ask.add_argument("--adapter", metavar="PATH_OR_NAME", help="answer with a LoRA adapter: a name from "
                     "lora_modules ($SEESAY_LORA_MODULES), or an adapter folder or hub id")
    gen = ask.add_argument_group("generation")
    gen.add_argument("--max-new-tokens", type=int, help="upper bound on answer tokens")
    gen.add_argument("--temperature", type=float, help="0 for greedy decoding (default: the model card's 0.7)")
    gen.add_argument("--top-p", type=float)
    gen.add_argument("--top-k", type=int)
    gen.add_argument("--presence-penalty", type=float, help="OpenAI semantics (default: 1.5)")
    gen.add_argument("--seed", type=int, help="make sampling reproducible")
    gen.add_argument("--stop", type=_text, action="append", default=[], help="stop string (repeatable)")
    out = ask.add_argument_group("output")
    out.add_argument("--stream", action="store_true", help="print the answer as it is generated")
    out.add_argument("--json", action="store_true", help="print a JSON object with text, usage and timings")
    ask.set_defaults(func=run_ask)


def _text(value: str) -> str:
    """A text argument; bytes the terminal's encoding cannot decode are refused, not passed on."""
    from seesay.types import valid_text

    try:
        return valid_text(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (check the terminal's character encoding)") from None


def _add_info(commands: Any) -> None:
    info = commands.add_parser("info", help="show device, dtype, attention, model and pixel budget")
    _add_model_options(info)
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=run_info)


def _add_optional_commands(commands: Any) -> None:
    from seesay.cache.commands import add_cache_commands
    from seesay.demo.commands import add_demo_commands
    from seesay.finetune.commands import add_finetune_commands

    add_demo_commands(commands)
    add_finetune_commands(commands)
    add_cache_commands(commands)
    try:
        from seesay.api.batch_commands import add_batch_commands
        from seesay.api.commands import add_serve_command
    except ImportError as exc:  # the serve extra is not installed
        for name, purpose in (("serve", "run the HTTP API"), ("batch", "answer a JSONL file of requests")):
            command = commands.add_parser(name, help=f"{purpose} (needs: pip install 'seesay[serve]')")
            command.set_defaults(func=lambda _args, reason=str(exc): _missing_serve(reason))
    else:
        add_serve_command(commands)
        add_batch_commands(commands)


def _missing_serve(reason: str) -> int:
    print(f"seesay: error: this command needs pip install 'seesay[serve]' ({reason})", file=sys.stderr)
    return 1


def settings_from_args(args: argparse.Namespace) -> Any:
    """The settings from the environment and config file, overridden by command-line flags."""
    from seesay.config import load_settings

    flags = {name: getattr(args, name, None) for name in ("model", "device", "dtype", "max_pixels", "min_pixels")}
    return load_settings(getattr(args, "config", None), **flags)


def engine_from_args(args: argparse.Namespace, settings: Any = None) -> Any:
    """Load the engine configured by environment/config file, overridden by command-line flags."""
    from seesay.engine.registry import create_engine

    settings = settings or settings_from_args(args)
    return create_engine(settings.engine, settings.engine_config())


def run_ask(args: argparse.Namespace) -> int:
    from contextlib import closing

    from seesay.safety import SafetyGate
    from seesay.types import Question, SamplingParams, Turn

    settings, adapter = with_adapter(settings_from_args(args), args.adapter)
    with closing(SafetyGate.from_config(settings.safety_config())) as gate:  # before the model: fails closed
        engine = engine_from_args(args, settings)
        sampling = SamplingParams(
            max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
            presence_penalty=args.presence_penalty, seed=args.seed, stop=tuple(args.stop),
        )
        question = Question((Turn("user", (_image_input(args.image), args.question)),), sampling, model=adapter)
        printing = args.stream and not args.json
        result = asyncio.run(answer(engine, settings, gate, question, print_deltas=printing))
    if not printing:
        print(json.dumps(_result_json(result, engine), ensure_ascii=False) if args.json else result.text)
    log.info("usage %s", result.usage)
    return 0


def with_adapter(settings: Any, adapter: str | None) -> tuple[Any, str | None]:
    """Settings that load just the adapter ``--adapter`` names (``ask``, ``batch``), and the model name to ask.

    A name from ``lora_modules`` selects that adapter; anything else is an adapter folder or hub id,
    served under its path as name.
    """
    if adapter is None:
        return settings.model_copy(update={"lora_modules": ()}), None
    from seesay.engine.adapters import AdapterSource

    configured = {source.name: source for source in settings.lora_modules}
    source = configured.get(adapter) or AdapterSource(name=adapter, path=adapter)
    return settings.model_copy(update={"lora_modules": (source,)}), source.name


async def answer(engine: Any, settings: Any, gate: Any, question: Any, *, print_deltas: bool = False) -> Any:
    """Answer one question through the service, printing its text deltas as they arrive if asked."""
    from seesay.answer_streams import final_result
    from seesay.service import running_service

    async with running_service(engine, settings, gate) as service:
        stream = await service.answer(question, stream=print_deltas)
        if not print_deltas:
            return await stream.result()
        return await final_result(_print_deltas(stream.events()))


async def _print_deltas(events: Any) -> Any:
    """Print each text delta as it arrives and pass every event on."""
    async for event in events:
        if isinstance(event, str):
            print(event, end="", flush=True)
        else:
            print(flush=True)
        yield event


def run_info(args: argparse.Namespace) -> int:
    info = engine_from_args(args).info()
    fields = asdict(info)
    if args.json:
        print(json.dumps(fields))
        return 0
    budget = info.pixel_budget
    rows = {**fields, "pixel_budget": f"{budget.min_pixels}..{budget.max_pixels} px "
            f"({budget.factor}x{budget.factor} px per visual token)"}
    for name, value in rows.items():
        print(f"{name:14} {value}")
    return 0


def _image_input(value: str) -> ImageInput:
    """The picture ``seesay ask`` was given: a file, ``-`` for standard input, or ``example:NAME``."""
    from pathlib import Path

    from seesay.types import ImageInput

    if value == "-":
        return ImageInput(sys.stdin.buffer.read())
    if value.startswith("example:"):
        from seesay.demo.examples import example_path

        return ImageInput(example_path(value.removeprefix("example:")))
    return ImageInput(Path(value))


def _result_json(result: Any, engine: Any) -> dict[str, Any]:
    usage = result.usage
    return {
        "model": engine.info().model,
        "text": result.text,
        "finish_reason": result.finish_reason,
        "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                  "total_tokens": usage.total_tokens, "image_tokens": usage.image_tokens},
        "timings": asdict(result.timings),
    }


def _quiet_libraries(verbose: bool) -> None:
    """Keep library chatter (progress bars, advice) off stderr unless --verbose."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


if __name__ == "__main__":
    sys.exit(main())
