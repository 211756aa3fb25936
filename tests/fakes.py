"""Test doubles shared by the unit tests.

:class:`FakeEngine` implements the :class:`~seesay.engine.base.Engine` contract without a model:
it answers ``"<n> image(s): <last user text>"`` one word per token (or, for a question listed
in ``scripted``, exactly the deltas given there), generates the rows of a batch in lockstep
(so a batch takes as long as its longest row, as on a real accelerator), streams through the
observer, stops a row when the observer cancels it, and honours ``max_new_tokens`` and
``stop``. A request for a LoRA adapter is answered with the adapter's name first
(``"shop: 0 image(s): ..."``); adapters load from folders that hold the two files of a PEFT
adapter (:func:`fake_adapter_folder` writes one), and requests of different adapters share a
batch unless ``mixed_adapters`` is off. Tests steer it with a few knobs and read back what it
saw. The ASGI and metrics helpers at the end serve the API tests.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from PIL import Image

from seesay.config import Settings
from seesay.engine.adapters import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    AdapterSource,
    LoadedAdapter,
    adapter_fingerprint,
    check_adapter_folder,
)
from seesay.engine.base import Engine, EngineHealth, EngineInfo, GenerationObserver, PreparedRequest
from seesay.errors import ContextLengthExceededError, InvalidRequestError, ModelNotFoundError
from seesay.images import PixelBudget, load_image
from seesay.types import (
    ChatMessage,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
    Timings,
    Usage,
)

IMAGE_TOKENS = 16  # what the fake charges per image
FAIL_PREPARE = "FAIL_PREPARE"  # a prompt containing this is refused by prepare (400)
FAIL_GENERATE = "FAIL_GENERATE"  # a batch containing this prompt makes generate raise


def png_bytes(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (64, 48)) -> bytes:
    """A small solid-colour PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def make_request(
    text: str = "what is this?", *, images: int = 0, adapter: str | None = None, **sampling: object
) -> GenerationRequest:
    """A one-turn request with ``images`` small pictures before the text."""
    pictures = [load_image(png_bytes(), PixelBudget(min_pixels=32 * 32, max_pixels=64 * 64))] * images
    return GenerationRequest(
        (ChatMessage.user(*pictures, text),), SamplingParams(**sampling), adapter=adapter  # type: ignore[arg-type]
    )


def fake_answer(request: GenerationRequest) -> str:
    """The complete answer the fake gives when nothing truncates it."""
    user_turns = [m for m in request.messages if m.role == "user"]
    question = user_turns[-1].text if user_turns else ""
    adapter = [f"{request.adapter}:"] if request.adapter is not None else []
    return " ".join([*adapter, str(len(request.images)), "image(s):", *question.split()])


def fake_adapter_folder(folder: Path, weights: bytes = b"lora weights") -> Path:
    """A folder with the two files of a PEFT LoRA adapter (``weights`` stands for the tensors)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps({"peft_type": "LORA", "r": 8}), encoding="utf-8")
    (folder / WEIGHTS_FILE).write_bytes(weights)
    return folder


class FakeEngine(Engine):
    """A deterministic, model-free engine (see the module docstring).

    Args:
        token_delay_s: Seconds per generation step (one token for every row of the batch).
        prepare_delay_s: Seconds ``prepare`` sleeps, to mimic preprocessing.
        max_model_len: Prompt plus output token limit; longer requests fail in ``prepare``.
        default_max_new_tokens: Output bound when a request sets none.
        scripted: Last user text → the deltas to answer it with, one per token.
        mixed_adapters: Whether requests of different adapters may share a batch.

    Attributes:
        requests: Every request ``prepare`` saw, in order.
        batches: Request ids of every ``generate`` call, in order.
        results: Every result ``generate`` returned, in order.
        gate: Cleared, it holds ``generate`` at its start until set again (at most 10 s).
        pace: When set, every generation step first takes one permit of this semaphore, so a
            test decides exactly how many steps run (``pace.release(n)``).
        lockstep: When set to an event loop, every step waits until that loop has handled the
            text the step before emitted, so a consumer's reaction to it (a cancel) lands before
            the next step, however loaded the machine.
        closed: Whether :meth:`close` was called.
        adapters: The loaded adapters by name.
    """

    def __init__(
        self,
        *,
        token_delay_s: float = 0.0,
        prepare_delay_s: float = 0.0,
        max_model_len: int = 4096,
        default_max_new_tokens: int = 64,
        budget: PixelBudget | None = None,
        scripted: Mapping[str, Sequence[str]] | None = None,
        mixed_adapters: bool = True,
    ) -> None:
        self.mixed_adapters = mixed_adapters
        self.adapters: dict[str, LoadedAdapter] = {}
        self.scripted = dict(scripted or {})
        self.token_delay_s = token_delay_s
        self.prepare_delay_s = prepare_delay_s
        self.max_model_len = max_model_len
        self.default_max_new_tokens = default_max_new_tokens
        self.budget = budget or PixelBudget(min_pixels=32 * 32, max_pixels=256 * 32 * 32)
        self.requests: list[GenerationRequest] = []
        self.batches: list[list[str]] = []
        self.results: list[GenerationResult] = []
        self.gate = threading.Event()
        self.gate.set()
        self.pace: threading.Semaphore | None = None
        self.lockstep: asyncio.AbstractEventLoop | None = None
        self.closed = False

    def prepare(self, request: GenerationRequest) -> PreparedRequest:
        started = time.monotonic()
        self.requests.append(request)
        if self.prepare_delay_s:
            time.sleep(self.prepare_delay_s)
        if any(FAIL_PREPARE in m.text for m in request.messages):
            raise InvalidRequestError("the fake engine refuses this prompt", param="messages")
        image_tokens = IMAGE_TOKENS * len(request.images)
        prompt_tokens = sum(len(m.text.split()) + 2 for m in request.messages) + image_tokens
        max_new = request.sampling.max_new_tokens or self.default_max_new_tokens
        if prompt_tokens + max_new > self.max_model_len:
            raise ContextLengthExceededError(
                f"{prompt_tokens} prompt tokens + {max_new} new tokens exceed {self.max_model_len}"
            )
        return PreparedRequest(
            request, prompt_tokens, image_tokens, max_new, time.monotonic() - started,
            payload=self._deltas(request), batch_group=None if self.mixed_adapters else request.adapter,
        )

    def load_adapter(self, source: AdapterSource) -> LoadedAdapter:
        folder = Path(source.path)
        config = check_adapter_folder(folder)
        adapter = LoadedAdapter(source.name, source.path, adapter_fingerprint(folder),
                                config.get("base_model_name_or_path"))
        self.adapters[source.name] = adapter
        return adapter

    def unload_adapter(self, name: str) -> None:
        if self.adapters.pop(name, None) is None:
            raise ModelNotFoundError(f"the LoRA adapter '{name}' cannot be found", param="lora_name")

    def unpace(self) -> None:
        """Let generation run freely again, also a step already waiting for a permit."""
        pace, self.pace = self.pace, None
        if pace is not None:
            pace.release(10_000)

    def _deltas(self, request: GenerationRequest) -> list[str]:
        user_turns = [m for m in request.messages if m.role == "user"]
        scripted = self.scripted.get(user_turns[-1].text if user_turns else "")
        if scripted is not None:
            return list(scripted)
        words = fake_answer(request).split(" ")
        return [words[0], *(" " + word for word in words[1:])]

    def generate(
        self, batch: Sequence[PreparedRequest], observer: GenerationObserver | None = None
    ) -> list[GenerationResult]:
        self.batches.append([p.request.request_id for p in batch])
        self.gate.wait(timeout=10)
        if any(FAIL_GENERATE in m.text for p in batch for m in p.request.messages):
            raise RuntimeError("the fake engine crashed")
        started = time.monotonic()
        rows = [_Row(p) for p in batch]
        while any(row.finish is None for row in rows):
            if self.pace is not None:
                self.pace.acquire(timeout=10)
            if self.token_delay_s:
                time.sleep(self.token_delay_s)
            for index, row in enumerate(rows):
                if row.finish is None:
                    row.step(index, observer)
            if self.lockstep is not None:
                asyncio.run_coroutine_threadsafe(asyncio.sleep(0), self.lockstep).result(timeout=10)
        results = [row.result(time.monotonic() - started) for row in rows]
        self.results.extend(results)
        return results

    def info(self) -> EngineInfo:
        return EngineInfo("fake", "fake-vl", "cpu", "float32", "none", self.budget, self.max_model_len,
                          fingerprint="fake-vl@0", default_temperature=0.7)

    def health(self) -> EngineHealth:
        return EngineHealth(ok=not self.closed, detail="closed" if self.closed else "")

    def close(self) -> None:
        self.closed = True


class _Row:
    """Generation state of one request inside a fake batch."""

    def __init__(self, prepared: PreparedRequest) -> None:
        self.prepared = prepared
        self.deltas: list[str] = list(prepared.payload)  # type: ignore[call-overload]
        self.emitted: list[str] = []
        self.finish: FinishReason | None = None

    def step(self, index: int, observer: GenerationObserver | None) -> None:
        if observer is not None and observer.is_cancelled(index):
            self.finish = "cancelled"
            return
        if len(self.emitted) >= self.prepared.max_new_tokens:
            self.finish = "length"
            return
        if len(self.emitted) == len(self.deltas):
            self.finish = "stop"
            return
        delta = self.deltas[len(self.emitted)]
        if any(stop in "".join([*self.emitted, delta]) for stop in self.prepared.request.sampling.stop):
            self.finish = "stop"
            return
        self.emitted.append(delta)
        if observer is not None:
            observer.on_text(index, delta)

    def result(self, seconds: float) -> GenerationResult:
        usage = Usage(self.prepared.prompt_tokens, len(self.emitted), self.prepared.image_tokens)
        timings = Timings(self.prepared.preprocess_s, None, seconds)
        return GenerationResult(
            self.prepared.request.request_id, "".join(self.emitted), self.finish or "stop", usage, timings
        )


class FakeClock:
    """Monotonic seconds that move only when a test moves them, for every ``clock`` seesay accepts."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def fake_settings(**overrides: object) -> Settings:
    """Settings for an app served by a :class:`FakeEngine`: no environment or config file is read.

    Image screening is off unless a test turns it on (``safety_image_detector="flag"``): loading
    NudeNet is for the tests about it. The text policy and the response cache keep their defaults.
    """
    return Settings(**{"max_wait_ms": 0, "safety_image_detector": "off", **overrides})  # type: ignore[arg-type]


@asynccontextmanager
async def app_client(app: FastAPI, **client_options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to ``app`` in-process, with the app's lifespan running around it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://seesay.test", **client_options) as client:
            yield client


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


async def let_ready_tasks_run() -> None:
    """Let every task already scheduled run up to its next wait: the event loop runs ready tasks in
    the order they were scheduled, before it comes back to the caller. Orders events, waits for no time."""
    await asyncio.sleep(0)


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def metric(text: str, name: str) -> float:
    """One sample's value from a Prometheus text page (``name`` includes any labels)."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in metrics"
    return float(match.group(1))


async def raw_request(app: FastAPI, body: dict[str, Any], disconnect: asyncio.Event) -> list[dict[str, Any]]:
    """POST /v1/chat/completions at the ASGI level; the client disconnects when ``disconnect`` is set."""
    data = json.dumps(body).encode()
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000), "server": ("seesay.test", 80),
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]}
    body_sent = False
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": data, "more_body": False}
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent
