"""Fine-tuning datasets in the field's two formats, read as they are and checked record by record.

Contract: :func:`load_dataset` reads

* **ms-swift JSONL**: one JSON object per line, ``{"messages": [{"role", "content"}, ...],
  "images": [...]}``, each picture marked by an ``<image>`` tag in a user turn;
* **LLaMA-Factory ShareGPT JSON**: a JSON list of such objects (``messages`` with
  ``role``/``content``, or LLaMA-Factory's default ``conversations`` with ``from``/``value`` and
  the roles ``human``/``gpt``); or a ``dataset_info.json`` and the name of one of its
  ``sharegpt`` entries, whose ``columns`` and ``tags`` say which keys and role names to use.

and gives one :class:`Conversation` per record, with image paths resolved against the
dataset file's folder. Every record is checked before anything trains, and a
:class:`DatasetError` lists every problem found, each naming the file, the record and what
to fix: invalid JSON, a missing or unreadable image, ``<image>`` tags that do not match the
images, unknown roles, no assistant turn, an empty answer. (A record over the context limit
is found when it is encoded: :mod:`seesay.finetune.encoding`.) Keys other than the messages
and images (``question_type`` …) are kept in :attr:`Conversation.fields`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from seesay.images import NormalizedImage
from seesay.types import ChatMessage, ImagePart, TextPart

IMAGE_TAG = "<image>"
ROLES = ("system", "user", "assistant")
MAX_PROBLEMS_SHOWN = 20


@dataclass(frozen=True)
class Message:
    """One turn: ``role`` is ``system``, ``user`` or ``assistant``; ``<image>`` tags mark pictures."""

    role: str
    content: str


@dataclass(frozen=True)
class Conversation:
    """One record of a dataset.

    Attributes:
        messages: The turns, in order.
        images: The pictures, in the order of the ``<image>`` tags.
        where: The file and record, for messages (``train.jsonl line 12``).
        fields: The record's other keys (``question_type`` …).
    """

    messages: tuple[Message, ...]
    images: tuple[Path, ...]
    where: str
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def answer(self) -> str:
        """The last assistant turn: what evaluation compares with."""
        return next(m.content for m in reversed(self.messages) if m.role == "assistant")

    def chat_messages(self, read_image: Callable[[Path], NormalizedImage], *,
                      prompt_only: bool = False) -> list[ChatMessage]:
        """The turns as the engine takes them, each ``<image>`` tag replaced by ``read_image(path)``.

        Args:
            read_image: Decodes one picture (at the pixel budget).
            prompt_only: Stop before the last assistant turn (the question evaluation asks).
        """
        turns = self.messages
        if prompt_only:
            turns = turns[: max(i for i, m in enumerate(turns) if m.role == "assistant")]
        images = iter(self.images)
        messages = []
        for message in turns:
            parts: list[TextPart | ImagePart] = []
            for index, text in enumerate(message.content.split(IMAGE_TAG)):
                if index:
                    parts.append(ImagePart(read_image(next(images))))
                if text:
                    parts.append(TextPart(text))
            messages.append(ChatMessage(message.role, tuple(parts)))  # type: ignore[arg-type]
        return messages


class DatasetError(ValueError):
    """A dataset cannot be used as it is; ``problems`` names each record and what is wrong."""

    def __init__(self, source: Path | str, problems: list[str]) -> None:
        shown = problems[:MAX_PROBLEMS_SHOWN]
        more = f"\n  … and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        super().__init__(f"{source}: {len(problems)} problem(s) found, nothing was trained:\n  "
                         + "\n  ".join(shown) + more)
        self.problems = problems


@dataclass(frozen=True)
class Layout:
    """Where a record keeps its turns and pictures, and what its roles are called (LLaMA-Factory's
    ``columns`` and ``tags``)."""

    messages: str = "messages"
    images: str = "images"
    role: str = "role"
    content: str = "content"
    roles: Mapping[str, str] = field(default_factory=lambda: {role: role for role in ROLES})

    @classmethod
    def sharegpt_defaults(cls) -> Layout:
        """LLaMA-Factory's defaults for ``sharegpt`` files: ``conversations``, ``from``/``value``."""
        return cls("conversations", "images", "from", "value", {"human": "user", "gpt": "assistant",
                                                                 "system": "system"})

    @classmethod
    def from_dataset_info(cls, entry: Mapping[str, Any]) -> Layout:
        """The layout an entry of ``dataset_info.json`` declares (LLaMA-Factory's defaults elsewhere)."""
        base = cls.sharegpt_defaults()
        columns, tags = entry.get("columns") or {}, entry.get("tags") or {}
        roles = {tags.get("user_tag", "human"): "user", tags.get("assistant_tag", "gpt"): "assistant",
                 tags.get("system_tag", "system"): "system"}
        return cls(columns.get("messages", base.messages), columns.get("images", base.images),
                   tags.get("role_tag", base.role), tags.get("content_tag", base.content), roles)


def load_datasets(paths: Sequence[str | Path], names: str | None = None) -> list[Conversation]:
    """Several datasets read with :func:`load_dataset`, one after the other.

    Args:
        paths: The files (or ``dataset_info.json`` files or folders).
        names: Comma-separated entries of the ``dataset_info.json`` files (each file's entries
            that it has); ``None``: each such file must have only one.

    Raises:
        DatasetError: Listing every problem found in every file.
    """
    conversations: list[Conversation] = []
    problems: list[str] = []
    for path in paths:
        for name in _entries(Path(path), names):
            try:
                conversations += load_dataset(path, name)
            except DatasetError as exc:
                if len(paths) == 1:
                    raise
                problems += exc.problems  # each names its file and record
    if problems:
        raise DatasetError(", ".join(str(path) for path in paths), problems)
    return conversations


def _entries(path: Path, names: str | None) -> list[str | None]:
    """The ``dataset_info.json`` entries of ``names`` found in ``path`` (``[None]`` for a plain file)."""
    info = path / "dataset_info.json" if path.is_dir() else path
    if names is None or info.name != "dataset_info.json" or not info.is_file():
        return [None]
    entries = _read_json(info)
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    found: list[str | None] = [name for name in wanted if isinstance(entries, dict) and name in entries]
    return found or [*wanted[:1]]  # none found: let load_dataset name the missing entry


def load_dataset(path: str | Path, name: str | None = None) -> list[Conversation]:
    """Read and check a dataset (see the module docstring).

    Args:
        path: A ``.jsonl`` (ms-swift) or ``.json`` (LLaMA-Factory) file, a ``dataset_info.json``,
            or a folder holding one.
        name: The entry of ``dataset_info.json`` to read (may be omitted if it has only one).

    Raises:
        DatasetError: Listing every problem found.
        FileNotFoundError: ``path`` does not exist.
    """
    source = Path(path)
    if source.is_dir():
        source = source / "dataset_info.json"
    if not source.exists():
        raise FileNotFoundError(f"dataset {source} does not exist")
    if source.name == "dataset_info.json":
        source, layout = _dataset_info_entry(source, name)
    else:
        layout = None
    problems: list[str] = []
    conversations = []
    for where, record in _records(source, problems):
        chosen = layout or _guess_layout(record)
        conversation = _conversation(record, chosen, source.parent, where, problems)
        if conversation is not None:
            conversations.append(conversation)
    if not conversations and not problems:
        problems.append("the file holds no records")
    if problems:
        raise DatasetError(source, problems)
    return conversations


def _dataset_info_entry(info: Path, name: str | None) -> tuple[Path, Layout]:
    entries = _read_json(info)
    if not isinstance(entries, dict) or not entries:
        raise DatasetError(info, ["dataset_info.json must be an object of named dataset entries"])
    if name is None:
        if len(entries) != 1:
            raise DatasetError(info, [f"name one of its datasets ({', '.join(sorted(entries))}) with --dataset"])
        name = next(iter(entries))
    entry = entries.get(name)
    if not isinstance(entry, dict):
        raise DatasetError(info, [f"no dataset '{name}' in it; it has {', '.join(sorted(entries))}"])
    if entry.get("formatting", "alpaca") != "sharegpt":
        raise DatasetError(info, [f"'{name}' is formatted as {entry.get('formatting', 'alpaca')}; seesay reads "
                                  "sharegpt (messages with images)"])
    if "file_name" not in entry:
        raise DatasetError(info, [f"'{name}' has no file_name (hub datasets must be downloaded first)"])
    return info.parent / entry["file_name"], Layout.from_dataset_info(entry)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(path, [f"not valid JSON: {exc}"]) from None


def _records(source: Path, problems: list[str]) -> Iterator[tuple[str, Any]]:
    """``(where, record)`` for each record; lines that are not JSON become problems."""
    if source.suffix == ".jsonl":
        with source.open(encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    yield f"{source.name} line {number}", json.loads(line)
                except json.JSONDecodeError as exc:
                    problems.append(f"{source.name} line {number}: not valid JSON ({exc.msg} at column {exc.colno})")
        return
    records = _read_json(source)
    if not isinstance(records, list):
        raise DatasetError(source, ["a .json dataset must be a list of records (ms-swift files are .jsonl, "
                                    "one record per line)"])
    for index, record in enumerate(records):
        yield f"{source.name} record {index}", record


def _guess_layout(record: Any) -> Layout:
    if isinstance(record, dict) and "messages" not in record and "conversations" in record:
        return Layout.sharegpt_defaults()
    return Layout()


def _conversation(record: Any, layout: Layout, folder: Path, where: str,
                  problems: list[str]) -> Conversation | None:
    """The record as a :class:`Conversation`, or ``None`` after adding its problems."""
    found: list[str] = []
    if not isinstance(record, dict):
        problems.append(f"{where}: a record must be a JSON object")
        return None
    messages = _messages(record.get(layout.messages), layout, found)
    images = _images(record.get(layout.images, []), folder, found)
    if messages is not None and images is not None:
        _check_turns(messages, images, found)
    if found:
        problems.extend(f"{where}: {problem}" for problem in found)
        return None
    assert messages is not None and images is not None
    fields = {key: value for key, value in record.items() if key not in (layout.messages, layout.images)}
    return Conversation(tuple(messages), tuple(images), where, fields)


def _messages(raw: Any, layout: Layout, found: list[str]) -> list[Message] | None:
    if not isinstance(raw, list) or not raw:
        found.append(f"'{layout.messages}' must be a non-empty list of turns")
        return None
    messages = []
    for index, turn in enumerate(raw):
        role = layout.roles.get(str(turn.get(layout.role))) if isinstance(turn, dict) else None
        content = turn.get(layout.content) if isinstance(turn, dict) else None
        if role is None:
            known = ", ".join(layout.roles)
            found.append(f"turn {index} has no known '{layout.role}' (one of {known})")
        elif not isinstance(content, str):
            found.append(f"turn {index} ({role}) has no text '{layout.content}'")
        else:
            messages.append(Message(role, content))
    return messages if len(messages) == len(raw) else None


def _images(raw: Any, folder: Path, found: list[str]) -> list[Path] | None:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        found.append("'images' must be a list of image paths")
        return None
    images = []
    for index, entry in enumerate(raw):
        name = entry.get("path") if isinstance(entry, dict) else entry
        if not isinstance(name, str) or not name:
            found.append(f"image {index} is not a path")
            continue
        if "://" in name:
            found.append(f"image {index} ({name}) is a URL; download it and give its local path")
            continue
        path = (folder / name) if not Path(name).is_absolute() else Path(name)
        problem = _unreadable(path)
        if problem:
            found.append(f"image {index} ({name}) {problem}")
        images.append(path)
    return images


def _unreadable(path: Path) -> str | None:
    """Why ``path`` is not a picture Pillow can read (``None``: it is)."""
    if not path.is_file():
        return f"does not exist (looked for {path})"
    try:
        with Image.open(path) as picture:
            picture.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        return f"is not a readable image ({exc})"
    return None


def _check_turns(messages: list[Message], images: list[Path], found: list[str]) -> None:
    tags = sum(message.content.count(IMAGE_TAG) for message in messages if message.role == "user")
    if tags != len(images):
        found.append(f"{tags} {IMAGE_TAG} tag(s) in the user turns but {len(images)} image(s); "
                     f"put one {IMAGE_TAG} where each picture goes")
    if any(IMAGE_TAG in message.content for message in messages if message.role != "user"):
        found.append(f"{IMAGE_TAG} tags belong in user turns only")
    if any(message.role == "system" for message in messages[1:]):
        found.append("a system turn may only come first")
    assistants = [message for message in messages if message.role == "assistant"]
    if not assistants:
        found.append("no assistant turn: nothing to learn from this record")
    elif any(not message.content.strip() for message in assistants):
        found.append("an assistant turn is empty: give the answer the model should learn")
    if messages[-1].role != "assistant" and assistants:
        found.append("the last turn must be the assistant's answer")
