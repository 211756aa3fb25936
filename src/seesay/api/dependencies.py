"""What routes receive through FastAPI's dependency injection.

:class:`Runtime` holds the objects the app's lifespan built (service, auth, metrics);
:func:`require_caller` authenticates and rate-limits a request and records its key id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from seesay.api.auth import ApiKeyAuth
from seesay.api.metrics import Metrics
from seesay.api.record import record_of
from seesay.config import Settings
from seesay.service import AnswerService


@dataclass(frozen=True)
class Runtime:
    """The running service, as the routes see it.

    Attributes:
        settings: The settings the app was built with.
        service: The answering service.
        auth: API keys and rate limits.
        metrics: The app's Prometheus metrics.
        model_name: The served model's name, which responses report unless a request named an adapter.
        created: Unix time the model was loaded (for ``/v1/models``).
    """

    settings: Settings
    service: AnswerService
    auth: ApiKeyAuth
    metrics: Metrics
    model_name: str
    created: int


# Both dependencies are ``async`` although they never await: FastAPI runs a plain ``def``
# dependency in a worker thread: a thread hop per request for microseconds of work.


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def require_caller(request: Request, runtime: RuntimeDep) -> str:
    """The caller's key id, after its API key and rate limit were checked.

    Raises:
        AuthenticationError: 401, a missing or wrong key.
        RateLimitedError: 429, over the per-key limit.
    """
    caller = runtime.auth.authenticate(request.headers.get("authorization"))
    record_of(request).key_id = caller
    await runtime.auth.check_rate(caller)
    return caller


CallerDep = Annotated[str, Depends(require_caller)]
