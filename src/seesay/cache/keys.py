"""Cache keys: one canonical, versioned digest per answer-determining request.

Contract: two requests get the same :class:`CacheKey` exactly when everything that can change
the answer is equal, namely

* the model: its id, a fingerprint of its weights and every engine default that shapes the
  output (``EngineInfo.fingerprint``, see :mod:`seesay.engine.fingerprint`);
* the LoRA adapter, if any: its name and a fingerprint of its weights, so an adapter retrained
  under the same name never replays the old one's answers (a base-model request's key is as it
  was before adapters were served);
* the conversation as the model sees it: every message's role and its parts in order, text
  verbatim and each image by its *normalised* content hash (so a PNG and a re-encoded copy
  whose normalised pixels are equal share a key; a near-duplicate index may supply a
  canonical hash instead, see :mod:`seesay.cache.phash`);
* the pixel budget the images were fitted to;
* every :class:`~seesay.types.SamplingParams` field, the seed only when the request samples
  (an explicit ``temperature=0`` is greedy: the seed cannot change the answer), stop strings
  as a set;
* the safety policy version, so a hit never bypasses the policy in force now.

Request ids, streaming and the image container never enter the key. New ``SamplingParams``
fields are included automatically, so a field added later cannot silently share keys.
The serialisation is JSON with sorted keys and numbers written as ``repr(float)``; bump
:data:`KEY_SCHEMA_VERSION` whenever it changes, which also changes the Redis key prefix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from seesay.images import NormalizedImage, PixelBudget
from seesay.types import ChatMessage, GenerationRequest, ImagePart, SamplingParams

KEY_SCHEMA_VERSION = 1

ImageHasher = Callable[[NormalizedImage], str]
"""Maps a normalised image to the hash that stands for it in keys (default: its content hash)."""


@dataclass(frozen=True)
class CacheKey:
    """The identity of one cacheable answer.

    Attributes:
        digest: sha256 hex of the canonical serialisation.
        schema: The :data:`KEY_SCHEMA_VERSION` it was built with.
    """

    digest: str
    schema: int = KEY_SCHEMA_VERSION

    def __str__(self) -> str:
        return self.digest


def key_for(
    request: GenerationRequest,
    model_fingerprint: str,
    policy_version: str,
    *,
    adapter_fingerprint: str | None = None,
    image_hash: ImageHasher | None = None,
) -> CacheKey:
    """The cache key of ``request`` (see the module docstring for what enters it).

    Args:
        request: The request, images already normalised.
        model_fingerprint: ``EngineInfo.fingerprint``: model id, weights and output defaults.
        policy_version: Version string of the safety policy in force.
        adapter_fingerprint: The fingerprint of ``request.adapter``'s weights; required with an adapter.
        image_hash: How an image is named in the key; defaults to its ``content_hash``. Pass
            ``NearDuplicateIndex.canonical_hash`` to let near-identical photos share keys.

    Returns:
        The key.

    Raises:
        ValueError: ``model_fingerprint`` or ``policy_version`` is empty, or the request names an
            adapter without its fingerprint.
    """
    if not model_fingerprint or not policy_version:
        raise ValueError(
            "a cache key needs a model fingerprint and a safety policy version; "
            f"got model_fingerprint={model_fingerprint!r}, policy_version={policy_version!r}"
        )
    if request.adapter is not None and not adapter_fingerprint:
        raise ValueError(f"a cache key for LoRA adapter '{request.adapter}' needs the fingerprint of its weights")
    name_image = image_hash or _content_hash
    canonical = {
        "schema": KEY_SCHEMA_VERSION,
        "model": model_fingerprint,
        "policy": policy_version,
        "adapter": None if request.adapter is None else [request.adapter, adapter_fingerprint],
        "budget": _budget(request.pixel_budget),
        "messages": [_message(m, name_image) for m in request.messages],
        "sampling": canonical_sampling(request.sampling),
    }
    return CacheKey(_digest(canonical))


def canonical_sampling(sampling: SamplingParams) -> dict[str, object]:
    """Every sampling field in canonical form; the seed is dropped when decoding is greedy."""
    values: dict[str, object] = {}
    for spec in dataclasses.fields(sampling):
        value = getattr(sampling, spec.name)
        values[spec.name] = _CANONICAL_FIELDS.get(spec.name, _canonical_value)(value)
    if sampling.temperature is not None and float(sampling.temperature) == 0.0:
        values.pop("seed")  # greedy: the random generator is never drawn from
    return values


def _content_hash(image: NormalizedImage) -> str:
    return image.content_hash


def _budget(budget: PixelBudget | None) -> list[int] | None:
    return None if budget is None else [budget.min_pixels, budget.max_pixels, budget.factor]


def _message(message: ChatMessage, name_image: ImageHasher) -> list[object]:
    parts = [["image", name_image(p.image)] if isinstance(p, ImagePart) else ["text", p.text]
             for p in message.content]
    return [message.role, parts]


def _canonical_value(value: object) -> object:
    """Numbers as ``repr(float)`` so ``0``, ``0.0`` and ``False`` cannot diverge; the rest as is."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(float(value))
    if isinstance(value, list | tuple):
        return [_canonical_value(v) for v in value]
    return str(value)


def _canonical_stop(value: object) -> object:
    """Stop strings are a set: order and repeats do not change where generation ends."""
    return sorted(set(value)) if isinstance(value, list | tuple) else _canonical_value(value)


def _canonical_count(value: object) -> object:
    """Token counts stay integers (``max_new_tokens=16``), unset stays ``None``."""
    return None if value is None else int(value)  # type: ignore[call-overload]


# Field name → canonical form; a field not listed uses _canonical_value.
_CANONICAL_FIELDS: dict[str, Callable[[object], object]] = {
    "stop": _canonical_stop,
    "max_new_tokens": _canonical_count,
    "top_k": _canonical_count,
    "seed": _canonical_count,
}


def _digest(value: object) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
