"""``GET /v1/models``: the models this server answers with, as OpenAI lists models."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from seesay.api.dependencies import RuntimeDep, require_caller
from seesay.api.openapi import error_responses
from seesay.api.protocol import ModelCard, ModelList

router = APIRouter(dependencies=[Depends(require_caller)])


@router.get("/v1/models", responses=error_responses(401, 429))
async def list_models(runtime: RuntimeDep) -> ModelList:
    return ModelList(data=[ModelCard(id=name, created=runtime.created) for name in runtime.service.model_names])


@router.get("/v1/models/{model_id:path}", responses=error_responses(401, 404, 429))
async def get_model(model_id: str, runtime: RuntimeDep) -> ModelCard:
    runtime.service.adapter_for(model_id)  # 404 for a model this server does not serve
    return ModelCard(id=model_id, created=runtime.created)
