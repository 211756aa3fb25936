"""The one boundary between seesay and whatever runs the model.

An :class:`Engine` turns :class:`~seesay.types.GenerationRequest` objects into
:class:`~seesay.types.GenerationResult` objects and knows nothing about HTTP, caching or
safety. Work is split in two so one bad request fails alone and CPU-bound preprocessing can
run beside generation:

* :meth:`Engine.prepare` checks and preprocesses one request (tokenise, image tensors,
  context-length check) and raises a :class:`~seesay.errors.SeesayError` if it cannot run;
* :meth:`Engine.generate` runs a batch of prepared requests together and returns one result
  per request, in order. It reports text deltas and honours cancellation through an
  optional :class:`GenerationObserver`, so streaming and batching are the same code path.

Requests batch together only when their :attr:`PreparedRequest.batch_group` is equal; an
engine that samples per row and mixes LoRA adapters in one call leaves it ``None``.

LoRA adapters: :meth:`Engine.load_adapter` and :meth:`Engine.unload_adapter` change the
adapters a request may name (``GenerationRequest.adapter``); engines that serve none refuse
them. Which adapters to keep loaded is the service's choice, not the engine's.

Engines are synchronous and may block for seconds: callers on an event loop run them in
worker threads. ``prepare`` may be called from several threads at once, also while
``generate`` runs; ``generate`` is called by one thread at a time, unless the engine's
:attr:`Engine.concurrent_batches` allows more (an engine whose model batches continuously
elsewhere, such as the remote engine, takes new batches while others are still generating); loading and unloading
adapters may be called while ``generate`` runs, and the engine makes them wait for it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from seesay.engine.adapters import AdapterSource, LoadedAdapter
from seesay.errors import AdapterLoadError, InvalidRequestError, ModelNotFoundError, SeesayError
from seesay.images import PixelBudget
from seesay.types import GenerationRequest, GenerationResult


class GenerationObserver(Protocol):
    """Receives progress for the rows of one ``generate`` call (row = index in the batch)."""

    def on_text(self, row: int, delta: str) -> None:
        """New answer text for ``row``; the deltas of a row concatenate to its final text."""

    def is_cancelled(self, row: int) -> bool:
        """True once the caller no longer wants ``row`` (e.g. the client disconnected)."""


@dataclass(frozen=True)
class PreparedRequest:
    """A request that passed :meth:`Engine.prepare` and can join a batch.

    Attributes:
        request: The original request.
        prompt_tokens: Prompt length in tokens, image tokens included.
        image_tokens: How many of those are image tokens.
        max_new_tokens: The output bound after applying defaults and the context limit.
        preprocess_s: Seconds ``prepare`` took.
        payload: Engine-specific inputs (tensors for a local engine); opaque to callers.
        batch_group: Requests share a batch only when this is equal (see the module docstring).
    """

    request: GenerationRequest
    prompt_tokens: int
    image_tokens: int
    max_new_tokens: int
    preprocess_s: float = 0.0
    payload: object = field(default=None, repr=False, compare=False)
    batch_group: Hashable = None


@dataclass(frozen=True)
class EngineInfo:
    """What ``seesay info`` and ``/v1/models`` report about a loaded engine.

    ``fingerprint`` changes whenever the weights or an output-shaping default change (response
    caches key on it); ``default_temperature`` is what a request without one samples with.
    """

    engine: str
    model: str
    device: str
    dtype: str
    attention: str
    pixel_budget: PixelBudget
    max_model_len: int
    fingerprint: str
    default_temperature: float
    parameters: int | None = None


@dataclass(frozen=True)
class EngineHealth:
    """Liveness of the engine; ``detail`` explains a failure."""

    ok: bool
    detail: str = ""


class Engine(ABC):
    """Runs a vision-language model. See the module docstring for the contract."""

    concurrent_batches: int = 1
    """How many ``generate``/``generate_rows`` calls the scheduler may run at once (from different threads)."""

    @abstractmethod
    def prepare(self, request: GenerationRequest) -> PreparedRequest:
        """Validate and preprocess one request; raise ``SeesayError`` if it cannot run."""

    @abstractmethod
    def generate(
        self, batch: Sequence[PreparedRequest], observer: GenerationObserver | None = None
    ) -> list[GenerationResult]:
        """Answer every prepared request in ``batch``; ``len(result) == len(batch)``."""

    def generate_rows(
        self, batch: Sequence[PreparedRequest], observer: GenerationObserver | None = None
    ) -> list[GenerationResult | SeesayError]:
        """Like :meth:`generate`, but a row that fails alone is its error and the others still answer.

        The scheduler calls this. Engines whose rows can fail one by one (the remote engine: one
        upstream call per row) override it; by default a failure fails the whole batch.
        """
        return list(self.generate(batch, observer))

    @abstractmethod
    def info(self) -> EngineInfo:
        """Describe the loaded model and how it runs."""

    def load_adapter(self, source: AdapterSource) -> LoadedAdapter:
        """Load a LoRA adapter under ``source.name``.

        Raises:
            AdapterLoadError: It cannot be loaded (the message says why and how to fix it).
        """
        raise AdapterLoadError(f"the {self.info().engine} engine does not serve LoRA adapters; serve "
                               f"'{source.name}' with the transformers engine", param="lora_path")

    def unload_adapter(self, name: str) -> None:
        """Unload the LoRA adapter ``name``.

        Raises:
            ModelNotFoundError: No adapter of that name is loaded.
        """
        raise ModelNotFoundError(f"the LoRA adapter '{name}' cannot be found", param="lora_name")

    def health(self) -> EngineHealth:
        """Whether the engine can serve; engines with remote parts override this."""
        return EngineHealth(ok=True)

    def close(self) -> None:  # noqa: B027 - optional hook, most engines hold nothing to release
        """Release the model and any resources; the engine is unusable afterwards."""


def request_budget(server: PixelBudget, asked: PixelBudget | None) -> PixelBudget:
    """The pixel budget a request runs under: its own, if it fits inside the server's, else an error.

    Raises:
        InvalidRequestError: ``asked`` has another factor, or more pixels than the server allows.
    """
    if asked is None:
        return server
    if asked.factor != server.factor:
        raise InvalidRequestError(f"pixel budget factor must be {server.factor} for this model, "
                                  f"got {asked.factor}", param="pixel_budget")
    if asked.max_pixels > server.max_pixels:
        raise InvalidRequestError(
            f"max_pixels {asked.max_pixels} is above this server's limit of {server.max_pixels}; "
            "ask for fewer pixels", param="max_pixels")
    return asked
