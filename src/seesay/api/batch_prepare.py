"""``seesay batch prepare``: a batch input file asking every question about every picture of a folder.

One line per picture × question, pictures in name order, questions in file order; the
``custom_id`` is ``<picture stem>#<question number>`` (numbered from 1), so the same folder and
questions always give the same ids and a resumed job matches them. The questions file holds one
question per line, or JSON lines (``{"question": ...}`` or a JSON string). Picture paths are
written relative to the output file's folder when the picture is inside it, else absolute (the job
then needs ``--allow-absolute-paths``). Requests are greedy by default (``temperature`` 0), which
the response cache stores under the default ``cache_policy``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from seesay.api.batch_files import CHAT_URL

PICTURE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".avif"})


def add_prepare_command(commands: Any) -> None:
    """Register ``batch-prepare`` (also spelled ``seesay batch prepare``)."""
    prepare = commands.add_parser(
        "batch-prepare", prog="seesay batch prepare",
        help="write a batch input file: every picture of a folder × every question of a file",
        description="Write one OpenAI Batch API line per picture × question (`seesay batch prepare` is the same "
        "command); custom_id is <picture stem>#<question number>.")
    prepare.add_argument("--images", type=Path, required=True, help="folder of pictures (not searched recursively)")
    prepare.add_argument("--questions", type=Path, required=True,
                         help="one question per line, or JSON lines with a 'question' field")
    prepare.add_argument("--output", "-o", type=Path, help="the input file to write (default: stdout)")
    prepare.add_argument("--model", help="the model the requests name (default: served_model_name, else seesay-demo)")
    prepare.add_argument("--max-tokens", type=int, help="max_tokens of each request (default: the server's)")
    prepare.add_argument("--temperature", type=float, default=0.0, help="default 0: greedy, hence cacheable")
    prepare.set_defaults(func=run_prepare, prepare_parser=prepare)


def run_prepare(args: argparse.Namespace) -> int:
    """Write the file; a usage error (no pictures, no questions, clashing stems) exits 2."""
    try:
        pictures = picture_files(args.images)
        questions = read_questions(args.questions)
    except ValueError as exc:
        args.prepare_parser.error(str(exc))
    folder = (args.output.parent if args.output else Path.cwd()).resolve()
    model = args.model or _default_model()
    lines = batch_lines(pictures, questions, folder, model, max_tokens=args.max_tokens,
                        temperature=args.temperature)
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    print(f"seesay batch prepare: {len(pictures)} pictures × {len(questions)} questions", file=sys.stderr)
    return 0


def picture_files(folder: Path) -> list[Path]:
    """The pictures directly in ``folder``, by name.

    Raises:
        ValueError: No pictures, or two with the same stem (their ``custom_id`` s would clash).
    """
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder")
    pictures = sorted(path for path in folder.iterdir() if path.suffix.lower() in PICTURE_SUFFIXES)
    if not pictures:
        raise ValueError(f"{folder}: no pictures ({', '.join(sorted(PICTURE_SUFFIXES))})")
    stems = [path.stem for path in pictures]
    clashes = sorted({stem for stem in stems if stems.count(stem) > 1})
    if clashes:
        raise ValueError(f"pictures share a name and would share custom_ids: {', '.join(clashes)}; rename them")
    return pictures


def read_questions(path: Path) -> list[str]:
    """The questions of ``path``: plain lines, or JSON lines (``{"question": ...}`` or a string).

    Raises:
        ValueError: The file holds no question, or a JSON line has none.
    """
    questions = [_question(text, number) for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(),
                                                                        start=1) if text.strip()]
    if not questions:
        raise ValueError(f"{path}: no questions")
    return questions


def _question(text: str, number: int) -> str:
    if not text.lstrip().startswith(("{", '"')):
        return text.strip()
    value = json.loads(text)
    question = value.get("question") if isinstance(value, dict) else value
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"questions line {number}: a JSON line needs a non-empty 'question' string")
    return question


def batch_lines(pictures: list[Path], questions: list[str], folder: Path, model: str, *,
                max_tokens: int | None, temperature: float) -> Iterator[dict[str, Any]]:
    """One input line per picture × question; picture paths relative to ``folder`` when inside it."""
    for picture in pictures:
        url = _picture_path(picture.resolve(), folder)
        for number, question in enumerate(questions, start=1):
            body: dict[str, Any] = {
                "model": model,
                "messages": [{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": question},
                ]}],
                "temperature": temperature,
            }
            if max_tokens is not None:
                body["max_tokens"] = max_tokens
            yield {"custom_id": f"{picture.stem}#{number}", "method": "POST", "url": CHAT_URL, "body": body}


def _picture_path(picture: Path, folder: Path) -> str:
    return os.path.relpath(picture, folder) if picture.is_relative_to(folder) else str(picture)


def _default_model() -> str:
    from seesay.config import load_settings

    settings = load_settings()
    return settings.served_model_name or settings.model or "seesay-demo"
