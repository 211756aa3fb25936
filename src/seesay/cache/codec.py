"""Cached answers as bytes: versioned JSON of a :class:`~seesay.types.GenerationResult`.

Contract: ``decode_result(encode_result(r)) == r`` for every result. A value written by
another schema version, or anything that is not a well-formed value, makes
:func:`decode_result` raise :class:`CorruptValueError`; callers treat that as a miss. The
encoded length is also what the in-process cache charges an entry against its byte limit.
"""

from __future__ import annotations

import json
from typing import Any, get_args

from seesay.types import FinishReason, GenerationResult, Timings, Usage

VALUE_SCHEMA_VERSION = 1
_FINISH_REASONS = frozenset(get_args(FinishReason))


class CorruptValueError(ValueError):
    """A stored value cannot be read back as a result."""


def encode_result(result: GenerationResult) -> bytes:
    """``result`` as compact UTF-8 JSON."""
    payload = {
        "v": VALUE_SCHEMA_VERSION,
        "request_id": result.request_id,
        "text": result.text,
        "finish_reason": result.finish_reason,
        "usage": [result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.image_tokens],
        "timings": [result.timings.preprocess_s, result.timings.first_token_s, result.timings.generate_s],
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode_result(data: bytes | str) -> GenerationResult:
    """The result in ``data``.

    Raises:
        CorruptValueError: Not JSON, another schema version, or fields missing or mistyped.
    """
    try:
        payload: Any = json.loads(data)
        if payload.get("v") != VALUE_SCHEMA_VERSION:
            raise CorruptValueError(f"value schema {payload.get('v')!r}, expected {VALUE_SCHEMA_VERSION}")
        if payload["finish_reason"] not in _FINISH_REASONS or not isinstance(payload["text"], str):
            raise CorruptValueError("finish_reason or text is not valid")
        prompt, completion, image = (int(n) for n in payload["usage"])
        preprocess, first_token, generate = payload["timings"]
        return GenerationResult(
            request_id=str(payload["request_id"]),
            text=payload["text"],
            finish_reason=payload["finish_reason"],
            usage=Usage(prompt, completion, image),
            timings=Timings(float(preprocess), None if first_token is None else float(first_token), float(generate)),
        )
    except CorruptValueError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CorruptValueError(f"not a cached result: {exc}") from exc
