"""The LoRA adapters a server serves, as model ids of their own (vLLM's conventions).

Contract:

* Each loaded adapter is a model id whose parent is the served model; a request names it as
  its ``model``. Names are unique and never the served model's own.
* At most ``max_loras`` adapters are served at once, start-up ones included. Loading one more
  unloads the least recently used adapter that no request holds: it stops being served as the
  load starts, and is unloaded once the new one has loaded (so the engine briefly holds one
  more); if the new one fails to load, it is served again as before. When every loaded adapter
  is held, the load is refused with :class:`~seesay.errors.ServerBusyError` (503, Retry-After)
  and nothing changes.
* A request holds a :class:`AdapterLease` on its adapter from admission until its answer is
  complete (:meth:`AdapterLease.keep_until`), so an adapter is never unloaded under a request,
  and the lease carries the adapter's weights fingerprint for the request's cache key. Unloading
  an adapter that requests hold is refused (503) rather than failing them.
* Loads and unloads run one at a time (the engine's blocking calls go to a worker thread), so
  two concurrent loads cannot both pass the ``max_loras`` check. Leases are taken on the event
  loop and released from any thread.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from seesay.engine.adapters import AdapterSource, LoadedAdapter
from seesay.engine.base import Engine
from seesay.errors import AdapterLoadError, ModelNotFoundError, ServerBusyError

log = logging.getLogger(__name__)


class Finishing(Protocol):
    """Something that calls back once it is finished (a scheduler ``Submission``)."""

    def when_done(self, callback: Callable[[], None]) -> None: ...


@dataclass
class _Slot:
    adapter: LoadedAdapter
    loaded_at: int  # ticks of the catalogue's clock: higher is later
    used_at: int
    holders: int = 0


class AdapterLease:
    """A request's hold on its adapter (``adapter`` is ``None`` for the base model).

    Use it as a context manager: on exit the hold is released, unless :meth:`keep_until` handed
    it to a submission, which releases it when the request is finished.
    """

    def __init__(self, catalogue: AdapterCatalogue | None, adapter: LoadedAdapter | None) -> None:
        self.adapter = adapter
        self._catalogue = catalogue
        self._kept = False
        self._released = False

    @property
    def name(self) -> str | None:
        return None if self.adapter is None else self.adapter.name

    @property
    def fingerprint(self) -> str | None:
        return None if self.adapter is None else self.adapter.fingerprint

    def keep_until(self, submission: Finishing) -> None:
        """Hold the adapter until ``submission`` is finished, past this context's exit."""
        self._kept = True
        submission.when_done(self.release)

    def release(self) -> None:
        """Let the adapter go (once; later calls do nothing)."""
        if not self._released and self._catalogue is not None and self.adapter is not None:
            self._catalogue._release(self.adapter.name)
        self._released = True

    def __enter__(self) -> AdapterLease:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if not self._kept:  # once handed over, the submission releases it
            self.release()


class AdapterCatalogue:
    """The adapters loaded into ``engine`` for the served model ``parent`` (see the module docstring).

    Args:
        engine: The engine that holds the adapters' weights.
        parent: The served model's name: every adapter's parent, and a name no adapter may take.
        max_loras: How many adapters may be loaded at once.
    """

    def __init__(self, engine: Engine, parent: str, max_loras: int) -> None:
        if max_loras < 1:
            raise ValueError(f"max_loras must be at least 1, got {max_loras}")
        self.parent = parent
        self.max_loras = max_loras
        self._engine = engine
        self._slots: dict[str, _Slot] = {}
        self._ticks = itertools.count()
        self._lock = threading.Lock()
        self._changing = asyncio.Lock()

    @property
    def adapters(self) -> tuple[LoadedAdapter, ...]:
        """The loaded adapters, in the order they were loaded."""
        with self._lock:
            return tuple(slot.adapter for slot in sorted(self._slots.values(), key=lambda slot: slot.loaded_at))

    def __contains__(self, name: object) -> bool:
        return name in self._slots

    def lease(self, name: str | None) -> AdapterLease:
        """Hold the adapter ``name`` (``None``: the base model, which needs no hold) and mark it used.

        Raises:
            ModelNotFoundError: No adapter of that name is loaded.
        """
        if name is None:
            return AdapterLease(None, None)
        with self._lock:
            slot = self._slots.get(name)
            if slot is None:
                raise ModelNotFoundError(f"the model '{name}' does not exist here; this server serves: "
                                         f"{', '.join([self.parent, *self._slots])}", param="model")
            slot.holders += 1
            slot.used_at = next(self._ticks)
            return AdapterLease(self, slot.adapter)

    async def load(self, source: AdapterSource) -> LoadedAdapter:
        """Load ``source``, first unloading the least recently used idle adapter if ``max_loras`` are loaded.

        Raises:
            AdapterLoadError: The name is taken, or the engine cannot load the adapter (400).
            ServerBusyError: ``max_loras`` adapters are loaded and requests hold every one (503).
        """
        async with self._changing:
            self._check_new(source)
            victim = self._withdraw_least_recently_used()
            try:
                adapter = await asyncio.to_thread(self._engine.load_adapter, source)
            except BaseException:
                if victim is not None:
                    self._restore(victim)
                raise
            if victim is not None:
                log.info("unloading LoRA adapter '%s', the least recently used, for '%s'", victim.adapter.name,
                         source.name)
                await asyncio.to_thread(self._engine.unload_adapter, victim.adapter.name)
            with self._lock:
                now = next(self._ticks)
                self._slots[source.name] = _Slot(adapter, loaded_at=now, used_at=now)
            return adapter

    async def unload(self, name: str) -> None:
        """Unload the adapter ``name``.

        Raises:
            ModelNotFoundError: No adapter of that name is loaded (404).
            ServerBusyError: Requests are being answered with it (503); retry when they are done.
        """
        async with self._changing:
            with self._lock:
                slot = self._slots.get(name)
                if slot is None:
                    raise ModelNotFoundError(f"The lora adapter '{name}' cannot be found.", param="lora_name")
                if slot.holders:
                    raise ServerBusyError(f"the LoRA adapter '{name}' is answering {slot.holders} request(s); "
                                          "unload it once they are done")
            await self._unload(name)

    def _check_new(self, source: AdapterSource) -> None:
        if source.name == self.parent:
            raise AdapterLoadError(f"'{source.name}' is the served model's name; give the adapter another",
                                   param="lora_name")
        if source.name in self._slots:
            raise AdapterLoadError(f"The lora adapter '{source.name}' has already been loaded.", param="lora_name")
        if source.base_model_name not in (None, self.parent):
            raise AdapterLoadError(f"base_model_name '{source.base_model_name}' is not served here; this server "
                                   f"serves '{self.parent}'", param="base_model_name")

    def _withdraw_least_recently_used(self) -> _Slot | None:
        """Stop serving the adapter to unload before one more fits (no request can take it after
        this); ``None`` if there is room.

        Raises:
            ServerBusyError: No room, and requests hold every loaded adapter.
        """
        with self._lock:
            if len(self._slots) < self.max_loras:
                return None
            idle = min((slot for slot in self._slots.values() if not slot.holders), default=None,
                       key=lambda slot: slot.used_at)
            if idle is None:
                raise ServerBusyError(f"all {self.max_loras} adapter slots (max_loras) hold adapters that are "
                                      "answering requests; retry shortly, or unload an adapter, or raise max_loras")
            return self._slots.pop(idle.adapter.name)

    def _restore(self, slot: _Slot) -> None:
        """Serve a withdrawn adapter again, as recently used as it was."""
        with self._lock:
            self._slots[slot.adapter.name] = slot

    async def _unload(self, name: str) -> None:
        with self._lock:
            del self._slots[name]  # first: no new lease can take it while the engine unloads it
        await asyncio.to_thread(self._engine.unload_adapter, name)

    def _release(self, name: str) -> None:
        with self._lock:
            slot = self._slots.get(name)
            if slot is not None:
                slot.holders -= 1
