"""The per-request record that routes fill in and the telemetry middleware reports."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from seesay.types import Usage

RECORD_KEY = "seesay_record"


@dataclass
class RequestRecord:
    """What one request did, filled in as it goes, for its log line and metrics."""

    request_id: str
    started: float
    key_id: str = "-"
    model: str | None = None
    usage: Usage | None = None
    first_token_at: float | None = None
    finish_reason: str | None = None
    error_code: str | None = None
    cache: str | None = None  # the X-Seesay-Cache value
    replayed: bool = False  # the answer was not generated for this request: its tokens cost nothing
    prompt: str | None = None  # set in debug mode only

    @property
    def first_token_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started


def record_of(request: Request) -> RequestRecord:
    """The record :class:`~seesay.api.middleware.RequestTelemetry` attached to ``request``."""
    record: RequestRecord = getattr(request.state, RECORD_KEY)
    return record
