"""The default image detector: NudeNet 3.4's ONNX body-part detector, run offline on the CPU.

Contract: the model is the ``320n.onnx`` file that ships inside the ``nudenet`` wheel
(``pip install 'seesay[safety]'``); nothing is downloaded. Pre- and post-processing reproduce
``nudenet.NudeDetector().detect(array)`` exactly (same bottom/right padding, resize, 0.2
candidate floor and NMS; the tests check parity), but work from the picture in memory — no
temporary files — with vectorised post-processing (NudeNet's loops over 2,100 anchors in
Python) and an ONNX Runtime session whose thread count is an option, so a screen costs about
one model run. A picture is blocked when one of the configured labels (by default the
exposed genitalia, breast, buttocks and anus labels) is detected with a score at or above
the threshold.

Channel order: the model is an Ultralytics YOLOv8 network, trained on R, G, B planes, and
NudeNet 3.0 fed it so (``cv2.imread`` + ``swapRB``). NudeNet 3.4 added ``cvtColor(RGBA2BGR)``,
which on a three-channel array swaps the channels too, so its ``detect`` on a BGR array or a
file path now feeds B, G, R. seesay feeds R, G, B — exactly what ``detect`` does when given an
RGB array (on the sample photographs this order also gives a face the higher confidence).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from seesay.errors import MissingDependencyError, SafetyConfigError
from seesay.safety.image import ImageDetector, ImageVerdict, register_detector

# NudeNet 3.4's class order (the model's output rows 4..21).
NUDENET_LABELS: tuple[str, ...] = (
    "FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED", "BELLY_COVERED",
    "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE", "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED", "BUTTOCKS_COVERED",
)
DEFAULT_LABELS: tuple[str, ...] = (
    "FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED", "FEMALE_BREAST_EXPOSED", "BUTTOCKS_EXPOSED",
    "ANUS_EXPOSED",
)
INPUT_SIZE = 320
CANDIDATE_FLOOR = 0.2  # NudeNet drops boxes below this before NMS
NMS_SCORE = 0.25
NMS_IOU = 0.45


@dataclass(frozen=True)
class Detection:
    """One body part NudeNet found."""

    label: str
    score: float
    box: tuple[int, int, int, int]  # x, y, width, height in the picture's pixels


def model_file() -> Path:
    """The ``320n.onnx`` inside the installed ``nudenet`` package.

    Raises:
        MissingDependencyError: ``nudenet`` is not installed.
        SafetyConfigError: It is installed but has no model file.
    """
    spec = importlib.util.find_spec("nudenet")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("nudenet", "safety", "NSFW image screening with NudeNet")
    path = Path(next(iter(spec.submodule_search_locations))) / "320n.onnx"
    if not path.is_file():
        raise SafetyConfigError(
            f"the installed nudenet package has no model at {path}; reinstall it with "
            "pip install --force-reinstall 'nudenet>=3.4.2'"
        )
    return path


@register_detector("nudenet")
class NudeNetDetector(ImageDetector):
    """NudeNet's detector (see the module docstring).

    Args:
        labels: NudeNet labels that block a picture (see :data:`NUDENET_LABELS`).
        threshold: Lowest score that blocks, in [0.25, 1] (NudeNet reports nothing below 0.25).
        threads: ONNX Runtime intra-op threads; screening runs beside the model, so keep it small.
        model_path: Another NudeNet-format ONNX file (default: the one in the wheel).

    Raises:
        SafetyConfigError: An unknown label or a threshold out of range.
        MissingDependencyError: ``nudenet`` (with onnxruntime and OpenCV) is not installed.
    """

    name = "nudenet"

    def __init__(self, labels: Sequence[str] = DEFAULT_LABELS, threshold: float = 0.5, threads: int = 1,
                 model_path: str | None = None) -> None:
        unknown = sorted(set(labels) - set(NUDENET_LABELS))
        if unknown or not labels:
            raise SafetyConfigError(
                f"nudenet labels must be a non-empty list of: {', '.join(NUDENET_LABELS)}; got unknown {unknown}"
            )
        if not NMS_SCORE <= threshold <= 1.0:
            raise SafetyConfigError(f"nudenet threshold must be between {NMS_SCORE} and 1, got {threshold}")
        if threads < 1:
            raise SafetyConfigError(f"nudenet threads must be 1 or more, got {threads}")
        self.labels = tuple(labels)
        self.threshold = float(threshold)
        self.threads = threads
        self.model_path = Path(model_path) if model_path else model_file()
        self._cv2, self._session = _open_session(self.model_path, threads)
        self._input = self._session.get_inputs()[0].name
        self._flagged = np.array([label in self.labels for label in NUDENET_LABELS])

    def describe(self) -> dict[str, Any]:
        return {"labels": "+".join(self.labels), "threshold": self.threshold, "model": self.model_path.name}

    def detect(self, image: Image.Image) -> list[Detection]:
        """Every body part found, after NMS, as ``NudeDetector.detect`` reports them."""
        pixels = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
        height, width = pixels.shape[:2]
        side = max(height, width)
        padded = self._cv2.copyMakeBorder(pixels, 0, side - height, 0, side - width, self._cv2.BORDER_CONSTANT)
        # R, G, B planes, as the YOLOv8 model was trained (see the module docstring).
        blob = self._cv2.dnn.blobFromImage(padded, 1 / 255.0, (INPUT_SIZE, INPUT_SIZE), (0, 0, 0),
                                           swapRB=False, crop=False)
        output = self._session.run(None, {self._input: blob})[0]
        return self._postprocess(output, width, height, side)

    def classify(self, image: Image.Image) -> ImageVerdict:
        flagged = [d for d in self.detect(image) if self._flagged[NUDENET_LABELS.index(d.label)]]
        if not flagged:
            return ImageVerdict(False)
        top = max(flagged, key=lambda d: d.score)
        return ImageVerdict(top.score >= self.threshold, top.label, top.score)

    def _postprocess(self, output: np.ndarray, width: int, height: int, side: int) -> list[Detection]:
        rows = np.squeeze(output, axis=0).T  # (anchors, 4 + classes)
        class_scores = rows[:, 4:]
        scores = class_scores.max(axis=1)
        keep = scores >= CANDIDATE_FLOOR
        if not keep.any():
            return []
        rows, scores, classes = rows[keep], scores[keep], class_scores[keep].argmax(axis=1)
        scale = np.float32(side / INPUT_SIZE)
        w = rows[:, 2] * scale
        h = rows[:, 3] * scale
        x = np.clip((rows[:, 0] - rows[:, 2] / 2) * scale, 0, width)
        y = np.clip((rows[:, 1] - rows[:, 3] / 2) * scale, 0, height)
        w = np.minimum(w, width - x)
        h = np.minimum(h, height - y)
        boxes = np.stack([x, y, w, h], axis=1).tolist()
        indices = self._cv2.dnn.NMSBoxes(boxes, scores.tolist(), NMS_SCORE, NMS_IOU)
        return [
            Detection(NUDENET_LABELS[int(classes[i])], float(scores[i]), tuple(int(v) for v in boxes[i]))  # type: ignore[arg-type]
            for i in np.asarray(indices).reshape(-1)
        ]


def _open_session(path: Path, threads: int) -> tuple[Any, Any]:
    try:
        import cv2
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError("nudenet", "safety", "NSFW image screening with NudeNet") from exc
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Spinning threads would steal CPU from the engine's own preprocessing between screens.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return cv2, session
