"""Fingerprints that say "same model, same weights, same output defaults" without reading every byte.

Contract: :func:`engine_fingerprint` returns ``<model name>@<digest>``; the digest changes
whenever the weights, the chat template or any engine default that shapes answers changes.
Response caches key on it, so an answer cached for one checkpoint is never served for
another. Weight files are identified by size plus a sha256 over their header and 64 evenly
spaced 64 KiB samples (about 4 MiB read per file, so a 17 GB checkpoint costs milliseconds,
and retrained or merged weights differ in every sample). No torch import here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

_SAMPLES = 64
_SAMPLE_BYTES = 64 * 1024
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def file_identity(path: Path) -> str:
    """``size:sha256`` over the file's first 1 MiB and 64 evenly spaced 64 KiB samples."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        digest.update(handle.read(1024 * 1024))
        for index in range(_SAMPLES):
            handle.seek(size * index // _SAMPLES)
            digest.update(handle.read(_SAMPLE_BYTES))
    return f"{size}:{digest.hexdigest()}"


def folder_identities(folder: Path) -> dict[str, str]:
    """Identity of every weight file in a checkpoint folder, by file name.

    Raises:
        ValueError: the folder holds no weight files.
    """
    files = {p.name: file_identity(p) for p in sorted(folder.iterdir()) if p.name.endswith(WEIGHT_SUFFIXES)}
    if not files:
        raise ValueError(f"no weight files ({', '.join(WEIGHT_SUFFIXES)}) in {folder}")
    return files


def engine_fingerprint(model_name: str, weights: Mapping[str, str], defaults: Mapping[str, object]) -> str:
    """``<model_name>@<digest>`` over weight identities and output-shaping defaults.

    Args:
        model_name: The name clients use for the model.
        weights: Weight file name → identity (:func:`folder_identities`), or for a remote
            engine whatever its server reports (model id and revision).
        defaults: Every setting that changes answers when a request leaves it unset: resolved
            sampling defaults, ``default_max_new_tokens``, ``max_model_len``, the chat
            template, the dtype.
    """
    payload = json.dumps({"weights": dict(weights), "defaults": dict(defaults)}, sort_keys=True, default=str)
    return f"{model_name}@{hashlib.sha256(payload.encode()).hexdigest()[:32]}"
