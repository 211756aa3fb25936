"""The safety gate: what the service calls, before the scheduler and around the engine's answer.

Contract: :meth:`SafetyGate.from_config` builds every configured screen at start-up and fails
closed (:class:`~seesay.errors.SafetyConfigError` with the fix); a screen is off only
when the configuration says so explicitly. Per request:

* :meth:`SafetyGate.screen_request` screens the pictures (detector, cached by content hash),
  then the prompt text. A block is audited and counted, then, depending on ``on_block``,
  raised as :class:`~seesay.errors.ContentPolicyViolation` (HTTP 400, ``seesay ask``
  exits non-zero) or returned as a :class:`Refusal` that the service answers with
  (``finish_reason="content_filter"``) without running the model.
* :meth:`SafetyGate.check_answer` judges a complete answer; a blocked one becomes a
  :class:`Refusal` in the request's language.
* :meth:`SafetyGate.guard_stream` gives a :class:`~seesay.safety.stream.StreamGuard` for a
  streamed answer, whose block is audited and counted the same way.

:attr:`SafetyGate.version` changes whenever a verdict could change (policy reloaded, other
detector), so response caches can key on it. Everything here is synchronous CPU work; image
screening takes tens of milliseconds, so async callers run it in a worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from seesay.errors import ContentPolicyViolation
from seesay.images import NormalizedImage
from seesay.safety.audit import AuditLog, BlockEvent, NullObserver, SafetyObserver, Where
from seesay.safety.image import ImageScreen, ImageVerdict, load_detector
from seesay.safety.policy import PolicyFile
from seesay.safety.stream import StreamGuard
from seesay.safety.text import DEFAULT_REFUSALS, TextPolicy, TextVerdict, detect_language
from seesay.types import GenerationRequest

OnBlock = Literal["error", "refuse"]
A = TypeVar("A")
T = TypeVar("T")


@dataclass(frozen=True)
class SafetyConfig:
    """The safety part of the service's settings.

    Attributes:
        image_detector: Registered detector name (``nudenet``, ``hf-classifier``, ``flag``);
            ``None`` turns image screening off.
        image_options: Keyword options of the detector (``threshold``, ``labels``, ``model`` …).
        image_cache_size: Verdicts remembered by image hash.
        text_policy: Screen prompts and answers; ``False`` turns text screening off.
        policy_file: The operator's TOML/YAML policy; ``None`` uses seesay's default policy.
        policy_check_interval_s: Seconds between two looks at the policy file for changes.
        on_block: ``"error"``: a blocked image or prompt is an HTTP 400 ``content_policy_violation``;
            ``"refuse"``: it is answered with the refusal text and ``finish_reason="content_filter"``.
        audit_log: JSON-lines audit file; ``None`` logs audit lines to the ``seesay.safety.audit`` logger.
    """

    image_detector: str | None = "nudenet"
    image_options: Mapping[str, Any] = field(default_factory=dict)
    image_cache_size: int = 4096
    text_policy: bool = True
    policy_file: Path | None = None
    policy_check_interval_s: float = 1.0
    on_block: OnBlock = "error"
    audit_log: Path | None = None


@dataclass(frozen=True)
class Refusal:
    """A blocked request or answer, as the service answers it.

    Attributes:
        text: The refusal, in the request's language.
        message: A readable explanation for an error response or the CLI (no blocked text in it).
        event: What was audited.
    """

    text: str
    message: str
    event: BlockEvent


def prompt_text(request: GenerationRequest) -> str:
    """Every text part of the conversation, one message a line: what the prompt policy screens."""
    return "\n".join(message.text for message in request.messages if message.text)


class SafetyGate:
    """Screens requests and answers (see the module docstring).

    Args:
        images: The image screen, or ``None`` when image screening is off.
        policy: The text policy source, or ``None`` when text screening is off.
        on_block: What a blocked image or prompt becomes (see :class:`SafetyConfig`).
        audit: Where block events are written (default: the audit logger).
        observer: Metrics hook.
    """

    def __init__(self, *, images: ImageScreen | None, policy: PolicyFile | None, on_block: OnBlock = "error",
                 audit: AuditLog | None = None, observer: SafetyObserver | None = None) -> None:
        self.images = images
        self.policy = policy
        self.on_block = on_block
        self.audit = audit or AuditLog()
        self.observer: SafetyObserver = observer or NullObserver()

    @classmethod
    def from_config(cls, config: SafetyConfig, *, observer: SafetyObserver | None = None) -> SafetyGate:
        """Load every configured screen, or raise :class:`SafetyConfigError` saying how to fix it."""
        images = None
        if config.image_detector is not None:
            detector = load_detector(config.image_detector, config.image_options)
            images = ImageScreen(detector, cache_size=config.image_cache_size)
        policy = PolicyFile(config.policy_file, check_interval_s=config.policy_check_interval_s) \
            if config.text_policy else None
        return cls(images=images, policy=policy, on_block=config.on_block, audit=AuditLog(config.audit_log),
                   observer=observer)

    @property
    def version(self) -> str:
        """Identifies everything verdicts depend on; include it in response-cache keys."""
        text = self.policy.current().version if self.policy is not None else "text-off"
        image = self.images.version if self.images is not None else "images-off"
        return f"{text}/{image}"

    def refusal_text(self, request: GenerationRequest) -> str:
        """The refusal in the request's language."""
        if self.policy is not None:
            return self.policy.current().refusal(prompt_text(request))
        return DEFAULT_REFUSALS[detect_language(prompt_text(request))]

    def screen_request(self, request: GenerationRequest) -> Refusal | None:
        """Screen the pictures, then the prompt text, before the request is queued.

        Returns:
            ``None`` when the request may go to the model; a :class:`Refusal` to answer with
            when it is blocked and ``on_block`` is ``"refuse"``.

        Raises:
            ContentPolicyViolation: It is blocked and ``on_block`` is ``"error"``.
            SafetyUnavailableError: A screen failed; the request is not passed unscreened.
        """
        refusal = self._screen_images(request) or self._screen_prompt(request)
        if refusal is not None and self.on_block == "error":
            raise ContentPolicyViolation(refusal.message)
        return refusal

    def check_answer(self, request: GenerationRequest, answer: str) -> Refusal | None:
        """Judge a complete answer; a :class:`Refusal` replaces it when it is blocked."""
        if self.policy is None:
            return None
        policy = self.policy.current()
        verdict = self._timed("answer", policy.check, answer)
        if not verdict.blocked:
            return None
        event = self._text_event(request, "answer", verdict, policy)
        return Refusal(policy.refusal(prompt_text(request)), "the answer was withheld by the content policy", event)

    def guard_stream(self, request: GenerationRequest) -> StreamGuard | None:
        """A guard for one streamed answer (``None`` when text screening is off); blocks are audited."""
        if self.policy is None:
            return None
        policy = self.policy.current()
        return StreamGuard(policy, on_block=lambda verdict: self._text_event(request, "answer", verdict, policy))

    def close(self) -> None:
        """Close the audit file."""
        self.audit.close()

    def _screen_images(self, request: GenerationRequest) -> Refusal | None:
        if self.images is None or not request.images:
            return None
        found = self._timed("image", self.images.first_blocked, request.images)
        if found is None:
            return None
        image, verdict = found
        return self._image_refusal(request, image, verdict)

    def _image_refusal(self, request: GenerationRequest, image: NormalizedImage, verdict: ImageVerdict) -> Refusal:
        assert self.images is not None and verdict.label is not None
        position = next(i for i, candidate in enumerate(request.images, start=1) if candidate is image)
        event = BlockEvent(request.request_id, "image", verdict.label, image_hash=image.content_hash,
                           score=round(verdict.score, 4), detector=self.images.detector.name)
        self._record(event)
        message = (f"image {position} of the request was blocked by the content policy "
                   f"({verdict.label}, score {verdict.score:.2f}); send a different picture")
        return Refusal(self.refusal_text(request), message, event)

    def _screen_prompt(self, request: GenerationRequest) -> Refusal | None:
        if self.policy is None:
            return None
        policy = self.policy.current()
        text = prompt_text(request)
        verdict = self._timed("prompt", policy.check, text)
        if not verdict.blocked:
            return None
        event = self._text_event(request, "prompt", verdict, policy)
        message = f"the prompt was blocked by the content policy (rule '{verdict.rule}'); rephrase the request"
        return Refusal(policy.refusal(text), message, event)

    def _text_event(self, request: GenerationRequest, where: Where, verdict: TextVerdict,
                    policy: TextPolicy) -> BlockEvent:
        event = BlockEvent(request.request_id, where, verdict.rule or "unknown", pattern=verdict.pattern,
                           policy_version=policy.version)
        self._record(event)
        return event

    def _record(self, event: BlockEvent) -> None:
        self.audit.record(event)
        self.observer.on_block(event)

    def _timed(self, where: Where, check: Callable[[A], T], argument: A) -> T:
        start = time.perf_counter()
        try:
            return check(argument)
        finally:
            self.observer.on_check(where, time.perf_counter() - start)
