"""API keys and per-key rate limits.

With no keys configured every request is let in as the anonymous caller. With keys, a
request must send ``Authorization: Bearer <key>``; the presented key is compared with every
configured key in constant time (``hmac.compare_digest`` over all of them, no early exit),
and a wrong or missing key gets OpenAI's 401. Logs and metrics see a key only as its
:func:`key_id`, a short hash, never the key itself.

The rate limit (:mod:`seesay.api.rate_limit`) counts requests per key id in a moving window
of 60 s, shared by every replica through Redis when a Redis URL is set; over it, a 429 with
Retry-After. Without keys, all callers share the anonymous count.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from seesay.api.rate_limit import RateLimit
from seesay.errors import AuthenticationError

ANONYMOUS = "anonymous"


def key_id(key: str) -> str:
    """A short, stable, non-reversible name for an API key, for logs and metrics."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:10]


class ApiKeyAuth:
    """Checks API keys and rate limits; see the module docstring.

    Args:
        keys: Accepted keys; empty disables authentication.
        rate_limit: The per-key limit; ``None`` disables it.
    """

    def __init__(self, keys: Sequence[str], rate_limit: RateLimit | None = None) -> None:
        self._keys = tuple(key.encode() for key in keys)
        self._ids = tuple(key_id(key) for key in keys)
        self.rate_limit = rate_limit

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

    async def check_rate(self, caller: str) -> None:
        """Count one request for ``caller``.

        Raises:
            RateLimitedError: The caller is over its limit; ``retry_after`` says when to retry.
        """
        if self.rate_limit is not None:
            await self.rate_limit.hit(caller)
