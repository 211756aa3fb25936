"""Image intake benchmark: a 12 MP JPEG normalised under the default 1 MP pixel budget.

Compares :func:`seesay.images.load_image` (header checks, JPEG draft decoding at a reduced DCT
scale, one bicubic resize) with the naive Pillow path (full decode, convert to RGB, one bicubic
resize to the same target size). Prints the median seconds of each, the ratio baseline/seesay,
and the mean absolute pixel difference between the two results, so the speed-up is seen
together with what it costs in fidelity. ``bench/engine.py`` imports :func:`measure_intake`.

Run: ``python bench/intake.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import io

import numpy as np
from PIL import Image

from seesay.images import PixelBudget, load_image
from timing import median_seconds


def synthetic_photo(width: int = 4000, height: int = 3000, seed: int = 0) -> bytes:
    """A photo-like JPEG (quality 90): smooth colour structure plus sensor-like noise."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
    noisy = np.clip(smooth + rng.normal(0, 8, size=smooth.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def naive_intake(data: bytes, budget: PixelBudget) -> Image.Image:
    """The baseline: decode at full size, convert to RGB, resize once to the processor's size."""
    with Image.open(io.BytesIO(data)) as source:
        rgb = source.convert("RGB")
    return rgb.resize(budget.target_size(*rgb.size), Image.Resampling.BICUBIC)


def measure_intake(repeats: int = 7) -> dict[str, float]:
    """Time seesay's intake against the naive baseline on a synthetic 4000x3000 JPEG.

    Args:
        repeats: Timed calls per path (the median is reported).

    Returns:
        ``intake_seesay_s`` and ``intake_baseline_s`` (median seconds), ``intake_speedup``
        (baseline / seesay) and ``intake_mean_abs_diff`` (mean absolute difference of the two
        results' 8-bit pixel values).
    """
    data = synthetic_photo()
    budget = PixelBudget()
    seesay_s = median_seconds(lambda: load_image(data, budget), repeats)
    baseline_s = median_seconds(lambda: naive_intake(data, budget), repeats)
    ours = np.asarray(load_image(data, budget).image, dtype=np.int16)
    naive = np.asarray(naive_intake(data, budget), dtype=np.int16)
    return {
        "intake_seesay_s": seesay_s,
        "intake_baseline_s": baseline_s,
        "intake_speedup": baseline_s / seesay_s,
        "intake_mean_abs_diff": float(np.abs(ours - naive).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per path (default 7)")
    args = parser.parse_args()
    figures = measure_intake(args.repeats)
    print("12 MP JPEG (4000x3000, quality 90) -> 1 MP budget (1152x864), median of", args.repeats)
    print(f"  seesay load_image          {figures['intake_seesay_s'] * 1000:8.1f} ms")
    print(f"  full decode+convert+resize {figures['intake_baseline_s'] * 1000:8.1f} ms")
    print(f"  speed-up (baseline/seesay) {figures['intake_speedup']:8.2f} x")
    print(f"  mean |difference| (0-255)  {figures['intake_mean_abs_diff']:8.2f}")


if __name__ == "__main__":
    main()
