"""``seesay finetune``, ``seesay eval`` and ``seesay merge``.

Contract: :func:`add_finetune_commands` registers the three commands on the CLI's
subparsers; each command's ``func`` takes the parsed namespace and returns an exit code.
``finetune``'s options are :class:`~seesay.finetune.options.FinetuneConfig`'s fields, their
attribute docstrings the help. Nothing heavy is imported until a command runs; a missing
``finetune`` extra is reported with the install line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from seesay.finetune.options import FinetuneConfig
from seesay.option_docs import field_docs

INSTALL = "pip install 'seesay[finetune]'"
ADAPTER_NAME = "evaluated-adapter"


def add_finetune_commands(subparsers: Any) -> None:
    """Register ``finetune``, ``eval`` and ``merge`` on the CLI's ``subparsers``."""
    _add_finetune(subparsers)
    _add_eval(subparsers)
    _add_merge(subparsers)


def _add_finetune(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "finetune", help="train a LoRA adapter on a dataset",
        description="Train a LoRA adapter on an ms-swift .jsonl or LLaMA-Factory .json dataset (every record "
        "is checked first) and write a PEFT adapter folder, training_report.json and training_loss.png.")
    docs = field_docs(FinetuneConfig)
    hints = typing.get_type_hints(FinetuneConfig)
    for option in dataclasses.fields(FinetuneConfig):
        required = option.default is dataclasses.MISSING
        default = "" if required or option.default is None else f" (default: {option.default})"
        hint = hints[option.name]
        several = typing.get_origin(hint) is tuple
        parser.add_argument(f"--{option.name.replace('_', '-')}", dest=option.name, required=required,
                            type=typing.get_args(hint)[0] if several else _argument_type(hint),
                            nargs="+" if several else None, help=docs[option.name] + default)
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest complete checkpoint in --out, with the same options")
    parser.set_defaults(func=run_finetune)


def _argument_type(hint: Any) -> Any:
    """The argparse type of a field annotated ``T`` or ``T | None``."""
    if isinstance(hint, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint


def _add_eval(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "eval", help="exact and normalised match of a model on a dataset",
        description="Ask every record of a dataset (up to its last answer) with greedy decoding and score "
        "the answers: exact match, normalised match (case, punctuation, full-width), per question type.")
    parser.add_argument("--model", help="hub id or local folder (default: the built-in demo model)")
    parser.add_argument("--adapter", help="a LoRA adapter folder to answer with")
    parser.add_argument("--data", required=True, type=Path, help="ms-swift .jsonl, LLaMA-Factory .json, "
                        "or a dataset_info.json (or its folder)")
    parser.add_argument("--dataset", help="entry of dataset_info.json")
    parser.add_argument("--group-by", default="question_type", help="record field to break scores down by "
                        "(default: question_type)")
    parser.add_argument("--batch-size", type=int, default=16, help="questions per generate call (default: 16)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run_eval)


def _add_merge(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "merge", help="fold a LoRA adapter into its base model",
        description="Merge a LoRA adapter into its base model and save a standard checkpoint that loads "
        "like any model (stock transformers, seesay, vLLM).")
    parser.add_argument("--base", required=True, help="base model: hub id or local folder")
    parser.add_argument("--adapter", required=True, type=Path, help="the adapter folder")
    parser.add_argument("--out", required=True, type=Path, help="folder to save the merged model into")
    parser.set_defaults(func=run_merge)


def _require_extra() -> None:
    try:
        import peft  # noqa: F401
    except ImportError as exc:
        raise ValueError(f"this command needs {INSTALL} ({exc})") from None


def run_finetune(args: argparse.Namespace) -> int:
    """``seesay finetune``: train, write the adapter and its report, print the adapter folder."""
    _require_extra()
    from seesay.finetune.train import finetune
    from seesay.training.loop import TrainingInterrupted

    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(FinetuneConfig)
               if getattr(args, f.name) is not None}
    options["data"] = tuple(options["data"])
    try:
        result = finetune(FinetuneConfig(**options), resume=args.resume)
    except TrainingInterrupted as exc:
        print(f"seesay: {exc}", file=sys.stderr)
        return 130
    print(result.adapter)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """``seesay eval``: score a model (with an adapter if given) on a dataset and print the report."""
    from tqdm.auto import tqdm  # a dependency of transformers

    from seesay.engine.adapters import AdapterSource
    from seesay.engine.config import TransformersEngineConfig
    from seesay.engine.registry import create_engine
    from seesay.finetune.datasets import load_dataset
    from seesay.finetune.evaluate import evaluate_dataset

    conversations = load_dataset(args.data, args.dataset)
    engine = create_engine("transformers", TransformersEngineConfig(model=args.model))
    try:
        adapter = engine.load_adapter(AdapterSource(ADAPTER_NAME, args.adapter)).name if args.adapter else None
        with tqdm(total=len(conversations), desc="eval", unit="question", disable=None) as bar:
            report = evaluate_dataset(engine, conversations, adapter=adapter, batch_size=args.batch_size,
                                      group_by=args.group_by, on_batch=bar.update)
    finally:
        engine.close()
    print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2) if args.json else report.table())
    return 0


def run_merge(args: argparse.Namespace) -> int:
    """``seesay merge``: merge and save, print the folder."""
    _require_extra()
    from seesay.finetune.merge import merge_adapter

    print(merge_adapter(args.base, args.adapter, args.out))
    return 0
