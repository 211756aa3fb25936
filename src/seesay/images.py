"""Image intake: bytes, base64 and ``data:`` URLs to a checked, normalised RGB picture.

Contract: every picture the engine sees went through :func:`load_image`. It is decoded at
most once, oriented by its EXIF tag, converted to RGB, and resized exactly once, straight to
the size the model's processor would choose under the pixel budget, so the processor does
no second resampling. Its ``content_hash`` identifies the normalised pixels (for caches).
Errors say what was wrong and how to fix it.

(Work in progress: formats, limits and draft decoding are being completed.)
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass

from PIL import Image

from seesay.errors import InvalidImageError, InvalidRequestError

DEFAULT_MIN_PIXELS = 64 * 32 * 32
DEFAULT_MAX_PIXELS = 1024 * 32 * 32


@dataclass(frozen=True)
class PixelBudget:
    """How many pixels one image may cost; the processor resizes into [min_pixels, max_pixels].

    Attributes:
        min_pixels: Smaller images are upsampled to about this many pixels.
        max_pixels: Larger images are downsampled to at most this many pixels.
        factor: Side lengths become multiples of this (patch size × spatial merge: 32 for
            Qwen3-VL, 28 for Qwen2.5-VL); one visual token covers factor × factor pixels.
    """

    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS
    factor: int = 32

    def __post_init__(self) -> None:
        if self.factor <= 0:
            raise InvalidRequestError(f"pixel budget factor must be positive, got {self.factor}")
        if self.min_pixels < self.factor**2:
            raise InvalidRequestError(
                f"min_pixels must be at least {self.factor**2} (one {self.factor}x{self.factor} tile), "
                f"got {self.min_pixels}"
            )
        if self.max_pixels < self.min_pixels:
            raise InvalidRequestError(
                f"max_pixels ({self.max_pixels}) must not be below min_pixels ({self.min_pixels})"
            )

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) the Qwen-VL processor resizes a width × height picture to.

        Same arithmetic as transformers' ``smart_resize``: both sides multiples of ``factor``,
        area within the budget, aspect ratio as close as those allow.
        """
        if max(width, height) / min(width, height) > 200:
            raise InvalidImageError(
                f"image aspect ratio {width}x{height} is over 200:1; crop it to a less extreme shape"
            )
        f = self.factor
        h_bar = max(f, round(height / f) * f)
        w_bar = max(f, round(width / f) * f)
        if h_bar * w_bar > self.max_pixels:
            beta = math.sqrt((height * width) / self.max_pixels)
            h_bar = max(f, math.floor(height / beta / f) * f)
            w_bar = max(f, math.floor(width / beta / f) * f)
        elif h_bar * w_bar < self.min_pixels:
            beta = math.sqrt(self.min_pixels / (height * width))
            h_bar = math.ceil(height * beta / f) * f
            w_bar = math.ceil(width * beta / f) * f
        return w_bar, h_bar

    def image_tokens(self, width: int, height: int) -> int:
        """Visual tokens one width × height picture costs under this budget."""
        w, h = self.target_size(width, height)
        return (w // self.factor) * (h // self.factor)


@dataclass(frozen=True)
class NormalizedImage:
    """A decoded picture ready for the model.

    Attributes:
        image: RGB, EXIF orientation applied, already at the processor's target size.
        content_hash: sha256 hex of the normalised pixels and size.
        source_format: The container format it arrived in (``"JPEG"``, ``"PNG"`` …).
        source_size: (width, height) before resizing.
    """

    image: Image.Image
    content_hash: str
    source_format: str
    source_size: tuple[int, int]

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def content_hash(image: Image.Image) -> str:
    """sha256 over mode, size and raw pixels: equal for equal pixels, whatever the encoding."""
    digest = hashlib.sha256(f"{image.mode}:{image.width}x{image.height}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def load_image(data: bytes, budget: PixelBudget) -> NormalizedImage:
    """Decode and normalise one picture (see the module docstring)."""
    try:
        with Image.open(io.BytesIO(data)) as source:
            fmt = source.format or "unknown"
            rgb = source.convert("RGB")
    except Exception as exc:
        raise InvalidImageError(f"cannot read the image: {exc}") from exc
    resized = rgb.resize(budget.target_size(*rgb.size), Image.Resampling.BICUBIC)
    return NormalizedImage(resized, content_hash(resized), fmt, rgb.size)
