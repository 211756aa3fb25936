"""Domain errors, and the one table from each to its HTTP status and OpenAI error code.

Every error seesay reports to a caller is a :class:`SeesayError` defined here. How it leaves
the service (HTTP status, OpenAI ``code`` and ``type``) is not scattered over the classes: it
is looked up in :data:`WIRE_FORMS`, nearest ancestor first, so the HTTP API, the CLI and batch
output all report an error the same way. Messages are written for the person who sent the
request: they say what was wrong and how to fix it. Nothing in this module imports a heavy
library.
"""

from __future__ import annotations

from dataclasses import dataclass


class SeesayError(Exception):
    """Base of every error seesay reports to a caller.

    Attributes:
        message: What went wrong and how to fix it.
        param: The request field to blame, when there is one (``messages[0].content[1]``).
    """

    param: str | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if param is not None:
            self.param = param

    @property
    def wire(self) -> WireForm:
        """How this error leaves the service (see :data:`WIRE_FORMS`)."""
        return wire_form(type(self))

    @property
    def status(self) -> int:
        return self.wire.status

    @property
    def code(self) -> str:
        return self.wire.code


# --- the caller's request ------------------------------------------------------------------


class InvalidRequestError(SeesayError):
    """The request is malformed or asks for something this server does not offer."""


class InvalidImageError(InvalidRequestError):
    """The bytes are not an image seesay can read."""


class ImageTooLargeError(InvalidImageError):
    """The payload or the declared picture size is over a configured limit."""


class ImageUrlError(InvalidImageError):
    """An image URL that this server will not fetch, or whose fetch failed."""


class ContextLengthExceededError(InvalidRequestError):
    """Prompt plus requested output do not fit in the engine's context window."""


class ModelNotFoundError(InvalidRequestError):
    """The request names a model this server does not serve."""


class AdapterLoadError(InvalidRequestError):
    """A LoRA adapter cannot be loaded: its folder, its files or its fit to the served model; the message
    names the folder and how to fix it."""


class ContentPolicyViolation(InvalidRequestError):
    """The request's image or text is blocked by the operator's content policy.

    The message says what was blocked and what to do, never the blocked text itself.
    """


class AuthenticationError(SeesayError):
    """A missing or wrong API key."""


class RequestCancelledError(SeesayError):
    """The caller went away (the client disconnected) before its answer was complete."""


# --- the server's capacity -----------------------------------------------------------------


class ServerBusyError(SeesayError):
    """The server cannot take the request now; the API sends ``retry_after`` seconds as Retry-After."""

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueueFullError(ServerBusyError):
    """Every queue place is taken."""


class RateLimitedError(ServerBusyError):
    """The caller sent more requests a minute than its limit."""


class QueueTimeoutError(ServerBusyError):
    """The request waited in the queue longer than ``queue_timeout_s``."""


class ShuttingDownError(ServerBusyError):
    """The server is draining before it exits."""


class UpstreamUnavailableError(ServerBusyError):
    """No upstream of the remote engine could answer (down, failing or timing out); the message names them."""


# --- the server's own parts ----------------------------------------------------------------


class EngineFailedError(SeesayError):
    """The engine failed on a batch for a reason that is not the request's fault."""


class ModelLoadError(SeesayError):
    """The configured model could not be loaded."""


class SafetyConfigError(SeesayError):
    """A configured screen (detector, policy file) cannot be loaded; the service must not start."""


class SafetyUnavailableError(SeesayError):
    """A screen failed while checking a request; the request is refused rather than passed unscreened."""


class CacheUnavailableError(SeesayError):
    """An operator's cache command could not reach the shared cache."""


@dataclass(frozen=True)
class WireForm:
    """How an error leaves the service: ``{"error": {"message", "type", "param", "code"}}`` with ``status``."""

    status: int
    code: str
    type: str


_INVALID = "invalid_request_error"
_SERVER = "server_error"
_RATE = "rate_limit_error"

WIRE_FORMS: dict[type[SeesayError], WireForm] = {
    SeesayError: WireForm(500, "internal_error", _SERVER),
    InvalidRequestError: WireForm(400, "invalid_request", _INVALID),
    InvalidImageError: WireForm(400, "invalid_image", _INVALID),
    ImageTooLargeError: WireForm(413, "image_too_large", _INVALID),
    ImageUrlError: WireForm(400, "invalid_image_url", _INVALID),
    ContextLengthExceededError: WireForm(400, "context_length_exceeded", _INVALID),
    ModelNotFoundError: WireForm(404, "model_not_found", _INVALID),
    AdapterLoadError: WireForm(400, "invalid_adapter", _INVALID),
    ContentPolicyViolation: WireForm(400, "content_policy_violation", _INVALID),
    AuthenticationError: WireForm(401, "invalid_api_key", _INVALID),
    RequestCancelledError: WireForm(499, "client_closed_request", _INVALID),
    ServerBusyError: WireForm(503, "server_busy", _SERVER),
    QueueFullError: WireForm(429, "queue_full", _RATE),
    RateLimitedError: WireForm(429, "rate_limit_exceeded", _RATE),
    QueueTimeoutError: WireForm(503, "queue_timeout", _SERVER),
    ShuttingDownError: WireForm(503, "shutting_down", _SERVER),
    UpstreamUnavailableError: WireForm(503, "upstream_unavailable", _SERVER),
    EngineFailedError: WireForm(500, "engine_error", _SERVER),
    ModelLoadError: WireForm(500, "model_load_error", _SERVER),
    SafetyConfigError: WireForm(500, "safety_config_error", _SERVER),
    SafetyUnavailableError: WireForm(503, "safety_unavailable", _SERVER),
    CacheUnavailableError: WireForm(503, "cache_unavailable", _SERVER),
}
"""Error class → its wire form. A class without an entry takes its nearest ancestor's."""


def wire_form(error: type[SeesayError]) -> WireForm:
    """The wire form of ``error``: its own entry in :data:`WIRE_FORMS`, else its nearest ancestor's."""
    for cls in error.__mro__:
        form = WIRE_FORMS.get(cls)
        if form is not None:
            return form
    raise TypeError(f"{error.__name__} is not a SeesayError")


class MissingDependencyError(ImportError):
    """An optional dependency is missing; the message names the pip extra that provides it."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the Python package '{package}', which is not installed. "
            f"Install it with: pip install 'seesay[{extra}]'"
        )
        self.package = package
        self.extra = extra
