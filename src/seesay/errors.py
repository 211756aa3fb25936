"""Domain errors. Each carries the HTTP status and OpenAI error code the API answers with.

Messages are written for the person who sent the request: they say what was wrong and how
to fix it. Nothing in this module imports a heavy library.
"""

from __future__ import annotations


class SeesayError(Exception):
    """Base of every error seesay reports to a caller."""

    status: int = 500
    code: str = "internal_error"
    type: str = "server_error"
    param: str | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if param is not None:
            self.param = param


class InvalidRequestError(SeesayError):
    """The request is malformed or asks for something this server does not offer."""

    status = 400
    code = "invalid_request"
    type = "invalid_request_error"


class InvalidImageError(InvalidRequestError):
    """The bytes are not an image seesay can read."""

    code = "invalid_image"


class ImageTooLargeError(InvalidImageError):
    """The payload or the declared picture size is over a configured limit."""

    status = 413
    code = "image_too_large"


class ContextLengthExceededError(InvalidRequestError):
    """Prompt plus requested output do not fit in the engine's context window."""

    code = "context_length_exceeded"


class ModelLoadError(SeesayError):
    """The configured model could not be loaded."""

    code = "model_load_error"


class MissingDependencyError(ImportError):
    """An optional dependency is missing; the message names the pip extra that provides it."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the Python package '{package}', which is not installed. "
            f"Install it with: pip install 'seesay[{extra}]'"
        )
        self.package = package
        self.extra = extra


class ServerBusyError(SeesayError):
    """The server cannot take the request now; the API sends ``retry_after`` seconds as Retry-After."""

    status = 503
    code = "server_busy"
    type = "server_error"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after
