"""Near-duplicate matching on the demo catalogue: false hits and true hits per threshold.

Draws catalogue pictures (every kind × colour, for several seeds; one seed fixes the pose and
background, so pictures of one seed differ only in kind and colour: the hardest case),
normalises them as the service does, and for each structure threshold (``max_hamming``) at
the chosen colour tolerance reports:

* false-hit rate: pairs showing a different kind or a different colour that would match;
  pairs of one seed (same pose, another kind or colour) plus random pairs across seeds; and,
  to show why the colour part exists, the same with the structure hash alone ("shape only");
* true-hit rate per re-encoding: the same picture re-saved as PNG, JPEG at several qualities,
  a resized JPEG, an upscaled PNG, a lossy WebP, normalised again;
* for information, how often two *different photos* of the same item (another seed) match.

Also prints the worst cases (closest different-item pair, farthest re-encoding) so the margin
is visible. Run: ``python bench/phash_false_hits.py [--seeds 6] [--colour-delta 12]``.
"""

from __future__ import annotations

import argparse
import io
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

from seesay.cache.phash import NearDuplicateRule, PerceptualHash, perceptual_hash
from seesay.demo.catalogue import COLOURS, KINDS, Item, draw_picture
from seesay.images import PixelBudget, load_image

THRESHOLDS = (0, 2, 4, 6, 8, 10, 12, 16, 20)
BUDGET = PixelBudget()


@dataclass(frozen=True)
class Picture:
    item: Item
    seed: int
    source: Image.Image
    hash: PerceptualHash


def encode(image: Image.Image, fmt: str, scale: float = 1.0, **options: object) -> bytes:
    if scale != 1.0:
        size = (round(image.width * scale), round(image.height * scale))
        image = image.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


REENCODINGS: dict[str, Callable[[Image.Image], bytes]] = {
    "png": lambda image: encode(image, "PNG"),
    "jpeg q90": lambda image: encode(image, "JPEG", quality=90),
    "jpeg q75": lambda image: encode(image, "JPEG", quality=75),
    "jpeg q50": lambda image: encode(image, "JPEG", quality=50),
    "jpeg 75% size": lambda image: encode(image, "JPEG", 0.75, quality=85),
    "jpeg 50% size": lambda image: encode(image, "JPEG", 0.5, quality=85),
    "png 150% size": lambda image: encode(image, "PNG", 1.5),
    "webp q80": lambda image: encode(image, "WEBP", quality=80),
}


def normalised_hash(data: bytes) -> PerceptualHash:
    return perceptual_hash(load_image(data, BUDGET).image)


def draw_pictures(seeds: int) -> list[Picture]:
    pictures = []
    for seed, kind, colour in itertools.product(range(seeds), KINDS, COLOURS):
        item = Item(kind, colour)
        source = draw_picture(item, random.Random(seed))
        pictures.append(Picture(item, seed, source, normalised_hash(encode(source, "PNG"))))
    return pictures


def pair_sets(pictures: list[Picture], cross_pairs: int) -> tuple[list[tuple[Picture, Picture]], ...]:
    """(different item, same pose), (different item, other photo), (same item, other photo)."""
    same_pose = [(a, b) for a, b in itertools.combinations(pictures, 2) if a.seed == b.seed]
    rng = random.Random(0)
    cross: list[tuple[Picture, Picture]] = []
    while len(cross) < cross_pairs:
        a, b = rng.sample(pictures, 2)
        if a.seed != b.seed and a.item != b.item:
            cross.append((a, b))
    same_item = [(a, b) for a, b in itertools.combinations(pictures, 2) if a.seed != b.seed and a.item == b.item]
    return same_pose, cross, same_item


def rate(pairs: list[tuple[PerceptualHash, PerceptualHash]], rule: NearDuplicateRule) -> tuple[int, int]:
    return sum(rule.matches(a, b) for a, b in pairs), len(pairs)


def report(pictures: list[Picture], colour_delta: int, cross_pairs: int) -> None:
    same_pose, cross, same_item = pair_sets(pictures, cross_pairs)
    different = [(a.hash, b.hash) for a, b in same_pose + cross]
    others = [(a.hash, b.hash) for a, b in same_item]
    copies = {name: [(p.hash, normalised_hash(make(p.source))) for p in pictures] for name, make in REENCODINGS.items()}
    print(f"{len(pictures)} pictures; {len(different)} different-item pairs ({len(same_pose)} same pose, "
          f"{len(cross)} across photos); {len(others)} same-item pairs of different photos; colour delta "
          f"<= {colour_delta}\n")
    header = (f"{'max_hamming':>11} {'false hits':>14} {'shape only':>14} "
              + " ".join(f"{n:>13}" for n in REENCODINGS))
    print(header + f" {'same item, other photo':>23}")
    for threshold in THRESHOLDS:
        rule = NearDuplicateRule(max_hamming=threshold, max_colour_delta=colour_delta)
        hits, total = rate(different, rule)
        shape_only = rate(different, NearDuplicateRule(max_hamming=threshold, max_colour_delta=255))[0]
        true = " ".join(f"{100 * rate(pairs, rule)[0] / len(pairs):12.1f}%" for pairs in copies.values())
        other_hits, other_total = rate(others, rule)
        other = 100 * other_hits / max(other_total, 1)
        print(f"{threshold:>11} {hits:>5}/{total} {shape_only:>5}/{total} {true} {other:22.1f}%")
    closest = min(different, key=lambda pair: (pair[0].hamming(pair[1]), pair[0].colour_delta(pair[1])))
    colour_floor = min(a.colour_delta(b) for a, b in different if a.hamming(b) <= max(THRESHOLDS))
    all_copies = [pair for pairs in copies.values() for pair in pairs]
    print(f"\nclosest different-item pair: hamming {closest[0].hamming(closest[1])}, colour delta "
          f"{closest[0].colour_delta(closest[1])}; smallest colour delta among different items within "
          f"hamming {max(THRESHOLDS)}: {colour_floor}")
    print(f"re-encodings: max hamming {max(a.hamming(b) for a, b in all_copies)}, "
          f"max colour delta {max(a.colour_delta(b) for a, b in all_copies)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=6, help="poses drawn per kind × colour (48 pictures each)")
    parser.add_argument("--colour-delta", type=int, default=NearDuplicateRule().max_colour_delta)
    parser.add_argument("--cross-pairs", type=int, default=2000, help="random different-item pairs across photos")
    args = parser.parse_args()
    report(draw_pictures(args.seeds), args.colour_delta, args.cross_pairs)


if __name__ == "__main__":
    main()
