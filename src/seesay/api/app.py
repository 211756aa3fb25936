"""The app factory: :func:`build_app` wires settings, safety gate, engine, service, routes and middleware.

Nothing is created at import time. The lifespan loads the safety gate first (unless one is
passed in: a screen that cannot load stops the start-up with a message saying how to fix it,
before a model is loaded for nothing), then the engine (unless one is passed in), and starts
the service (:func:`seesay.service.running_service`). On shutdown it stops the service, then
closes the engine and the gate it loaded, all from one exit stack, so a failed start-up
releases what it took.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, closing

from fastapi import FastAPI

from seesay import __version__
from seesay.api.auth import ApiKeyAuth
from seesay.api.dependencies import Runtime
from seesay.api.errors import install_error_handlers
from seesay.api.metrics import Metrics
from seesay.api.middleware import BodySizeLimit, FormTextCheck, RequestTelemetry
from seesay.api.openapi import install_openapi
from seesay.api.rate_limit import RateLimit, SharedLimitConfig
from seesay.api.routes import admin, chat, health, limits, models, vqa, web
from seesay.cache import BreakerConfig
from seesay.config import Settings
from seesay.engine.base import Engine
from seesay.engine.registry import create_engine
from seesay.safety import SafetyGate
from seesay.service import running_service


def build_app(settings: Settings, engine: Engine | None = None, *, gate: SafetyGate | None = None) -> FastAPI:
    """The seesay HTTP application.

    Args:
        settings: Service settings.
        engine: An engine to serve with (tests, benchmarks); the caller keeps ownership and
            closes it. ``None`` loads the engine the settings name, when the app starts.
        gate: A loaded safety gate (``seesay serve`` loads it before anything else); the
            caller keeps ownership, and its blocks and check times are counted in this app's
            metrics. ``None`` loads the screens the settings name, when the app starts.
    """
    metrics = Metrics()
    keys = settings.all_api_keys()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            rate_limit = build_rate_limit(settings)
            if rate_limit is not None:
                stack.push_async_callback(rate_limit.close)
            auth = ApiKeyAuth(keys, rate_limit)
            if gate is not None:
                gate.observer = metrics.safety
            screens = gate or stack.enter_context(closing(await asyncio.to_thread(
                SafetyGate.from_config, settings.safety_config(), observer=metrics.safety)))
            served = engine or stack.enter_context(closing(await asyncio.to_thread(
                create_engine, settings.engine, settings.engine_config())))
            service = await stack.enter_async_context(running_service(
                served, settings, screens, scheduler_observer=metrics))
            metrics.watch(service)
            app.state.runtime = Runtime(settings, service, auth, metrics, service.model_names[0], int(time.time()))
            yield

    app = FastAPI(title="seesay", version=__version__, lifespan=lifespan,
                  description="Visual question answering with Qwen3-VL, OpenAI-compatible.")
    install_error_handlers(app, debug=settings.debug)
    install_openapi(app, settings)
    routers = [module.router for module in (chat, vqa, models, limits, health, admin)]
    if settings.allow_runtime_lora_updating:
        routers.append(models.updates_router)
    if settings.web_page:
        routers.append(web.router)
    for router in routers:
        app.include_router(router)
    if settings.web_page:
        web.mount_static(app)
    paths = {getattr(route, "path", "") for router in routers for route in router.routes}
    app.add_middleware(FormTextCheck)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(RequestTelemetry, metrics=metrics, routes=paths, debug=settings.debug)
    return app


def build_rate_limit(settings: Settings) -> RateLimit | None:
    """The per-key limit these settings ask for, shared through ``redis_url`` when it is set; ``None``: no limit."""
    if settings.rate_limit_per_minute == 0:
        return None
    shared = None
    if settings.redis_url is not None:
        shared = SharedLimitConfig(settings.redis_url, settings.redis_namespace, settings.redis_timeout_ms / 1000,
                                   BreakerConfig(settings.redis_failure_threshold, settings.redis_cooldown_s))
    return RateLimit(settings.rate_limit_per_minute, shared)
