"""Near-duplicate product photos: a perceptual hash, and an index that names them alike.

Off by default. Exact content hashes already make a PNG and a lossless re-encoding of the same
picture share a cache key; this module lets a lossy copy (a recompressed or resized JPEG)
share it too, without ever letting a different item or a different colour share it.

Contract:

* :func:`perceptual_hash` of a picture has two parts. ``structure`` is a 64-bit DCT pHash of
  the luminance (32×32 grey, DCT, the 8×8 lowest frequencies but the DC term against their
  median): it sees shape and layout and ignores brightness and compression noise. ``colour``
  is the mean Y, Cb and Cr of each cell of an 8×8 grid: it sees what the structure hash is
  blind to, above all the same product in another colour.
* :meth:`NearDuplicateRule.matches`: two hashes match when the structure hashes are within
  ``max_hamming`` bits *and* no grid cell differs by more than ``max_colour_delta`` (of 255)
  in any channel. ``bench/phash_false_hits.py`` measures false and true hits on the demo
  catalogue (figures in BENCHMARKS.md).
* :class:`NearDuplicateIndex` maps a normalised image to the canonical hash used in cache
  keys (:func:`seesay.cache.keys.key_for`'s ``image_hash``): the content hash of the first
  picture it saw that matches, else the image's own content hash, which then becomes
  canonical for later near copies. It holds at most ``max_entries`` pictures (oldest
  dropped first) and is per process; :mod:`seesay.cache.shared_phash` shares the choice of
  canonical hash between replicas through Redis and falls back to this index.

Only Pillow and numpy are used.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image

from seesay.images import NormalizedImage

_DCT_SIZE = 32
_LOW = 8
_GRID = 8


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: ``D @ x`` transforms a column vector of length ``n``."""
    k = np.arange(n)
    matrix = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))
    matrix[0] /= np.sqrt(2.0)
    return matrix


_DCT = _dct_matrix(_DCT_SIZE)


@dataclass(frozen=True)
class PerceptualHash:
    """A picture's perceptual hash (see the module docstring).

    Attributes:
        structure: 64-bit luminance DCT hash.
        colour: Mean Y, Cb, Cr per cell of an 8×8 grid, 192 bytes.
    """

    structure: int
    colour: bytes

    def hamming(self, other: PerceptualHash) -> int:
        """Bits in which the structure hashes differ."""
        return (self.structure ^ other.structure).bit_count()

    def colour_delta(self, other: PerceptualHash) -> int:
        """Largest difference of one channel in one grid cell, 0-255."""
        mine = np.frombuffer(self.colour, dtype=np.uint8).astype(np.int16)
        theirs = np.frombuffer(other.colour, dtype=np.uint8).astype(np.int16)
        return int(np.abs(mine - theirs).max())


def perceptual_hash(image: Image.Image) -> PerceptualHash:
    """The perceptual hash of ``image`` (any mode, any size)."""
    rgb = image.convert("RGB")
    grey = np.asarray(rgb.convert("L").resize((_DCT_SIZE, _DCT_SIZE), Image.Resampling.BOX), dtype=np.float64)
    low = (_DCT @ grey @ _DCT.T)[:_LOW, :_LOW].ravel()
    low[0] = np.median(low[1:])  # drop DC (overall brightness): its bit is always 0
    bits = low > np.median(low[1:])
    structure = int.from_bytes(np.packbits(bits).tobytes(), "big")
    colour = np.asarray(rgb.convert("YCbCr").resize((_GRID, _GRID), Image.Resampling.BOX), dtype=np.uint8)
    return PerceptualHash(structure, colour.tobytes())


@dataclass(frozen=True)
class NearDuplicateRule:
    """When two pictures count as the same photo.

    Attributes:
        max_hamming: Most structure bits that may differ (0-64).
        max_colour_delta: Most any grid cell's Y, Cb or Cr may differ (0-255).
    """

    max_hamming: int = 6
    max_colour_delta: int = 12

    def __post_init__(self) -> None:
        if not 0 <= self.max_hamming <= 64 or not 0 <= self.max_colour_delta <= 255:
            raise ValueError(
                f"near-duplicate thresholds out of range: max_hamming={self.max_hamming} (0-64), "
                f"max_colour_delta={self.max_colour_delta} (0-255)"
            )

    def matches(self, a: PerceptualHash, b: PerceptualHash) -> bool:
        return a.hamming(b) <= self.max_hamming and a.colour_delta(b) <= self.max_colour_delta


class NearDuplicateIndex:
    """Canonical image hashes for cache keys (see the module docstring).

    Hashes live in numpy arrays used as a ring buffer, so a lookup over 10,000 canonical
    pictures is a few vectorised operations.

    Args:
        rule: The match rule.
        max_entries: Most canonical pictures remembered; the oldest is replaced first.
    """

    def __init__(self, rule: NearDuplicateRule | None = None, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.rule = rule or NearDuplicateRule()
        self.max_entries = max_entries
        self._structures = np.zeros(max_entries, dtype=np.uint64)
        self._colours = np.zeros((max_entries, _GRID * _GRID * 3), dtype=np.int16)
        self._owners: list[str | None] = [None] * max_entries
        self._slots: dict[str, int] = {}  # canonical content hash → its slot
        self._aliases: dict[str, str] = {}  # content hash → canonical content hash
        self._next = 0
        self._lock = threading.Lock()

    def canonical_hash(self, image: NormalizedImage) -> str:
        """The content hash that stands for ``image`` in cache keys."""
        with self._lock:
            known = self._aliases.get(image.content_hash)
            if known is not None and known in self._slots:
                return known
        return self.canonical_for(image.content_hash, perceptual_hash(image.image))  # the costly part: no lock

    def canonical_for(self, content_hash: str, fingerprint: PerceptualHash) -> str:
        """The canonical hash of a picture whose perceptual hash is already known; it is remembered."""
        with self._lock:
            canonical = self._find(fingerprint)
            if canonical is None:
                canonical = content_hash
                self._insert(canonical, fingerprint)
            self._aliases[content_hash] = canonical
            if len(self._aliases) > 4 * self.max_entries:
                self._aliases = {k: v for k, v in self._aliases.items() if v in self._slots}
            return canonical

    def clear(self) -> int:
        """Forget every picture; returns how many canonical pictures were forgotten."""
        with self._lock:
            forgotten = len(self._slots)
            self._owners = [None] * self.max_entries
            self._slots.clear()
            self._aliases.clear()
            self._next = 0
            return forgotten

    def __len__(self) -> int:
        return len(self._slots)

    def _find(self, fingerprint: PerceptualHash) -> str | None:
        """The matching canonical picture closest in structure, if any."""
        used = len(self._slots)  # the ring fills slots 0, 1, … in order, so these are the used ones
        if used == 0:
            return None
        distances = _popcount(self._structures[:used] ^ np.uint64(fingerprint.structure))
        candidates = np.flatnonzero(distances <= self.rule.max_hamming)
        if candidates.size == 0:
            return None
        colour = np.frombuffer(fingerprint.colour, dtype=np.uint8).astype(np.int16)
        deltas = np.abs(self._colours[candidates] - colour).max(axis=1)
        close = candidates[deltas <= self.rule.max_colour_delta]
        if close.size == 0:
            return None
        return self._owners[int(close[np.argmin(distances[close])])]

    def _insert(self, content: str, fingerprint: PerceptualHash) -> None:
        slot = self._next
        evicted = self._owners[slot]
        if evicted is not None:
            del self._slots[evicted]
        self._structures[slot] = fingerprint.structure
        self._colours[slot] = np.frombuffer(fingerprint.colour, dtype=np.uint8)
        self._owners[slot] = content
        self._slots[content] = slot
        self._next = (slot + 1) % self.max_entries


def _popcount(values: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (numpy 2 has ``bitwise_count``; numpy 1.26 does not)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values).astype(np.int64)
    return np.unpackbits(values.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
