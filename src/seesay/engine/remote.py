"""The remote engine: the model runs on OpenAI-compatible upstreams (vLLM, SGLang, LMDeploy, another seesay).

Contract (see :mod:`seesay.engine.base`): ``prepare`` builds each request's chat-completions body
(:mod:`seesay.engine.openai_wire`: pictures as lossless PNG ``data:`` URLs of seesay's
normalised pixels) and refuses what it can tell will not fit. It cannot tokenize: a prepared
request's ``prompt_tokens`` counts only the image tokens (exact for the Qwen-VL family: one per
``factor`` × ``factor`` pixels), and the context check is that lower bound plus ``max_tokens``;
the upstream checks the rest (its 400 becomes the caller's). The usage in every result is the
upstream's, from the stream's final usage chunk; an upstream that sends none is counted as one
token per text chunk plus seesay's image tokens.

``generate`` sends every row of the batch at once (the upstream batches continuously), each
streamed, on the engine's own event loop thread: text reaches the observer as it arrives, cut at
the request's stop strings as the transformers engine does (the upstream applies them too;
seesay holds back any text that could still begin one), and a cancelled row closes its
connection, which makes the upstream stop generating it. Rows fail alone
(:meth:`RemoteEngine.generate_rows`).

Resilience (:mod:`seesay.engine.upstreams`): each row goes to the upstream with the fewest
requests in flight whose circuit breaker allows it. The scheduler may hand the engine several
batches at once (``concurrent_batches``), so a slow answer holds up no other, and a slow upstream,
whose requests stay in flight longer, is chosen less often. A connection failure, a 5xx, a malformed
stream or a time-out (connect, first text, silence between chunks) counts against the upstream's
breaker; a busy upstream (429/503) does not. Either way the row is retried on another upstream,
after a short back-off, but only while no text of it has reached the observer; a row whose answer
had begun fails with a 503 that names the upstream. A request the upstream refuses (4xx) is never
retried. When no upstream can take a row the caller gets a 503 that lists each upstream's state.

LoRA adapters are the upstreams' (vLLM serves each as a model id, ``--lora-modules NAME=PATH``):
:meth:`RemoteEngine.load_adapter` serves the upstream model ``source.path`` under the name
``source.name`` once every reachable upstream lists it, and a request for that name is sent with
the upstream's model id. Its fingerprint is taken from the upstream's model card (id, root,
parent), so an adapter served from another path upstream never replays old answers.

Start-up asks every upstream's ``/v1/models``: an upstream that answers without the configured
model fails start-up (a misconfiguration); one that cannot be reached starts with its breaker
open, unless none can be reached, which fails start-up. A background task probes every upstream
the same way each ``health_interval_s``; :meth:`RemoteEngine.health` is false when no upstream's
breaker is closed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from seesay.cache.breaker import BreakerConfig
from seesay.engine.adapters import AdapterSource, LoadedAdapter
from seesay.engine.base import Engine, EngineHealth, EngineInfo, GenerationObserver, PreparedRequest, request_budget
from seesay.engine.config import RemoteEngineConfig
from seesay.engine.fingerprint import engine_fingerprint
from seesay.engine.openai_wire import Retry, StreamEvent, UpstreamFailure, chat_body
from seesay.engine.registry import register_engine
from seesay.engine.remote_calls import list_models, stream_answer, upstream_client
from seesay.engine.stops import StopText
from seesay.engine.upstreams import Upstream, UpstreamPool, make_upstream
from seesay.errors import (
    AdapterLoadError,
    ContextLengthExceededError,
    InvalidRequestError,
    ModelLoadError,
    ModelNotFoundError,
    SeesayError,
    UpstreamUnavailableError,
)
from seesay.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, PixelBudget
from seesay.types import FinishReason, GenerationRequest, GenerationResult, Timings, Usage

log = logging.getLogger(__name__)

T = TypeVar("T")
# What a request that leaves temperature unset samples with, as far as seesay can know: the Qwen3-VL
# Instruct model card's. Only whether it is above 0 matters (the cache stores only deterministic answers).
UPSTREAM_DEFAULT_TEMPERATURE = 0.7
CANCEL_POLL_S = 0.05  # how often a row whose stream is quiet checks whether its caller went away


@dataclass(frozen=True)
class RemoteRequest:
    """A prepared request's payload: the body to send."""

    body: dict[str, Any] = field(repr=False)


@dataclass
class _Row:
    """One row's answer as it streams in: what reached the observer, and how it ended."""

    row: int
    observer: GenerationObserver | None
    answer: StopText
    started: float
    finish_reason: FinishReason | None = None
    usage: tuple[int, int] | None = None
    chunks: int = 0
    first_text_at: float | None = None
    done: bool = False

    @property
    def delivered(self) -> bool:
        """Whether any text reached the observer (after which the row is never retried)."""
        return self.answer.emitted > 0

    def take(self, event: StreamEvent) -> None:
        """Apply one stream event; set ``done`` when nothing more is wanted from the stream."""
        if event.text and self.finish_reason is None:
            self.chunks += 1
            self._emit(self.answer.add(event.text))
            if self.answer.stopped:
                self.finish_reason = "stop"
        if event.finish_reason is not None and self.finish_reason is None:
            self.finish_reason = event.finish_reason
        if event.usage is not None:
            self.usage = event.usage
        self.done = event.done or self.answer.stopped or self.is_cancelled()

    def is_cancelled(self) -> bool:
        if self.observer is not None and self.finish_reason is None and self.observer.is_cancelled(self.row):
            self.finish_reason = "cancelled"
        return self.finish_reason == "cancelled"

    def finish(self) -> None:
        self._emit(self.answer.finish())

    def _emit(self, delta: str) -> None:
        if delta:
            if self.first_text_at is None:
                self.first_text_at = time.perf_counter()
            if self.observer is not None:
                self.observer.on_text(self.row, delta)


class RemoteEngine(Engine):
    """Answers through OpenAI-compatible upstreams (see module docstring).

    Args:
        config: Upstreams, limits and time-outs.
        transport: An httpx transport for every upstream client (tests pass ``httpx.MockTransport``).
        clock: Monotonic seconds for the circuit breakers (tests pass a fake clock).
        sleep: Waits the retry back-off (tests pass one that returns at once).
    """

    def __init__(self, config: RemoteEngineConfig, *, transport: Any = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.config = config
        self.concurrent_batches = config.concurrent_batches
        self.pixel_budget = PixelBudget(config.min_pixels or DEFAULT_MIN_PIXELS,
                                        config.max_pixels or DEFAULT_MAX_PIXELS, config.pixel_factor)
        self._sleep = sleep
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="seesay-remote", daemon=True)
        self._thread.start()
        self._health_task: asyncio.Task[None] | None = None
        try:
            self._pool, cards = self._call(self._start(transport, clock))
        except BaseException:
            self._stop_loop()
            raise
        self._fingerprint = self._make_fingerprint(cards)
        self._adapters: dict[str, LoadedAdapter] = {}

    # -- Engine API -------------------------------------------------------------------------

    def prepare(self, request: GenerationRequest) -> PreparedRequest:
        started = time.perf_counter()
        model = self._upstream_model(request.adapter)
        if not request.messages:
            raise InvalidRequestError("messages must not be empty", param="messages")
        budget = request_budget(self.pixel_budget, request.pixel_budget)
        image_tokens = sum(budget.image_tokens(*picture.size) for picture in request.images)
        max_tokens = self._max_tokens(request, image_tokens)
        body = chat_body(request, model, max_tokens)
        return PreparedRequest(request, image_tokens, image_tokens, max_tokens, time.perf_counter() - started,
                               RemoteRequest(body))

    def generate(self, batch: Sequence[PreparedRequest],
                 observer: GenerationObserver | None = None) -> list[GenerationResult]:
        results = []
        for outcome in self.generate_rows(batch, observer):
            if isinstance(outcome, SeesayError):
                raise outcome
            results.append(outcome)
        return results

    def generate_rows(self, batch: Sequence[PreparedRequest],
                      observer: GenerationObserver | None = None) -> list[GenerationResult | SeesayError]:
        return self._call(self._answer_all(batch, observer))

    def load_adapter(self, source: AdapterSource) -> LoadedAdapter:
        """Serve the upstreams' LoRA model ``source.path`` as ``source.name`` (see the module docstring).

        Raises:
            AdapterLoadError: It is already loaded, or a reachable upstream does not serve it.
        """
        if source.name in self._adapters:
            raise AdapterLoadError(f"the LoRA adapter '{source.name}' is already loaded", param="lora_name")
        card = self._call(self._adapter_card(source.path))
        identity = {key: card.get(key) for key in ("id", "root", "parent")}
        fingerprint = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        loaded = LoadedAdapter(source.name, source.path, fingerprint, card.get("parent"))
        self._adapters[source.name] = loaded
        return loaded

    def unload_adapter(self, name: str) -> None:
        if self._adapters.pop(name, None) is None:
            raise ModelNotFoundError(f"the LoRA adapter '{name}' cannot be found; loaded: "
                                     f"{', '.join(self._adapters) or 'none'}", param="lora_name")

    def info(self) -> EngineInfo:
        return EngineInfo(
            engine="remote",
            model=self.config.model_name,
            device=", ".join(u.url for u in self._pool.upstreams),
            dtype="upstream's",
            attention="upstream's",
            pixel_budget=self.pixel_budget,
            max_model_len=self.config.max_model_len,
            fingerprint=self._fingerprint,
            default_temperature=UPSTREAM_DEFAULT_TEMPERATURE,
        )

    def health(self) -> EngineHealth:
        detail = self._call(self._describe())
        ok = self._call(self._available())
        return EngineHealth(ok, "upstreams: " + detail if ok else "no upstream is available: " + detail)

    def check_upstreams(self) -> None:
        """Probe every upstream now, as the periodic health check does."""
        self._call(self._probe_all())

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._call(self._shutdown())
        self._stop_loop()

    # -- start-up, health and shutdown (on the engine's loop) --------------------------------

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _start(self, transport: Any, clock: Callable[[], float]) -> tuple[UpstreamPool, list[dict[str, Any]]]:
        breaker = BreakerConfig(self.config.failure_threshold, self.config.cooldown_s)
        upstreams = [make_upstream(url, upstream_client(url, self.config, transport), breaker, clock)
                     for url in self.config.upstreams]
        pool = UpstreamPool(upstreams)
        try:
            cards = await asyncio.gather(*(self._first_probe(u) for u in upstreams))
            if not any(card is not None for card in cards):
                raise ModelLoadError(f"no remote upstream can be reached: {pool.describe()}; start them or fix "
                                     "remote_upstreams (SEESAY_REMOTE_UPSTREAMS)")
        except BaseException:
            await asyncio.gather(*(u.client.aclose() for u in upstreams))
            raise
        self._health_task = asyncio.get_running_loop().create_task(self._probe_forever(pool))
        return pool, [card for card in cards if card is not None]

    async def _first_probe(self, upstream: Upstream) -> dict[str, Any] | None:
        """The upstream's model card for the configured model; ``None`` (breaker opened) if unreachable."""
        model = self.config.served_upstream_model
        try:
            cards = await list_models(upstream, self.config.connect_timeout_s + self.config.idle_timeout_s)
        except UpstreamFailure as failure:
            log.warning("remote upstream %s is down at start-up: %s", upstream.url, failure.error.message)
            upstream.mark_down(failure.error.message)
            return None
        if model not in cards:
            raise ModelLoadError(
                f"upstream {upstream.url} does not serve the model '{model}' (it serves: "
                f"{', '.join(sorted(cards)) or 'none'}); set remote_model (SEESAY_REMOTE_MODEL) to the name the "
                "upstream serves, or start it with that name (vLLM: --served-model-name)")
        return cards[model]

    async def _probe_forever(self, pool: UpstreamPool) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval_s)
            await self._probe_all(pool)

    async def _probe_all(self, pool: UpstreamPool | None = None) -> None:
        await asyncio.gather(*(self._probe(u) for u in (pool or self._pool).upstreams))

    async def _probe(self, upstream: Upstream) -> None:
        if not upstream.breaker.allow():  # open and cooling down, or a probe already in flight
            return
        model = self.config.served_upstream_model
        try:
            cards = await list_models(upstream, self.config.connect_timeout_s + self.config.idle_timeout_s)
        except UpstreamFailure as failure:
            upstream.failed(failure.error.message)
            return
        if model in cards:
            upstream.succeeded()
        else:
            upstream.failed(f"it no longer serves the model '{model}'")

    async def _describe(self) -> str:
        return self._pool.describe()

    async def _available(self) -> bool:
        return self._pool.any_available()

    async def _shutdown(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
        await asyncio.gather(*(u.client.aclose() for u in self._pool.upstreams))

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _make_fingerprint(self, cards: list[dict[str, Any]]) -> str:
        weights = {"upstream_model": self.config.served_upstream_model,
                   "roots": ",".join(sorted({str(card.get("root") or card.get("id")) for card in cards}))}
        defaults = {"default_max_new_tokens": self.config.default_max_new_tokens,
                    "max_model_len": self.config.max_model_len, "pixel_budget": str(self.pixel_budget)}
        return engine_fingerprint(self.config.model_name, weights, defaults)

    async def _adapter_card(self, upstream_name: str) -> dict[str, Any]:
        """The model card every reachable upstream gives for ``upstream_name``."""
        timeout = self.config.connect_timeout_s + self.config.idle_timeout_s
        upstreams = self._pool.upstreams
        listed = await asyncio.gather(*(list_models(u, timeout) for u in upstreams), return_exceptions=True)
        reached = [(u, cards) for u, cards in zip(upstreams, listed, strict=True) if isinstance(cards, dict)]
        if not reached:
            raise AdapterLoadError(f"no upstream can be reached to check that it serves the LoRA adapter "
                                   f"'{upstream_name}': {self._pool.describe()}", param="lora_path")
        missing = [u.url for u, cards in reached if upstream_name not in cards]
        if missing:
            raise AdapterLoadError(
                f"upstream(s) {', '.join(missing)} do not serve the LoRA adapter '{upstream_name}'; start them with "
                f"it (vLLM: --lora-modules {upstream_name}=PATH, or its /v1/load_lora_adapter), then load it here "
                "under the upstream's name as path", param="lora_path")
        return reached[0][1][upstream_name]

    def _upstream_model(self, adapter: str | None) -> str:
        """The upstream model id a request names: the served model's, or its adapter's."""
        if adapter is None:
            return self.config.served_upstream_model
        loaded = self._adapters.get(adapter)
        if loaded is None:
            raise ModelNotFoundError(f"the LoRA adapter '{adapter}' is not loaded", param="model")
        return loaded.path

    # -- answering ----------------------------------------------------------------------------

    def _max_tokens(self, request: GenerationRequest, image_tokens: int) -> int:
        asked = request.sampling.max_new_tokens
        if asked is not None and asked < 1:
            raise InvalidRequestError(f"max_new_tokens must be at least 1, got {asked}", param="max_tokens")
        wanted = asked if asked is not None else self.config.default_max_new_tokens
        limit = self.config.max_model_len
        if image_tokens + wanted > limit:
            raise ContextLengthExceededError(
                f"this request needs at least {image_tokens} prompt tokens for {len(request.images)} image(s) "
                f"plus {wanted} output tokens, over the context limit of {limit}; send fewer images, a smaller "
                "pixel budget (max_pixels) or a smaller max_tokens", param="messages")
        return wanted

    async def _answer_all(self, batch: Sequence[PreparedRequest],
                          observer: GenerationObserver | None) -> list[GenerationResult | SeesayError]:
        return list(await asyncio.gather(*(self._answer(row, p, observer) for row, p in enumerate(batch))))

    async def _answer(self, row: int, prepared: PreparedRequest,
                      observer: GenerationObserver | None) -> GenerationResult | SeesayError:
        """One row: upstream by upstream until one answers, or its error (see module docstring)."""
        tried: list[Upstream] = []
        last: UpstreamFailure | None = None
        for attempt in range(self.config.max_attempts):
            if attempt:
                await self._sleep(self.config.retry_backoff_s * 2 ** (attempt - 1))
            upstream = self._pool.choose(tried)
            if upstream is None:
                break
            tried.append(upstream)
            state = _Row(row, observer, StopText(prepared.request.sampling.stop), time.perf_counter())
            try:
                await self._attempt(upstream, prepared, state)
                return _result(prepared, state)
            except UpstreamFailure as failure:
                if failure.retry is Retry.NO or state.delivered:
                    return _after_text(failure, upstream) if state.delivered else failure.error
                last = failure
        return self._nobody_answered(tried, last)

    async def _attempt(self, upstream: Upstream, prepared: PreparedRequest, state: _Row) -> None:
        """Stream one row from ``upstream``, reporting the outcome to its breaker."""
        try:
            with upstream.track():
                finished = await _unless_cancelled(stream_answer(upstream, _payload(prepared).body, state, self.config),
                                                   state)
        except UpstreamFailure as failure:
            if failure.retry is Retry.FAILED:
                upstream.failed(failure.error.message)
            else:
                upstream.succeeded()  # it answered: the request, or its load, was the problem
            raise
        except BaseException:
            upstream.breaker.record_abandoned()
            raise
        if finished:
            upstream.succeeded()
        else:
            upstream.breaker.record_abandoned()

    def _nobody_answered(self, tried: list[Upstream], last: UpstreamFailure | None) -> SeesayError:
        retry_after = max(1, math.ceil(self.config.cooldown_s))
        if last is None:
            return UpstreamUnavailableError(f"no upstream can take the request now: {self._pool.describe()}; "
                                            "retry later", retry_after=retry_after)
        if last.retry is Retry.ELSEWHERE:
            return last.error
        return UpstreamUnavailableError(
            f"no upstream could answer ({len(tried)} tried); the last failure: {last.error.message}. "
            f"Upstreams: {self._pool.describe()}", retry_after=retry_after)


async def _unless_cancelled(work: Coroutine[Any, Any, None], state: _Row) -> bool:
    """Run ``work`` until it ends (True) or the row's caller goes away first (False: the connection is closed,
    which makes the upstream stop). Chunks are checked as they arrive; this also covers the wait for the first."""
    task = asyncio.ensure_future(work)
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=CANCEL_POLL_S)
            if not task.done() and state.is_cancelled():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return False
        task.result()
        return True
    finally:
        task.cancel()


def _after_text(failure: UpstreamFailure, upstream: Upstream) -> SeesayError:
    return UpstreamUnavailableError(f"upstream {upstream.url} failed after the answer had begun, so it cannot be "
                                    f"retried elsewhere: {failure.error.message}; ask again")


def _payload(prepared: PreparedRequest) -> RemoteRequest:
    if not isinstance(prepared.payload, RemoteRequest):
        raise TypeError("this request was prepared by another engine")
    return prepared.payload


def _result(prepared: PreparedRequest, state: _Row) -> GenerationResult:
    now = time.perf_counter()
    prompt, completion = state.usage if state.usage is not None else (prepared.prompt_tokens, state.chunks)
    return GenerationResult(
        request_id=prepared.request.request_id,
        text=state.answer.text,
        finish_reason=state.finish_reason or "length",
        usage=Usage(prompt, completion, prepared.image_tokens),
        timings=Timings(preprocess_s=prepared.preprocess_s,
                        first_token_s=None if state.first_text_at is None else state.first_text_at - state.started,
                        generate_s=now - state.started),
    )


@register_engine("remote")
def create_remote_engine(config: RemoteEngineConfig) -> RemoteEngine:
    return RemoteEngine(config)
