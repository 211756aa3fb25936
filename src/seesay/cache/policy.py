"""Which requests may use the response cache, and how.

Contract: :meth:`CachePolicy.decide` turns a request plus the caller's opt-outs into a
:class:`CacheDecision` (read the cache? store the answer?). The server-wide
:class:`CacheMode` says which requests are cacheable at all:

* ``off``: none;
* ``deterministic`` (the default): only requests whose answer is reproducible, i.e. greedy
  decoding (``temperature`` 0, or unset when the engine's default temperature is 0) or a
  ``seed`` given;
* ``all``: every request (a sampled answer is then replayed instead of re-sampled).

Per request, ``Cache-Control: no-cache`` skips reading but stores the fresh answer,
``no-store`` (or the request field ``cache: false``) skips both. Nothing here knows HTTP
beyond parsing that header's value.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from seesay.types import GenerationRequest


class CacheMode(enum.StrEnum):
    """Server-wide cacheability (``--cache-policy``)."""

    OFF = "off"
    DETERMINISTIC = "deterministic"
    ALL = "all"


@dataclass(frozen=True)
class CacheDecision:
    """What one request does with the cache.

    Attributes:
        read: Look the answer up (L1, then L2) and join an identical computation in flight.
        write: Store a freshly computed answer.
    """

    read: bool
    write: bool

    @property
    def uses_cache(self) -> bool:
        return self.read or self.write


BYPASS = CacheDecision(read=False, write=False)
USE = CacheDecision(read=True, write=True)
REFRESH = CacheDecision(read=False, write=True)


@dataclass(frozen=True)
class CacheOptOut:
    """What the caller asked for on this request.

    Attributes:
        no_store: Neither read nor write (``Cache-Control: no-store``, or ``cache: false``).
        no_cache: Do not read; a fresh answer is still stored (``Cache-Control: no-cache``).
    """

    no_store: bool = False
    no_cache: bool = False


NO_OPT_OUT = CacheOptOut()


def is_deterministic(request: GenerationRequest, default_temperature: float | None) -> bool:
    """Whether the answer is reproducible: greedy decoding or a seed.

    Args:
        request: The request.
        default_temperature: The engine's temperature for requests that leave it unset;
            ``None`` when unknown (an unset temperature then counts as sampling).
    """
    sampling = request.sampling
    temperature = sampling.temperature if sampling.temperature is not None else default_temperature
    return sampling.seed is not None or (temperature is not None and float(temperature) == 0.0)


_MODE_RULES: dict[CacheMode, Callable[[GenerationRequest, float | None], bool]] = {
    CacheMode.OFF: lambda request, default_temperature: False,
    CacheMode.DETERMINISTIC: is_deterministic,
    CacheMode.ALL: lambda request, default_temperature: True,
}


@dataclass(frozen=True)
class CachePolicy:
    """The server's cacheability rule.

    Attributes:
        mode: See :class:`CacheMode`.
        default_temperature: The engine's default temperature (``None``: unknown, so an unset
            temperature counts as sampling). The model-card default of Qwen3-VL is 0.7.
    """

    mode: CacheMode = CacheMode.DETERMINISTIC
    default_temperature: float | None = None

    def decide(self, request: GenerationRequest, opt_out: CacheOptOut = NO_OPT_OUT) -> CacheDecision:
        """How ``request`` uses the cache under this policy and the caller's opt-outs."""
        if opt_out.no_store or not _MODE_RULES[self.mode](request, self.default_temperature):
            return BYPASS
        return REFRESH if opt_out.no_cache else USE


def parse_cache_control(value: str | None, *, cache_field: bool | None = None) -> CacheOptOut:
    """The opt-outs in a ``Cache-Control`` request header and the request's ``cache`` field.

    Args:
        value: The header value (``"no-cache"``, ``"no-store, max-age=0"`` …) or ``None``.
        cache_field: The request body's ``cache`` flag; ``False`` opts out entirely.

    Returns:
        The opt-outs; unknown directives are ignored.
    """
    directives = {part.split("=", 1)[0].strip().lower() for part in (value or "").split(",")}
    return CacheOptOut(
        no_store="no-store" in directives or cache_field is False,
        no_cache="no-cache" in directives,
    )
