"""``GET /v1/seesay/limits``: the pixel budget and input limits of this server, for clients that
show what the model will see (the web page) before they send a picture."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from seesay.api.dependencies import RuntimeDep, require_caller
from seesay.api.openapi import error_responses
from seesay.api.protocol import PixelLimits

router = APIRouter(dependencies=[Depends(require_caller)])


@router.get("/v1/seesay/limits", responses=error_responses(401, 429))
async def limits(runtime: RuntimeDep) -> PixelLimits:
    """The server's pixel budget (a picture costs one visual token per ``factor`` × ``factor`` pixels
    after resizing) and its input limits."""
    budget = runtime.service.info.pixel_budget
    settings = runtime.settings
    return PixelLimits(min_pixels=budget.min_pixels, max_pixels=budget.max_pixels, factor=budget.factor,
                       max_images_per_request=settings.max_images_per_request,
                       max_image_bytes=settings.max_image_bytes)
