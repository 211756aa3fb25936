"""The app factory: :func:`build_app` wires settings, engine, scheduler, routes and middleware.

Nothing is created at import time. The lifespan loads the engine (unless one is passed in),
starts the scheduler, and on shutdown drains the scheduler, closes the URL fetcher and
closes the engine it loaded, in ``finally``, so a failed start-up releases what it took.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from seesay import __version__
from seesay.api.auth import ApiKeyAuth
from seesay.api.dependencies import Runtime
from seesay.api.errors import install_error_handlers
from seesay.api.image_urls import UrlImageFetcher
from seesay.api.intake import RequestIntake
from seesay.api.metrics import Metrics
from seesay.api.middleware import BodySizeLimit, RequestTelemetry
from seesay.api.routes import chat, health, models, vqa
from seesay.config import Settings
from seesay.engine.base import Engine
from seesay.engine.registry import create_engine
from seesay.images import ImageLimits
from seesay.scheduler import Scheduler, SchedulerLimits
from seesay.service import AnswerService


def scheduler_limits(settings: Settings) -> SchedulerLimits:
    return SchedulerLimits(
        max_batch_size=settings.max_batch_size,
        max_wait_s=settings.max_wait_ms / 1000,
        max_queue=settings.max_queue,
        queue_timeout_s=settings.queue_timeout_s,
    )


def url_fetcher(settings: Settings) -> UrlImageFetcher | None:
    """The http(s) image fetcher, when the settings enable URL images."""
    if not settings.allow_url_images:
        return None
    return UrlImageFetcher(settings.url_allowlist, max_bytes=settings.max_image_bytes,
                           timeout_s=settings.url_timeout_s, max_redirects=settings.url_max_redirects)


def build_app(settings: Settings, engine: Engine | None = None) -> FastAPI:
    """The seesay HTTP application.

    Args:
        settings: Service settings.
        engine: An engine to serve with (tests, benchmarks); the caller keeps ownership and
            closes it. ``None`` loads the engine the settings name, when the app starts.
    """
    metrics = Metrics()
    auth = ApiKeyAuth(settings.all_api_keys(), settings.rate_limit_per_minute)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        served = engine if engine is not None else await asyncio.to_thread(
            create_engine, settings.engine, settings.engine_config()
        )
        scheduler = Scheduler(served, scheduler_limits(settings), observer=metrics)
        fetcher = url_fetcher(settings)
        try:
            await scheduler.start()
            metrics.watch(scheduler)
            service = AnswerService(scheduler)
            name = settings.served_model_name or service.info.model
            limits = ImageLimits(max_bytes=settings.max_image_bytes,
                                 max_source_pixels=settings.max_image_source_pixels)
            intake = RequestIntake([name], service.info.pixel_budget, limits, settings.max_images_per_request,
                                   fetcher)
            app.state.runtime = Runtime(settings, service, intake, auth, metrics, name, int(time.time()))
            yield
        finally:
            await scheduler.stop(settings.drain_timeout_s)
            if fetcher is not None:
                await fetcher.aclose()
            if engine is None:
                served.close()

    app = FastAPI(title="seesay", version=__version__, lifespan=lifespan,
                  description="Visual question answering with Qwen3-VL, OpenAI-compatible.")
    install_error_handlers(app, debug=settings.debug)
    routers = [module.router for module in (chat, vqa, models, health)]
    for router in routers:
        app.include_router(router)
    paths = {getattr(route, "path", "") for router in routers for route in router.routes}
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(RequestTelemetry, metrics=metrics, routes=paths, debug=settings.debug)
    return app
