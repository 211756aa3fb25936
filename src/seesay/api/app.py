"""The app factory: :func:`build_app` wires settings, safety gate, engine, service, routes and middleware.

Nothing is created at import time. The lifespan loads the safety gate first (unless one is
passed in: a screen that cannot load stops the start-up with a message saying how to fix it,
before a model is loaded for nothing), then the engine (unless one is passed in), and starts
the service: scheduler and response cache (:func:`seesay.service.running_service`). On
shutdown it drains the scheduler, closes the cache and the URL fetcher, and closes the engine
and the gate it loaded, all from one exit stack, so a failed start-up releases what it took.
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
from seesay.api.image_urls import UrlImageFetcher
from seesay.api.intake import RequestIntake
from seesay.api.metrics import Metrics
from seesay.api.middleware import BodySizeLimit, RequestTelemetry
from seesay.api.routes import admin, chat, health, models, vqa
from seesay.config import Settings
from seesay.engine.base import Engine
from seesay.engine.registry import create_engine
from seesay.images import ImageLimits
from seesay.safety import SafetyGate
from seesay.service import AnswerService, running_service


def url_fetcher(settings: Settings) -> UrlImageFetcher | None:
    """The http(s) image fetcher, when the settings enable URL images."""
    if not settings.allow_url_images:
        return None
    return UrlImageFetcher(settings.url_allowlist, max_bytes=settings.max_image_bytes,
                           timeout_s=settings.url_timeout_s, max_redirects=settings.url_max_redirects)


def request_intake(settings: Settings, service: AnswerService, name: str,
                   fetcher: UrlImageFetcher | None) -> RequestIntake:
    limits = ImageLimits(max_bytes=settings.max_image_bytes, max_source_pixels=settings.max_image_source_pixels)
    return RequestIntake([name], service.info.pixel_budget, limits, settings.max_images_per_request, fetcher)


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
    auth = ApiKeyAuth(settings.all_api_keys(), settings.rate_limit_per_minute)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if gate is not None:
                gate.observer = metrics.safety
            screens = gate or stack.enter_context(closing(await asyncio.to_thread(
                SafetyGate.from_config, settings.safety_config(), observer=metrics.safety)))
            served = engine or stack.enter_context(closing(await asyncio.to_thread(
                create_engine, settings.engine, settings.engine_config())))
            service = await stack.enter_async_context(running_service(
                served, settings, screens, scheduler_observer=metrics, cache_observer=metrics.cache))
            metrics.watch(service)
            fetcher = url_fetcher(settings)
            if fetcher is not None:
                stack.push_async_callback(fetcher.aclose)
            name = settings.served_model_name or service.info.model
            intake = request_intake(settings, service, name, fetcher)
            app.state.runtime = Runtime(settings, service, intake, auth, metrics, name, int(time.time()))
            yield

    app = FastAPI(title="seesay", version=__version__, lifespan=lifespan,
                  description="Visual question answering with Qwen3-VL, OpenAI-compatible.")
    install_error_handlers(app, debug=settings.debug)
    routers = [module.router for module in (chat, vqa, models, health, admin)]
    for router in routers:
        app.include_router(router)
    paths = {getattr(route, "path", "") for router in routers for route in router.routes}
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(RequestTelemetry, metrics=metrics, routes=paths, debug=settings.debug)
    return app
