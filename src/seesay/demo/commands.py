"""``seesay demo …``: draw catalogue pictures, build the demo model, evaluate a model.

Contract: :func:`add_demo_commands` registers ``demo`` and its subcommands on the CLI's
subparsers; each subcommand's ``func`` takes the parsed namespace and returns an exit code.
Nothing heavy (torch, transformers) is imported until a subcommand runs, so building the
parser stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from seesay.demo.catalogue import ALL_QUESTION_TYPES, QUESTION_TYPES
from seesay.demo.options import TrainConfig
from seesay.option_docs import field_docs

# TrainConfig fields that `seesay demo build` exposes as options.
BUILD_OPTIONS = ("steps", "seed", "pictures", "batch_size", "lr", "threads")
BUILD_TIME_NOTE = (
    "Trains the built-in demo model from scratch (a tokenizer and a 2.1 M-parameter Qwen3-VL) and saves "
    "it. The default build takes about 16 minutes on 2 shared CPU cores with one thread: 70 s drawing and "
    "preprocessing 6,000 pictures, then 3,200 steps at about 0.27 s each. The same options give "
    "identical weights."
)


def add_demo_commands(subparsers: Any) -> None:
    """Register ``seesay demo images|build|eval|examples`` on the CLI's ``subparsers``."""
    demo = subparsers.add_parser("demo", help="build and evaluate the built-in demo model",
                                 description="The built-in demo model and its drawn product catalogue.")
    demo.set_defaults(func=lambda _args: _usage(demo))
    commands = demo.add_subparsers(title="demo commands", metavar="COMMAND")

    images = commands.add_parser("images", help="write catalogue pictures and their answers",
                                 description="Write N catalogue pictures (PNG) and answers.jsonl with each "
                                 "picture's question, canonical answer, question type and language, or, with "
                                 "--format swift, dataset.jsonl in ms-swift's format for seesay finetune/eval.")
    images.add_argument("--n", type=int, default=48, help="number of samples (default: 48)")
    images.add_argument("--seed", type=int, default=12345, help="sample stream (default: 12345; "
                        "training uses 0)")
    images.add_argument("--out", required=True, help="folder to write into")
    images.add_argument("--format", choices=("answers", "swift"), default="answers",
                        help="answers.jsonl, or an ms-swift dataset.jsonl (default: answers)")
    images.add_argument("--question-types", type=_question_types, default=None,
                        help="comma-separated, from " + ", ".join(ALL_QUESTION_TYPES) + " (default: "
                        + ",".join(QUESTION_TYPES) + "; material is one the demo model was never taught)")
    images.set_defaults(func=run_images)

    build = commands.add_parser("build", help="train the demo model from scratch",
                                description=BUILD_TIME_NOTE)
    build.add_argument("--out", help="folder to save into (default: the package's seesay/demo/model)")
    docs = field_docs(TrainConfig)
    for name in BUILD_OPTIONS:
        build.add_argument(f"--{name.replace('_', '-')}", type=int if name != "lr" else float,
                           help=f"{docs[name]} (default: {getattr(_default_config(), name)})")
    build.set_defaults(func=run_build)

    evaluate = commands.add_parser("eval", help="exact-match accuracy on fresh catalogue samples",
                                   description="Ask N fresh samples through the engine with greedy decoding "
                                   "and report exact-match accuracy by question type and language.")
    evaluate.add_argument("--n", type=int, default=500, help="number of samples (default: 500)")
    evaluate.add_argument("--seed", type=int, default=12345, help="sample stream; not 0, which training "
                          "uses (default: 12345)")
    evaluate.add_argument("--model", help="model folder or hub id (default: the built-in demo model)")
    evaluate.add_argument("--batch-size", type=int, default=16,
                          help="questions per generate call (default: 16)")
    evaluate.add_argument("--json", action="store_true", help="print the report as JSON")
    evaluate.set_defaults(func=run_eval)

    examples = commands.add_parser("examples", help="redraw the bundled example pictures",
                                   description="Draw the example pictures used by `seesay ask example:NAME`.")
    examples.add_argument("--out", help="folder to write into (default: the bundled folder)")
    examples.set_defaults(func=run_examples)


def _question_types(value: str) -> tuple[str, ...]:
    chosen = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = sorted(set(chosen) - set(ALL_QUESTION_TYPES))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown question type(s) {', '.join(unknown) or '(none given)'}; "
                                         f"choose from {', '.join(ALL_QUESTION_TYPES)}")
    return chosen


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _default_config() -> TrainConfig:
    return TrainConfig()


def run_images(args: argparse.Namespace) -> int:
    """``seesay demo images``: write the pictures and ``answers.jsonl``."""
    from seesay.demo.catalogue import write_demo_images

    index = write_demo_images(args.n, args.seed, args.out, dataset_format=args.format,
                              question_types=args.question_types or QUESTION_TYPES)
    print(f"wrote {args.n} pictures and {index}", file=sys.stderr)
    return 0


def run_build(args: argparse.Namespace) -> int:
    """``seesay demo build``: train and save the demo model."""
    from dataclasses import replace

    from seesay.demo.train import build_demo_model

    options = {name: getattr(args, name) for name in BUILD_OPTIONS if getattr(args, name) is not None}
    out = build_demo_model(replace(_default_config(), **options), args.out)
    print(out)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """``seesay demo eval``: evaluate a model through the transformers engine."""
    from seesay.demo.evaluate import evaluate
    from seesay.engine.config import TransformersEngineConfig
    from seesay.engine.registry import create_engine

    engine = create_engine("transformers", TransformersEngineConfig(model=args.model))
    try:
        report = evaluate(engine, args.n, args.seed, args.batch_size)
    finally:
        engine.close()
    print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2) if args.json else report.table())
    return 0


def run_examples(args: argparse.Namespace) -> int:
    """``seesay demo examples``: redraw the example pictures."""
    from seesay.demo.examples import write_examples

    for path in write_examples(args.out):
        print(path)
    return 0
