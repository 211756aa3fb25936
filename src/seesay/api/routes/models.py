"""The models this server answers with, as OpenAI lists them, and its LoRA adapters, as vLLM loads them.

``GET /v1/models`` lists the served model and each loaded LoRA adapter, whose ``parent`` is the
served model; ``GET /v1/models/{model_id}`` answers for either (404 otherwise).
``POST /v1/load_lora_adapter`` and ``POST /v1/unload_lora_adapter`` (:data:`updates_router`, served
only with ``allow_runtime_lora_updating``, as vLLM serves them only when
``VLLM_ALLOW_RUNTIME_LORA_UPDATING`` is set) take vLLM's bodies and answer
as vLLM does: 200 with a plain-text message; 400 for an adapter already loaded or one that cannot
be loaded (the message says why and how to fix it), 404 for unloading one that is not loaded; and,
beyond vLLM, 503 when ``max_loras`` adapters are loaded and all are answering requests, or when
unloading one that is (see :mod:`seesay.adapter_catalogue`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response
from fastapi.responses import PlainTextResponse

from seesay.api.dependencies import Runtime, RuntimeDep, require_caller
from seesay.api.openapi import error_responses
from seesay.api.protocol import LoadLoRAAdapterRequest, ModelCard, ModelList, UnloadLoRAAdapterRequest
from seesay.engine.adapters import AdapterSource
from seesay.errors import AdapterLoadError

router = APIRouter(dependencies=[Depends(require_caller)])
updates_router = APIRouter(dependencies=[Depends(require_caller)])

_PLAIN_TEXT: dict[str, Any] = {"description": "Done; the message says what was done.",
                               "content": {"text/plain": {"schema": {"type": "string"}}}}


@router.get("/v1/models", responses=error_responses(401, 429))
async def list_models(runtime: RuntimeDep) -> ModelList:
    return ModelList(data=[_card(runtime, name) for name in runtime.service.model_names])


@router.get("/v1/models/{model_id:path}", responses=error_responses(401, 404, 429))
async def get_model(model_id: str, runtime: RuntimeDep) -> ModelCard:
    runtime.service.adapter_for(model_id)  # 404 for a model this server does not serve
    return _card(runtime, model_id)


# response_class=Response (no media type): FastAPI then documents the errors as JSON, the 200 as text.
@updates_router.post("/v1/load_lora_adapter", response_class=Response,
             responses={200: _PLAIN_TEXT, **error_responses(400, 401, 413, 429, 503)})
async def load_lora_adapter(body: LoadLoRAAdapterRequest, runtime: RuntimeDep) -> PlainTextResponse:
    """Serve a LoRA adapter as a model of its own; the least recently used idle one makes room at ``max_loras``."""
    try:
        source = AdapterSource(name=body.lora_name, path=body.lora_path)
    except ValueError as exc:
        raise AdapterLoadError(str(exc), param="lora_name") from None
    await runtime.service.adapters.load(source)
    return PlainTextResponse(f"Success: LoRA adapter '{source.name}' added successfully.")


@updates_router.post("/v1/unload_lora_adapter", response_class=Response,
             responses={200: _PLAIN_TEXT, **error_responses(400, 401, 404, 413, 429, 503)})
async def unload_lora_adapter(body: UnloadLoRAAdapterRequest, runtime: RuntimeDep) -> PlainTextResponse:
    """Stop serving a LoRA adapter (503 while requests are being answered with it)."""
    await runtime.service.adapters.unload(body.lora_name)
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")


def _card(runtime: Runtime, name: str) -> ModelCard:
    adapters = {adapter.name: adapter for adapter in runtime.service.adapters.adapters}
    adapter = adapters.get(name)
    if adapter is None:
        return ModelCard(id=name, created=runtime.created, root=runtime.service.info.model)
    return ModelCard(id=name, created=runtime.created, root=adapter.path, parent=runtime.service.adapters.parent)
