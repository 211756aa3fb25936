"""Engines by name: ``create_engine("transformers", config)``.

Each engine module registers its factory with :func:`register_engine`; nothing heavy is
imported until an engine of that kind is created.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from seesay.engine.base import Engine

EngineFactory = Callable[[Any], Engine]

_FACTORIES: dict[str, EngineFactory] = {}
# Engine name → module that registers it on import (keeps torch out until it is needed).
_MODULES = {"transformers": "seesay.engine.transformers", "remote": "seesay.engine.remote"}


def register_engine(name: str) -> Callable[[EngineFactory], EngineFactory]:
    """Decorator: make ``factory(config) -> Engine`` available under ``name``."""

    def decorate(factory: EngineFactory) -> EngineFactory:
        _FACTORIES[name] = factory
        return factory

    return decorate


def engine_names() -> list[str]:
    return sorted(set(_FACTORIES) | set(_MODULES))


def create_engine(name: str, config: Any) -> Engine:
    """Build the engine registered as ``name`` from its config object."""
    if name not in _FACTORIES and name in _MODULES:
        importlib.import_module(_MODULES[name])
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ValueError(f"unknown engine '{name}'; choose one of: {', '.join(engine_names())}") from None
    return factory(config)
