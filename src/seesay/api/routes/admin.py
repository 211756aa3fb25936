"""Operator endpoints for the response cache, behind the API keys when keys are configured.

``GET /admin/cache`` reports this replica's cache counters and the answers held in Redis;
``POST /admin/cache/clear`` empties this replica's L1 and the shared Redis tier. ``seesay cache
stats`` and ``seesay cache clear`` call them (see :mod:`seesay.cache.commands`).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from seesay.api.dependencies import RuntimeDep, require_caller
from seesay.api.openapi import error_responses
from seesay.api.protocol import CacheClearResponse, CacheStatsResponse

router = APIRouter(prefix="/admin", dependencies=[Depends(require_caller)])

_ERRORS = error_responses(401, 429, 503)


@router.get("/cache", responses=_ERRORS)
async def cache_stats(runtime: RuntimeDep) -> CacheStatsResponse:
    """This replica's cache counters and the number of answers in Redis."""
    return CacheStatsResponse(**await runtime.service.cache_stats())


@router.post("/cache/clear", responses=_ERRORS)
async def clear_cache(runtime: RuntimeDep) -> CacheClearResponse:
    """Empty this replica's in-process cache and the shared Redis cache (503 when Redis is unreachable)."""
    report = await runtime.service.clear_cache()
    return CacheClearResponse(memory=report.memory, redis=report.redis)
