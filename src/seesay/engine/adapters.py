"""LoRA adapters as the server names them: where each comes from and what identifies its weights.

Contract (no torch here, so settings, the service and the fake engine use it freely):

* :class:`AdapterSource` is one adapter to serve: a name clients send as ``model``, a path
  (a local folder, or a hub id left to PEFT's normal loading) and optionally the base model it
  was trained for. :func:`parse_lora_module` reads vLLM's ``--lora-modules`` forms:
  ``name=path`` or ``{"name": ..., "path": ..., "base_model_name": ...}``.
* :func:`check_adapter_folder` refuses a folder that is not a PEFT adapter
  (``adapter_config.json`` and ``adapter_model.safetensors``) with a message naming the folder
  and how to fix it, and returns its ``adapter_config.json``.
* :func:`adapter_fingerprint` is a sha256 over both files, computed once at load: response
  caches key on it, so a retrained adapter served under the same name never replays answers
  of the old one.
* :class:`LoadedAdapter` is what an engine reports once an adapter is loaded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seesay.errors import AdapterLoadError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
BASE_ADAPTER = "__base__"
"""PEFT's name for "no adapter" in a mixed batch; never a served adapter's name."""


@dataclass(frozen=True)
class AdapterSource:
    """One LoRA adapter to serve.

    Attributes:
        name: What clients send as ``model`` to be answered with this adapter.
        path: A local adapter folder, or a hub id.
        base_model_name: The served model it belongs to (vLLM's field); ``None``: the served one.
    """

    name: str
    path: str
    base_model_name: str | None = None

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError(f"a LoRA adapter needs a name, got {self.name!r}")
        if self.name == BASE_ADAPTER:
            raise ValueError(f"'{BASE_ADAPTER}' is reserved for the base model; name the adapter otherwise")
        if not self.path.strip():
            raise ValueError(f"LoRA adapter '{self.name}' needs a path: a local folder or a hub id")


def parse_lora_module(text: str) -> AdapterSource:
    """One ``--lora-modules`` entry: ``name=path`` or vLLM's JSON object.

    Raises:
        ValueError: Neither form; the message shows both.
    """
    text = text.strip()
    if text.startswith("{"):
        try:
            fields = json.loads(text)
            return AdapterSource(name=fields["name"], path=fields["path"],
                                 base_model_name=fields.get("base_model_name"))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"cannot read LoRA module {text!r} ({exc}); write "
                             '{"name": "shop", "path": "/adapters/shop"} or shop=/adapters/shop') from None
    name, sep, path = text.partition("=")
    if not sep:
        raise ValueError(f"LoRA module {text!r} must be name=path (shop=/adapters/shop) or a JSON object")
    return AdapterSource(name=name.strip(), path=path.strip())


def check_adapter_folder(folder: Path) -> dict[str, Any]:
    """The ``adapter_config.json`` of a PEFT adapter folder, after checking both files are there.

    Raises:
        AdapterLoadError: A file is missing or the config is not JSON; the message says which
            and how to make such a folder.
    """
    try:
        is_folder = folder.is_dir()
    except (OSError, ValueError):  # a name too long, a NUL byte
        is_folder = False
    if not is_folder:
        raise AdapterLoadError(f"LoRA adapter folder {folder} does not exist; pass a folder written by "
                               "PEFT's save_pretrained, or a hub id")
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
    if missing:
        raise AdapterLoadError(
            f"{folder} is not a PEFT LoRA adapter: {' and '.join(missing)} missing. Save the adapter with "
            f"model.save_pretrained(folder) (safetensors, the default) so it holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AdapterLoadError(f"cannot read {folder / CONFIG_FILE}: {exc}; save the adapter again") from None
    if not isinstance(config, dict):
        raise AdapterLoadError(f"{folder / CONFIG_FILE} must hold a JSON object; save the adapter again")
    return config


def adapter_fingerprint(folder: Path) -> str:
    """sha256 (hex) over the adapter's config and weights files, each prefixed by its name."""
    digest = hashlib.sha256()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        digest.update(name.encode() + b"\0")
        with (folder / name).open("rb") as handle:
            for block in iter(lambda: handle.read(1024 * 1024), b""):
                digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class LoadedAdapter:
    """An adapter an engine has loaded.

    Attributes:
        name: Its served name.
        path: Where it was loaded from, as given.
        fingerprint: :func:`adapter_fingerprint` of its files.
        base_model_name_or_path: What its config says it was trained on (informative only).
    """

    name: str
    path: str
    fingerprint: str
    base_model_name_or_path: str | None = None
