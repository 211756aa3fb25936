"""The remote engine's HTTP calls to one upstream: its client, ``/v1/models``, and one streamed answer.

Contract: every failure leaves here as an :class:`~seesay.engine.openai_wire.UpstreamFailure`
(connection errors, time-outs, error replies, malformed or truncated streams), never as an httpx
exception, so the engine decides about retries and breakers in one place. Time-outs: connecting
is bounded by the client (``connect_timeout_s``); the first answer text by
``first_token_timeout_s`` from sending the request; after that, the silence between two chunks
by ``idle_timeout_s``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

from seesay.engine.config import RemoteEngineConfig
from seesay.engine.openai_wire import (
    Retry,
    StreamEvent,
    UpstreamFailure,
    decode_json_body,
    parse_completion,
    parse_event,
    upstream_failure,
)
from seesay.errors import MissingDependencyError, UpstreamUnavailableError

try:
    import httpx
except ImportError as exc:  # pragma: no cover - httpx comes with seesay[serve]
    raise MissingDependencyError("httpx", "serve", "the remote engine") from exc

if TYPE_CHECKING:
    from seesay.engine.upstreams import Upstream


class AnswerSink(Protocol):
    """Where a streamed answer goes (the engine's per-row state)."""

    done: bool
    finish_reason: Any

    @property
    def delivered(self) -> bool: ...

    def take(self, event: StreamEvent) -> None: ...

    def finish(self) -> None: ...


def upstream_client(url: str, config: RemoteEngineConfig, transport: Any = None) -> httpx.AsyncClient:
    """A keep-alive connection pool to one upstream; reads are timed by :func:`stream_answer`, not by httpx."""
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    timeout = httpx.Timeout(connect=config.connect_timeout_s, read=None, write=config.idle_timeout_s,
                            pool=config.first_token_timeout_s)
    limits = httpx.Limits(max_connections=config.max_connections, max_keepalive_connections=config.max_connections)
    return httpx.AsyncClient(base_url=url.rstrip("/").removesuffix("/v1"), headers=headers, timeout=timeout,
                             limits=limits, transport=transport)


def _unreachable(upstream: Upstream, exc: Exception) -> UpstreamFailure:
    reason = str(exc) or type(exc).__name__
    return UpstreamFailure(UpstreamUnavailableError(f"cannot reach upstream {upstream.url}: {reason}"), Retry.FAILED)


async def list_models(upstream: Upstream, timeout_s: float) -> dict[str, dict[str, Any]]:
    """The upstream's model cards by id (``GET /v1/models``).

    Raises:
        UpstreamFailure: It cannot be reached, answers with an error, or not with a model list.
    """
    try:
        async with asyncio.timeout(timeout_s):
            response = await upstream.client.get("/v1/models")
    except (httpx.HTTPError, TimeoutError) as exc:
        raise _unreachable(upstream, exc) from None
    if response.status_code != 200:
        raise upstream_failure(upstream.url, response.status_code, decode_json_body(response.content))
    try:
        data = response.json()["data"]
        return {str(card["id"]): card for card in data}
    except (ValueError, KeyError, TypeError):
        raise UpstreamFailure(UpstreamUnavailableError(
            f"upstream {upstream.url} answered GET /v1/models with something that is not an OpenAI model "
            "list; is it an OpenAI-compatible server?"), Retry.FAILED) from None


async def stream_answer(upstream: Upstream, body: dict[str, Any], sink: AnswerSink, config: RemoteEngineConfig) -> None:
    """POST ``body`` to the upstream's chat completions and feed the stream to ``sink`` until it is done.

    Raises:
        UpstreamFailure: See the module docstring.
    """
    try:
        async with asyncio.timeout(config.first_token_timeout_s) as deadline:
            async with upstream.client.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code != 200:
                    content = await response.aread()
                    raise upstream_failure(upstream.url, response.status_code, decode_json_body(content),
                                           _retry_after(response))
                if response.headers.get("content-type", "").startswith("application/json"):  # did not stream
                    sink.take(parse_completion(decode_json_body(await response.aread()), upstream.url))
                else:
                    await _read_stream(response, upstream, sink, deadline, config.idle_timeout_s)
    except TimeoutError:
        what = (f"went silent for {config.idle_timeout_s:g} s (idle_timeout_s)" if sink.delivered
                else f"sent no answer text within {config.first_token_timeout_s:g} s (first_token_timeout_s)")
        raise UpstreamFailure(UpstreamUnavailableError(f"upstream {upstream.url} {what}"), Retry.FAILED) from None
    except httpx.HTTPError as exc:
        raise _unreachable(upstream, exc) from None
    if sink.finish_reason is None:
        raise UpstreamFailure(UpstreamUnavailableError(
            f"upstream {upstream.url} ended the stream before the answer was complete"), Retry.FAILED)
    sink.finish()


async def _read_stream(response: httpx.Response, upstream: Upstream, sink: AnswerSink,
                       deadline: asyncio.Timeout, idle_timeout_s: float) -> None:
    """Feed server-sent events to ``sink``; once text was delivered, each line moves the deadline on."""
    loop = asyncio.get_running_loop()
    async for line in response.aiter_lines():
        event = parse_event(line, upstream.url)
        if event is not None:
            sink.take(event)
        if sink.delivered:
            deadline.reschedule(loop.time() + idle_timeout_s)
        if sink.done:
            return


def _retry_after(response: httpx.Response) -> int:
    try:
        return max(1, int(response.headers.get("retry-after", "1")))
    except ValueError:
        return 1
