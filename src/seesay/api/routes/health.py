"""Operations endpoints, without authentication: ``/health``, ``/ready``, ``/metrics``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from seesay.api.dependencies import RuntimeDep
from seesay.api.metrics import Metrics
from seesay.api.protocol import HealthStatus

router = APIRouter()


@router.get("/health", response_model_exclude_none=True)
async def health() -> HealthStatus:
    """The process is alive and its event loop answers."""
    return HealthStatus(status="ok")


@router.get("/ready", response_model=HealthStatus,
            responses={503: {"model": HealthStatus, "description": "Starting or draining."}})
async def ready(runtime: RuntimeDep) -> JSONResponse:
    """The model is loaded and the scheduler runs (503 while starting or draining)."""
    ok, detail = runtime.service.readiness()
    body = HealthStatus(status="ready" if ok else "not ready", detail=detail, model=runtime.model_name,
                        queue_depth=runtime.service.queue_depth)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


_PROMETHEUS_TEXT: dict[int | str, dict[str, Any]] = {200: {"description": "The Prometheus text exposition format.",
                          "content": {Metrics.content_type: {"schema": {"type": "string"}}}}}


@router.get("/metrics", response_class=Response, responses=_PROMETHEUS_TEXT)
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus metrics in the text exposition format."""
    return Response(runtime.metrics.render(), media_type=runtime.metrics.content_type)
