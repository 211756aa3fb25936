"""The audit trail of blocks and the metrics hook of the safety layer.

Contract: every block becomes one :class:`BlockEvent`, written by :class:`AuditLog` as one
JSON line: time (UTC, ISO 8601), request id, where it was caught (``prompt``, ``answer`` or
``image``), the rule or detector label, the policy phrase or pattern that matched, the image's
content hash and score, the policy version. An event never carries the image, the user's
text or the answer: only what the operator's own policy or detector says. Metrics go through
:class:`SafetyObserver`, a protocol the API binds to its Prometheus counters, so this package
imports no metrics library.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol, TextIO

Where = Literal["prompt", "answer", "image"]

audit_logger = logging.getLogger("seesay.safety.audit")


@dataclass(frozen=True)
class BlockEvent:
    """One block, as audited and counted.

    Attributes:
        request_id: The request it happened in.
        where: ``prompt``, ``answer`` or ``image``.
        rule: The text rule's name, or the image detector's label.
        pattern: The policy phrase or regular expression that matched (text only).
        image_hash: The normalised image's content hash (images only).
        score: The detector's score (images only).
        detector: The image detector's name (images only).
        policy_version: The text policy's version (text only).
    """

    request_id: str
    where: Where
    rule: str
    pattern: str | None = None
    image_hash: str | None = None
    score: float | None = None
    detector: str | None = None
    policy_version: str | None = None

    def to_record(self, now: datetime | None = None) -> dict[str, object]:
        """The JSON object of the audit line: ``time`` first, then the fields that are set."""
        moment = (now or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        fields = {key: value for key, value in dataclasses.asdict(self).items() if value is not None}
        return {"time": moment, **fields}


class SafetyObserver(Protocol):
    """Receives what the safety layer does; the API implements it with Prometheus metrics."""

    def on_check(self, where: Where, seconds: float) -> None:
        """A screen ran: how long it took."""

    def on_block(self, event: BlockEvent) -> None:
        """A screen blocked something."""


class NullObserver:
    """An observer that ignores everything (the default)."""

    def on_check(self, where: Where, seconds: float) -> None:
        """Ignore a check."""

    def on_block(self, event: BlockEvent) -> None:
        """Ignore a block."""


class AuditLog:
    """Writes one JSON line per block to a file (appending) or, without a file, to a logger.

    Args:
        path: The audit file, created with its folder if missing; ``None`` logs each line at
            INFO to the ``seesay.safety.audit`` logger instead.
        stream: An open text stream to write to instead of a file (tests, stdout).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, stream: TextIO | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._stream = stream
        self._owned = False
        if self.path is not None and stream is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._stream = self.path.open("a", encoding="utf-8")
            self._owned = True

    def record(self, event: BlockEvent) -> None:
        """Write ``event`` as one line and flush it."""
        line = json.dumps(event.to_record(), ensure_ascii=False, sort_keys=False)
        if self._stream is None:
            audit_logger.info("%s", line)
            return
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def close(self) -> None:
        """Close the file this log opened (a stream passed in is left open)."""
        with self._lock:
            if self._owned and self._stream is not None:
                self._stream.close()
                self._stream = None
                self._owned = False
