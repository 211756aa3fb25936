"""Image intake: bytes, base64, ``data:`` URLs and files to a checked, normalised RGB picture.

Contract: every picture the engine sees went through :func:`load_image` (directly, or through
:func:`decode_image_string` or :func:`load_image_file`). Before anything is decoded the payload
size is checked against :class:`ImageLimits`, and after the header is read, so is the pixel
count the file *declares*, so a decompression bomb fails before a pixel buffer is allocated.
The picture is then decoded once (JPEGs at a reduced DCT scale when the budget allows it),
oriented by its EXIF tag, converted to RGB (transparency composited on white, 16-bit scaled
to 8-bit), and resized exactly once, with bicubic resampling as the Qwen-VL processor does,
straight to :meth:`PixelBudget.target_size`: the size that processor would choose, except
where its arithmetic would break the budget (then the closest size within it), so every
picture intake accepts is one the model can take, and the processor does no second
resampling. Its ``content_hash`` identifies the normalised pixels, whatever the container,
for caches.

Every failure is an :class:`~seesay.errors.InvalidImageError` (or its subclass
:class:`~seesay.errors.ImageTooLargeError`) whose message says, in plain words, what was wrong
and how to fix it. HEIC/HEIF needs the optional ``pillow-heif`` package (``seesay[heif]``),
imported and registered with Pillow the first time a HEIC arrives. Nothing heavier than
Pillow and numpy is imported.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import io
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from seesay.errors import ImageTooLargeError, InvalidImageError, InvalidRequestError, MissingDependencyError

DEFAULT_MIN_PIXELS = 64 * 32 * 32
DEFAULT_MAX_PIXELS = 1024 * 32 * 32

# Pillow plugins tried, in this order; only these, so no other decoder ever sees untrusted bytes.
# HEIF comes before AVIF because Pillow's AVIF plugin also claims HEIC files whose major brand
# is "mif1", while pillow-heif leaves AVIF to Pillow.
_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF")
_FORMAT_NAMES = "JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC or AVIF"
_DRAFTABLE = frozenset({"JPEG", "MPO"})  # MPO: a JPEG from a camera with a multi-picture index
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs",
                          b"mif1", b"msf1"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
# Orientations 5-8 turn the picture by a quarter, swapping width and height.
_QUARTER_TURNS = frozenset({5, 6, 7, 8})
_HIGH_BIT_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
# Candidate full-scale values per mode: the first one at or above the brightest pixel is white.
_FULL_SCALES: dict[str, tuple[float, ...]] = {"F": (1.0, 255.0, 65535.0)}
_WHITE = (255, 255, 255)
# What Pillow's decoders raise on malformed data (it has no common base class for them).
_DECODER_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error, RuntimeError)


@dataclass(frozen=True)
class ImageLimits:
    """What intake refuses before decoding.

    Attributes:
        max_bytes: Largest encoded payload accepted, in bytes (after base64 decoding).
        max_source_pixels: Largest width × height a file may declare in its header; a guard
            against decompression bombs (a tiny PNG can declare gigapixels).
    """

    max_bytes: int = 20_000_000
    max_source_pixels: int = 50_000_000

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_source_pixels <= 0:
            raise InvalidRequestError(
                f"image limits must be positive, got max_bytes={self.max_bytes}, "
                f"max_source_pixels={self.max_source_pixels}"
            )


DEFAULT_IMAGE_LIMITS = ImageLimits()


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
        """The (width, height) a width × height picture is resized to under this budget.

        Contract: both sides are multiples of ``factor`` and at least ``factor``, and the area is
        at most ``max_pixels``, for every picture of aspect ratio up to 200:1 and every valid
        budget (``min_pixels == max_pixels`` included), so the engine can take every picture
        intake produces. Whenever transformers' ``smart_resize`` (the Qwen-VL processor's
        arithmetic, which returns height first) gives a size within ``max_pixels``, the answer
        is exactly that size. ``smart_resize`` itself can overshoot: upsampling rounds both sides
        up (80x40 under min = max = 16,384 px gives 192x96 = 18,432 px), and downsampling gives a
        side that floors to zero a whole tile (1x200 under the same budget gives 32x1824). There
        the answer is the grid of tiles, within ``max_pixels``, closest to the ideal size (the
        picture scaled to ``min_pixels``, or ``max_pixels`` when it is larger): the one that
        minimises ``log(w / ideal_w)² + log(h / ideal_h)²``, which weighs the errors in aspect
        ratio and in area alike (ties go to the larger area).

        Raises:
            InvalidImageError: A side is zero or the aspect ratio is over 200:1.
        """
        if width < 1 or height < 1:
            raise InvalidImageError(f"the image has no pixels ({width}x{height})")
        if max(width, height) / min(width, height) > 200:
            raise InvalidImageError(
                f"image aspect ratio {width}x{height} is over 200:1; crop it to a less extreme shape"
            )
        w_bar, h_bar = self._smart_resize(width, height)
        if w_bar * h_bar <= self.max_pixels:
            return w_bar, h_bar
        return self._closest_fit(width, height)

    def _smart_resize(self, width: int, height: int) -> tuple[int, int]:
        """transformers' ``smart_resize``, (width, height) first; it may exceed ``max_pixels``."""
        f = self.factor
        # A side under factor/2 rounds to 0 here; the area is then below min_pixels and the
        # upsampling branch gives it at least one tile, exactly as smart_resize does.
        h_bar = round(height / f) * f
        w_bar = round(width / f) * f
        if h_bar * w_bar > self.max_pixels:
            beta = math.sqrt((height * width) / self.max_pixels)
            h_bar = max(f, math.floor(height / beta / f) * f)
            w_bar = max(f, math.floor(width / beta / f) * f)
        elif h_bar * w_bar < self.min_pixels:
            beta = math.sqrt(self.min_pixels / (height * width))
            h_bar = math.ceil(height * beta / f) * f
            w_bar = math.ceil(width * beta / f) * f
        return w_bar, h_bar

    def _closest_fit(self, width: int, height: int) -> tuple[int, int]:
        """The tile grid within ``max_pixels`` closest to the ideal size (see :meth:`target_size`)."""
        tiles = self.max_pixels // self.factor**2  # at least 1: max_pixels >= min_pixels >= factor²
        area = width * height
        scale = math.sqrt(min(max(area, self.min_pixels), self.max_pixels) / area) / self.factor
        ideal_long, ideal_short = max(width, height) * scale, min(width, height) * scale
        # The best grid puts the larger count on the longer side, so its shorter side holds at
        # most isqrt(tiles) tiles; for each such count the error is convex in the longer count,
        # so only the two whole numbers around the ideal (capped by the budget) can be best.
        best = (math.inf, 0, 1, 1)
        for short in range(1, math.isqrt(tiles) + 1):
            most = tiles // short
            for long in {min(most, max(1, math.floor(ideal_long))), min(most, max(1, math.ceil(ideal_long)))}:
                error = math.log(short / ideal_short) ** 2 + math.log(long / ideal_long) ** 2
                best = min(best, (error, -long * short, long, short))
        long, short = best[2] * self.factor, best[3] * self.factor
        return (long, short) if width >= height else (short, long)

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
        source_format: The container format it arrived in (``"JPEG"``, ``"PNG"``, ``"HEIF"`` …).
        source_size: (width, height) as displayed (EXIF orientation applied), before resizing.
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


def load_image(
    data: bytes, budget: PixelBudget, *, limits: ImageLimits = DEFAULT_IMAGE_LIMITS
) -> NormalizedImage:
    """Check, decode and normalise one encoded picture (see the module docstring).

    Args:
        data: The encoded file: JPEG, PNG, WebP, GIF (first frame), BMP, TIFF (first page),
            AVIF, or HEIC/HEIF with ``seesay[heif]`` installed.
        budget: The pixel budget the result is fitted to.
        limits: Payload and declared-size limits, checked before decoding.

    Returns:
        The normalised picture; its size is ``budget.target_size`` of the oriented source size.

    Raises:
        ImageTooLargeError: The payload or the declared pixel count is over ``limits``.
        InvalidImageError: The data is empty, not an image, truncated or corrupt, or a HEIC
            arrived without pillow-heif installed.
    """
    _check_payload_size(len(data), limits)
    _prepare_heif_support(data)
    _defer_pillow_bomb_check(limits.max_source_pixels)
    try:
        with _open(data) as source:
            return _normalise(source, budget, limits)
    except _DECODER_ERRORS as exc:
        detail = str(exc) or type(exc).__name__
        raise InvalidImageError(
            f"the image data is truncated or corrupt (decoder said: {detail}); "
            "export the picture again or send the original file"
        ) from exc


def decode_image_string(
    text: str, budget: PixelBudget, *, limits: ImageLimits = DEFAULT_IMAGE_LIMITS
) -> NormalizedImage:
    """Decode a base64 string or a ``data:image/...;base64,...`` URL, then :func:`load_image` it.

    Args:
        text: Plain base64 (standard alphabet; whitespace and missing padding are tolerated)
            or a base64 ``data:`` URL with an ``image/*`` MIME type.
        budget: The pixel budget the result is fitted to.
        limits: Payload and declared-size limits; the decoded size is checked before decoding.

    Raises:
        ImageTooLargeError: The decoded payload would be over ``limits.max_bytes``.
        InvalidImageError: A malformed data URL, a non-image MIME type, invalid base64, or
            any :func:`load_image` failure.
    """
    text = text.strip()
    payload = _data_url_payload(text) if text[:5].lower() == "data:" else text
    payload = "".join(payload.split())
    payload += "=" * (-len(payload) % 4)
    _check_payload_size(len(payload) * 3 // 4 - (len(payload) - len(payload.rstrip("="))), limits)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImageError(
            "the image string is not valid base64; send standard base64 of the file's bytes "
            "or a data URL such as data:image/png;base64,iVBORw0..."
        ) from exc
    return load_image(data, budget, limits=limits)


def load_image_file(
    path: str | os.PathLike[str], budget: PixelBudget, *, limits: ImageLimits = DEFAULT_IMAGE_LIMITS
) -> NormalizedImage:
    """Read a local image file (for the CLI) and :func:`load_image` it.

    Args:
        path: The file to read.
        budget: The pixel budget the result is fitted to.
        limits: Payload and declared-size limits; the file size is checked before reading.

    Raises:
        ImageTooLargeError: The file or its declared pixel count is over ``limits``.
        InvalidImageError: The file is missing or unreadable, or any :func:`load_image`
            failure; the message starts with the path.
    """
    file = Path(path)
    try:
        _check_payload_size(file.stat().st_size, limits)
        data = file.read_bytes()
        return load_image(data, budget, limits=limits)
    except FileNotFoundError as exc:
        raise InvalidImageError(f"{file}: no such image file; check the path") from exc
    except OSError as exc:
        raise InvalidImageError(f"{file}: cannot read the image file ({exc.strerror or exc})") from exc
    except InvalidImageError as exc:
        raise type(exc)(f"{file}: {exc.message}") from exc


def _check_payload_size(size: int, limits: ImageLimits) -> None:
    if size <= 0:
        raise InvalidImageError("the image is empty (0 bytes); send the picture's file contents")
    if size > limits.max_bytes:
        raise ImageTooLargeError(
            f"the image is {size / 1e6:.3g} MB ({size:,} bytes), over the {limits.max_bytes / 1e6:.3g} MB "
            "limit; send a smaller or more compressed image (for example a JPEG of fewer pixels)"
        )


def _data_url_payload(url: str) -> str:
    """The base64 part of ``data:<mime>[;params];base64,<payload>``, after checking the header."""
    header, comma, payload = url.partition(",")
    if not comma:
        raise InvalidImageError(
            "malformed data URL: no comma before the data; expected data:image/<type>;base64,<data>"
        )
    mime, *params = (part.strip().lower() for part in header[5:].split(";"))
    if not mime.startswith("image/"):
        raise InvalidImageError(
            f"the data URL's MIME type is {mime or '(none)'!r}, not an image; "
            "expected data:image/<type>;base64,<data> with a type such as image/jpeg or image/png"
        )
    if "base64" not in params:
        raise InvalidImageError(
            "the data URL is not base64-encoded; expected data:image/<type>;base64,<data>"
        )
    return payload


def _container_brands(data: bytes) -> frozenset[bytes]:
    """Major and compatible brands of an ISO-BMFF ``ftyp`` box at the start (HEIC, AVIF), or none."""
    if data[4:8] != b"ftyp":
        return frozenset()
    box_end = min(int.from_bytes(data[:4], "big"), len(data), 256)
    return frozenset([data[8:12], *(data[i : i + 4] for i in range(16, box_end - 3, 4))])


def _prepare_heif_support(data: bytes) -> None:
    """Register pillow-heif when a HEIC/HEIF arrives; say how to install it when it is missing."""
    brands = _container_brands(data)
    if brands & _AVIF_BRANDS or not brands & _HEIF_BRANDS:
        return  # not HEIF; Pillow reads AVIF itself
    try:
        _register_heif_opener()
    except MissingDependencyError as exc:
        raise InvalidImageError(
            f"this is a HEIC/HEIF picture, which this server cannot read. {exc}. "
            "Or send the picture as JPEG or PNG."
        ) from exc


@functools.cache
def _register_heif_opener() -> None:
    """Import pillow-heif and register its Pillow opener, once (a failure is retried next time)."""
    try:
        import pillow_heif
    except ImportError as exc:
        raise MissingDependencyError("pillow-heif", "heif", "Reading HEIC/HEIF photos") from exc
    pillow_heif.register_heif_opener()


def _defer_pillow_bomb_check(max_source_pixels: int) -> None:
    """Make our declared-size limit the one that applies.

    Pillow warns above ``Image.MAX_IMAGE_PIXELS`` and refuses above twice that, inside
    ``Image.open``. Its threshold is raised (never lowered) to ours only when ours is higher,
    so Pillow never refuses a picture our limit allows; with the defaults nothing changes.
    """
    if Image.MAX_IMAGE_PIXELS is not None and max_source_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_source_pixels


def _open(data: bytes) -> Image.Image:
    """Identify the format and read the header only (Pillow decodes lazily)."""
    Image.init()  # registers every plugin once, so the list below can be filtered
    formats = [name for name in _FORMATS if name in Image.OPEN]
    try:
        return Image.open(io.BytesIO(data), formats=formats)
    except UnidentifiedImageError as exc:
        raise InvalidImageError(
            f"the data is not a recognised image format ({_FORMAT_NAMES}); "
            "send the picture's file contents in one of those formats"
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(
            f"the image declares far more than {Image.MAX_IMAGE_PIXELS:,} pixels (a possible "
            "decompression bomb); send a picture with fewer pixels"
        ) from exc


def _normalise(source: Image.Image, budget: PixelBudget, limits: ImageLimits) -> NormalizedImage:
    """Decode an opened picture at the smallest scale that still covers the target, then fit it."""
    width, height = source.size  # declared in the header; nothing is decoded yet
    if width * height > limits.max_source_pixels:
        raise ImageTooLargeError(
            f"the image declares {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{limits.max_source_pixels:,}; send a picture with fewer pixels"
        )
    turned = source.getexif().get(ExifTags.Base.Orientation) in _QUARTER_TURNS
    oriented = (height, width) if turned else (width, height)
    target = budget.target_size(*oriented)
    if source.format in _DRAFTABLE:
        # The DCT decoder scales by 1/2, 1/4 or 1/8, choosing the largest reduction that
        # still covers the requested size, asked for in stored (unrotated) orientation.
        source.draft("RGB", (target[1], target[0]) if turned else target)
    source.load()
    ImageOps.exif_transpose(source, in_place=True)
    image = _to_rgb(source)
    if image.size != target:
        image = image.resize(target, Image.Resampling.BICUBIC)
    return NormalizedImage(image, content_hash(image), source.format or "unknown", oriented)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB; transparency goes on white, 16-bit and float scale to 8-bit."""
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        return _high_bit_depth_to_rgb(image)
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, _WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise InvalidImageError(
            f"the image uses the {image.mode} colour mode, which cannot be converted to RGB; "
            "save it as an RGB JPEG or PNG"
        ) from exc


def _high_bit_depth_to_rgb(image: Image.Image) -> Image.Image:
    """Scale a one-channel 16-bit, 32-bit or float picture linearly into 0-255 (Pillow would clip)."""
    pixels = np.asarray(image).astype(np.float32)
    low, high = float(pixels.min()), float(pixels.max())
    scales = _FULL_SCALES.get(image.mode, (65535.0,))
    full_scale = next((s for s in scales if low >= 0 and high <= s), None)
    if full_scale is None:  # values outside any known range: stretch what is there
        pixels -= low
        full_scale = max(high - low, 1.0)
    eight_bit = np.floor(pixels * (255.0 / full_scale) + 0.5).clip(0, 255).astype(np.uint8)
    return Image.fromarray(eight_bit).convert("RGB")
