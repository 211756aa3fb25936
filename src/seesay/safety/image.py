"""Image screening: NSFW detectors behind one small interface, a registry by name, and a verdict cache.

Contract:

* An :class:`ImageDetector` looks at one RGB picture and returns a frozen
  :class:`ImageVerdict`; it is built once, at start-up, and must be safe to call from
  several threads.
* Detectors are found by name in a registry (:func:`register_detector`,
  :func:`load_detector`). The built-in ones: ``nudenet`` (the default, NudeNet's ONNX
  detector, ``pip install 'seesay[safety]'``), ``hf-classifier`` (a local Hugging Face
  image-classification model folder through transformers) and ``flag`` (a test and operations
  tool that flags every picture, or the listed content hashes). Implementations live in their
  own modules and are imported only when loaded, so importing this module stays light.
* :func:`load_detector` fails closed: a detector that cannot load or cannot classify a test
  picture raises :class:`~seesay.errors.SafetyConfigError` saying how to fix it, and the
  service must refuse to start. Turning image screening off is the caller's explicit setting,
  never a fallback.
* :class:`ImageScreen` runs the detector with a bounded LRU cache of verdicts keyed by
  :attr:`NormalizedImage.content_hash`, so a standard product photo is screened once. A
  detector that fails on a request raises :class:`~seesay.errors.SafetyUnavailableError`:
  the image is refused, never passed unscreened.
"""

from __future__ import annotations

import importlib
import inspect
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from PIL import Image

from seesay.errors import SafetyConfigError, SafetyUnavailableError
from seesay.images import NormalizedImage, content_hash

SAFETY_EXTRA_HINT = "pip install 'seesay[safety]'"


@dataclass(frozen=True)
class ImageVerdict:
    """What a detector says about one picture.

    Attributes:
        blocked: Whether the picture must not reach the model.
        label: The flagged label with the highest score (even when under the threshold), or ``None``.
        score: That label's score in [0, 1].
    """

    blocked: bool
    label: str | None = None
    score: float = 0.0


class ImageDetector(ABC):
    """One way of telling whether a picture is acceptable (see the module docstring)."""

    name: ClassVar[str] = ""

    @abstractmethod
    def classify(self, image: Image.Image) -> ImageVerdict:
        """Judge one RGB picture."""

    def describe(self) -> dict[str, Any]:
        """The detector's effective options, for logs and cache versions."""
        return {}

    @property
    def fingerprint(self) -> str:
        """Name and options in one string: two detectors with equal fingerprints judge alike."""
        options = ",".join(f"{key}={value}" for key, value in sorted(self.describe().items()))
        return f"{self.name}({options})"


DetectorFactory = Callable[..., ImageDetector]
_FACTORIES: dict[str, DetectorFactory] = {}
# Built-in detectors whose modules import heavy libraries: imported on first use.
_MODULES = {
    "nudenet": "seesay.safety.nudenet_detector",
    "hf-classifier": "seesay.safety.hf_detector",
}


def register_detector(name: str) -> Callable[[DetectorFactory], DetectorFactory]:
    """Decorator: make ``factory(**options) -> ImageDetector`` (usually the class) available as ``name``."""

    def decorate(factory: DetectorFactory) -> DetectorFactory:
        _FACTORIES[name] = factory
        return factory

    return decorate


def detector_names() -> list[str]:
    """Every detector name that :func:`load_detector` accepts."""
    return sorted(set(_FACTORIES) | set(_MODULES))


def _factory(name: str) -> DetectorFactory:
    if name not in _FACTORIES and name in _MODULES:
        importlib.import_module(_MODULES[name])
    try:
        return _FACTORIES[name]
    except KeyError:
        raise SafetyConfigError(
            f"unknown image detector {name!r}; choose one of: {', '.join(detector_names())}"
        ) from None


def load_detector(name: str, options: Mapping[str, Any] | None = None) -> ImageDetector:
    """Build the detector registered as ``name`` and check that it works, or fail with the fix.

    Args:
        name: A registered detector name (:func:`detector_names`).
        options: Keyword arguments of the detector (``threshold``, ``labels``, ``model`` …).

    Raises:
        SafetyConfigError: Unknown name or option, a missing dependency (the message names the
            pip extra), a model that does not load, or a detector that fails on a test picture.
    """
    factory = _factory(name)
    options = dict(options or {})
    _check_options(name, factory, options)
    try:
        detector = factory(**options)
        detector.classify(Image.new("RGB", (64, 64), (128, 128, 128)))
    except SafetyConfigError:
        raise
    except ImportError as exc:
        raise SafetyConfigError(
            f"image detector {name!r} cannot start: {exc}. Screening never runs without its detector: "
            f"install it, or turn image screening off explicitly"
        ) from exc
    except Exception as exc:
        raise SafetyConfigError(
            f"image detector {name!r} failed to load or to classify a test picture "
            f"({type(exc).__name__}: {exc}); fix its options or install, or turn image screening off explicitly"
        ) from exc
    return detector


def _check_options(name: str, factory: DetectorFactory, options: Mapping[str, Any]) -> None:
    parameters = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        raise SafetyConfigError(
            f"image detector {name!r} has no option {unknown[0]!r}; "
            f"its options are: {', '.join(parameters) or '(none)'}"
        )


@register_detector("flag")
class FlagDetector(ImageDetector):
    """A test and operations tool: flags every picture, or only pictures with the listed content hashes.

    End-to-end tests use it to exercise the block path with real requests; operators can use it
    to block known pictures by hash (:func:`seesay.images.content_hash` of the normalised picture).

    Args:
        label: The label reported for a flagged picture.
        score: The score reported for a flagged picture.
        hashes: Content hashes to flag; ``None`` flags every picture.
    """

    name = "flag"

    def __init__(self, label: str = "FLAGGED_BY_TEST_DETECTOR", score: float = 1.0,
                 hashes: Sequence[str] | None = None) -> None:
        self.label = label
        self.score = score
        self.hashes = frozenset(hashes) if hashes is not None else None

    def classify(self, image: Image.Image) -> ImageVerdict:
        if self.hashes is not None and content_hash(image) not in self.hashes:
            return ImageVerdict(False)
        return ImageVerdict(True, self.label, self.score)

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score, "hashes": sorted(self.hashes or ()) or "all"}


@dataclass(frozen=True)
class CacheInfo:
    """Verdict cache counters."""

    hits: int
    misses: int
    size: int
    capacity: int


class ImageScreen:
    """Runs one detector over request pictures, remembering verdicts by content hash.

    Args:
        detector: The loaded detector.
        cache_size: Verdicts kept (least recently used dropped first); 0 disables the cache.
    """

    def __init__(self, detector: ImageDetector, *, cache_size: int = 4096) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be 0 or more, got {cache_size}")
        self.detector = detector
        self.cache_size = cache_size
        self._cache: OrderedDict[str, ImageVerdict] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    @property
    def version(self) -> str:
        """The detector's fingerprint: verdicts (and answers cached on them) depend on it."""
        return self.detector.fingerprint

    def screen(self, image: NormalizedImage) -> ImageVerdict:
        """The verdict on one picture, from the cache or the detector.

        Raises:
            SafetyUnavailableError: The detector failed; the picture is not let through.
        """
        key = image.content_hash
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                self._hits += 1
                return cached
            self._misses += 1
        try:
            verdict = self.detector.classify(image.image)
        except Exception as exc:
            raise SafetyUnavailableError(
                f"image screening failed ({type(exc).__name__}); the picture was not processed, try again later"
            ) from exc
        self._remember(key, verdict)
        return verdict

    def first_blocked(self, images: Sequence[NormalizedImage]) -> tuple[NormalizedImage, ImageVerdict] | None:
        """The first picture that is blocked, with its verdict, or ``None`` when all pass."""
        for image in images:
            verdict = self.screen(image)
            if verdict.blocked:
                return image, verdict
        return None

    def cache_info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self._hits, self._misses, len(self._cache), self.cache_size)

    def _remember(self, key: str, verdict: ImageVerdict) -> None:
        if self.cache_size == 0:
            return
        with self._lock:
            self._cache[key] = verdict
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
