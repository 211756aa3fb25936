"""Content safety: NSFW screening of pictures and a text policy for prompts and answers, streaming-aware.

Contract: nothing reaches the model or the client unscreened unless the operator turned that
screen off explicitly. :class:`SafetyGate` is what the service uses; the pieces are

* :mod:`~seesay.safety.image` — the detector interface, registry (``nudenet``,
  ``hf-classifier``, ``flag``) and the verdict cache by image hash;
* :mod:`~seesay.safety.text` and :mod:`~seesay.safety.policy` — phrase, regex and allow-list
  matching on normalised text, policy files that reload when edited;
* :mod:`~seesay.safety.stream` — the guard that never lets a blocked phrase's first character out;
* :mod:`~seesay.safety.audit` — JSON-lines audit of blocks and the metrics observer protocol.

Importing this package loads no detector library: NudeNet (``pip install 'seesay[safety]'``)
and transformers are imported when a detector that needs them is loaded.
"""

from seesay.errors import ContentPolicyViolation, SafetyConfigError, SafetyUnavailableError
from seesay.safety.audit import AuditLog, BlockEvent, NullObserver, SafetyObserver, Where
from seesay.safety.gate import Refusal, SafetyConfig, SafetyGate, prompt_text
from seesay.safety.image import (
    FlagDetector,
    ImageDetector,
    ImageScreen,
    ImageVerdict,
    detector_names,
    load_detector,
    register_detector,
)
from seesay.safety.policy import PolicyFile, default_policy, load_policy, parse_policy
from seesay.safety.stream import HoldStats, StreamGuard
from seesay.safety.text import Refusals, RegexPattern, Rule, TextPolicy, TextVerdict, detect_language

__all__ = [
    "AuditLog",
    "BlockEvent",
    "ContentPolicyViolation",
    "FlagDetector",
    "HoldStats",
    "ImageDetector",
    "ImageScreen",
    "ImageVerdict",
    "NullObserver",
    "PolicyFile",
    "Refusal",
    "Refusals",
    "RegexPattern",
    "Rule",
    "SafetyConfig",
    "SafetyConfigError",
    "SafetyGate",
    "SafetyObserver",
    "SafetyUnavailableError",
    "StreamGuard",
    "TextPolicy",
    "TextVerdict",
    "Where",
    "default_policy",
    "detect_language",
    "detector_names",
    "load_detector",
    "load_policy",
    "parse_policy",
    "prompt_text",
    "register_detector",
]
