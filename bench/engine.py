"""Engine benchmark: single-request latency, batched throughput, and image intake cost.

Prints medians over several runs and ratios against baselines measured in the same run:
  * batch of 8 in one ``generate`` call vs the same 8 requests one by one;
  * 12 MP JPEG intake under a 1 MP budget vs full decode + resize (see bench/intake.py).

Usage: python bench/engine.py [--model DIR] [--repeats N] [--new-tokens N] [--json]
"""

from __future__ import annotations

import argparse
import json
import random

from intake import measure_intake  # bench/ is on sys.path when this runs as a script
from seesay.demo.catalogue import COMBINATIONS, Item, draw_picture, png_bytes
from seesay.engine.config import TransformersEngineConfig
from seesay.engine.transformers import TransformersEngine
from seesay.images import load_image
from seesay.types import ChatMessage, GenerationRequest, SamplingParams
from timing import median_seconds

QUESTIONS = ("What colour is this item?", "这件外套适合什么场合穿？", "What is this item?", "怎么搭配比较好？")


def requests(engine: TransformersEngine, count: int, new_tokens: int) -> list[GenerationRequest]:
    rng = random.Random(7)
    out = []
    for index in range(count):
        kind, colour, _, _ = COMBINATIONS[rng.randrange(len(COMBINATIONS))]
        image = load_image(png_bytes(draw_picture(Item(kind, colour), rng)), engine.pixel_budget)
        # Greedy: batched and one-by-one runs generate exactly the same tokens.
        sampling = SamplingParams(temperature=0.0, max_new_tokens=new_tokens)
        out.append(GenerationRequest((ChatMessage.user(image, QUESTIONS[index % len(QUESTIONS)]),), sampling))
    return out


def measure_engine(engine: TransformersEngine, repeats: int, new_tokens: int) -> dict[str, float]:
    batch = [engine.prepare(r) for r in requests(engine, 8, new_tokens)]
    single = median_seconds(lambda: engine.generate(batch[:1]), repeats)
    one_by_one = median_seconds(lambda: [engine.generate([p]) for p in batch], repeats)
    batched = median_seconds(lambda: engine.generate(batch), repeats)
    tokens = sum(r.usage.completion_tokens for r in engine.generate(batch))
    return {
        "single_latency_s": single,
        "one_by_one_8_s": one_by_one,
        "batch_8_s": batched,
        "batch_speedup": one_by_one / batched,
        "batch_tokens_per_s": tokens / batched,
        "one_by_one_tokens_per_s": tokens / one_by_one,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder or hub id (default: the demo model)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    engine = TransformersEngine(TransformersEngineConfig(model=args.model, device="cpu"))
    figures = {"model": engine.info().model, **measure_engine(engine, args.repeats, args.new_tokens),
               **measure_intake(args.repeats)}
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    for name, value in figures.items():
        print(f"{name:28} {value:.4f}" if isinstance(value, float) else f"{name:28} {value}")


if __name__ == "__main__":
    main()
