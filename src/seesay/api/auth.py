"""API keys and per-key rate limits.

With no keys configured every request is let in as the anonymous caller. With keys, a
request must send ``Authorization: Bearer <key>``; the presented key is compared with every
configured key in constant time (``hmac.compare_digest`` over all of them, no early exit),
and a wrong or missing key gets OpenAI's 401. Logs and metrics see a key only as its
:func:`key_id`, a short hash, never the key itself.

The rate limit is a token bucket per key id: ``rate_limit_per_minute`` requests a minute,
with bursts up to the same number; over it, a 429 with Retry-After. Without keys, all
callers share the anonymous bucket.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from seesay.errors import AuthenticationError, RateLimitedError

ANONYMOUS = "anonymous"


def key_id(key: str) -> str:
    """A short, stable, non-reversible name for an API key, for logs and metrics."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:10]


@dataclass
class _Bucket:
    tokens: float
    updated: float


class ApiKeyAuth:
    """Checks API keys and rate limits; see the module docstring.

    Args:
        keys: Accepted keys; empty disables authentication.
        rate_limit_per_minute: Requests a minute per key id; 0 disables the limit.
        clock: Monotonic seconds (tests pass a fake clock).
    """

    def __init__(
        self, keys: Sequence[str], rate_limit_per_minute: int = 0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._keys = tuple(key.encode() for key in keys)
        self._ids = tuple(key_id(key) for key in keys)
        self._rate = rate_limit_per_minute
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def authenticate(self, authorization: str | None) -> str:
        """The key id of the caller presenting ``authorization`` (the header's value).

        Raises:
            AuthenticationError: Keys are configured and the header is missing or wrong.
        """
        if not self._keys:
            return ANONYMOUS
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise AuthenticationError(
                "no API key provided: send it as 'Authorization: Bearer <key>' "
                "(the openai SDK does this with api_key=...)"
            )
        candidate = presented.strip().encode()
        matched: str | None = None
        for key, kid in zip(self._keys, self._ids, strict=True):
            if hmac.compare_digest(candidate, key):  # every key is compared: no early exit
                matched = kid
        if matched is None:
            raise AuthenticationError("incorrect API key provided; check the key you were given")
        return matched

    def check_rate(self, caller: str) -> None:
        """Count one request for ``caller``.

        Raises:
            RateLimitedError: The caller is over its limit; ``retry_after`` says when to retry.
        """
        if self._rate <= 0:
            return
        now = self._clock()
        per_second = self._rate / 60.0
        bucket = self._buckets.setdefault(caller, _Bucket(float(self._rate), now))
        bucket.tokens = min(float(self._rate), bucket.tokens + (now - bucket.updated) * per_second)
        bucket.updated = now
        if bucket.tokens < 1.0:
            wait = math.ceil((1.0 - bucket.tokens) / per_second)
            raise RateLimitedError(
                f"rate limit reached: {self._rate} requests per minute for this API key; "
                f"retry in {wait} s",
                retry_after=wait,
            )
        bucket.tokens -= 1.0
