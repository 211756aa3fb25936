"""Errors of the safety layer: what a caller sees when content is blocked or screening is broken.

Contract: a blocked image or prompt is a :class:`ContentPolicyViolation` (HTTP 400, OpenAI
code ``content_policy_violation``) whose message says what was blocked and what to do, but
never repeats the blocked text. A screen that cannot be set up is a :class:`SafetyConfigError`
raised at start-up with the fix in its message; a screen that breaks while serving is a
:class:`SafetyUnavailableError` (HTTP 503), so content is never let through unscreened.
"""

from __future__ import annotations

from seesay.errors import InvalidRequestError, SeesayError


class ContentPolicyViolation(InvalidRequestError):
    """The request's image or text is blocked by the operator's content policy."""

    status = 400
    code = "content_policy_violation"


class SafetyConfigError(SeesayError):
    """A configured screen (detector, policy file) cannot be loaded; the service must not start."""

    status = 500
    code = "safety_config_error"
    type = "server_error"


class SafetyUnavailableError(SeesayError):
    """A screen failed while checking a request; the request is refused rather than passed unscreened."""

    status = 503
    code = "safety_unavailable"
    type = "server_error"
